"""Multiple-frequencies PBT (MF-PBT; Doulazmi et al., 2025, arXiv:2506.03225) as a jittable
exploit: sub-populations that select at different frequencies, and an asymmetric migration
between them.

The members split into equal contiguous blocks, one per frequency ``delta``: block ``b`` selects
at the start of every round that ``delta_b`` divides. When it does, its members are ranked
(best first) into four brackets of ``fraction`` of the block each, top to bottom: the winners,
the middle, the migration bracket and the losers.

* Inside the block, the ``k``-th loser copies the ``k``-th winner (weights and hyperparameters)
  and explores.
* Each member of the migration bracket, best first, meets the best member of the other blocks
  not yet taken this round; if that member is better, it takes its weights, and its
  hyperparameters too when the migrant comes from a slower block. A migrant from a faster block
  brings its weights alone: the member takes the hyperparameters of its own block's best, so a
  greedy short-term setting does not spread into the slower blocks. Migrants are not explored.

All copies read the members as they were before the round, so every parent ranks strictly above
the member that copies it.
"""

from __future__ import annotations

import jax.numpy as jnp


def frequency_parents(fitness, frequencies: tuple[int, ...], fraction: float, round_index):
    """MF-PBT's exploit: ``(parents, replaced, hparam_parents, explored)``, all ``[P]``.

    Args:
      fitness: ``[P]``, higher is better; a non-finite figure ranks below every finite one.
      frequencies: the rounds between two selections of each block, slowest last, e.g.
        ``(1, 10, 25, 50)``; the population splits into that many equal contiguous blocks.
      fraction: each bracket's share of a block (0.25: quarters, as in the paper).
      round_index: the round about to train (traced); block ``b`` selects when
        ``frequencies[b]`` divides it.

    Returns:
      ``parents``: whose weights each member takes (itself if kept); ``replaced``: whether it
      takes another's; ``hparam_parents``: whose hyperparameters it takes; ``explored``:
      whether they are then explored (the losers that copied a winner).

    Example:
      >>> # Round 1: block 0 (members 0-3) selects, block 1 waits for round 2. Member 0, its
      >>> # loser, copies member 3, its winner; member 1 takes in member 7 from block 1.
      >>> frequency_parents(jnp.arange(8.0), (1, 2), 0.25, 1)[0]
      Array([3, 7, 2, 3, 4, 5, 6, 7], dtype=int32)
    """
    size, blocks = fitness.shape[0], len(frequencies)
    per_block = size // blocks
    count = int(fraction * per_block)
    identity = jnp.arange(size, dtype=jnp.int32)
    none = jnp.zeros(size, bool)
    if blocks < 1 or count < 1 or size % blocks:
        return identity, none, identity, none
    safe = jnp.where(jnp.isfinite(fitness), fitness, -jnp.inf)
    # The position of each member in the stable ascending order pbt_step ranks by: a parent
    # must be strictly above its child there.
    position = jnp.zeros(size, jnp.int32).at[jnp.argsort(safe)].set(identity)
    block_of = identity // per_block
    # Each block's members, best first, as member indices.
    order = jnp.argsort(-position.reshape(blocks, per_block), axis=1).astype(jnp.int32)
    order = order + (jnp.arange(blocks, dtype=jnp.int32) * per_block)[:, None]
    delta = jnp.asarray(frequencies, jnp.int32)
    selecting = jnp.asarray(round_index, jnp.int32) % delta == 0  # [blocks]

    winners, losers = order[:, :count], order[:, per_block - count :]
    parents = identity.at[losers].set(jnp.where(selecting[:, None], winners, losers))
    hparam_parents = parents
    explored = parents != identity

    # The other blocks' members, best first, for each block.
    outside = jnp.where(block_of[None, :] == jnp.arange(blocks)[:, None], -1, position[None, :])
    candidates = jnp.argsort(-outside, axis=1)[:, : size - per_block].astype(jnp.int32)
    migrating = order[:, per_block - 2 * count : per_block - count]
    taken = jnp.zeros(blocks, jnp.int32)  # migrants each block has taken so far this round
    rows = jnp.arange(blocks)
    for k in range(count):
        member = migrating[:, k]
        migrant = candidates[rows, taken]
        moves = selecting & (position[migrant] > position[member])
        slower = delta[block_of[migrant]] > delta
        source = jnp.where(slower, migrant, order[:, 0])
        parents = parents.at[member].set(jnp.where(moves, migrant, member))
        hparam_parents = hparam_parents.at[member].set(jnp.where(moves, source, member))
        taken = taken + moves
    return parents, parents != identity, hparam_parents, explored
