"""Asynchronous successive halving (ASHA) inside one population.

A trial reaches rung ``r`` once it has trained ``r`` rounds of its own, counted from its start:
a slot restarted at round 5 reaches rung 2 at round 7. Every trial that reaches a rung leaves
its fitness in that rung's record, and stops if it is in the bottom ``fraction`` of every trial
that has reached the rung so far, those arriving with it included (ASHA promotes the top
``1 / eta`` of a rung's record; here the rest stop). A new trial is so judged against trials of
its own age, never against older ones; the first arrivals at a rung (at the first rung, the
whole population at once) are judged together, as synchronous successive halving does.

The records stay on the device, member axis first (``[P, rungs, arrivals]``: slot ``p``'s
``i``-th trial to reach rung ``k``), so they are split over devices with the members.
A stopped slot begins again as a new trial (``restart_members``). Halving with copies instead
is PBT's truncation at the rungs alone (``at_rung``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp

from popjax.population import Population

if TYPE_CHECKING:
    from popjax.space import SearchSpace


def judged_rungs(rungs, rounds: int) -> tuple[int, ...]:
    """The rungs a run of ``rounds`` rounds reaches: a trial is judged at the start of round
    ``r`` after ``r`` rounds of training, so ``r`` must be below ``rounds``."""
    return tuple(r for r in rungs if r < rounds)


class RungRecords(NamedTuple):
    """The fitness each trial had when it reached each rung."""

    fitness: jax.Array  # [P, K, M]: slot p's i-th arrival at rung k; -inf where none yet
    count: jax.Array  # [P, K] int32: arrivals of slot p at rung k so far

    @classmethod
    def empty(cls, size: int, rungs, rounds: int) -> RungRecords:
        judged = judged_rungs(rungs, rounds)
        # A slot's trials reach rung k at most once every k rounds.
        arrivals = max(1, (rounds - 1) // judged[0]) if judged else 1
        return cls(
            jnp.full((size, len(judged), arrivals), -jnp.inf, jnp.float32),
            jnp.zeros((size, len(judged)), jnp.int32),
        )


def judge(records: RungRecords, age, fitness, rungs, fraction: float):
    """``(stopped [P] bool, records)``: the members whose trial reaches a rung now (``age``,
    rounds of its own, equals the rung) and ranks in the bottom ``fraction`` of the rung's
    record, and the records with the arrivals added. Among arrivals with equal fitness the lower
    member index counts as worse, as a stable sort has it. Diverged members (non-finite
    fitness) are not recorded; the caller restarts them anyway."""
    size, num_rungs, capacity = records.fitness.shape
    rung_ages = jnp.asarray(rungs[:num_rungs], jnp.int32)
    finite = jnp.isfinite(fitness)
    arriving = (age[:, None] == rung_ages[None, :]) & finite[:, None]  # [P, K]

    # Earlier arrivals at least as good: from each rung's sorted record (-inf sorts first and
    # is never >= a finite fitness).
    past = jnp.sort(jnp.moveaxis(records.fitness, 1, 0).reshape(num_rungs, -1), axis=1)
    past_count = records.count.sum(axis=0)  # [K]
    at_least = jax.vmap(lambda r: r.shape[0] - jnp.searchsorted(r, fitness, side="left"))(past)
    # Arrivals better than each other: a member's rank among this round's arrivals at the rung.
    key = jnp.where(arriving, fitness[:, None], -jnp.inf)  # [P, K]
    rank = jnp.argsort(jnp.argsort(key, axis=0, stable=True), axis=0, stable=True)
    better_now = size - 1 - rank  # [P, K]

    better = at_least.T + better_now
    total = past_count + arriving.sum(axis=0)  # [K]
    kept = total - jnp.floor(fraction * total).astype(jnp.int32)
    stopped = jnp.any(arriving & (better >= kept[None, :]), axis=1)

    slot = (records.count[..., None] == jnp.arange(capacity)) & arriving[..., None]
    updated = RungRecords(
        jnp.where(slot, fitness[:, None, None], records.fitness),
        records.count + arriving.astype(jnp.int32),
    )
    return stopped, updated


def at_rung(round_index, rungs) -> jax.Array:
    """Whether successive halving with copies decides at the start of this round (after
    ``round_index`` rounds; every member's weights are that old)."""
    return jnp.any(round_index == jnp.asarray(rungs, jnp.int32))


def restart_members(key, population: Population, restart, space: SearchSpace, fresh_state):
    """The ``restart`` members begin again as new trials: hyperparameters drawn from the
    priors, fresh weights and optimizer state from ``fresh_state(key, hparams)`` (all members'
    states, of which only theirs are kept) and a step count of 0. They keep their key stream,
    so their batches differ from any other member's."""
    hparams_key, state_key = jax.random.split(key)
    drawn = space.sample(hparams_key, population.size)
    hparams = {
        name: jnp.where(restart, drawn[name], value) for name, value in population.hparams.items()
    }

    def restarted():
        fresh = fresh_state(state_key, hparams)
        return jax.tree_util.tree_map(
            lambda new, old: jnp.where(restart.reshape((-1,) + (1,) * (old.ndim - 1)), new, old),
            fresh,
            population.state,
        )

    # Off the rungs, nothing is initialised.
    state = jax.lax.cond(jnp.any(restart), restarted, lambda: population.state)
    step = jnp.where(restart, 0, population.step)
    return population._replace(state=state, hparams=hparams, step=step)
