"""Successive halving inside the population, as ASHA: a trial that reaches a rung (rounds of
its own) stops exactly when it is in the bottom share of every trial that reached that rung;
its slot begins again with fresh weights and hyperparameters from the priors (or copies the top
members); the lineage records it; a resume goes on with the same records; nothing
recompiles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import popjax
from popjax.config import PBTConfig
from popjax.round import SelectionState, make_round
from popjax.space import Fixed, LogUniform, SearchSpace

from conftest import classifier, died_after, hparams_for, members

pytestmark = pytest.mark.timeout(180)
RUNGS = (1, 3)
HALVING = dict(
    population=8,
    steps=60,
    interval=10,
    batch_size=16,
    pbt=PBTConfig(exploit="halving", fraction=0.5, rungs=RUNGS, restart="prior"),
    progress=False,
    seed=2,
)


@pytest.fixture(scope="module")
def halved(small_data, small_model, tmp_path_factory):
    """The halving sweep run to its end, a checkpoint kept after every round (the resume test
    cuts it back)."""
    out = tmp_path_factory.mktemp("halving") / "run"
    result = popjax.run(
        data=small_data,
        model=small_model,
        out=out,
        checkpoint_every=1,
        keep_checkpoints=10,
        **HALVING,
    )
    return result, out


def asha_restarts(history, rungs, fraction):
    """The restarts of each round by ASHA's rule, replayed in Python from the recorded
    validation accuracy: at each rung, pool every earlier arrival with this round's arrivals,
    best first (an earlier arrival before an equal newcomer, a higher member index before a
    lower one), keep the first ``n - floor(fraction * n)``, stop the newcomers after them."""
    size = len(history[0]["val_accuracy"])
    age, records, restarts = [1] * size, {rung: [] for rung in rungs}, {}  # after round 0
    for round_index in range(1, len(history)):
        accuracy = history[round_index - 1]["val_accuracy"]
        stopped = []
        for rung in rungs:
            arrivals = [m for m in range(size) if age[m] == rung]
            pool = sorted(
                [(value, 1, 0, None) for value in records[rung]]
                + [(accuracy[m], 0, m, m) for m in arrivals],
                reverse=True,
            )
            kept = len(pool) - int(fraction * len(pool))
            stopped += [m for *_, m in pool[kept:] if m is not None]
            records[rung] += [accuracy[m] for m in arrivals]
        if stopped:
            restarts[round_index] = sorted(stopped)
        age = [0 if m in stopped else age[m] for m in range(size)]
        age = [a + 1 for a in age]
    return restarts


def test_a_trial_stops_exactly_when_in_the_bottom_share_of_its_rung(halved):
    result, _ = halved
    expected = asha_restarts(result.history, RUNGS, 0.5)
    recorded = {
        record["round"]: np.flatnonzero(record["restarted"]).tolist()
        for record in result.history
        if any(record.get("restarted", []))
    }
    assert recorded == expected
    # Restarted trials reach the first rung later, off the run's own rung rounds.
    assert set(expected) - set(RUNGS)
    for record in result.history:
        assert record["parents"] == list(range(8))  # a restart copies no one
    assert result.compilations == 1


def test_the_lineage_records_each_restart_and_a_restarted_member_starts_there(halved):
    result, out = halved
    expected = asha_restarts(result.history, RUNGS, 0.5)
    assert result.lineage.restarts == expected
    assert popjax.Lineage.load(out / "lineage.json").restarts == expected
    last = max(expected)
    member = expected[last][0]
    rounds = result.lineage.rounds
    history = result.lineage.history(member)
    assert history[0]["round"] == last and len(history) == rounds - last
    trajectory = popjax.replay.trajectories(out, member)
    assert trajectory["steps"] == (rounds - last) * 10
    # Its epochs count from the restart: one round's worth in its first round.
    epochs = [record["epochs"][member] for record in result.history]
    np.testing.assert_allclose(epochs[last], epochs[0])


def test_the_report_names_the_rungs_and_counts_the_restarts(halved):
    from popjax.report import write_report

    result, out = halved
    text = " ".join(write_report(out).read_text().split())
    restarts = sum(len(m) for m in asha_restarts(result.history, RUNGS, 0.5).values())
    assert "trials that reached rungs 1, 3 (rounds of their own, 10 steps each)" in text
    assert "the bottom 0.5 stopped" in text
    assert f"{restarts} slot(s) began again from the priors" in text


def test_a_resumed_halving_run_judges_against_the_same_records(
    tmp_path, halved, small_data, small_model
):
    result, out = halved
    run = tmp_path / "run"
    assert died_after(out, run, 3)[-1] == result.lineage.rounds  # a checkpoint every round
    resumed = popjax.run(resume=run, data=small_data, model=small_model, progress=False)
    assert resumed.history == result.history
    assert resumed.lineage.restarts == result.lineage.restarts
    # Rounds 3 on were played by the resumed run, and it restarted trials there: judged against
    # the rung records the checkpoint brought back.
    assert any(round_index >= 3 for round_index in resumed.lineage.restarts)


def test_a_young_trial_is_judged_against_its_rung_not_against_older_members():
    from popjax.halving import RungRecords, judge

    # Rung 1's record: four earlier trials. Member 0 arrives there now; members 1-3 are older
    # (age 5, no rung) and all better than it.
    records = RungRecords.empty(4, (1, 4), rounds=8)
    records = records._replace(
        fitness=records.fitness.at[:, 0, 0].set(jnp.asarray([0.2, 0.3, 0.4, 0.6])),
        count=records.count.at[:, 0].set(1),
    )
    age = jnp.asarray([1, 5, 5, 5])
    for value, stops in ((0.5, False), (0.4, False), (0.25, True)):
        fitness = jnp.asarray([value, 0.9, 0.95, 0.99])
        stopped, updated = judge(records, age, fitness, (1, 4), 0.5)
        # Pool of 5 at rung 1; the bottom floor(2.5) = 2 stop: 0.5 is 2nd, 0.4 3rd (an earlier
        # equal arrival ranks first), 0.25 4th.
        assert np.asarray(stopped).tolist() == [stops, False, False, False]
        assert np.asarray(updated.count).tolist() == [[2, 0], [1, 0], [1, 0], [1, 0]]
        assert float(updated.fitness[0, 0, 1]) == pytest.approx(value)


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
        }
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
    standing = SelectionState.initial(8, space, pbt, rounds=10)._replace(fitness=fitness)

    # Trials of 2 rounds (steps at interval 1) are below the rung; of 3, at it.
    younger = population._replace(step=jnp.full(8, 2, jnp.int32))
    off_rung, _, output = round_fn(younger, standing, 3, task.data)
    assert not np.asarray(output.restarted).any()
    kernel = np.asarray(off_rung.state["params"]["Dense_0"]["kernel"])
    assert (kernel == 7.0).all()

    population = population._replace(step=jnp.full(8, 3, jnp.int32))
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
    assert steps[restarted].tolist() == [1, 1] and (steps[~restarted] == 4).all()


def test_halving_that_copies_the_top_members_copies_only_at_rungs(small_data, small_model):
    copies = PBTConfig(exploit="halving", fraction=0.25, rungs=RUNGS, restart="copy")
    settings = {**HALVING, "pbt": copies}
    result = popjax.run(data=small_data, model=small_model, write=False, **settings)
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
