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

import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from popjax.errors import PopjaxError
from popjax.imports import first_line


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


def _one_line(text: str, limit: int = 160) -> str:
    """``text`` on one line (reprs such as flax.nnx's span many), cut to ``limit`` characters."""
    text = re.sub(r"([\[({]) | ([\])}])", r"\1\2", " ".join(str(text).split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _leaf_text(x) -> str:
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"{x.dtype}{list(x.shape)}"
    return "None" if x is None else f"a {type(x).__name__}"


def _describe(tree) -> str:
    """A short picture of a pytree's structure and shapes, on one line, for error messages."""
    return _one_line(jax.tree_util.tree_map(_leaf_text, tree))


def _where(path) -> str:
    text = jax.tree_util.keystr(tuple(path))
    if not text:
        return "its root"
    return text if len(text) <= 80 else "..." + text[-77:]


def _one_level(node):
    """A node's children with their keys, and the node's own structure (its type and static
    data); a leaf has itself as its one child."""
    return jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)


def _node_text(node, other) -> str:
    """A container, told apart from ``other``: by its type, or else by its static data."""
    if type(node) is not type(other) or node is None:
        return _leaf_text(node)
    aux = _one_level(node)[1].node_data()[1]
    return f"a {type(node).__name__} with static data {_one_line(aux, 50)}"


def _first_difference(init, train, path=()):
    """``(path, init's, train's)`` where two pytrees first differ, or None when they agree in
    structure (types, keys, static data), shapes and dtypes. Children come before their
    container's static data, so an equinox module with a new shape is named by its array."""
    a, a_def = _one_level(init)
    b, b_def = _one_level(train)
    a_leaf, b_leaf = jax.tree_util.treedef_is_leaf(a_def), jax.tree_util.treedef_is_leaf(b_def)
    if a_leaf and b_leaf:
        same = getattr(init, "shape", None) == getattr(train, "shape", None) and getattr(
            init, "dtype", None
        ) == getattr(train, "dtype", None)
        return None if same else (path, _leaf_text(init), _leaf_text(train))
    if a_leaf or b_leaf:
        return path, _node_text(init, train), _node_text(train, init)
    a_keys, b_keys = [k for (k,), _ in a], [k for (k,), _ in b]
    if a_keys != b_keys:
        for i in range(max(len(a_keys), len(b_keys))):
            if i < len(a_keys) and a_keys[i] not in b_keys:
                return (*path, a_keys[i]), _leaf_text(a[i][1]), "nothing"
            if i < len(b_keys) and b_keys[i] not in a_keys:
                return (*path, b_keys[i]), "nothing", _leaf_text(b[i][1])
        return path, f"keys in the order {_one_line(a_keys, 60)}", "another order"
    for ((key,), child), (_, other) in zip(a, b):
        found = _first_difference(child, other, (*path, key))
        if found is not None:
            return found
    if a_def != b_def:
        return path, _node_text(init, train), _node_text(train, init)
    return None


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
    if hasattr(data.train, "shapes"):  # a popjax.stream.Stream: a window's shapes
        data = data._replace(train=data.train.shapes())
    extra = (lambda split: (split,)) if task.data is not None else (lambda split: ())
    key = jax.random.PRNGKey(0)

    def trace(name, fn, *args):
        try:
            return jax.eval_shape(fn, *args)
        except PopjaxError:
            raise
        except Exception as error:  # the user's code may fail in any way
            raise PopjaxError(
                f"task {name} failed on one member ({type(error).__name__}: {first_line(error)})"
            ) from None

    def init(k, h, d):
        state = task.init(k, h, *extra(d))
        # vmap, scan, PBT's copies and checkpoints all need arrays; a Python number becomes one.
        for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
            if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, float, int)):
                raise PopjaxError(
                    f"task init returned {_leaf_text(leaf)} at {_where(path)}: expected a pytree "
                    "of arrays; keep the rest in the factory (equinox: return "
                    "eqx.partition(model, eqx.is_array)[0])"
                )
        return state

    state = trace("init", init, key, hparams, data.train)
    # The run gives init's leaves their dtypes for good (``popjax.population.strongly_typed``):
    # train sees a leaf made from a Python number as a float32 or int32, never weakly typed.
    state = jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), state)
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
    difference = _first_difference(state, new_state)
    if difference is not None:
        path, before, after = difference
        raise PopjaxError(
            f"task train returned a state that differs from init's at {_where(path)}: "
            f"{before} from init, {after} from train: return the state with init's "
            "structure, shapes and dtypes"
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
