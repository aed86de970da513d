"""The one error type a user sees: its message is one line that says what to change."""

import difflib
from collections.abc import Sequence


class PopjaxError(ValueError):
    """Bad input to popjax; the command line prints its message alone and exits with 2."""


class ConfigError(PopjaxError):
    """A config that cannot run; the message says what to change."""


def unknown_name_error(kind: str, name: str, known: Sequence[str]) -> str:
    """The message for a misspelt name, with the nearest known one when there is one."""
    near = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean '{near[0]}'? " if near else ""
    return f"unknown {kind} '{name}': {hint}known: {', '.join(known)}"


def shown(value) -> str:
    """A value as an error message shows it: its repr kept to one short line, or its type."""
    if not isinstance(value, (int, float, str, list, tuple, dict)):
        return f"a {type(value).__name__}"
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."
