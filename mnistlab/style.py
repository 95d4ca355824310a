"""Colour for the few lines worth it (the best epoch's `*`, the final accuracy, errors), where it shows.

Colour goes only to a terminal: a stream that is not a TTY (a pipe, a log file, the tests' capture)
gets plain text, and so does everyone who sets NO_COLOR (https://no-color.org: any non-empty value)
or whose terminal is TERM=dumb. Whether to colour is decided per call, for the stream the line is
written to, so redirecting stdout alone still leaves the errors on stderr red.
"""

from __future__ import annotations

import os
import sys

# Semantic names, so a caller says what a piece of text is and the look is decided here.
SGR = {"best": "32", "result": "1;32", "error": "1;31", "warning": "33"}  # green, bold green, bold red, yellow


def use_colour(stream) -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def paint(text: str, style: str, stream=None) -> str:
    """`text` in the colour of `style` if `stream` (default: sys.stdout, looked up now) shows colour."""
    stream = sys.stdout if stream is None else stream
    return f"\033[{SGR[style]}m{text}\033[0m" if use_colour(stream) else text
