"""The population: one pytree whose every leaf has a leading member axis ``[P, ...]``."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from popjax import optim
from popjax.nn import reinitialize


class Population(NamedTuple):
    """Every member's training state, stacked on axis 0.

    ``rng`` is each member's own key stream: its batch order and dropout masks. PBT copies
    ``params``, ``opt_state`` and ``hparams`` from a source member; a member always keeps its
    own ``rng``, ``member_ids`` and ``step``.
    """

    params: Any
    opt_state: Any
    hparams: dict[str, jax.Array]
    rng: jax.Array  # uint32 [P, 2]
    member_ids: jax.Array  # int32 [P]
    step: jax.Array  # int32 [P]

    @property
    def size(self) -> int:
        return int(self.member_ids.shape[0])


def member_keys(seed_key, size: int) -> jax.Array:
    """One key per member: member i's initial weights and key stream come from key i alone."""
    return jax.random.split(seed_key, size)


INIT_HPARAMS = ("init_mode", "init_distribution", "init_scale")


def init_members(model, sample_input, keys, hparams, member_ids=None,
                 optimizer: str = "sgd") -> Population:
    """Initialises one member per key with ``vmap``, each with its own weights and key stream.

    Args:
      model: a flax linen module called as ``model.apply(v, x, dropout_rate=r, train=b)``.
      sample_input: one batch of inputs ``[B, ...]``, used for shapes only.
      keys: ``[P, 2]`` uint32 keys, one per member.
      hparams: dict of ``[P]`` float32 arrays.
      member_ids: ``[P]`` int32; defaults to ``0..P-1``.
      optimizer: the optimizer family ("sgd" or "adam"), which shapes the optimizer state.
    Returns:
      The initial ``Population``.
    """
    size = keys.shape[0]

    hparams = {name: jnp.asarray(v, jnp.float32) for name, v in hparams.items()}

    def init_one(key, member_hparams):
        param_key, rng = jax.random.split(key)
        params = model.init(param_key, sample_input, train=False)["params"]
        if any(name in member_hparams for name in INIT_HPARAMS):
            params = reinitialize(params, member_hparams.get("init_mode", 0),
                                  member_hparams.get("init_distribution", 0),
                                  member_hparams.get("init_scale", 1.0))
        return params, optim.init_state(params, member_hparams, optimizer), rng

    params, opt_state, rng = jax.vmap(init_one)(keys, hparams)
    if member_ids is None:
        member_ids = jnp.arange(size, dtype=jnp.int32)
    return Population(
        params=params,
        opt_state=opt_state,
        hparams=hparams,
        rng=rng,
        member_ids=jnp.asarray(member_ids, jnp.int32),
        step=jnp.zeros(size, jnp.int32),
    )


def init_population(seed_key, model, sample_input, space, size: int) -> Population:
    """A population of ``size`` members with hyperparameters sampled from ``space``."""
    init_key, hparam_key = jax.random.split(seed_key)
    hparams = space.sample(hparam_key, size)
    return init_members(model, sample_input, member_keys(init_key, size), hparams,
                        optimizer=space.optimizer)


def select(population: Population, index) -> Population:
    """The members at ``index`` (an int array), as a smaller population."""
    return jax.tree_util.tree_map(lambda leaf: leaf[index], population)
