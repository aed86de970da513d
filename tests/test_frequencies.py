"""MF-PBT: each sub-population selects on its own rounds, its losers copy its winners, its
migration bracket takes in better members of the others (their hyperparameters only from a
slower one), and a run's history shows the sub-populations evolving on their own rounds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from popjax.config import PBTConfig, SweepConfig
from popjax.data import Dataset
from popjax.errors import ConfigError
from popjax.frequencies import frequency_parents
from popjax.nn import MLP
from popjax.pbt import exploit_sources, pbt_step
from popjax.pbt_settings import check_frequencies, check_pbt, pbt_from_dict, pbt_to_dict
from popjax.plan import Plan
from popjax.population import select
from popjax.space import LogUniform, SearchSpace

from conftest import classifier, members, tree_equal


def mf_pbt_reference(fitness, frequencies, round_index):
    """The rule in plain Python, member by member as the paper's code does it, with quarters:
    ``(weights_parent, hparams_parent, explored)`` lists."""
    size, blocks = len(fitness), len(frequencies)
    per, quarter = size // blocks, size // blocks // 4
    # Ties: the lower index ranks lower (a stable ascending sort, as popjax ranks).
    above = np.empty(size, int)
    above[np.argsort(fitness, kind="stable")] = np.arange(size)
    weights, hparams, explored = list(range(size)), list(range(size)), [False] * size
    for b, delta in enumerate(frequencies):
        if round_index % delta:
            continue
        local = sorted(range(b * per, (b + 1) * per), key=lambda m: -above[m])  # best first
        for k in range(quarter):
            loser, winner = local[per - quarter + k], local[k]
            weights[loser] = hparams[loser] = winner
            explored[loser] = True
        others = sorted((m for m in range(size) if m // per != b), key=lambda m: -above[m])
        for member in local[per - 2 * quarter : per - quarter]:
            migrant = others[0]
            if above[migrant] > above[member]:
                weights[member] = migrant
                faster = frequencies[migrant // per] < delta
                hparams[member] = local[0] if faster else migrant
                others.pop(0)
    return weights, hparams, explored


@pytest.mark.parametrize("frequencies", [(1, 2), (1, 2, 3, 6), (1, 10, 25, 50)])
def test_frequency_parents_match_the_rule_written_member_by_member(frequencies):
    rng = np.random.default_rng(len(frequencies))
    size = 8 * len(frequencies)  # blocks of 8: brackets of 2
    select_fn = jax.jit(frequency_parents, static_argnums=(1, 2))
    for trial in range(12):
        # Few distinct values: ties must follow the same order as pbt_step's ranking.
        fitness = rng.integers(0, 6, size).astype(np.float32)
        round_index = int(rng.integers(1, 60))
        parents, replaced, hparam_parents, explored = select_fn(
            jnp.asarray(fitness), frequencies, 0.25, round_index
        )
        weights, hparams, moved = mf_pbt_reference(fitness, frequencies, round_index)
        assert np.asarray(parents).tolist() == weights, (trial, round_index)
        assert np.asarray(hparam_parents).tolist() == hparams
        assert np.asarray(explored).tolist() == moved
        assert np.asarray(replaced).tolist() == [w != m for m, w in enumerate(weights)]


def test_blocks_select_on_their_own_rounds_and_parents_rank_higher():
    # Block 0 (members 0-3) worst, block 1 (4-7) best: block 0's migrants come from the slower
    # block and bring its hyperparameters.
    fitness = jnp.array([3.0, 2.0, 1.0, 0.0, 7.0, 6.0, 5.0, 4.0])
    parents, _, hparam_parents, explored = frequency_parents(fitness, (1, 2), 0.25, 3)
    assert np.asarray(parents).tolist() == [0, 1, 4, 0, 4, 5, 6, 7]  # block 1 waits (3 % 2)
    assert np.asarray(hparam_parents).tolist() == [0, 1, 4, 0, 4, 5, 6, 7]
    assert np.asarray(explored).tolist() == [False, False, False, True] + [False] * 4
    # Round 4: both select. Block 1's migration bracket (member 6) finds nothing better
    # outside; block 0's member 2 takes in member 4, the best.
    parents, _, hparam_parents, _ = frequency_parents(fitness, (1, 2), 0.25, 4)
    assert np.asarray(parents).tolist() == [0, 1, 4, 0, 4, 5, 6, 4]
    # Block 1 worst: its migrant comes from the faster block, with block 1's best's settings.
    flipped = jnp.concatenate([fitness[4:], fitness[:4]])
    parents, _, hparam_parents, explored = frequency_parents(flipped, (1, 2), 0.25, 4)
    assert np.asarray(parents).tolist() == [0, 1, 2, 0, 4, 5, 0, 4]
    assert np.asarray(hparam_parents).tolist() == [0, 1, 2, 0, 4, 5, 4, 4]
    assert not bool(explored[6])  # a migrant is not explored
    for fit, rnd in ((fitness, 3), (fitness, 4), (flipped, 4)):
        parents, replaced, _, _ = frequency_parents(fit, (1, 2), 0.25, rnd)
        rank = np.argsort(np.asarray(fit), kind="stable")
        above = np.empty(8, int)
        above[rank] = np.arange(8)
        moved = np.flatnonzero(np.asarray(replaced))
        assert (above[np.asarray(parents)[moved]] > above[moved]).all()


def test_diverged_members_copy_the_best_even_when_their_block_waits():
    fitness = jnp.array([3.0, 2.0, 1.0, 0.0, 7.0, jnp.nan, 5.0, 4.0])
    config = PBTConfig(exploit="frequencies", frequencies=(1, 2))
    parents, replaced, hparam_parents, explored = exploit_sources(
        jax.random.PRNGKey(0), fitness, config, round_index=1
    )
    assert int(parents[5]) == int(hparam_parents[5]) == 4  # the best, itself never replaced
    assert bool(replaced[5]) and bool(explored[5])
    assert not np.asarray(replaced)[[4, 6, 7]].any()  # block 1 waits for round 2


def test_pbt_step_takes_weights_and_hyperparameters_from_their_own_sources():
    space = SearchSpace({"learning_rate": LogUniform(1e-3, 1.0)}, builtin=False)
    x, y = np.ones((2, 5), np.float32), np.arange(2, dtype=np.int32)
    task = classifier(Dataset(x, y, x, y, x, y), MLP(hidden=(4,), num_classes=2), batch_size=2)
    population = members(task, space.sample(jax.random.PRNGKey(1), 8))
    flipped = jnp.array([7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    config = PBTConfig(exploit="frequencies", frequencies=(1, 2), resample_probability=0.0)
    new, parents, replaced = pbt_step(
        jax.random.PRNGKey(2), population, flipped, space, config, now=jnp.asarray(4)
    )
    assert np.asarray(parents).tolist() == [0, 1, 2, 0, 4, 5, 0, 4]
    rates = np.asarray(population.hparams["learning_rate"])
    new_rates = np.asarray(new.hparams["learning_rate"])
    assert tree_equal(select(new, 6).state, select(population, 0).state)
    assert new_rates[6] == rates[4]  # the migrant's weights, its own block's best's settings
    for loser, winner in ((3, 0), (7, 4)):  # copied, then perturbed by x0.8 or x1.2
        moves = np.clip(rates[winner] * np.array([0.8, 1.2]), 1e-3, 1.0)
        assert np.isclose(new_rates[loser], moves).any()
    kept = [0, 1, 2, 4, 5]
    assert (new_rates[kept] == rates[kept]).all()


def test_frequencies_settings_are_checked_and_round_trip():
    config = pbt_from_dict({"exploit": "frequencies", "frequencies": [1, 4, 8]})
    check_pbt(config)
    assert pbt_from_dict(pbt_to_dict(config)) == config
    for bad in ([1], [2, 1], [1, 1, 2], [0, 2], [1, 2.5], "1,2"):
        with pytest.raises(ConfigError, match="pbt.frequencies must be"):
            check_pbt(PBTConfig(exploit="frequencies", frequencies=bad))
    with pytest.raises(ConfigError, match='for exploit = "frequencies"'):
        check_pbt(PBTConfig(frequencies=(1, 2)))
    with pytest.raises(ConfigError, match=r"must be in \(0, 1/3\]"):
        check_pbt(PBTConfig(exploit="frequencies", fraction=0.5))


def test_a_population_that_does_not_split_is_refused_before_anything_runs():
    pbt = PBTConfig(exploit="frequencies", frequencies=(1, 2, 4, 8))
    check_frequencies(pbt, 16)
    with pytest.raises(ConfigError, match="multiple of 4"):
        check_frequencies(pbt, 18)
    with pytest.raises(ConfigError, match="population of at least 16"):
        check_frequencies(pbt, 8)
    with pytest.raises(ConfigError, match="population of at least 16"):
        Plan.from_config(SweepConfig(population=12, steps=40, interval=10, pbt=pbt))


@pytest.mark.slow
def test_a_run_s_sub_populations_evolve_on_their_own_rounds(tiny_run):
    pbt = PBTConfig(exploit="frequencies", frequencies=(1, 2))
    result = tiny_run(population=8, steps=50, interval=10, pbt=pbt)
    history = result.history
    for record in history[1:]:
        parents = np.asarray(record["parents"])
        fast, slow = parents[:4] != np.arange(4), parents[4:] != np.arange(4, 8)
        assert fast.any()  # block 0 selects every round: its loser copies its winner
        if record["round"] % 2:
            assert not slow.any()  # block 1 selects on even rounds only
        else:
            assert slow.any()
        # Every copy follows the rule applied to the previous round's validation figures.
        before = history[record["round"] - 1]
        fitness = np.asarray(before[before["selects_on"]], np.float32)
        weights, _, _ = mf_pbt_reference(
            -fitness if before["minimize"] else fitness, (1, 2), record["round"]
        )
        assert parents.tolist() == weights
