"""The one exception type for user mistakes, and the one way an error becomes a line.

Anything a user can get wrong (a config key, a missing file, a corrupt image, a
foreign checkpoint, a full disk) raises UserError; the CLI prints its message as
one line and exits with its code. Every other exception is our bug and keeps its
traceback.
"""

from __future__ import annotations

import difflib
import re
from urllib.parse import unquote

MAX_LINE = 360  # characters of a message shown; a 50 MB "key" must not become a 50 MB line
CREDENTIALS = re.compile(r"^(?P<head>[A-Za-z][\w+.-]*://[^:/@?#]*:)(?P<password>.*)@")  # to the last '@'


class UserError(Exception):
    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def one_line(message: object, limit: int = MAX_LINE) -> str:
    """`message` (text or an exception) on one line of at most `limit` characters."""
    text = " ".join(str(message).split())
    if not text and isinstance(message, BaseException):
        text = type(message).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def did_you_mean(value: object, choices) -> str:
    """'; did you mean 'x'?' for a near miss among `choices`, else ''."""
    close = difflib.get_close_matches(str(value)[:100], [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def masked(url: str) -> str:
    """A URL (a sweep's storage, an MLflow server) as it may be shown: its password, if it has one, as ***."""
    return CREDENTIALS.sub(r"\g<head>***@", url)


def scrub(text: str, url: str) -> str:
    """`text` (an error from a driver or a server, say) with the URL masked and its password nowhere in it."""
    text = text.replace(url, masked(url))
    found = CREDENTIALS.match(url)
    if found and found["password"]:
        for secret in {found["password"], unquote(found["password"])}:
            text = text.replace(secret, "***")
    return text
