"""A user's own modules, imported by the name a config or a call gives them.

Tasks, models and optimizers can be named by import path, ``"package.module:name"``; their
modules are imported from the current folder first (and, on a resume, from the folder the run
recorded before that), and a module that fails to import is a one-line error.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

from popjax.errors import PopjaxError


def first_line(error: BaseException) -> str:
    """An exception's message cut to its first line, for a one-line error."""
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def search_first(folder) -> None:
    """Puts ``folder`` at the front of the import path, unless it is there already or gone (a
    run folder moved to another machine falls back to the current folder)."""
    if folder is not None and Path(folder).is_dir() and str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def import_module(name: str, what: str, folder=None) -> ModuleType:
    """The module ``name``, searched for in the current folder first and in ``folder`` before
    that; a one-line error about ``what`` (e.g. "task module 'my_tasks'") if it fails."""
    search_first(Path.cwd())
    search_first(folder)
    try:
        return importlib.import_module(name)
    except Exception as error:  # an import can fail in any way the user's code does
        raise PopjaxError(
            f"cannot import {what} ({type(error).__name__}: {first_line(error)}): check the "
            "name and that it is importable from the current folder"
        ) from None
