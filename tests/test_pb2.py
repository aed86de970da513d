"""PB2's Gaussian process against closed forms in numpy, and its explore against random
perturbation on a fitness with a known optimum."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

import popjax
from popjax import pb2
from popjax.config import PBTConfig
from popjax.pbt import explore, truncation_parents
from popjax.space import Choice, LogUniform, SearchSpace, Uniform

from conftest import run_process

pytestmark = pytest.mark.timeout(120)


def numpy_kernel(x1, t1, x2, t2, lengthscale, forgetting):
    distance = ((x1[:, None, :] - x2[None, :, :]) ** 2).sum(-1)
    return np.exp(-distance / (2 * lengthscale**2)) * (1 - forgetting) ** (
        np.abs(t1[:, None] - t2[None, :]) / 2
    )


@pytest.fixture
def small_case():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(12, 2))
    t = rng.integers(0, 3, size=12).astype(float)
    y = rng.normal(size=12)
    valid = np.ones(12, bool)
    valid[[2, 7, 11]] = False  # e.g. rounds not played yet: they must not count
    y[~valid] = 1e6  # whatever sits there
    queries = rng.uniform(size=(5, 2))
    return x, t, y, valid, queries


def test_posterior_equals_the_closed_form(small_case):
    x, t, y, valid, queries = small_case
    lengthscale, forgetting, noise = 0.3, 0.2, 0.05
    now = np.full(5, 3.0)
    mean, covariance = pb2.posterior(
        *map(jnp.asarray, (x, t, y, valid, queries, now)), lengthscale, forgetting, noise
    )
    xv, tv, yv = x[valid], t[valid], y[valid]
    gram = numpy_kernel(xv, tv, xv, tv, lengthscale, forgetting) + noise * np.eye(len(xv))
    cross = numpy_kernel(queries, now, xv, tv, lengthscale, forgetting)
    expected_mean = cross @ np.linalg.solve(gram, yv)
    expected_cov = numpy_kernel(queries, now, queries, now, lengthscale, forgetting) - (
        cross @ np.linalg.solve(gram, cross.T)
    )
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(covariance, expected_cov, rtol=1e-4, atol=1e-4)


def test_marginal_likelihood_equals_a_multivariate_normal(small_case):
    x, t, y, valid, _ = small_case
    lengthscale, forgetting, noise = 0.5, 0.1, 0.1
    got = pb2.log_marginal_likelihood(
        *map(jnp.asarray, (x, t, y, valid)), lengthscale, forgetting, noise
    )
    xv, tv = x[valid], t[valid]
    gram = numpy_kernel(xv, tv, xv, tv, lengthscale, forgetting) + noise * np.eye(len(xv))
    expected = multivariate_normal(np.zeros(len(xv)), gram).logpdf(y[valid])
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_unit_coordinates_round_trip_and_choices_snap():
    space = SearchSpace(
        {
            "learning_rate": LogUniform(1e-4, 1.0),
            "momentum": Uniform(0.5, 0.9),
            "batch": Choice((16, 32, 64)),
        },
        builtin=False,
    )
    hparams = {
        "learning_rate": jnp.array([1e-4, 1e-2, 1.0]),
        "momentum": jnp.array([0.5, 0.7, 0.9]),
        "batch": jnp.array([16.0, 32.0, 64.0]),
    }
    unit = pb2.to_unit(hparams, space)
    np.testing.assert_allclose(unit[:, 0], [0.0, 0.5, 1.0], atol=1e-6)  # log scale
    np.testing.assert_allclose(unit[:, 1], [0.0, 0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(unit[:, 2], [0.0, 0.5, 1.0], atol=1e-6)
    back = pb2.from_unit(unit, space)
    for name in hparams:
        np.testing.assert_allclose(back[name], hparams[name], rtol=1e-5)
    off_grid = pb2.from_unit(jnp.array([[0.3, 0.3, 0.3]]), space)
    assert float(off_grid["batch"][0]) == 32.0


def test_picks_spread_out_where_the_gp_knows_nothing():
    candidates = jnp.linspace(0, 1, 50)[:, None]
    time = jnp.zeros(50)
    covariance = pb2.kernel(candidates, time, candidates, time, 0.1, 0.0)
    picks = np.asarray(pb2.choose_batch(jnp.zeros(50), covariance, 4, 2.0, 0.01))
    assert len(set(picks.tolist())) == 4
    chosen = np.sort(np.asarray(candidates[picks, 0]))
    assert np.diff(chosen).min() > 0.1  # a lengthscale apart at least


OPTIMUM = np.array([0.75, 0.25])


def improvement(unit):
    """A smooth fitness improvement of two hyperparameters, best at ``OPTIMUM``."""
    return np.exp(-((unit - OPTIMUM) ** 2).sum(-1) / (2 * 0.2**2))


def test_pb2_moves_replaced_members_closer_to_the_optimum_than_perturbation():
    space = SearchSpace(
        {"learning_rate": LogUniform(1e-4, 1.0), "momentum": Uniform(0.0, 1.0)}, builtin=False
    )
    size, rounds = 16, 3
    pb2_distance, perturb_distance = [], []
    propose = jax.jit(pb2.propose, static_argnames=("space",))
    for seed in range(8):
        rng = np.random.default_rng(seed)
        # Rounds of a population that has explored at random so far.
        x = rng.uniform(size=(rounds, size, 2))
        y = improvement(x) + 0.02 * rng.normal(size=(rounds, size))
        t = np.repeat(np.arange(rounds, dtype=float), size)
        observations = tuple(
            jnp.asarray(a) for a in (x.reshape(-1, 2), t, y.ravel(), np.ones(rounds * size, bool))
        )
        present = x[-1]
        hparams = pb2.from_unit(jnp.asarray(present, jnp.float32), space)
        key = jax.random.PRNGKey(seed)
        source, replaced = truncation_parents(key, jnp.asarray(y[-1]), 0.25)
        copied = {name: value[source] for name, value in hparams.items()}

        new, any_data = propose(key, observations, copied, space, replaced, float(rounds))
        assert bool(any_data)
        perturbed = explore(key, copied, space, replaced, PBTConfig())
        moved = np.asarray(replaced)
        for values, distances in ((new, pb2_distance), (perturbed, perturb_distance)):
            unit = np.asarray(pb2.to_unit(values, space))[moved]
            distances.append(np.linalg.norm(unit - OPTIMUM, axis=-1).mean())
        kept = ~moved
        for name in hparams:  # members that were not replaced keep their values
            np.testing.assert_array_equal(
                np.asarray(new[name])[kept], np.asarray(copied[name])[kept]
            )
    pb2_distance, perturb_distance = np.array(pb2_distance), np.array(perturb_distance)
    assert (pb2_distance < perturb_distance).mean() >= 0.75, (pb2_distance, perturb_distance)
    assert pb2_distance.mean() < 0.7 * perturb_distance.mean()


def ratios_to_sources(result):
    """Each copied member's learning rate over its source's in the round before, from round
    2 on (PB2's model has data by then)."""
    ratios = []
    for before, record in zip(result.history[1:], result.history[2:]):
        for member, parent in enumerate(record["parents"]):
            if parent != member:
                ratio = (
                    record["hparams"]["learning_rate"][member]
                    / (before["hparams"]["learning_rate"][parent])
                )
                ratios.append(ratio)
    return np.array(ratios)


def test_pb2_in_a_sweep_chooses_its_own_values_without_recompiling(tiny_run):
    def sweep(explore_method):
        return tiny_run(
            population=8,
            pbt=PBTConfig(explore=explore_method, resample_probability=0.0),
            seed=4,
        )

    perturbed, chosen = sweep("perturb"), sweep("pb2")
    assert perturbed.compilations == chosen.compilations == 1
    # Perturbation multiplies by 0.8 or 1.2 (or stops at a bound); PB2 picks from its model.
    space = popjax.SearchSpace()
    low, high = space.priors["learning_rate"].low, space.priors["learning_rate"].high
    factors = ratios_to_sources(perturbed)
    assert len(factors) > 0
    assert np.isclose(factors[:, None], [0.8, 1.2], rtol=1e-5).any(axis=1).mean() > 0.7
    picked = ratios_to_sources(chosen)
    assert len(picked) > 0
    assert not np.isclose(picked[:, None], [0.8, 1.2], rtol=1e-5).any(axis=1).all()
    rates = np.array([r["hparams"]["learning_rate"] for r in chosen.history])
    assert ((rates >= low * (1 - 1e-6)) & (rates <= high * (1 + 1e-6))).all()


SEVERAL_DEVICES = """
import popjax
result = popjax.run(population=16, steps=200, interval=50, batch_size=16, write=False,
                    progress=False, pbt=popjax.PBTConfig(explore="pb2"),
                    data=popjax.data.digits())
assert result.compilations == 1
print("devices", len(result.devices))
"""


@pytest.mark.slow
@pytest.mark.version_sensitive
@pytest.mark.timeout(240)
def test_pb2_runs_with_the_members_over_several_cpu_devices(tmp_path):
    # LAPACK's factorisations hang when two CPU devices run them inside one round; PB2's
    # model must not depend on them.
    done = run_process(["python", "-c", SEVERAL_DEVICES], cwd=tmp_path, timeout=200, devices=2)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "devices 2" in done.stdout
