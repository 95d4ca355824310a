"""The one exception type for user mistakes.

Anything a user can get wrong (a config key, a missing file, a corrupt image, a
foreign checkpoint) raises UserError; the CLI prints its message as one line and
exits with its code. Every other exception is our bug and keeps its traceback.
"""


class UserError(Exception):
    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
