"""Running mean and variance, kept in a member's state: observation normalisation and reward
scaling for reinforcement learning.

The statistics are arrays in the agent's state, so PBT copies them with the weights they were
learned beside (a copied policy reads observations scaled as its parent's were), checkpoints
keep them, and every member keeps its own. The update is the parallel form of Welford's
algorithm (Chan et al.), merging one batch's mean and variance into the running ones, as the
``RunningMeanStd`` of Gym's normalisation wrappers and of single-file JAX PPO does.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

# Normalised observations and scaled rewards are clipped to +-CLIP, as Gym's wrappers do: one
# freak observation cannot saturate the tanh layers.
CLIP = 10.0
EPSILON = 1e-8


class RunningStats(NamedTuple):
    """The mean and variance of everything seen so far, and how much that was.

    ``count`` starts at a tiny positive number (Gym's 1e-4), so the first update weighs the
    batch fully and no division is by zero.
    """

    mean: jax.Array
    var: jax.Array
    count: jax.Array

    @classmethod
    def initial(cls, shape=()) -> RunningStats:
        """Statistics of nothing yet: mean 0, variance 1."""
        return cls(jnp.zeros(shape), jnp.ones(shape), jnp.asarray(1e-4, jnp.float32))


def update(stats: RunningStats, batch: jax.Array) -> RunningStats:
    """``stats`` merged with ``batch``, whose leading axes are samples and whose trailing axes
    have the statistics' shape.

    Example:
      >>> stats = update(RunningStats.initial((3,)), observations.reshape(-1, 3))
    """
    batch = batch.reshape((-1,) + stats.mean.shape).astype(jnp.float32)
    batch_mean, batch_var = batch.mean(0), batch.var(0)
    batch_count = jnp.asarray(batch.shape[0], jnp.float32)
    total = stats.count + batch_count
    delta = batch_mean - stats.mean
    mean = stats.mean + delta * batch_count / total
    m2 = (
        stats.var * stats.count
        + batch_var * batch_count
        + delta**2 * stats.count * batch_count / total
    )
    return RunningStats(mean, m2 / total, total)


def normalize(stats: RunningStats, x: jax.Array) -> jax.Array:
    """``x`` centred and scaled by ``stats``, clipped to +-``CLIP``."""
    return jnp.clip((x - stats.mean) / jnp.sqrt(stats.var + EPSILON), -CLIP, CLIP)


def scale_rewards(stats: RunningStats, reward: jax.Array) -> jax.Array:
    """``reward`` divided by the running standard deviation of the discounted return, not
    centred (a shift would change which policy is best where episodes end), clipped to
    +-``CLIP``: the reward scaling of Engstrom et al. (2020) and Gym's ``NormalizeReward``."""
    return jnp.clip(reward / jnp.sqrt(stats.var + EPSILON), -CLIP, CLIP)


def discounted_returns(running: jax.Array, rewards: jax.Array, dones: jax.Array, gamma):
    """The running discounted return of each environment after each of a rollout's steps
    (``rewards`` and ``dones`` are ``[T, envs]``), from ``running`` before the first, restarting
    at 0 after an episode's end; ``(last, all [T, envs])``. Its variance scales the rewards."""

    def step(carry, t):
        reward, done = t
        carry = carry * gamma + reward
        return carry * (1.0 - done), carry

    return jax.lax.scan(step, running, (rewards, dones))
