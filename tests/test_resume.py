"""Checkpoints and faults: a killed sweep resumes to the same population; signals checkpoint;
damaged checkpoints are skipped; diverging members never stop the sweep."""

import inspect
import json
import signal
import sys
import time
import tomllib
from pathlib import Path

import jax
import numpy as np
import pytest

import popjax
from popjax.checkpoint import SweepCheckpoints
from popjax.cli import main
from popjax.errors import PopjaxError
from popjax.space import LogUniform, SearchSpace

from conftest import (
    ROUNDS,
    RUN_TOML,
    final_state,
    finish_process,
    kill_and_resume,
    popjax_cli,
    wait_for_checkpoints,
)


@pytest.mark.slow
@pytest.mark.version_sensitive
def test_killed_sweep_resumes_to_the_same_population(tmp_path, uninterrupted):
    uninterrupted = uninterrupted()  # on one device
    (tmp_path / "run.toml").write_text(RUN_TOML)
    # Killed midway, in the middle of a round (half the checkpoints, 6 of 12, saved).
    kill_and_resume("run.toml", tmp_path, checkpoints=6, pause=0.3)
    rounds, leaves = final_state(tmp_path / "killed")
    whole_rounds, whole_leaves = final_state(uninterrupted)
    assert rounds == whole_rounds == ROUNDS
    for a, b in zip(leaves, whole_leaves, strict=True):
        assert np.array_equal(a, b)  # bit-identical on the CPU
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    whole = json.loads((uninterrupted / "summary.json").read_text())
    assert (summary["best_member"], summary["test"]) == (whole["best_member"], whole["test"])
    metrics = (tmp_path / "killed" / "metrics.jsonl").read_text()
    assert metrics == (uninterrupted / "metrics.jsonl").read_text()
    # The wall time sums the killed process's share and the resume's, so it is longer than the
    # resume alone.
    assert summary["wall_time_s"] > kill_and_resume.resumed_s


def without_timings(summary: dict) -> dict:
    """The summary less what the clock measured: the wall time, compile and start-up times."""
    return {k: v for k, v in summary.items() if k not in ("wall_time_s", "compile", "start_s")}


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_resumes_from_round_0(
    tmp_path, uninterrupted, monkeypatch, capsys
):
    uninterrupted = uninterrupted()  # on one device
    # The same run, checkpointed only at its end: a kill midway leaves no checkpoint.
    (tmp_path / "run.toml").write_text(
        RUN_TOML.replace("checkpoint_every = 2", "checkpoint_every = 1000")
    )
    process = popjax_cli("run", "run.toml", "--out", "killed", cwd=tmp_path)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 240
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert time.time() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (
        not (tmp_path / "killed" / "checkpoints").is_dir()
        or not SweepCheckpoints(tmp_path / "killed").rounds_saved()
    )

    # The rest in this process, on one device as the killed one, whose programs it compiled.
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["run", "run.toml", "--out", "killed"]) == 2
    assert "popjax run --resume killed" in capsys.readouterr().err  # points to the way on
    assert main(["run", "--resume", "killed", "--quiet", "--no-report"]) == 0
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    whole = json.loads((uninterrupted / "summary.json").read_text())
    assert without_timings(summary) == without_timings(whole)
    assert metrics.read_text() == (uninterrupted / "metrics.jsonl").read_text()


TASK_MODULE = """
import jax
import jax.numpy as jnp
import numpy as np

import popjax

NOISE = 0.1
"""


@pytest.mark.slow
def test_a_task_run_resumes_reports_exports_and_replays_from_another_folder(tmp_path, monkeypatch):
    from test_task import TOML, linear_regression

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "my_tasks.py").write_text(TASK_MODULE + inspect.getsource(linear_regression))
    (project / "task.toml").write_text(TOML.format(steps=300, factory="my_tasks:linear_regression"))
    process = popjax_cli("run", "task.toml", "--out", "run", cwd=project)
    wait_for_checkpoints(project / "run", 2, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (project / "run" / "summary.json").exists()  # it did die midway
    recorded = tomllib.loads((project / "run" / "config.toml").read_text())["task"]
    assert recorded["import_from"] == str(project.resolve())
    assert "my_tasks.py" not in {p.name for p in elsewhere.iterdir()}

    # The resume and the other commands through the command's entry point in this process, from
    # elsewhere: the task's module is found where the run folder recorded it, not on this
    # process's path.
    run = str(project / "run")
    monkeypatch.chdir(elsewhere)
    path = list(sys.path)
    monkeypatch.setattr(sys, "path", list(path))  # what the commands add is undone
    monkeypatch.delitem(sys.modules, "my_tasks", raising=False)
    assert main(["run", "--resume", run, "--quiet", "--no-report"]) == 0
    assert json.loads((project / "run" / "summary.json").read_text())["task"] == (
        "my_tasks:linear_regression"
    )
    assert len((project / "run" / "metrics.jsonl").read_text().splitlines()) == 15
    # The resume's import undone: the report finds the module anew, where it was recorded.
    sys.path[:] = path
    sys.modules.pop("my_tasks", None)
    assert main(["report", run]) == 0
    assert main(["export-schedule", run, "--out", "schedule.json"]) == 0
    assert set(json.loads((elsewhere / "schedule.json").read_text())["schedules"]) == {
        "learning_rate",
        "momentum",
    }
    assert main(["replay", run, "--quiet", "--out", "replay.json"]) == 0
    assert json.loads((elsewhere / "replay.json").read_text())["steps"] == 300
    sys.modules.pop("my_tasks", None)


def test_a_run_folder_appears_whole_or_not_at_all(tmp_path, monkeypatch):
    from popjax.runfolder import RunFolder, check_new

    # What a run killed while making its folder leaves: a hidden partial folder beside it.
    (tmp_path / ".run.partial").mkdir()
    (tmp_path / ".run.partial" / "config.toml").write_text("half")
    RunFolder(tmp_path / "run", "seed = 1\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.toml", "metrics.jsonl"]
    with pytest.raises(PopjaxError, match="continue it with popjax run --resume"):
        check_new(tmp_path / "run")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(PopjaxError, match="already exists: choose another --out"):
        RunFolder(tmp_path / "other", "seed = 1\n")
    assert [p.name for p in (tmp_path / "other").iterdir()] == ["notes.txt"]
    # An empty folder given as --out is filled in place, config.toml last; what a kill before
    # that leaves is no run folder yet, and a new run takes it.
    given = tmp_path / "given"
    given.mkdir()
    (given / "metrics.jsonl").write_text("")
    (given / "config.toml.tmp").write_text("half")
    monkeypatch.chdir(given)
    RunFolder(Path("."), "seed = 1\n")
    assert sorted(p.name for p in given.iterdir()) == ["config.toml", "metrics.jsonl"]
    assert (given / "config.toml").read_text() == "seed = 1\n"
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(PopjaxError, match="already exists"):
        check_new(tmp_path / "theirs")


@pytest.mark.slow
@pytest.mark.version_sensitive
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_checkpoints_and_says_how_to_resume(tmp_path, signum):
    # Long rounds, so that the signal lands well before the end of the run.
    long_run = RUN_TOML.replace("checkpoint_every = 2", "checkpoint_every = 1000")
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
