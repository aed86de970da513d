"""The population: one pytree whose every leaf has a leading member axis ``[P, ...]``."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Population(NamedTuple):
    """Every member's training state, stacked on axis 0.

    ``state`` is whatever the task's ``init`` returns (weights, optimizer state, running
    statistics, environments). ``rng`` is each member's own key stream: every key its task
    functions get comes from it. PBT copies ``state`` and ``hparams`` from a parent; a
    member always keeps its own ``rng``, ``member_ids`` and ``step``.
    """

    state: Any
    hparams: dict[str, jax.Array]
    rng: jax.Array  # uint32 [P, 2]
    member_ids: jax.Array  # int32 [P]
    step: jax.Array  # int32 [P]

    @property
    def size(self) -> int:
        return int(self.member_ids.shape[0])

    @property
    def params(self):
        """The weights, for tasks that keep them under ``state["params"]`` (popjax's own)."""
        return self.state["params"]


def strongly_typed(tree):
    """``tree`` with every weakly typed leaf (one made from a Python number: a step count
    started at ``0``, a ``jnp.where(done, 1.0, x)``) given its dtype for good.

    A compiled round takes the population and gives it back: a leaf whose weak type changed
    on the way would compile the round again at its next call, and a checkpoint's arrays come
    back strongly typed, so a resumed run would compile another program than the run it
    resumes. Strongly typed everywhere, every round runs one program."""

    def strong(leaf):
        return (
            jax.lax.convert_element_type(leaf, leaf.dtype) if jax.typeof(leaf).weak_type else leaf
        )

    return jax.tree_util.tree_map(strong, tree)


def member_keys(seed_key, size: int) -> jax.Array:
    """One key per member: member i's initial state and key stream come from key i alone."""
    return jax.random.split(seed_key, size)


def init_members(task, keys, hparams, train_data=None, member_ids=None) -> Population:
    """Initialises one member per key with ``vmap``, each with its own state and key stream.

    Args:
      task: a ``popjax.Task``.
      keys: ``[P, 2]`` uint32 keys, one per member.
      hparams: dict of ``[P]`` arrays.
      train_data: the task's training data (``task.data.train`` unless placed elsewhere).
      member_ids: ``[P]`` int32; defaults to ``0..P-1``.
    """
    size = keys.shape[0]
    hparams = {name: jnp.asarray(v, jnp.float32) for name, v in hparams.items()}
    if task.data is not None and train_data is None:
        train_data = task.data.train
        if hasattr(train_data, "at"):  # a streamed split (popjax.stream.Stream): its first window
            train_data = train_data.at(0)
    if train_data is not None:  # host arrays cannot be indexed by traced values
        train_data = jax.tree_util.tree_map(jnp.asarray, train_data)
    extra = (train_data,) if task.data is not None else ()

    def init_one(key, member_hparams):
        init_key, rng = jax.random.split(key)
        return task.init(init_key, member_hparams, *extra), rng

    state, rng = jax.vmap(init_one)(keys, hparams)
    state = strongly_typed(state)
    if member_ids is None:
        member_ids = jnp.arange(size, dtype=jnp.int32)
    return Population(
        state=state,
        hparams=hparams,
        rng=rng,
        member_ids=jnp.asarray(member_ids, jnp.int32),
        step=jnp.zeros(size, jnp.int32),
    )


def init_population(seed_key, task, space, size: int, train_data=None) -> Population:
    """A population of ``size`` members with hyperparameters sampled from ``space``."""
    init_key, hparam_key = jax.random.split(seed_key)
    return init_members(
        task, member_keys(init_key, size), space.sample(hparam_key, size), train_data
    )


def select(population: Population, index) -> Population:
    """The members at ``index`` (an int array), as a smaller population."""
    return jax.tree_util.tree_map(lambda leaf: leaf[index], population)
