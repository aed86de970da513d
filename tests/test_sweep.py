"""Whole sweeps: one compilation, reproducible, lineage consistent, and PBT improves."""

import sys

import jax
import numpy as np
import pytest

import popjax
from popjax.config import ConfigError

from conftest import tree_equal

TINY = dict(population=8, steps=60, interval=20, batch_size=16, write=False, progress=False)


@pytest.fixture(scope="module")
def tiny_sweep(small_data, small_model):
    return popjax.run(data=small_data, model=small_model, **TINY)


COMPILES = []


def _record_compile(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
        COMPILES.append(duration)


# Registered once: jax 0.7.2 has no public way to unregister a listener.
jax.monitoring.register_event_duration_secs_listener(_record_compile)


def count_compilations(fn):
    before = len(COMPILES)
    result = fn()
    return result, len(COMPILES) - before


def test_pbt_rounds_never_recompile(small_data, small_model):
    def sweep(steps):
        return lambda: popjax.run(
            data=small_data, model=small_model, seed=7, **{**TINY, "steps": steps}
        )

    sweep(40)()  # warms the caches of the small ops around the rounds
    short, short_compiles = count_compilations(sweep(40))
    long, long_compiles = count_compilations(sweep(200))
    assert long.config.rounds == 10
    assert long.compilations == 1
    # Eight more PBT rounds cost no compilation at all.
    assert long_compiles == short_compiles


def test_same_seed_same_result_other_seed_other_result(small_data, small_model, tiny_sweep):
    again = popjax.run(data=small_data, model=small_model, **TINY)
    assert tree_equal(again.population, tiny_sweep.population)
    assert again.history == tiny_sweep.history
    other = popjax.run(data=small_data, model=small_model, seed=1, **TINY)
    assert not tree_equal(other.population.params, tiny_sweep.population.params)


def test_lineage_matches_what_happened(tiny_sweep):
    lineage, config = tiny_sweep.lineage, tiny_sweep.config
    assert lineage.rounds == config.rounds
    assert lineage.parents[0] == list(range(config.population))
    for r in range(1, lineage.rounds):
        parents = lineage.parents[r]
        replaced = [m for m, p in enumerate(parents) if p != m]
        assert len(replaced) <= int(config.pbt.fraction * config.population)
        # Truncation, from the fitness the round before: the replaced are among the worst, and
        # copy one of the best, that many from the top.
        fitness = np.asarray(tiny_sweep.history[r - 1]["val_accuracy"])
        kept = [m for m in range(config.population) if m not in replaced]
        if replaced:
            assert fitness[replaced].max() <= fitness[kept].min()
            top = np.sort(fitness)[-int(config.pbt.fraction * config.population)]
            assert all(fitness[parents[m]] >= top for m in replaced)
        for m, p in enumerate(parents):
            for name, prior in config.space.priors.items():
                now, before = lineage.hparams[r][name][m], lineage.hparams[r - 1][name][p]
                if p == m:
                    assert now == before
                else:  # perturbed from the parent's value, or resampled, and within bounds
                    low, high = getattr(prior, "low", now), getattr(prior, "high", now)
                    assert np.float32(low) <= now <= np.float32(high)
    copies = sum(p != m for r in lineage.parents for m, p in enumerate(r))
    assert copies > 0


def test_result_names_the_best_member_on_validation(tiny_sweep, small_data, small_model):
    last, best = tiny_sweep.history[-1], tiny_sweep.best_member
    assert best == int(np.argmax(last["val_accuracy"]))
    # The best member's own hyperparameters and weights, read from the final population.
    population = tiny_sweep.population
    for name, value in tiny_sweep.best_hparams.items():
        assert value == pytest.approx(float(population.hparams[name][best])), name
    params = jax.tree_util.tree_map(lambda leaf: np.asarray(leaf)[best], population.params)
    logits = small_model.apply({"params": params}, small_data.x_test)
    accuracy = np.mean(np.argmax(np.asarray(logits), axis=-1) == small_data.y_test)
    assert tiny_sweep.best_test["accuracy"] == pytest.approx(accuracy)


def test_the_start_up_stages_hold_their_compiles_and_fit_in_the_run(tiny_sweep):
    start, compiled = tiny_sweep.start, tiny_sweep.compile
    assert list(start) == ["devices", "data", "compile", "init", "first_round"]
    # The round and the population's init compile (or load from the cache) side by side
    # within the compile stage, by JAX's own clock, and init's call compiles nothing more.
    assert start["compile"] >= max(compiled[p]["compile_s"] for p in ("round_fn", "init"))
    assert compiled["init"]["count"] == 1 and compiled["round_fn"]["count"] == 1
    assert compiled["test"]["count"] == 1  # compiled beside the rounds, found at the end
    assert 0 < sum(start.values()) <= tiny_sweep.wall_time
    assert tiny_sweep.summary()["start_s"] == start


def test_the_start_is_announced_stage_by_stage_and_the_bar_says_it(
    small_data, small_model, capsys, monkeypatch
):
    class Watcher:
        def __init__(self):
            self.stages = []

        def starting(self, stage):
            self.stages.append(stage)

        def __call__(self, record):
            pass

    watcher = Watcher()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # the line is for terminals
    settings = {**TINY, "progress": True}
    result = popjax.run(data=small_data, model=small_model, on_round=watcher, **settings)
    # Every stage the run timed after JAX's devices, in order, each announced as it began.
    assert watcher.stages == [stage for stage in result.start if stage != "devices"]
    shown = capsys.readouterr().err
    assert "popjax: loading the data" in shown and "popjax: compiling the round" in shown


@pytest.mark.slow
def test_short_pbt_run_on_mnist1d_improves_the_best_member(mnist1d):
    # Six rounds of 50 steps: on seeds 0-2 the best gains 0.25-0.32 and tests at 0.58-0.63.
    result = popjax.run(
        data=mnist1d, population=8, steps=300, interval=50, write=False, progress=False
    )
    first = max(result.history[0]["val_accuracy"])
    last = max(result.history[-1]["val_accuracy"])
    assert last > first + 0.05
    assert result.best_test["accuracy"] > 0.4  # ten classes: chance is 0.1


def test_random_search_never_copies(small_data, small_model):
    config = popjax.SweepConfig(pbt=popjax.PBTConfig(enabled=False))
    result = popjax.run(config, data=small_data, model=small_model, **TINY)
    assert all(p == list(range(8)) for p in result.lineage.parents)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(interval=100, steps=60), "longer than the run"),
        (dict(steps=70, interval=20), "use steps = 60 or 80"),
        (dict(population=0), "at least 1"),
        (dict(poplation=8), "did you mean 'population'"),
    ],
)
def test_bad_settings_are_clear_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        popjax.run(**{**TINY, **overrides})
