"""Checkpoints of sweeps over several devices and processes: two processes killed mid-run
resume to the same population; a signal to one process stops both after the same round; a
checkpoint resumes on another device count; old checkpoints are pruned."""

import json
import signal
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from popjax.runfolder import read_metrics

from conftest import (
    RUN_TOML,
    died_after,
    finish_process,
    finish_sweep,
    kill_and_resume,
    popjax_cli,
    saved_rounds,
    sweep_processes,
)

# Two processes of 4 CPU devices each: one member a device, as on 8 devices in one process.
TWO_HOSTS = dict(processes=2, devices=4)
# The kill-and-resume sweep in 12 rounds: a round of two processes costs about a second (the
# processes agree on every record), and a kill after 3 checkpoints still leaves 6 rounds.
TOML = RUN_TOML.replace("steps = 480", "steps = 240")
ROUNDS = 12


def saved_population(run_dir, rounds):
    """The population and fitness saved after ``rounds``, as host arrays, read on one device
    of this process whatever the devices that saved them."""
    path = (run_dir / "checkpoints" / str(rounds) / "state").absolute()
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    with ocp.StandardCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(path)
        metadata = getattr(metadata, "item_metadata", metadata)  # differs between versions
        abstract = jax.tree_util.tree_map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata
        )
        restored = checkpointer.restore(path, abstract)
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(restored)]


def assert_same_population(a, b):
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y)  # bit-identical


@pytest.mark.slow
@pytest.mark.version_sensitive
@pytest.mark.timeout(400)
def test_two_processes_killed_mid_run_resume_to_the_same_population(tmp_path, uninterrupted):
    whole = uninterrupted(**TWO_HOSTS, toml=TOML)
    (tmp_path / "run.toml").write_text(TOML)
    assert kill_and_resume("run.toml", tmp_path, checkpoints=3, **TWO_HOSTS) < ROUNDS
    assert saved_rounds(tmp_path / "killed")[-1] == ROUNDS
    assert_same_population(
        saved_population(tmp_path / "killed", ROUNDS), saved_population(whole, ROUNDS)
    )
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    whole_summary = json.loads((whole / "summary.json").read_text())
    assert (summary["best_member"], summary["test"]) == (
        whole_summary["best_member"],
        whole_summary["test"],
    )
    assert read_metrics(tmp_path / "killed") == read_metrics(whole)


@pytest.mark.slow
@pytest.mark.version_sensitive
@pytest.mark.timeout(400)
def test_a_signal_to_one_process_stops_both_after_the_same_round(tmp_path, uninterrupted):
    whole = uninterrupted(**TWO_HOSTS, toml=TOML)
    # Checkpoints only at the end or on a signal, so the one saved is the signal's.
    (tmp_path / "run.toml").write_text(
        TOML.replace("checkpoint_every = 2", "checkpoint_every = 1000")
    )
    hosts = sweep_processes("run", "run.toml", "--out", "stopped", cwd=tmp_path, **TWO_HOSTS)
    metrics = tmp_path / "stopped" / "metrics.jsonl"
    deadline = time.time() + 240
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert time.time() < deadline and all(host.poll() is None for host in hosts)
        time.sleep(0.02)
    hosts[1].send_signal(signal.SIGTERM)  # process 1 only, as a preempted host would be
    messages = [finish_process(host, 120)[1].strip() for host in hosts]
    assert [host.returncode for host in hosts] == [128 + signal.SIGTERM] * 2, messages
    assert messages[0] == messages[1] and len(messages[0].splitlines()) == 1, messages
    stopped_after = int(messages[0].split("stopped after round ")[1].split()[0])
    assert saved_rounds(tmp_path / "stopped") == [stopped_after]
    assert 2 <= stopped_after < ROUNDS
    assert "resume with: popjax run --resume stopped" in messages[0]

    # One process of 8 devices holds the same members per device as 2 processes of 4: its
    # resumed sweep ends with the very same population.
    finish_sweep([popjax_cli("run", "--resume", "stopped", cwd=tmp_path, devices=8)])
    assert_same_population(
        saved_population(tmp_path / "stopped", ROUNDS), saved_population(whole, ROUNDS)
    )


@pytest.mark.slow
@pytest.mark.version_sensitive
@pytest.mark.timeout(300)
def test_a_checkpoint_of_eight_devices_resumes_on_two(tmp_path, uninterrupted):
    whole_dir = uninterrupted(**TWO_HOSTS, toml=TOML)
    run_dir = tmp_path / "fewer"
    kept = ROUNDS // 2
    died_after(whole_dir, run_dir, kept)

    finish_sweep([popjax_cli("run", "--resume", "fewer", cwd=tmp_path, devices=2)])
    assert len(json.loads((run_dir / "summary.json").read_text())["devices"]) == 2
    assert saved_rounds(run_dir)[-1] == ROUNDS
    again, whole = read_metrics(run_dir), read_metrics(whole_dir)
    assert len(again) == len(whole) == ROUNDS
    assert again[:kept] == whole[:kept]
    # The first round after the resume starts from the same population; 4 members per device
    # instead of 1 changes the shapes of the matmuls, so only float rounding differs.
    np.testing.assert_allclose(again[kept]["train_loss"], whole[kept]["train_loss"], rtol=1e-4)
    assert again[kept]["parents"] == whole[kept]["parents"]


def test_only_the_newest_checkpoints_are_kept(tmp_path, tiny_run):
    tiny_run(
        population=2,
        steps=50,
        checkpoint_every=1,
        keep_checkpoints=2,
        out=tmp_path / "run",
    )
    assert saved_rounds(tmp_path / "run") == [4, 5]  # 50 steps / 10 a round, the last two
