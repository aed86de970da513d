"""The population spread over devices and processes: bit for bit the same population wherever
each device holds the same members, and on one device the same to float rounding at first.

Each case runs in fresh subprocesses, since the CPU device count is fixed when JAX starts.
"""

from pathlib import Path

import numpy as np
import pytest

from conftest import finish_process, free_port, run_process, start_process

# Every test starts popjax processes, over meshes of devices and processes.
pytestmark = [pytest.mark.slow, pytest.mark.version_sensitive]

WORKER = str(Path(__file__).with_name("sweep_worker.py"))


def start_worker(out, devices, *distributed):
    args = ["python", WORKER, str(out), *map(str, distributed)]
    return start_process(args, devices=devices, merge_stderr=True)


def finish(process, timeout=400):
    output, _ = finish_process(process, timeout)
    assert process.returncode == 0, output[-3000:]


def saved(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def one_device(tmp_path_factory, mnist1d):  # MNIST-1D in the cache before any worker starts
    out = tmp_path_factory.mktemp("one") / "pop.npz"
    finish(start_worker(out, 1))
    return saved(out)


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory, mnist1d):
    out = tmp_path_factory.mktemp("eight") / "pop.npz"
    finish(start_worker(out, 8))
    return saved(out)


def assert_same_population(a, b):
    """Bit for bit: the lineage, every round's training losses and every leaf at the end."""
    assert np.array_equal(a["parents"], b["parents"])
    assert np.array_equal(a["train_loss"], b["train_loss"])
    leaves = [k for k in a if k.startswith("leaf")]
    assert leaves and leaves == [k for k in b if k.startswith("leaf")]
    for key in leaves:
        assert np.array_equal(a[key], b[key]), key


def test_one_device_agrees_with_eight_to_float_rounding_in_the_first_round(
    one_device, eight_devices
):
    # Eight members on one device and one on each of eight run the same arithmetic in matmuls
    # of other shapes: the first round's losses agree to float rounding, not necessarily bit for
    # bit, and training may amplify the difference until PBT chooses differently.
    assert int(one_device["num_devices"]) == 1 and int(eight_devices["num_devices"]) == 8
    first_one, first_eight = one_device["train_loss"][0], eight_devices["train_loss"][0]
    assert first_one.shape == (8,) and len(set(first_one.tolist())) == 8
    np.testing.assert_allclose(first_one, first_eight, rtol=1e-5)
    assert (eight_devices["parents"] != np.arange(8)).any()  # PBT copied across devices


def test_two_processes_of_four_devices_match_one_process_of_eight_bit_for_bit(
    tmp_path, eight_devices
):
    # One member on every device in both: the same programs on the same shapes.
    coordinator = f"127.0.0.1:{free_port()}"
    out = tmp_path / "pop.npz"
    workers = [start_worker(out, 4, coordinator, 2, i) for i in range(2)]
    for worker in workers:
        finish(worker)
    two = saved(out)
    assert int(two["num_processes"]) == 2 and int(two["num_devices"]) == 8
    assert_same_population(two, eight_devices)


def test_population_that_devices_do_not_divide_names_sizes_that_work(tmp_path):
    done = run_process(
        ["python", "-m", "popjax", "run", "--population", "12", "--out", "run"],
        cwd=tmp_path,
        devices=8,
    )
    assert done.returncode == 2
    assert "population 12 does not divide over 8 devices: use 8 or 16" in done.stderr
    assert not (tmp_path / "run").exists()


def test_run_from_python_uses_a_device_per_core_where_jax_has_not_started():
    from popjax.devices import cpu_cores, use_cpu_cores

    script = (
        "import numpy as np, popjax\n"
        "x, y = np.ones((64, 4), np.float32), np.arange(64, dtype=np.int32) % 2\n"
        "data = popjax.data.from_arrays(x[:48], y[:48], x[48:], y[48:], val_fraction=0.25)\n"
        "r = popjax.run(population=4, steps=4, interval=2, batch_size=8, write=False,\n"
        "               progress=False, data=data, model=popjax.nn.MLP(hidden=(4,)))\n"
        "print(len(r.devices))\n"
    )
    done = run_process(["python", "-c", script])
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.split()[-1]) == np.gcd(cpu_cores(), 4)
    # Here JAX has started (on one device): the device count stays as it is.
    assert use_cpu_cores(4) is None
