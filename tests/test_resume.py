"""Checkpoints and faults: a killed sweep resumes to the same population; signals checkpoint;
damaged checkpoints are skipped; diverging members never stop the sweep."""

import json
import signal
import time

import jax
import numpy as np
import pytest

import popjax
from popjax.checkpoint import SweepCheckpoints
from popjax.errors import PopjaxError
from popjax.space import LogUniform, SearchSpace

from conftest import RUN_TOML, final_state, finish_process, kill_and_resume, popjax_cli


@pytest.mark.slow
@pytest.mark.version_sensitive
def test_killed_sweep_resumes_to_the_same_population(tmp_path, uninterrupted):
    uninterrupted = uninterrupted()  # on one device
    (tmp_path / "run.toml").write_text(RUN_TOML)
    # Killed in the middle of a later round.
    kill_and_resume("run.toml", tmp_path, checkpoints=3, pause=0.3)
    rounds, leaves = final_state(tmp_path / "killed")
    whole_rounds, whole_leaves = final_state(uninterrupted)
    assert rounds == whole_rounds == 24
    for a, b in zip(leaves, whole_leaves, strict=True):
        assert np.array_equal(a, b)  # bit-identical on the CPU
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    whole = json.loads((uninterrupted / "summary.json").read_text())
    assert (summary["best_member"], summary["test"]) == (whole["best_member"], whole["test"])
    metrics = (tmp_path / "killed" / "metrics.jsonl").read_text()
    assert metrics == (uninterrupted / "metrics.jsonl").read_text()


@pytest.mark.slow
@pytest.mark.version_sensitive
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_checkpoints_and_says_how_to_resume(tmp_path, signum):
    # Long rounds, so that the signal lands well before the end of the run.
    long_run = RUN_TOML.replace("checkpoint_every = 1", "checkpoint_every = 1000")
    (tmp_path / "run.toml").write_text(
        long_run.replace("steps = 480", "steps = 60000").replace("interval = 20", "interval = 1000")
    )
    process = popjax_cli("run", "run.toml", "--out", "stopped", cwd=tmp_path)
    deadline = time.time() + 240
    metrics = tmp_path / "stopped" / "metrics.jsonl"
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.05)
    process.send_signal(signum)
    out, err = finish_process(process, 120)
    assert process.returncode == 128 + signum
    assert "resume with: popjax run --resume stopped" in err
    assert len(err.strip().splitlines()) == 1
    saved = SweepCheckpoints(tmp_path / "stopped").rounds_saved()
    assert len(saved) == 1 and 2 <= saved[0] < 60


def test_damaged_latest_checkpoint_falls_back_to_the_one_before(
    tmp_path, small_data, small_model, tiny_run
):
    settings = dict(steps=80, interval=20, checkpoint_every=1)
    whole = tiny_run(out=tmp_path / "whole", **settings)
    run_dir = tmp_path / "damaged"
    tiny_run(out=run_dir, **settings)
    latest = run_dir / "checkpoints" / "4"
    for path in latest.rglob("*"):
        if path.is_file() and path.stat().st_size > 0 and "state" in str(path):
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(UserWarning, match="after round 4 is damaged"):
        resumed = popjax.run(resume=run_dir, data=small_data, model=small_model, progress=False)
    # It went back to round 3 and trained the last round again, to the same result.
    assert resumed.history == whole.history
    for leaf in jax.tree_util.tree_leaves(resumed.population):
        assert leaf.sharding.spec[0] == "pop"  # restored with the member sharding
    assert np.array_equal(
        np.asarray(resumed.population.params["Dense_0"]["kernel"]),
        np.asarray(whole.population.params["Dense_0"]["kernel"]),
    )


@pytest.mark.parametrize("exploit", ["truncation", "tournament"])
def test_diverging_members_are_replaced_and_never_reach_the_others(
    small_data, small_model, exploit
):
    space = SearchSpace({"learning_rate": LogUniform(1e-2, 1e4)})
    result = popjax.run(
        popjax.SweepConfig(space=space, pbt=popjax.PBTConfig(exploit=exploit)),
        data=small_data,
        model=small_model,
        population=8,
        steps=100,
        interval=20,
        batch_size=16,
        seed=3,
        write=False,
        progress=False,
    )
    diverged = [sum(r["diverged"]) for r in result.history]
    assert diverged[0] > 0  # the range reaches rates that blow up
    for r, record in enumerate(result.history[1:], start=1):
        before = result.history[r - 1]["diverged"]
        # Every member that diverged is replaced at the next round, by one that had not.
        for member, was_diverged in enumerate(before):
            if was_diverged:
                parent = record["parents"][member]
                assert parent != member and not before[parent]
    assert np.isfinite(result.best_val["loss"])


def test_every_member_diverging_is_a_clear_error(small_data, small_model):
    space = SearchSpace({"learning_rate": LogUniform(1e6, 1e8)})
    with pytest.raises(PopjaxError, match="every member diverged.*learning_rate \\(1e\\+06"):
        popjax.run(
            popjax.SweepConfig(space=space),
            data=small_data,
            model=small_model,
            population=4,
            steps=40,
            interval=20,
            batch_size=16,
            write=False,
            progress=False,
        )
