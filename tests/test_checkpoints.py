"""Checkpoints of sweeps over several devices and processes: two processes killed mid-run
resume to the same population; a signal to one process stops both after the same round; a
checkpoint resumes on another device count; old checkpoints are pruned."""

import json
import os
import shutil
import signal
import socket
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import popjax
from popjax.runfolder import read_metrics

from conftest import finish_process, start_process, stop

RUN_TOML = """
name = "hosts"
population = 8
steps = 480
interval = 20
batch_size = 16
checkpoint_every = 1
keep_checkpoints = 30

[data]
name = "digits"

[model]
name = "mlp"
hidden = [32]
"""
ROUNDS = 24


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(*args, cwd, devices):
    """``popjax ARGS`` in a subprocess of its own on ``devices`` CPU devices."""
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": str(devices), "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    return start_process(
        [sys.executable, "-m", "popjax", *args, "--quiet", "--no-report"], cwd=cwd, env=env
    )


def two_hosts(*args, cwd):
    """The same command as process 0 and 1 of a 2-process run, 4 CPU devices each."""
    flags = ["--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", "2"]
    return [start(*args, *flags, "--process-id", str(i), cwd=cwd, devices=4) for i in range(2)]


def finish(process, timeout=300):
    out, err = finish_process(process, timeout)
    assert process.returncode == 0, err[-3000:]
    return err


def saved_rounds(run_dir):
    folder = run_dir / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


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


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The whole 2-process sweep, with every round's checkpoint kept."""
    cwd = tmp_path_factory.mktemp("whole")
    (cwd / "run.toml").write_text(RUN_TOML)
    for host in two_hosts("run", "run.toml", "--out", "whole", cwd=cwd):
        finish(host)
    return cwd / "whole"


def wait_for_checkpoints(run_dir, count, processes, timeout=240):
    """Waits until ``count`` checkpoints are whole while every process still runs."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for process in processes:
            assert process.poll() is None, process.communicate()[1][-3000:]
        if (run_dir / "checkpoints").is_dir() and len(saved_rounds(run_dir)) >= count:
            return
        time.sleep(0.02)
    raise AssertionError("no checkpoints appeared")


@pytest.mark.timeout(400)
def test_two_processes_killed_mid_run_resume_to_the_same_population(tmp_path, uninterrupted):
    (tmp_path / "run.toml").write_text(RUN_TOML)
    hosts = two_hosts("run", "run.toml", "--out", "killed", cwd=tmp_path)
    wait_for_checkpoints(tmp_path / "killed", 3, hosts)
    for host in hosts:
        stop(host)  # SIGKILL
    assert not (tmp_path / "killed" / "summary.json").exists()  # killed before the end
    assert saved_rounds(tmp_path / "killed")[-1] < ROUNDS

    resumed = two_hosts("run", "--resume", "killed", cwd=tmp_path)
    for host in resumed:
        finish(host)
    assert saved_rounds(tmp_path / "killed")[-1] == ROUNDS
    assert_same_population(
        saved_population(tmp_path / "killed", ROUNDS), saved_population(uninterrupted, ROUNDS)
    )
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    whole = json.loads((uninterrupted / "summary.json").read_text())
    assert (summary["best_member"], summary["test"]) == (whole["best_member"], whole["test"])
    assert read_metrics(tmp_path / "killed") == read_metrics(uninterrupted)


@pytest.mark.timeout(400)
def test_a_signal_to_one_process_stops_both_after_the_same_round(tmp_path, uninterrupted):
    # Checkpoints only at the end or on a signal, so the one saved is the signal's.
    (tmp_path / "run.toml").write_text(
        RUN_TOML.replace("checkpoint_every = 1", "checkpoint_every = 1000")
    )
    hosts = two_hosts("run", "run.toml", "--out", "stopped", cwd=tmp_path)
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
    resumed = start("run", "--resume", "stopped", cwd=tmp_path, devices=8)
    finish(resumed)
    assert_same_population(
        saved_population(tmp_path / "stopped", ROUNDS), saved_population(uninterrupted, ROUNDS)
    )


@pytest.mark.timeout(300)
def test_a_checkpoint_of_eight_devices_resumes_on_two(tmp_path, uninterrupted):
    run_dir = tmp_path / "fewer"
    shutil.copytree(uninterrupted, run_dir)
    kept = ROUNDS // 2
    for rounds in saved_rounds(run_dir):
        if rounds > kept:  # as if the run had died after round ``kept``
            shutil.rmtree(run_dir / "checkpoints" / str(rounds))
    (run_dir / "summary.json").unlink()

    resumed = start("run", "--resume", "fewer", cwd=tmp_path, devices=2)
    finish(resumed)
    assert len(json.loads((run_dir / "summary.json").read_text())["devices"]) == 2
    assert saved_rounds(run_dir)[-1] == ROUNDS
    again, whole = read_metrics(run_dir), read_metrics(uninterrupted)
    assert len(again) == len(whole) == ROUNDS
    assert again[:kept] == whole[:kept]
    # The first round after the resume starts from the same population; 4 members per device
    # instead of 1 changes the shapes of the matmuls, so only float rounding differs.
    np.testing.assert_allclose(again[kept]["train_loss"], whole[kept]["train_loss"], rtol=1e-4)
    assert again[kept]["parents"] == whole[kept]["parents"]


def test_only_the_newest_checkpoints_are_kept(tmp_path, small_data, small_model):
    popjax.run(
        data=small_data,
        model=small_model,
        population=2,
        steps=50,
        interval=10,
        batch_size=16,
        checkpoint_every=1,
        keep_checkpoints=2,
        out=tmp_path / "run",
        progress=False,
    )
    assert saved_rounds(tmp_path / "run") == [4, 5]  # 50 steps / 10 a round, the last two
