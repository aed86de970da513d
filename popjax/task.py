"""The task interface: any JAX training program as pure functions of one member.

A task says what one member is and does; popjax makes a population of it (``vmap`` over
members, ``lax.scan`` over steps, the member axis sharded over devices, PBT on the device,
checkpoints, lineage, reports). Like an optax ``GradientTransformation``, a task is a
NamedTuple of pure functions built by a factory that closes over what is static::

    def linear_regression(features=8) -> popjax.Task:
        def init(key, hparams):
            return {"w": jnp.zeros(features)}
        def train(state, hparams, key, step):
            ...
            return state, {"loss": loss}
        def evaluate(state, hparams, key):
            return {"loss": loss}
        return popjax.Task(init, train, evaluate, fitness="loss", minimize=True)

The functions see one member: ``hparams`` is a dict of traced float32 scalars, named as the
search space names them; ``key`` is fresh for every call, drawn from the member's own key
stream; ``state`` is any pytree of arrays, copied whole by PBT.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from popjax.errors import PopjaxError


class TaskData(NamedTuple):
    """Arrays a task trains and evaluates on, passed to the compiled round as arguments.

    Any pytrees. ``train`` reaches ``init`` and ``train``; ``val`` reaches ``evaluate`` during
    the sweep (PBT selects on it); ``test``, if given, reaches ``evaluate`` once at the end.
    """

    train: Any
    val: Any = None
    test: Any = None


class Task(NamedTuple):
    """One member's training program.

    Attributes:
      init: ``init(key, hparams) -> state``, the member's whole training state (any pytree:
        weights, optimizer state, running statistics, environment states).
      train: ``train(state, hparams, key, step) -> (state, metrics)`` for one step; popjax
        scans it ``interval`` times per round and averages each metric (a dict of scalars)
        over the round.
      evaluate: ``evaluate(state, hparams, key) -> metrics``, a dict of scalars that holds
        ``fitness``.
      fitness: the name of the ``evaluate`` metric PBT selects on.
      minimize: True when a lower ``fitness`` is better (a loss).
      data: a ``TaskData``; when given, every function takes one more argument, the split it
        works on (``init(key, hparams, train)``, ``train(state, hparams, key, step, train)``,
        ``evaluate(state, hparams, key, split)``), so the arrays reach the compiled round as
        arguments instead of constants in the program.
      space: default priors (``{name: Prior}``) for the hyperparameters the task reads; a
        config's ``[space]`` overrides them name by name.
      epochs_per_step: optional, ``(hparams as numpy [P]) -> [P]`` passes over the data that one
        step makes, so that runs report each member's epochs.
      name: how configs and reports name the task.
    """

    init: Callable
    train: Callable
    evaluate: Callable
    fitness: str = "fitness"
    minimize: bool = False
    data: TaskData | None = None
    space: Mapping[str, Any] | None = None
    epochs_per_step: Callable | None = None
    name: str = "task"


# Built into popjax; anything else is "package.module:factory".
BUILTIN = ("classification", "regression")


def load_task(spec: str, fields: Mapping[str, Any] | None = None) -> Task:
    """The task a config names by import path, ``"package.module:factory"``.

    ``factory(**fields)`` must return a ``Task`` (a ``Task`` itself is taken as it is). The
    current folder is searched first, so a task in ``./my_tasks.py`` is ``"my_tasks:name"``.
    """
    module_name, _, attribute = str(spec).partition(":")
    if not module_name or not attribute:
        raise PopjaxError(
            f"task '{spec}' is not an import path: write it as "
            '"package.module:factory" or use one of ' + ", ".join(BUILTIN)
        )
    fields = dict(fields or {})
    _search_first(Path.cwd())
    # A run folder's record of where the module came from wins over the current folder: a
    # resumed run goes on with the task it started with, from whatever folder it resumes in.
    _search_first(fields.pop(IMPORT_FOLDER, None))
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # an import can fail in any way the user's code does
        raise PopjaxError(
            f"cannot import task module '{module_name}' ({type(error).__name__}: "
            f"{_first_line(error)}): check the name and that it is importable "
            "from the current folder"
        ) from None
    if not hasattr(module, attribute):
        raise PopjaxError(
            f"module '{module_name}' has no '{attribute}': name a function that "
            "returns a popjax.Task"
        )
    made = getattr(module, attribute)
    if not isinstance(made, Task):
        if not callable(made):
            raise PopjaxError(
                f"{spec} is a {type(made).__name__}, not a function that returns a popjax.Task"
            )
        try:
            made = made(**fields)
        except TypeError as error:
            raise PopjaxError(
                f"{spec} does not take the fields given in [task] "
                f"({_first_line(error)}): give the arguments it takes"
            ) from None
    if not isinstance(made, Task):
        raise PopjaxError(f"{spec} returned a {type(made).__name__}: expected a popjax.Task")
    return made


# The [task] key of a run folder's config.toml that records the folder the task's module was
# imported from; load_task searches it and never passes it to the factory.
IMPORT_FOLDER = "import_from"


def _search_first(folder) -> None:
    """Puts ``folder`` at the front of the import path, unless it is there already or gone (a
    run folder moved to another machine falls back to the current folder)."""
    if folder is not None and Path(folder).is_dir() and str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


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


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def _describe(tree) -> str:
    """A short picture of a pytree's structure and shapes, for error messages."""
    shapes = jax.tree_util.tree_map(
        lambda x: f"{getattr(x, 'dtype', type(x).__name__)}{list(getattr(x, 'shape', ()))}", tree
    )
    text = str(shapes)
    return text if len(text) <= 160 else text[:157] + "..."


def check_task(task: Task, hparams: Mapping[str, jax.Array]) -> None:
    """Traces one member's ``init``, ``train`` and ``evaluate`` (no compute) and says, in one
    line, which function returned what instead of what was expected.

    Args:
      task: the task.
      hparams: one member's hyperparameters, ``{name: float32 scalar}``.
    """
    if not isinstance(task, Task):
        raise PopjaxError(f"expected a popjax.Task, got a {type(task).__name__}")
    for name in ("init", "train", "evaluate"):
        if not callable(getattr(task, name)):
            raise PopjaxError(
                f"task {name} is a {type(getattr(task, name)).__name__}: give a function"
            )
    # The data goes in as arguments, traced as in the compiled round.
    data = task.data if task.data is not None else TaskData(None)
    extra = (lambda split: (split,)) if task.data is not None else (lambda split: ())
    key = jax.random.PRNGKey(0)

    def trace(name, fn, *args):
        try:
            return jax.eval_shape(fn, *args)
        except PopjaxError:
            raise
        except Exception as error:  # the user's code may fail in any way
            raise PopjaxError(
                f"task {name} failed on one member ({type(error).__name__}: {_first_line(error)})"
            ) from None

    def init(k, h, d):
        state = task.init(k, h, *extra(d))
        if not all(
            isinstance(leaf, (jax.Array, np.ndarray, float, int))
            for leaf in jax.tree_util.tree_leaves(state)
        ):
            raise PopjaxError(f"task init returned {_describe(state)}: expected a pytree of arrays")
        return state

    state = trace("init", init, key, hparams, data.train)
    out = trace(
        "train",
        lambda s, h, k, d: task.train(s, h, k, jnp.int32(0), *extra(d)),
        state,
        hparams,
        key,
        data.train,
    )
    if not (isinstance(out, tuple) and len(out) == 2):
        raise PopjaxError(f"task train returned {_describe(out)}: expected (state, metrics)")
    new_state, metrics = out
    if jax.tree_util.tree_structure(new_state) != jax.tree_util.tree_structure(state) or any(
        a.shape != b.shape or a.dtype != b.dtype
        for a, b in zip(jax.tree_util.tree_leaves(new_state), jax.tree_util.tree_leaves(state))
    ):
        raise PopjaxError(
            f"task train returned the state {_describe(new_state)}: expected the "
            f"structure, shapes and dtypes that init returned, {_describe(state)}"
        )
    _check_metrics("train", metrics)
    scores = trace(
        "evaluate",
        lambda s, h, k, d: task.evaluate(s, h, k, *extra(d)),
        state,
        hparams,
        key,
        data.val,
    )
    _check_metrics("evaluate", scores)
    if task.fitness not in scores:
        raise PopjaxError(
            f"task evaluate returned the metrics {sorted(scores)}, without the "
            f"fitness '{task.fitness}': return it, or set Task(fitness=...)"
        )


def _check_metrics(name: str, metrics) -> None:
    if not isinstance(metrics, Mapping) or not all(np.shape(v) == () for v in metrics.values()):
        raise PopjaxError(
            f"task {name} returned the metrics {_describe(metrics)}: expected a "
            "dict of scalars, like {'loss': loss}"
        )
