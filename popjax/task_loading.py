"""Tasks named by import path: a config's ``task = {name = "package.module:factory"}``
imported from the user's modules and built with its fields (host code: it imports by path)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from popjax.errors import PopjaxError
from popjax.imports import first_line, import_module
from popjax.task import Task

# Built into popjax; anything else is "package.module:factory".
BUILTIN = ("classification", "regression")


def load_task(
    spec: str, fields: Mapping[str, Any] | None = None, settings: Callable | None = None
) -> Task:
    """The task a config names by import path, ``"package.module:factory"``.

    ``factory(**fields, **settings(factory))`` must return a ``Task`` (a ``Task`` itself is
    taken as it is); ``settings`` picks the run's settings that the factory takes. The current
    folder is searched first, so a task in ``./my_tasks.py`` is ``"my_tasks:name"``.
    """
    fields = dict(fields or {})
    made = load_factory(spec, fields.pop(IMPORT_FOLDER, None))
    extra = settings(made) if settings is not None else {}
    if isinstance(made, Task):
        if fields:
            raise PopjaxError(
                f"{spec} is a popjax.Task, not a factory: it takes no fields "
                f"({', '.join(sorted(fields))}); remove them from [task]"
            )
        return made
    return make_task(made, {**(fields or {}), **extra}, spec)


def load_factory(spec: str, import_folder: str | None = None):
    """What ``"package.module:factory"`` names: a function that returns a ``Task``, or a
    ``Task``; ``import_folder``, where a run folder says the module came from, is searched
    first."""
    module_name, _, attribute = str(spec).partition(":")
    if not module_name or not attribute:
        raise PopjaxError(
            f"task '{spec}' is not an import path: write it as "
            '"package.module:factory" or use one of ' + ", ".join(BUILTIN)
        )
    # A run folder's record of where the module came from wins over the current folder: a
    # resumed run goes on with the task it started with, from whatever folder it resumes in.
    module = import_module(module_name, f"task module '{module_name}'", import_folder)
    if not hasattr(module, attribute):
        raise PopjaxError(
            f"module '{module_name}' has no '{attribute}': name a function that "
            "returns a popjax.Task"
        )
    made = getattr(module, attribute)
    if not isinstance(made, Task) and not callable(made):
        raise PopjaxError(
            f"{spec} is a {type(made).__name__}, not a function that returns a popjax.Task"
        )
    return made


def make_task(factory: Callable, arguments: Mapping[str, Any], spec: str) -> Task:
    """``factory(**arguments)``, which must be a ``Task``."""
    try:
        made = factory(**arguments)
    except TypeError as error:
        raise PopjaxError(
            f"{spec} does not take the fields given in [task] "
            f"({first_line(error)}): give the arguments it takes"
        ) from None
    if not isinstance(made, Task):
        raise PopjaxError(f"{spec} returned a {type(made).__name__}: expected a popjax.Task")
    return made


# The [task] key of a run folder's config.toml that records the folder the task's module was
# imported from; load_task searches it and never passes it to the factory.
IMPORT_FOLDER = "import_from"


def import_folder(spec: str) -> str | None:
    """The absolute folder from which ``spec``'s module ("package.module:factory") was
    imported: what the import path needs to import it again. None for a module not imported
    yet or without a file."""
    module_name = str(spec).partition(":")[0]
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    if not file:
        return None
    path = Path(file).resolve()
    # "a.b.c" lives in ROOT/a/b/c.py, or in ROOT/a/b/c/__init__.py for a package.
    depth = module_name.count(".") + (path.stem == "__init__")
    return str(path.parents[depth])
