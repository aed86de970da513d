"""Populations as large as the device holds: a round too large for the memory limit runs its
members in slices with the same results, ``population = "auto"`` finds the most that fit whole,
and what cannot fit ends in a one-line error."""

import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import popjax
from popjax.amounts import parse_bytes
from popjax.cli import main
from popjax.config import ConfigError, SweepConfig
from popjax.errors import PopjaxError
from popjax.memory import choose_slices, largest_population, slice_counts
from popjax.nn import MLP
from popjax.runfolder import read_summary
from popjax.train import in_slices

# Activations dominate this round (large batches of a small MLP), so slices save most of it.
SWEEP = dict(
    steps=20,
    interval=10,
    batch_size=512,
    write=False,
    progress=False,
    model=MLP(hidden=(16,)),
)


@pytest.mark.parametrize(
    "text, count", [("2GiB", 2 * 2**30), ("512MB", 512 * 10**6), ("1.5 kib", 1536), (4096, 4096)]
)
def test_amounts_of_memory_read_as_bytes(text, count):
    assert parse_bytes(text) == count


@pytest.mark.parametrize("text", ["lots", "-1GB", "0", "2 GiBs", ""])
def test_unreadable_amounts_name_the_setting(text):
    with pytest.raises(PopjaxError, match="memory_limit must be an amount"):
        parse_bytes(text)
    if text:
        with pytest.raises(ConfigError, match="memory_limit"):
            SweepConfig(memory_limit=text).validate()


def test_slices_divide_the_members_of_a_device():
    assert slice_counts(12) == [1, 2, 4, 12]
    assert slice_counts(8) == [1, 2, 4, 8]
    assert slice_counts(1) == [1]


@pytest.mark.parametrize("slices, shards", [(2, 1), (4, 2), (3, 4)])
def test_slices_keep_every_member_in_its_place(slices, shards):
    size = 24
    members = jnp.arange(size)
    seen_together = []

    def fn(part, offset):
        seen_together.append(part.shape[0])
        return part * 10 + offset, {"id": part}

    out, metrics = jax.jit(in_slices(fn, slices, shards))(members, 1)
    assert np.array_equal(out, np.arange(size) * 10 + 1)
    assert np.array_equal(metrics["id"], np.arange(size))
    assert seen_together[-1] == size // slices
    # Each slice takes the same share of every shard's block of members.
    layout = np.arange(size).reshape(shards, slices, -1)
    first_slice = layout[:, 0].ravel()
    assert len(set(first_slice // (size // shards))) == shards


def test_a_round_over_the_limit_runs_in_slices_with_the_same_results():
    whole = popjax.run(population=4 * jax.device_count(), **SWEEP)
    assert whole.memory["all"]["slices"] == 1
    needed = whole.memory["all"]["round_bytes"]
    sliced = popjax.run(population=4 * jax.device_count(), memory_limit=needed - 1, **SWEEP)
    assert sliced.memory["all"]["slices"] > 1
    assert sliced.memory["all"]["round_bytes"] < needed
    assert sliced.compilations == 1
    # The same members, keys and PBT choices; the weights agree to float rounding (the
    # members' matmuls are batched in other shapes).
    assert [r["parents"] for r in sliced.history] == [r["parents"] for r in whole.history]
    for a, b in zip(
        jax.tree_util.tree_leaves(whole.population), jax.tree_util.tree_leaves(sliced.population)
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_auto_finds_the_most_members_whose_round_fits_whole(tmp_path, monkeypatch, mnist1d):
    monkeypatch.setenv("POPJAX_CACHE_DIR", str(tmp_path))  # the choice is remembered here
    # The session's MNIST-1D, which the cache here would generate anew.
    sweep = {**SWEEP, "data": mnist1d}
    devices = jax.device_count()
    # 8 members a device, one of the two sizes the search measures first: its first guess
    # is then measured already, and the search compiles one round fewer.
    reference = popjax.run(population=8 * devices, **sweep)
    limit = reference.memory["all"]["round_bytes"]
    auto = popjax.run(population="auto", memory_limit=limit, **sweep)
    size = auto.config.population
    # Sized from rounds compiled only to read their memory plans; the same round, devices and
    # limit again are sized from the choice remembered, with no such compile.
    assert auto.compile["memory_plan/round_fn"]["count"] >= 2
    again = popjax.run(population="auto", memory_limit=limit, **sweep)
    assert again.config.population == size
    assert again.compile.get("memory_plan/round_fn", {"count": 0})["count"] == 0
    assert again.compile["round_fn"]["count"] == 1
    assert size >= 8 * devices and size % devices == 0
    assert auto.memory["all"] == {"slices": 1, "round_bytes": auto.memory["all"]["round_bytes"]}
    assert auto.memory["all"]["round_bytes"] <= limit
    # One more member a device no longer fits whole: that sweep runs in slices.
    more = popjax.run(population=size + devices, memory_limit=limit, **sweep)
    assert more.memory["all"]["slices"] > 1


def test_auto_population_is_for_one_population():
    with pytest.raises(ConfigError, match="auto"):
        SweepConfig(
            population="auto", groups=[{"name": "a", "population": 2}, {"name": "b"}]
        ).validate()


@pytest.mark.slow
def test_command_line_sizes_the_population_and_refuses_what_cannot_fit(
    tmp_path, monkeypatch, capsys
):
    # The command's entry point in this process, on its one device: a process adds nothing.
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "small.toml"
    config.write_text("steps = 20\ninterval = 10\nbatch_size = 256\n[model]\nhidden = [16]\n")
    args = ["run", str(config), "--quiet", "--no-report"]
    # The data (MNIST-1D, about 815 KiB) fits in 900 KiB; a member of a wide MLP on batches
    # of 1024 does not (one member: its round is compiled once, not again in slices).
    big = tmp_path / "big.toml"
    big.write_text("steps = 20\ninterval = 10\nbatch_size = 1024\n[model]\nhidden = [512, 512]\n")
    capsys.readouterr()
    done = main(
        ["run", str(big), "--quiet", "--no-report", "--population", "1"]
        + ["--memory-limit", "900KiB", "--out", "small"]
    )
    err = capsys.readouterr().err
    assert done == 2
    assert err.count("\n") == 1 and "per device even one member at a time" in err
    assert not (tmp_path / "small").exists()

    # About 8 members fit (some 110 KiB each), a size the search measures first: it then
    # compiles a few rounds, where a larger limit takes a longer search.
    done = main([*args, "--population", "auto", "--memory-limit", "1600KiB", "--out", "auto"])
    err = capsys.readouterr().err
    assert done == 0, err[-2000:]
    assert "population auto:" in err
    written = SweepConfig.from_toml(tmp_path / "auto" / "config.toml")
    summary = read_summary(tmp_path / "auto")
    assert isinstance(written.population, int) and written.population == summary["population"]
    assert summary["memory"]["all"]["round_bytes"] <= 1600 * 2**10


def test_a_population_neither_a_number_nor_auto_is_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["run", "--population", "many"])
    assert stop.value.code == 2 and 'or "auto"' in capsys.readouterr().err


@pytest.mark.parametrize("fixed, per, bend", [(500, 7, 0), (5000, 3, 0), (500, 7, 0.1)])
@pytest.mark.parametrize("devices", [1, 4])
def test_the_search_finds_the_largest_population_a_brute_force_finds(fixed, per, bend, devices):
    def bytes_at(size):  # per device, for ``size`` members over ``devices``
        local = size // devices
        return int(fixed + per * local + bend * local * local)

    budget = 9000
    size, _ = largest_population(bytes_at, devices, budget)
    fitting = [local for local in range(1, 2000) if bytes_at(local * devices) <= budget]
    assert size == max(fitting) * devices


def test_the_search_compiles_the_rounds_it_needs_together_side_by_side():
    lock, first_two = threading.Lock(), threading.Barrier(2, timeout=10)
    calls, running, most = [], [0], [0]

    def bytes_at(size):
        with lock:
            calls.append(size)
            index = len(calls)
            running[0] += 1
            most[0] = max(most[0], running[0])
        if index <= 2:
            first_two.wait()  # both first measurements in flight at once, or a timeout
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return 500 + 7 * size

    size, _ = largest_population(bytes_at, 1, 9000)
    assert size == (9000 - 500) // 7
    # The two measured sizes, then the guess (exact for a linear footprint) and the one after
    # it, two at a time: four compiles in the time of two.
    assert sorted(calls[:2]) == [4, 8] and sorted(calls[2:]) == [size, size + 1]
    assert most[0] == 2


def test_slices_chosen_are_the_fewest_that_fit():
    def bytes_with(slices):  # state 1000 a device, activations 800 shared by the slices
        return 1000 + 800 // slices

    assert choose_slices(bytes_with, 8, 1900, 8) == (1, 1800)
    assert choose_slices(bytes_with, 8, 1300, 8) == (4, 1200)
    with pytest.raises(PopjaxError, match="even one member at a time"):
        choose_slices(bytes_with, 8, 1000, 8)


def test_a_small_init_compiles_unoptimized_on_the_cpu_only():
    from popjax.programs import ONCE_ELEMENTS, run_once_options

    small = {"w": jax.ShapeDtypeStruct((4, 1000), jnp.float32)}
    large = {"w": jax.ShapeDtypeStruct((ONCE_ELEMENTS + 1,), jnp.float32)}
    assert run_once_options(small, "cpu") == {"xla_backend_optimization_level": 0}
    assert run_once_options(large, "cpu") == {}
    assert run_once_options(small, "gpu") == {}
