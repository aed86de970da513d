"""Successive halving inside the population: at each rung exactly the bottom share stops;
their slots begin again with fresh weights and hyperparameters from the priors (or copy the
top members); the lineage records it; nothing recompiles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import popjax
from popjax.config import PBTConfig
from popjax.round import Standing, make_round
from popjax.space import Fixed, LogUniform, SearchSpace

from conftest import classifier, hparams_for, members

pytestmark = pytest.mark.timeout(180)
RUNGS = (2, 4)


@pytest.fixture(scope="module")
def halved(small_data, small_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("halving") / "run"
    result = popjax.run(
        data=small_data,
        model=small_model,
        population=8,
        steps=60,
        interval=10,
        batch_size=16,
        pbt=PBTConfig(exploit="halving", fraction=0.5, rungs=RUNGS, restart="prior"),
        out=out,
        progress=False,
        seed=2,
    )
    return result, out


def test_exactly_the_bottom_share_stops_at_each_rung_and_nowhere_else(halved):
    result, _ = halved
    history = result.history
    for record in history:
        restarted = np.asarray(record.get("restarted", [False] * 8))
        if record["round"] in RUNGS:
            # The worst half by the fitness of the round before, ranked here with numpy.
            accuracy = np.asarray(history[record["round"] - 1]["val_accuracy"])
            worst = set(np.argsort(accuracy, kind="stable")[:4].tolist())
            assert set(np.flatnonzero(restarted).tolist()) == worst
            assert accuracy[list(worst)].max() <= np.delete(accuracy, list(worst)).min()
        else:
            assert not restarted.any()
        assert record["parents"] == list(range(8))  # a restart copies no one
    assert result.compilations == 1


def test_the_lineage_records_each_rung_and_a_restarted_member_starts_there(halved):
    result, out = halved
    expected = {
        r: [m for m, flag in enumerate(result.history[r]["restarted"]) if flag] for r in RUNGS
    }
    assert result.lineage.restarts == expected
    assert popjax.Lineage.load(out / "lineage.json").restarts == expected
    member = expected[RUNGS[-1]][0]
    history = result.lineage.history(member)
    assert history[0]["round"] == RUNGS[-1] and len(history) == result.lineage.rounds - RUNGS[-1]
    trajectory = popjax.schedules.member_trajectories(out, member)
    assert trajectory["steps"] == (result.lineage.rounds - RUNGS[-1]) * 10
    # Its epochs count from the restart: one round's worth at the rung.
    epochs = [record["epochs"][member] for record in result.history]
    np.testing.assert_allclose(epochs[RUNGS[-1]], epochs[0])


def test_the_report_names_the_rungs_and_counts_the_restarts(halved):
    from popjax.report import write_report

    result, out = halved
    text = " ".join(write_report(out).read_text().split())
    restarts = sum(sum(r.get("restarted", [])) for r in result.history)
    assert restarts == 8  # half of 8 members at each of 2 rungs
    assert "the bottom 0.5 stopped after rounds 2, 4" in text
    assert f"{restarts} slot(s) began again from the priors" in text


def test_restarted_slots_get_fresh_weights_and_hyperparameters_from_the_priors(
    small_data, small_model
):
    task = classifier(small_data, small_model)
    population = members(task, hparams_for(8, learning_rate=0.0))
    # Every weight set to 7 and a learning rate of 0: a kept member's weights stay 7.
    population = population._replace(
        state={
            **population.state,
            "params": jax.tree_util.tree_map(
                lambda w: jnp.full_like(w, 7.0), population.state["params"]
            ),
        },
        step=jnp.full(8, 50, jnp.int32),
    )
    space = SearchSpace(
        {
            "learning_rate": LogUniform(1e-3, 1e-2),
            **{name: Fixed(0.0) for name in ("momentum", "dropout", "weight_decay")},
        }
    )
    pbt = PBTConfig(exploit="halving", fraction=0.25, rungs=(3,), restart="prior")
    round_fn = jax.jit(make_round(task, 1, space, pbt, jax.random.PRNGKey(0)))
    fitness = jnp.asarray([0.5, 0.1, 0.9, 0.8, 0.05, 0.7, 0.6, 0.4])  # worst two: 4 and 1
    standing = Standing.initial(8)._replace(fitness=fitness)

    off_rung, _, output = round_fn(population, standing, 2, task.data)
    assert not np.asarray(output.restarted).any()
    kernel = np.asarray(off_rung.state["params"]["Dense_0"]["kernel"])
    assert (kernel == 7.0).all()

    at_rung, _, output = round_fn(population, standing, 3, task.data)
    restarted = np.asarray(output.restarted)
    assert np.flatnonzero(restarted).tolist() == [1, 4]
    kernel = np.asarray(at_rung.state["params"]["Dense_0"]["kernel"])  # [P, 12, 16]
    assert (kernel[~restarted] == 7.0).all()
    for member in (1, 4):
        # Fresh weights: flax's default kernel init, variance 1 / fan_in (lecun normal).
        assert abs(kernel[member].std() * np.sqrt(12) - 1) < 0.2
    assert not np.allclose(kernel[1], kernel[4])  # each its own draw
    rates = np.asarray(at_rung.hparams["learning_rate"])
    assert (rates[~restarted] == 0.0).all()
    assert ((rates[restarted] >= 1e-3) & (rates[restarted] <= 1e-2)).all()
    steps = np.asarray(at_rung.step)
    assert steps[restarted].tolist() == [1, 1] and (steps[~restarted] == 51).all()


def test_halving_that_copies_the_top_members_copies_only_at_rungs(small_data, small_model):
    result = popjax.run(
        data=small_data,
        model=small_model,
        population=8,
        steps=60,
        interval=10,
        batch_size=16,
        pbt=PBTConfig(exploit="halving", fraction=0.25, rungs=RUNGS, restart="copy"),
        write=False,
        progress=False,
        seed=2,
    )
    for record in result.history:
        parents = np.asarray(record["parents"])
        copied = parents != np.arange(8)
        if record["round"] in RUNGS:
            accuracy = np.asarray(result.history[record["round"] - 1]["val_accuracy"])
            order = np.argsort(accuracy, kind="stable")
            assert set(np.flatnonzero(copied).tolist()) <= set(order[:2].tolist())
            assert set(parents[copied].tolist()) <= set(order[-2:].tolist())
            assert copied.sum() >= 1
        else:
            assert not copied.any()
        assert "restarted" not in record
    assert result.compilations == 1


@pytest.mark.parametrize(
    "pbt, message",
    [
        (PBTConfig(exploit="halving", rungs=(4, 2)), "increasing order"),
        (PBTConfig(exploit="halving", rungs=(0, 2)), "rounds >= 1"),
        (PBTConfig(exploit="halving", restart="later"), "restart method"),
        (PBTConfig(exploit="halving", fraction=1.0), "must be in \\(0, 1\\)"),
        (PBTConfig(exploit="halving", restart="copy", fraction=0.75), "\\(0, 0.5\\]"),
    ],
)
def test_bad_halving_settings_are_one_line_errors(pbt, message):
    with pytest.raises(popjax.PopjaxError, match=message):
        popjax.SweepConfig(pbt=pbt).validate()
