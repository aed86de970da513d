"""PBT: exploit copies exactly what it should, explore moves by the given factors within bounds,
and the lineage records what happened."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from popjax.config import PBTConfig
from popjax.data import Dataset
from popjax.lineage import Lineage
from popjax.mesh import population_mesh
from popjax.nn import MLP
from popjax.pbt import (
    copy_members,
    exploit_parents,
    explore,
    pbt_step,
    tournament_parents,
    truncation_parents,
)
from popjax.population import select
from popjax.space import Choice, Fixed, LogUniform, SearchSpace, Uniform

from conftest import classifier, members, run_process, tree_equal

SPACE = SearchSpace(
    {
        "learning_rate": LogUniform(1e-3, 1.0),
        "momentum": Uniform(0.0, 0.9),
        "dropout": Choice((0.0, 0.1, 0.2, 0.3)),
        "weight_decay": Fixed(1e-4),
    }
)


def population_of(size):
    model = MLP(hidden=(8,), num_classes=3, batch_norm=True)
    x, y = np.ones((2, 5), np.float32), np.arange(2, dtype=np.int32)
    task = classifier(Dataset(x, y, x, y, x, y), model, batch_size=2)
    population = members(task, SPACE.sample(jax.random.PRNGKey(1), size), seed=0)
    # Give every member a distinct optimizer state and running statistics, so that copying
    # them is visible.
    distinct = jax.tree_util.tree_map(
        lambda x: x + jnp.arange(size).reshape((-1,) + (1,) * (x.ndim - 1)),
        {k: v for k, v in population.state.items() if k != "params"},
    )
    return population._replace(state={**population.state, **distinct})


def test_truncation_replaces_the_bottom_with_the_top():
    fitness = jnp.array([0.5, 0.1, 0.9, 0.3, 0.8, 0.2, 0.7, 0.6])
    source, replaced = truncation_parents(jax.random.PRNGKey(0), fitness, 0.25)
    assert set(np.flatnonzero(replaced)) == {1, 5}  # the two worst
    assert all(int(source[m]) in {2, 4} for m in (1, 5))  # copy one of the two best
    kept = np.flatnonzero(~np.asarray(replaced))
    assert np.array_equal(np.asarray(source)[kept], kept)


def test_diverged_members_are_replaced_and_never_copied():
    fitness = jnp.array([jnp.nan, 0.5, 0.6, 0.7, jnp.inf, 0.8, 0.9, 0.95])
    for seed in range(5):
        source, replaced = truncation_parents(jax.random.PRNGKey(seed), fitness, 0.25)
        assert bool(replaced[0]) and bool(replaced[4])
        assert set(np.asarray(source).tolist()).isdisjoint({0, 4})


def test_tournament_copies_only_better_members():
    fitness = jnp.arange(16, dtype=jnp.float32)
    source, replaced = tournament_parents(jax.random.PRNGKey(3), fitness)
    source, replaced = np.asarray(source), np.asarray(replaced)
    assert replaced.any()
    assert np.all(fitness[source[replaced]] > fitness[replaced])
    assert np.array_equal(source[~replaced], np.flatnonzero(~replaced))
    assert not replaced[15]  # the best has nobody better to copy


@pytest.mark.parametrize("exploit", ["truncation", "tournament"])
def test_diverged_members_are_replaced_by_healthy_ones_under_every_exploit(exploit):
    # Three healthy members among diverged ones: a tournament often pairs two diverged members,
    # and truncation's bottom quarter holds only two of the five.
    fitness = jnp.array([jnp.nan, 0.5, jnp.inf, jnp.nan, 0.9, -jnp.inf, 0.2, jnp.nan])
    healthy = {1, 4, 6}
    config = PBTConfig(exploit=exploit, fraction=0.25)
    sources = []
    for seed in range(20):
        source, replaced = exploit_parents(jax.random.PRNGKey(seed), fitness, config)
        source, replaced = np.asarray(source), np.asarray(replaced)
        for member in range(8):
            if member in healthy:
                # A healthy member copies only a better one, if any.
                assert source[member] in healthy
                assert replaced[member] == (source[member] != member)
                assert not replaced[4]  # the best
            else:
                assert replaced[member] and source[member] in healthy
        sources.append(source)
    assert len({s.tobytes() for s in sources}) > 1  # the draws differ between keys


# (fitness, source): sources always rank higher, as every exploit method makes them; the
# second case is a chain (0 copies 3, which copies 5, which copies 7) as a tournament makes.
COPIES = [
    ([5, 0, 5, 5, 5, 1, 6, 7], [0, 6, 2, 3, 4, 7, 6, 7]),
    ([0, 4, 1, 3, 2, 5, 6, 7], [3, 1, 2, 5, 4, 7, 6, 7]),
]


@pytest.mark.parametrize("fitness, source", COPIES)
def test_copy_takes_every_leaf_of_the_state_and_hparams_exactly(fitness, source):
    population = population_of(8)
    assert set(population.state) == {"params", "opt_state", "batch_stats"}
    source = jnp.array(source)
    rank = jnp.argsort(jnp.asarray(fitness, jnp.float32))
    one_device = population_mesh(jax.devices()[:1])  # copied in place, worst first
    copied = jax.jit(copy_members, static_argnums=3)(population, source, rank, one_device)
    for member, src in enumerate(np.asarray(source)):
        want, got = select(population, int(src)), select(copied, member)
        assert tree_equal(got.state, want.state)
        assert tree_equal(got.hparams, want.hparams)
        # A member keeps its own key stream and id.
        assert np.array_equal(got.rng, population.rng[member])
        assert int(got.member_ids) == member


RING = """
import jax, jax.numpy as jnp, numpy as np
from popjax.mesh import member_sharding, population_mesh, take_members
mesh = population_mesh()
tree = {"w": jnp.arange(16 * 3 * 2, dtype=jnp.float32).reshape(16, 3, 2), "b": jnp.arange(16)}
source = jnp.asarray(np.random.default_rng(0).integers(0, 16, 16), jnp.int32)
sharded = jax.device_put(tree, member_sharding(mesh))
taken = jax.jit(take_members, static_argnums=3)(sharded, source, jnp.arange(16), mesh)
for name in tree:
    assert np.array_equal(taken[name], np.asarray(tree[name])[np.asarray(source)]), name
assert taken["w"].sharding.spec == member_sharding(mesh).spec
# On a CPU no permute of the ring runs inside a loop: XLA's CPU runtime orders top-level
# collectives alone, and one in a loop could deadlock against a round's gathers.
compiled = jax.jit(take_members, static_argnums=3).lower(sharded, source, jnp.arange(16), mesh)
lines = [l for l in compiled.compile().as_text().splitlines() if "collective-permute(" in l]
assert lines and not any("while/body" in l for l in lines), lines
print("ok", jax.device_count())
"""


@pytest.mark.slow
@pytest.mark.version_sensitive
@pytest.mark.timeout(120)
def test_members_copied_across_devices_arrive_whole_and_stay_sharded():
    done = run_process(["python", "-c", RING], devices=4, timeout=100)
    assert done.stdout.strip() == "ok 4", done.stderr[-2000:]


def test_explore_moves_by_the_factors_and_stays_in_bounds():
    size = 512
    hparams = SPACE.sample(jax.random.PRNGKey(2), size)
    replaced = jnp.arange(size) % 2 == 0
    config = PBTConfig(resample_probability=0.0, perturb_factors=(0.8, 1.2))
    new = jax.jit(explore, static_argnums=(2, 4))(
        jax.random.PRNGKey(5), hparams, SPACE, replaced, config
    )
    for name in hparams:
        old_v, new_v = np.asarray(hparams[name]), np.asarray(new[name])
        assert np.array_equal(old_v[1::2], new_v[1::2]), name  # kept members are untouched
    lr_old, lr_new = (
        np.asarray(hparams["learning_rate"])[::2],
        np.asarray(new["learning_rate"])[::2],
    )
    unclipped = (lr_old * 0.8 >= 1e-3) & (lr_old * 1.2 <= 1.0)
    ratios = lr_new[unclipped] / lr_old[unclipped]
    assert np.all(np.isclose(ratios, 0.8, rtol=1e-5) | np.isclose(ratios, 1.2, rtol=1e-5))
    assert 0.3 < np.mean(np.isclose(ratios, 0.8, rtol=1e-5)) < 0.7
    for name, prior in SPACE.priors.items():
        values = np.asarray(new[name])
        if isinstance(prior, (LogUniform, Uniform)):
            assert values.min() >= np.float32(prior.low) and values.max() <= np.float32(prior.high)
    # A choice moves to a neighbouring option; a fixed value never moves.
    options = list(SPACE.priors["dropout"].values)
    steps = [
        abs(options.index(round(float(b), 6)) - options.index(round(float(a), 6)))
        for a, b in zip(np.asarray(hparams["dropout"])[::2], np.asarray(new["dropout"])[::2])
    ]
    assert set(steps) <= {0, 1} and 1 in steps
    assert np.all(np.asarray(new["weight_decay"]) == np.float32(1e-4))


def test_explore_resamples_from_the_prior_with_the_given_probability():
    size = 2000
    hparams = {k: v for k, v in SPACE.sample(jax.random.PRNGKey(2), size).items()}
    hparams["momentum"] = jnp.full(size, 0.5)
    config = PBTConfig(resample_probability=0.25, perturb_factors=(0.8, 1.2))
    new = np.asarray(
        explore(jax.random.PRNGKey(9), hparams, SPACE, jnp.ones(size, bool), config)["momentum"]
    )
    perturbed = np.isclose(new, 0.4) | np.isclose(new, 0.6)
    assert 0.2 < 1 - perturbed.mean() < 0.3
    assert new.min() >= 0.0 and new.max() <= np.float32(0.9)


def test_inactive_pbt_step_changes_nothing():
    population = population_of(8)
    fitness = jnp.arange(8, dtype=jnp.float32)
    same, source, replaced = pbt_step(
        jax.random.PRNGKey(0), population, fitness, SPACE, PBTConfig(), active=jnp.asarray(False)
    )
    assert not np.asarray(replaced).any()
    assert tree_equal(same, population)
    changed, _, replaced = pbt_step(
        jax.random.PRNGKey(0), population, fitness, SPACE, PBTConfig(), active=jnp.asarray(True)
    )
    assert int(np.asarray(replaced).sum()) == 2


def test_lineage_follows_parents_back_through_every_copy():
    lineage = Lineage(interval=10)
    lineage.record([0, 1, 2], {"learning_rate": [0.1, 0.2, 0.3]})
    lineage.record([0, 0, 2], {"learning_rate": [0.1, 0.12, 0.3]})  # 1 copies 0
    lineage.record([0, 1, 1], {"learning_rate": [0.1, 0.12, 0.1]})  # 2 copies 1
    assert lineage.ancestry(2) == [0, 1, 2]
    history = lineage.history(2)
    assert [h["hparams"]["learning_rate"] for h in history] == [0.1, 0.12, 0.1]
    assert [h["copied_from"] for h in history] == [None, 0, 1]
    assert [(h["start_step"], h["end_step"]) for h in history] == [(0, 10), (10, 20), (20, 30)]
    again = Lineage.from_dict(lineage.to_dict())
    assert again.history(2) == history


@pytest.mark.parametrize("exploit", ["truncation", "tournament"])
def test_pbt_step_copies_then_explores(exploit):
    population = population_of(8)
    fitness = jnp.array([0.5, 0.1, 0.9, 0.3, 0.8, 0.2, 0.7, 0.6])
    config = PBTConfig(exploit=exploit, resample_probability=0.0)
    new, source, replaced = jax.jit(pbt_step, static_argnums=(3, 4))(
        jax.random.PRNGKey(4), population, fitness, SPACE, config
    )
    for member in range(8):
        src = int(source[member])
        assert tree_equal(select(new, member).params, select(population, src).params)
        if not bool(replaced[member]):
            assert src == member
            assert tree_equal(select(new, member).hparams, select(population, member).hparams)


def test_explore_draws_each_hyperparameter_as_its_own_keys_would():
    """The batched draws give each hyperparameter the numbers of its own key, drawn one
    hyperparameter at a time with JAX's samplers, whatever kinds of prior sit in between
    (both compiled: XLA's exp may differ from eager's in the last bit)."""
    space = SearchSpace(
        {
            "a": LogUniform(1e-4, 0.5),
            "b": Choice((16.0, 32.0, 64.0)),
            "c": Fixed(0.1),
            "d": Uniform(2.0, 3.0),
        },
        builtin=False,
    )
    config = PBTConfig(resample_probability=0.5, perturb_factors=(0.5, 1.0, 2.0))
    size = 16
    hparams = space.sample(jax.random.PRNGKey(4), size)
    replaced = jnp.arange(size) % 3 != 0
    factors = jnp.asarray(config.perturb_factors, jnp.float32)

    def one_at_a_time(key, hparams):
        expected = {}
        for name, key_n in zip(hparams, jax.random.split(key, len(hparams))):
            prior, value = space.priors[name], hparams[name]
            resample_key, choice_key, prior_key = jax.random.split(key_n, 3)
            resampled = jax.random.bernoulli(resample_key, 0.5, (size,))
            if isinstance(prior, Fixed):
                expected[name] = value
                continue
            if isinstance(prior, Choice):
                step = jnp.where(jax.random.bernoulli(choice_key, 0.5, (size,)), 1, -1)
                index = jnp.clip(prior.index_of(value) + step, 0, 2)
                moved = jnp.asarray(prior.values, jnp.float32)[index]
            else:
                factor = factors[jax.random.randint(choice_key, (size,), 0, 3)]
                moved = prior.clip(value * factor)
            new = jnp.where(resampled, prior.sample(prior_key, (size,)), moved)
            expected[name] = jnp.where(replaced, new, value)
        return expected

    key = jax.random.PRNGKey(3)
    explored = jax.jit(lambda k, h: explore(k, h, space, replaced, config))(key, hparams)
    expected = jax.jit(one_at_a_time)(key, hparams)
    for name in hparams:
        np.testing.assert_array_equal(np.asarray(explored[name]), np.asarray(expected[name]), name)


@pytest.mark.slow
def test_no_member_is_copied_within_the_burn_in(tiny_run):
    from popjax.report import describe_pbt

    burn_in = PBTConfig(burn_in=30)  # rounds of 10 steps: the first exploit begins round 3
    result = tiny_run(pbt=burn_in)
    unsearched = tiny_run(pbt=PBTConfig(enabled=False))  # the same members, never copied
    for record, alone in zip(result.history, unsearched.history):
        copied = np.asarray(record["parents"]) != np.arange(4)
        if record["round"] < 3:
            assert not copied.any()
            np.testing.assert_array_equal(record["val_loss"], alone["val_loss"])
        else:
            assert copied.sum() == 1  # truncation: the bottom quarter of 4 members
    assert "the first after 30 steps" in describe_pbt(result.config, result.lineage)


@pytest.mark.parametrize(
    "pbt, steps, message",
    [
        (PBTConfig(burn_in=60), 60, "never exploit: give a burn_in of at most 50"),
        (PBTConfig(exploit="halving", restart="prior", burn_in=10), 60, "rungs say when"),
    ],
)
def test_a_burn_in_that_would_do_nothing_is_a_one_line_error(pbt, steps, message):
    from popjax import PopjaxError, SweepConfig

    with pytest.raises(PopjaxError, match=message):
        SweepConfig(pbt=pbt, steps=steps, interval=10).validate()
