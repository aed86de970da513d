"""A fixed-size ring buffer of transitions, kept in a member's state on the device.

Plain arrays and two counters, so it lives wherever the rest of the state does: ``vmap`` gives
every member its own, PBT copies it with the member, checkpoints save it, and XLA's memory plan
counts it. The oldest transitions are written over once it is full.

    buffer = empty({"obs": jnp.zeros(3), "reward": jnp.zeros(())}, capacity=10_000)
    buffer = add(buffer, {"obs": obs_batch, "reward": reward_batch})   # leading axis: n
    batch = sample(buffer, key, 256)                                    # uniform, with replacement
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def empty(example, capacity: int) -> dict:
    """A buffer of ``capacity`` transitions shaped like ``example`` (a pytree of one
    transition's arrays), all zero.

    Returns:
      ``{"data": example's tree with a leading [capacity] axis, "position": int32 (where the
      next one goes), "count": int32 (how many are stored)}``.
    """
    data = jax.tree_util.tree_map(
        lambda x: jnp.zeros((capacity, *jnp.shape(x)), jnp.result_type(x)), example
    )
    return {"data": data, "position": jnp.zeros((), jnp.int32), "count": jnp.zeros((), jnp.int32)}


def capacity_of(buffer) -> int:
    """How many transitions the buffer holds when full (static)."""
    return jax.tree_util.tree_leaves(buffer["data"])[0].shape[0]


def add(buffer, transitions) -> dict:
    """The buffer with ``transitions`` (a pytree like the example, with a leading axis of n)
    written after the newest, wrapping around; n may exceed the capacity (the last ones stay)."""
    capacity = capacity_of(buffer)
    n = jax.tree_util.tree_leaves(transitions)[0].shape[0]
    if n > capacity:
        transitions = jax.tree_util.tree_map(lambda x: x[n - capacity :], transitions)
        buffer = {**buffer, "position": (buffer["position"] + n - capacity) % capacity}
        n = capacity
    slots = (buffer["position"] + jnp.arange(n)) % capacity
    data = jax.tree_util.tree_map(
        lambda stored, new: stored.at[slots].set(new.astype(stored.dtype)),
        buffer["data"],
        transitions,
    )
    return {
        "data": data,
        "position": (buffer["position"] + n) % capacity,
        "count": jnp.minimum(buffer["count"] + n, capacity),
    }


def sample(buffer, key, batch: int):
    """``batch`` stored transitions drawn uniformly with replacement. Any prefix of the result
    is itself a uniform sample, so a smaller effective batch is a mask over it. An empty
    buffer gives its zero slot."""
    index = jax.random.randint(key, (batch,), 0, jnp.maximum(buffer["count"], 1))
    return jax.tree_util.tree_map(lambda x: x[index], buffer["data"])
