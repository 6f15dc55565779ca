"""The one exception type for user mistakes (the CLI prints its message on one line and exits 2), and how such
a message names what a JSON file held instead of what was expected."""

from typing import Any


class UserError(Exception):
    """A mistake in the user's input (names, files, settings), reported without a traceback."""


class Terminated(BaseException):
    """Raised in the main thread when SIGTERM arrives, so that a command stops and cleans up as on Ctrl-C."""


def json_kind(value: Any) -> str:
    """What a JSON value is, as a message names it: "an object", "an array", "a string", "true/false", "null"
    or "a number"."""
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "true/false", type(None): "null"}
    return kinds.get(type(value), "a number")
