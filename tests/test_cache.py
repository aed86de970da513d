"""popjax's cache: a rerun compiles nothing it compiled before; MNIST-1D is generated once and a
damaged copy is never trusted; turned off, nothing is read or written."""

import json
import os

import numpy as np
import pytest

from popjax import cache
from popjax import data as datasets

from conftest import run_process


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("POPJAX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("POPJAX_CACHE", raising=False)
    return tmp_path / "cache"


def counting(arrays):
    calls = []

    def make():
        calls.append(1)
        return {k: v.copy() for k, v in arrays.items()}

    return make, calls


ARRAYS = {"x": np.arange(12, dtype=np.float64).reshape(3, 4), "y": np.array([2, 0, 1])}


def test_arrays_are_made_once_per_key(cache_dir):
    make, calls = counting(ARRAYS)
    first = cache.cached_arrays("toy", {"n": 3}, make)
    second = cache.cached_arrays("toy", {"n": 3}, make)
    assert len(calls) == 1
    for name, array in ARRAYS.items():
        np.testing.assert_array_equal(second[name], array)
        assert second[name].dtype == array.dtype
        np.testing.assert_array_equal(first[name], array)
    cache.cached_arrays("toy", {"n": 4}, make)  # other arguments, another entry
    assert len(calls) == 2
    assert len(list((cache_dir / "datasets").iterdir())) == 2


@pytest.mark.parametrize("damage", ["truncate", "flip", "replace"])
def test_a_damaged_copy_is_made_anew(cache_dir, damage):
    make, calls = counting(ARRAYS)
    cache.cached_arrays("toy", {"n": 3}, make)
    (path,) = (cache_dir / "datasets").iterdir()
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":  # one byte of x's data, past the zip and .npy headers
        at = raw.index(ARRAYS["x"].tobytes()) + 5
        path.write_bytes(raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1 :])
    else:  # a well-formed file whose arrays do not match its digest
        with open(path, "wb") as file:
            np.savez(file, digest=np.asarray("0" * 64), x=ARRAYS["x"] + 1, y=ARRAYS["y"])
    again = cache.cached_arrays("toy", {"n": 3}, make)
    assert len(calls) == 2
    np.testing.assert_array_equal(again["x"], ARRAYS["x"])
    # ... and the good copy took its place.
    cache.cached_arrays("toy", {"n": 3}, make)
    assert len(calls) == 2


def test_turned_off_nothing_is_read_or_written(cache_dir, monkeypatch):
    monkeypatch.setenv("POPJAX_CACHE", "off")
    make, calls = counting(ARRAYS)
    cache.cached_arrays("toy", {"n": 3}, make)
    cache.cached_arrays("toy", {"n": 3}, make)
    assert len(calls) == 2
    assert not cache_dir.exists()


def test_cached_mnist1d_is_what_mnist1d_generates(cache_dir):
    from mnist1d.data import get_dataset_args, make_dataset

    raw = make_dataset(get_dataset_args())
    generated = datasets.from_arrays(raw["x"], raw["y"], raw["x_test"], raw["y_test"])
    first, second = datasets.mnist1d(), datasets.mnist1d()
    assert len(list((cache_dir / "datasets").iterdir())) == 1
    for loaded in (first, second):
        for split in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
            np.testing.assert_array_equal(getattr(loaded, split), getattr(generated, split))


COUNT_COMPILES = """
import json, collections
from jax import monitoring
events = collections.Counter()
monitoring.register_event_listener(lambda event, **kwargs: events.update([event]))
import numpy as np, popjax, popjax.nn
# Small arrays of its own, where MNIST-1D would take each process seconds to generate.
x = np.random.default_rng(0).normal(size=(96, 8)).astype(np.float32)
y = (x[:, 0] > 0).astype(np.int32)
data = popjax.data.from_arrays(x[:64], y[:64], x[64:], y[64:], val_fraction=0.25)
popjax.run(population=2, steps=20, interval=10, batch_size=16, write=False, progress=False,
           data=data, model=popjax.nn.MLP(hidden=(8,)), cache={cache}, seed={seed})
print(json.dumps({{
    "hits": events["/jax/compilation_cache/cache_hits"],
    "misses": events["/jax/compilation_cache/cache_misses"],
    "requests": events["/jax/compilation_cache/compile_requests_use_cache"],
}}))
"""


@pytest.mark.slow
@pytest.mark.version_sensitive
@pytest.mark.timeout(300)
def test_a_rerun_compiles_nothing_it_compiled_before(cache_dir):
    def sweep(cache_on=True, seed=0):
        done = run_process(
            ["python", "-c", COUNT_COMPILES.format(cache=cache_on, seed=seed)],
            devices=1,
            timeout=240,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    cold = sweep()
    assert cold["misses"] > 0 and cold["hits"] == 0
    warm = sweep()
    assert warm == {"hits": cold["misses"], "misses": 0, "requests": cold["requests"]}
    entries = sorted(os.listdir(cache_dir / "jax"))
    # The keys are arguments of the programs, not constants in them: another seed runs the same.
    assert sweep(seed=1) == warm
    assert sorted(os.listdir(cache_dir / "jax")) == entries
    off = sweep(cache_on=False)
    assert (off["hits"], off["misses"]) == (0, 0)
    assert sorted(os.listdir(cache_dir / "jax")) == entries
