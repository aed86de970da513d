"""A training split streamed from the host a window a round: the windows, the memory check,
equality with resident data, and a killed streamed run resuming bit for bit."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import popjax
from popjax.cli import main
from popjax.dataset import sample_balanced, window_class_index
from popjax.errors import PopjaxError
from popjax.stream import Stream, window_positions, window_size

from conftest import final_state, kill_and_resume, tree_equal


def test_windows_walk_through_shuffled_passes():
    count, window = 120, 30
    rounds = [window_positions(7, r, count, window) for r in range(8)]
    for r in range(0, 8, 4):  # each pass of 4 windows holds every position once
        assert np.array_equal(np.sort(np.concatenate(rounds[r : r + 4])), np.arange(count))
    assert not np.array_equal(np.concatenate(rounds[:4]), np.concatenate(rounds[4:]))
    # A pure function of (seed, round): the same again, another seed another order.
    assert np.array_equal(window_positions(7, 5, count, window), rounds[5])
    assert not np.array_equal(window_positions(8, 5, count, window), rounds[5])
    # A window that does not divide the split runs on into the next pass.
    assert len(window_positions(7, 3, count, 50)) == 50
    assert np.array_equal(window_positions(7, 3, count, count), np.arange(count))


def test_window_as_an_amount_of_memory():
    assert window_size("1KiB", 64, 10_000) == 16
    assert window_size(300, 64, 10_000) == 300
    with pytest.raises(PopjaxError, match="data window"):
        window_size("32B", 64, 10_000)


def test_balanced_sampling_draws_the_classes_a_window_holds():
    labels = np.array([0, 0, 0, 0, 2, 2], np.int32)  # class 1 is not in this window
    tables = window_class_index(labels, 3)
    assert tables["classes_present"].shape == (3,)
    split = {"x": np.arange(6, dtype=np.float32)[:, None], "y": labels, **tables}
    _, drawn = jax.jit(lambda k: sample_balanced(k, split, 4000, 1.0))(jax.random.PRNGKey(0))
    counts = np.bincount(np.asarray(drawn), minlength=3)
    assert counts[1] == 0 and abs(counts[0] - counts[2]) < 300


def test_a_window_covering_the_split_trains_as_resident_data(small_data, tiny_run):
    d = small_data
    x = np.concatenate([d.x_train, d.x_val])  # from_arrays's split again, from one array
    y = np.concatenate([d.y_train, d.y_val])
    split = dict(val_fraction=0.25, seed=3)
    resident = popjax.data.from_arrays(x, y, d.x_test, d.y_test, **split)
    whole = popjax.data.from_arrays(x, y, d.x_test, d.y_test, window=len(x), **split)
    a, b = tiny_run(data=resident, steps=30), tiny_run(data=whole, steps=30)
    assert b.stream["all"]["windows"] == 1
    assert tree_equal(a.population, b.population)
    assert a.history == b.history


def seen_task(x, window):
    """A task of one's own that marks in its state every example its batches drew."""
    count = len(x)

    def init(key, hparams, train):
        return {"seen": jnp.zeros(count, bool), "w": jnp.zeros(())}

    def train(state, hparams, key, step, window_data):
        index = jax.random.randint(key, (32,), 0, window_data["x"].shape[0])
        ids = window_data["x"][index, 0].astype(jnp.int32)  # an example's first value: its id
        return {**state, "seen": state["seen"].at[ids].set(True)}, {"loss": jnp.float32(0)}

    def evaluate(state, hparams, key, split):
        return {"fitness": state["seen"].mean()}

    data = popjax.TaskData(Stream({"x": x}, window=window, seed=5), val=jnp.zeros(1))
    return popjax.Task(init, train, evaluate, data=data, space={"lr": popjax.Fixed(0.1)})


def test_a_memmap_larger_than_the_memory_limit_streams_through_every_window(tmp_path):
    count, window, rounds = 4096, 256, 16  # one pass of 16 windows
    x = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.float32, (count, 64))
    x[:] = np.arange(count, dtype=np.float32)[:, None]
    x.flush()
    x = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert x.nbytes > 512 * 1024
    result = popjax.run(
        task=seen_task(x, window),
        population=4,
        steps=rounds * 20,
        interval=20,
        memory_limit="512KiB",
        write=False,
        progress=False,
    )
    assert result.stream["all"]["windows"] == rounds
    seen = np.asarray(result.population.state["seen"])
    windows = [window_positions(5, r, count, window) for r in range(rounds)]
    in_windows = np.zeros(count, bool)
    in_windows[np.concatenate(windows)] = True
    assert in_windows.all()  # the windows cover the memmap
    for member in seen:
        assert not (member & ~in_windows).any()
        # 640 draws from each window of 256 see about 92% of it: every window, most examples.
        assert all(member[w].mean() > 0.8 for w in windows)
    assert len({member.tobytes() for member in seen}) == 4  # each member its own batches


NPY_TOML = """
name = "streamed"
population = 4
steps = {steps}
interval = 10
batch_size = 16
checkpoint_every = 1
keep_checkpoints = 30
memory_limit = "{limit}"

[data]
name = "npy"
path = "data"
{window}

[model]
name = "mlp"
hidden = [8]
"""


def write_npy(folder, count=6000, features=32):
    rng = np.random.default_rng(0)
    (folder / "data").mkdir()
    x = np.lib.format.open_memmap(folder / "data/x.npy", "w+", np.float32, (count, features))
    x[:] = rng.normal(size=(count, features))
    np.save(folder / "data/y.npy", (x[:, :4].argmax(axis=1)).astype(np.int32))
    x.flush()
    np.save(folder / "data/x_test.npy", rng.normal(size=(100, features)).astype(np.float32))
    np.save(folder / "data/y_test.npy", rng.integers(0, 4, 100).astype(np.int32))


def test_the_command_streams_an_npy_folder_larger_than_the_limit_and_refuses_it_resident(
    tmp_path, monkeypatch, capsys
):
    write_npy(tmp_path)  # 750 KiB of inputs
    monkeypatch.chdir(tmp_path)
    config = NPY_TOML.format(steps=40, limit="600KiB", window="window = 512")
    (tmp_path / "streamed.toml").write_text(config)
    assert main(["run", "streamed.toml", "--out", "ok", "--quiet", "--no-report"]) == 0
    summary = json.loads((tmp_path / "ok/summary.json").read_text())
    assert summary["val"]["accuracy"] > 0.25
    (tmp_path / "resident.toml").write_text(config.replace("window = 512", ""))
    capsys.readouterr()
    assert main(["run", "resident.toml", "--out", "refused", "--quiet", "--no-report"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "data.window = " in err, err
    assert not (tmp_path / "refused").exists()


@pytest.mark.slow
def test_a_killed_streamed_run_resumes_bit_for_bit(tmp_path, monkeypatch):
    write_npy(tmp_path, count=3000)
    config = NPY_TOML.format(steps=120, limit="", window="window = 256")
    for folder in ("whole", "cut"):
        (tmp_path / folder).mkdir()
        write_npy(tmp_path / folder, count=3000)
        (tmp_path / folder / "run.toml").write_text(config)
    # The uninterrupted run in this process, on one device as the killed one.
    monkeypatch.chdir(tmp_path / "whole")
    assert main(["run", "run.toml", "--out", "whole", "--quiet", "--no-report"]) == 0
    kill_and_resume("run.toml", tmp_path / "cut", checkpoints=3, pause=0.2)
    whole, cut = tmp_path / "whole/whole", tmp_path / "cut/killed"
    whole_rounds, whole_leaves = final_state(whole)
    rounds, leaves = final_state(cut)
    assert rounds == whole_rounds == 12
    assert all(np.array_equal(a, b) for a, b in zip(leaves, whole_leaves))
    assert (cut / "metrics.jsonl").read_text() == (whole / "metrics.jsonl").read_text()
