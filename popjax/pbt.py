"""Population-based training as jittable functions: exploit (who copies whom) and explore.

Exploit returns, for every member, the index of the member it takes its weights from (itself
when it is kept). The copy is a gather on the member axis, so weights never leave the device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from popjax import pb2
from popjax.frequencies import frequency_parents
from popjax.mesh import take_members
from popjax.population import Population
from popjax.space import Fixed, LogUniform, SearchSpace, Uniform

if TYPE_CHECKING:
    from popjax.pbt_settings import PBTConfig


def safe_fitness(fitness):
    """NaN or infinite fitness (a diverged member) ranks below every finite one."""
    return jnp.where(jnp.isfinite(fitness), fitness, -jnp.inf)


def truncation_parents(key, fitness, fraction: float):
    """Truncation selection: ``(parents [P] int32, replaced [P] bool)``.

    The ``floor(fraction * P)`` worst members each copy a member drawn uniformly from the same
    number of best members; all others are their own parent.
    """
    size = fitness.shape[0]
    count = int(fraction * size)
    identity = jnp.arange(size, dtype=jnp.int32)
    if count == 0:
        return identity, jnp.zeros(size, bool)
    order = jnp.argsort(safe_fitness(fitness)).astype(jnp.int32)  # worst first
    bottom, top = order[:count], order[size - count :]
    picks = top[jax.random.randint(key, (count,), 0, count)]
    return identity.at[bottom].set(picks), jnp.zeros(size, bool).at[bottom].set(True)


def tournament_parents(key, fitness):
    """Binary tournament: each member meets a uniformly drawn other and copies it if better."""
    size = fitness.shape[0]
    identity = jnp.arange(size, dtype=jnp.int32)
    if size < 2:
        return identity, jnp.zeros(size, bool)
    other = (identity + jax.random.randint(key, (size,), 1, size)) % size
    fitness = safe_fitness(fitness)
    replaced = fitness[other] > fitness
    return jnp.where(replaced, other, identity), replaced


def exploit_parents(key, fitness, config: PBTConfig, rung=True, round_index=0):
    """Who copies whose weights: ``(parents [P], replaced [P])`` (see ``exploit_sources``)."""
    parents, replaced, _, _ = exploit_sources(key, fitness, config, rung, round_index)
    return parents, replaced


def exploit_sources(key, fitness, config: PBTConfig, rung=True, round_index=0):
    """Who copies whom: ``(parents, replaced, hparam_parents, explored)``, all ``[P]``.

    ``parents``: whose weights each member takes (itself when kept); ``hparam_parents``: whose
    hyperparameters (the same member, except for MF-PBT's migrants from a faster block, see
    ``popjax.frequencies``); ``explored``: whose hyperparameters are then explored. A diverged
    member (non-finite fitness) is always replaced, by the best member when its exploit method
    would have kept it, and is never a parent. Successive halving copies as truncation does,
    at its rungs only (``rung``, traced); MF-PBT's blocks select on their own rounds
    (``round_index``, traced).
    """
    if config.exploit == "frequencies":
        parents, replaced, hparam_parents, explored = frequency_parents(
            fitness, tuple(config.frequencies), config.fraction, round_index
        )
    else:
        if config.exploit == "tournament":
            parents, replaced = tournament_parents(key, fitness)
        else:  # truncation, and successive halving at its rungs
            parents, replaced = truncation_parents(key, fitness, config.fraction)
            replaced = replaced & (rung if config.exploit == "halving" else True)
            parents = jnp.where(
                replaced, parents, jnp.arange(parents.shape[0], dtype=parents.dtype)
            )
        hparam_parents, explored = parents, replaced
    diverged = ~jnp.isfinite(fitness)
    best = jnp.argmax(safe_fitness(fitness)).astype(parents.dtype)
    rescued = diverged & ~replaced
    parents = jnp.where(rescued, best, parents)
    hparam_parents = jnp.where(rescued, best, hparam_parents)
    return parents, replaced | diverged, hparam_parents, explored | rescued


def copy_members(
    population: Population, parents, rank, mesh=None, hparam_parents=None
) -> Population:
    """Members take their whole task state (every leaf) and hyperparameters from ``parents``,
    which always ranks higher in ``rank`` (member indices from worst to best); their
    hyperparameters from ``hparam_parents`` instead, if given (any member).

    Each keeps its own key stream, id and step count, so a copy does not replay its parent's
    batches and dropout masks. The states are copied without a second copy of the population
    (see ``popjax.mesh.take_members``).
    """
    return population._replace(
        state=take_members(population.state, parents, rank, mesh),
        hparams={
            name: value[parents if hparam_parents is None else hparam_parents]
            for name, value in population.hparams.items()
        },
    )


def explore(
    key, hparams: Mapping[str, jax.Array], space: SearchSpace, replaced, config: PBTConfig
) -> dict[str, jax.Array]:
    """Perturbs the hyperparameters of the ``replaced`` members; the others are left as they are.

    Each value is multiplied by one of ``config.perturb_factors`` (a choice moves to a
    neighbouring option instead) or, with ``config.resample_probability``, drawn anew from its
    prior; the result is clipped to the prior's bounds. Fixed hyperparameters never change.
    """
    factors = jnp.asarray(config.perturb_factors, jnp.float32)
    keys = jax.random.split(key, len(hparams))
    names = list(hparams)
    ranged = [i for i, name in enumerate(names) if isinstance(space.priors[name], Ranged)]
    # The ranged priors' draws as one batch: each random call below is one threefry loop in the
    # compiled round for all of them together, rather than one per hyperparameter; the same
    # keys give the same numbers.
    draws = {}
    if ranged:
        priors = [space.priors[names[i]] for i in ranged]
        lows = jnp.asarray([_sampled_bounds(prior)[0] for prior in priors], jnp.float32)
        highs = jnp.asarray([_sampled_bounds(prior)[1] for prior in priors], jnp.float32)
        shape = hparams[names[ranged[0]]].shape

        def draw(key_n, low, high):
            resample_key, choice_key, prior_key = jax.random.split(key_n, 3)
            return (
                jax.random.randint(choice_key, shape, 0, factors.shape[0]),
                jax.random.bernoulli(resample_key, config.resample_probability, shape),
                jax.random.uniform(prior_key, shape, minval=low, maxval=high),
            )

        batch = jax.vmap(draw)(keys[jnp.asarray(ranged)], lows, highs)
        draws = {names[i]: [part[row] for part in batch] for row, i in enumerate(ranged)}
    explored = {}
    for name, key_n in zip(names, keys):
        value, prior = hparams[name], space.priors[name]
        if isinstance(prior, Fixed):
            explored[name] = value
            continue
        shape = value.shape
        if name in draws:
            index, resampled, drawn = draws[name]
            perturbed = prior.clip(value * factors[index])
            sample = jnp.exp(drawn) if isinstance(prior, LogUniform) else drawn
            new = jnp.where(resampled, sample.astype(value.dtype), perturbed)
            explored[name] = jnp.where(replaced, new, value)
            continue
        resample_key, choice_key, prior_key = jax.random.split(key_n, 3)
        step = jnp.where(jax.random.bernoulli(choice_key, 0.5, shape), 1, -1)
        index = jnp.clip(prior.index_of(value) + step, 0, len(prior.values) - 1)
        perturbed = jnp.asarray(prior.values, jnp.float32)[index]
        resampled = jax.random.bernoulli(resample_key, config.resample_probability, shape)
        new = jnp.where(resampled, prior.sample(prior_key, shape).astype(value.dtype), perturbed)
        explored[name] = jnp.where(replaced, new, value)
    return explored


Ranged = (LogUniform, Uniform)


def _sampled_bounds(prior) -> tuple[float, float]:
    """The bounds ``prior.sample`` draws uniformly between (a log-uniform's in logs)."""
    if isinstance(prior, LogUniform):
        return math.log(prior.low), math.log(prior.high)
    return prior.low, prior.high


def pbt_step(
    key,
    population: Population,
    fitness,
    space: SearchSpace,
    config: PBTConfig,
    active=True,
    mesh=None,
    observations: pb2.Observations | None = None,
    now=0,
    rung=True,
):
    """One exploit + explore. Returns ``(population, parents [P], replaced [P])``.

    ``active`` (a traced bool) switches the step off without a second compiled program: the
    first round has no fitness to select on yet. ``mesh``: the devices the members are spread
    over, if several. With ``config.explore == "pb2"``, ``observations`` are what PB2's model
    learns from and ``now`` the round the new hyperparameters train in (see ``popjax.pb2``).
    ``rung``: whether successive halving decides this round. ``replaced``: the members that
    took another's weights; with MF-PBT, its migrants are not explored (``exploit_sources``).
    """
    exploit_key, explore_key, pb2_key = jax.random.split(key, 3)
    parents, replaced, hparam_parents, explored = exploit_sources(
        exploit_key, fitness, config, rung, now
    )
    replaced, explored = replaced & active, explored & active
    identity = jnp.arange(parents.shape[0], dtype=parents.dtype)
    parents = jnp.where(replaced, parents, identity)
    hparam_parents = jnp.where(replaced, hparam_parents, identity)
    # Every exploit method copies from a member ranked strictly higher (diverged members
    # rank lowest and copy the best), in the order the stable sort gives ties.
    rank = jnp.argsort(safe_fitness(fitness)).astype(jnp.int32)
    population = copy_members(population, parents, rank, mesh, hparam_parents)
    hparams = explore(explore_key, population.hparams, space, explored, config)
    if config.explore == "pb2" and pb2.searched(space):
        # Until a round's gains are seen, PB2's model knows nothing: perturb meanwhile.
        def propose(key, observations, hparams, replaced, now):
            return pb2.propose(key, observations, hparams, space, replaced, now)

        if mesh is not None and mesh.size > 1:
            # Each device fits the whole (small) model on its own, rather than XLA splitting
            # its sequential Cholesky and solve loops over the devices that hold the members.
            everywhere = PartitionSpec()
            propose = jax.shard_map(propose, mesh=mesh, in_specs=everywhere, out_specs=everywhere)
        chosen, informed = propose(
            pb2_key, observations.flat(), population.hparams, explored, jnp.asarray(now)
        )
        hparams = {name: jnp.where(informed, chosen[name], hparams[name]) for name in hparams}
    return population._replace(hparams=hparams), parents, replaced
