"""Small shared pieces: tests use tiny populations and few steps to stay quick on a CPU.

This process runs on one CPU device (or on the machine's accelerator), whatever device count
the environment sets: a test that needs several devices starts a subprocess and sets the count
there. Every subprocess a test starts is killed when the test ends, passed or failed.
"""

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# Before JAX starts: a device count set in the environment (JAX_NUM_CPU_DEVICES, or XLA's
# forced host device count) applies neither to this process nor to the popjax processes the
# tests start, which take popjax's own default unless a test sets one.
os.environ.pop("JAX_NUM_CPU_DEVICES", None)
if "XLA_FLAGS" in os.environ:
    os.environ["XLA_FLAGS"] = re.sub(
        r"--xla_force_host_platform_device_count=\S*", "", os.environ["XLA_FLAGS"]
    ).strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from popjax import data as datasets  # noqa: E402
from popjax.nn import MLP  # noqa: E402

# popjax's cache (compiled programs, MNIST-1D) in a folder of the session's own, shared by the
# popjax processes the tests start, and removed at the end: nothing is left in the user's cache.
SESSION_CACHE = tempfile.mkdtemp(prefix="popjax-test-cache-")
os.environ["POPJAX_CACHE_DIR"] = SESSION_CACHE
os.environ.pop("POPJAX_CACHE", None)


def pytest_sessionfinish(session, exitstatus):
    for process in STARTED:
        stop(process)
    shutil.rmtree(SESSION_CACHE, ignore_errors=True)


# Every subprocess the tests start, in its own process group; a test's are killed at its end.
STARTED: list[subprocess.Popen] = []


def start_process(args, *, cwd=None, env=None, merge_stderr=False):
    """A subprocess with text pipes, registered to be killed (its whole process group) when the
    test ends; ``env`` replaces the environment, as in ``subprocess.Popen``."""
    process = subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    STARTED.append(process)
    return process


def stop(process):
    """Kills the process and its group if still running, and reaps it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        process.communicate(timeout=10)


def finish_process(process, timeout):
    """``(stdout, stderr)`` of the process run to its end; killed if it takes longer than
    ``timeout`` seconds or anything (a pytest-timeout) interrupts the wait."""
    try:
        return process.communicate(timeout=timeout)
    except BaseException:
        stop(process)
        raise


def run_process(args, *, cwd=None, timeout=300, env=None):
    """``subprocess.run(args, capture_output=True, text=True)``, its process killed on failure."""
    process = start_process(args, cwd=cwd, env=env)
    out, err = finish_process(process, timeout)
    return subprocess.CompletedProcess(args, process.returncode, out, err)


@pytest.fixture(autouse=True)
def no_process_outlives_its_test():
    first = len(STARTED)
    yield
    for process in STARTED[first:]:
        stop(process)
    del STARTED[first:]


@pytest.fixture(scope="session")
def mnist1d():
    return datasets.mnist1d()


@pytest.fixture(scope="session")
def small_data():
    """A small 3-class problem; enough to take real gradients."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12)).astype(np.float32)
    y = (x[:, :3].argmax(axis=1)).astype(np.int32)
    return datasets.from_arrays(x[:240], y[:240], x[240:], y[240:], val_fraction=0.25)


@pytest.fixture(scope="session")
def small_model():
    return MLP(hidden=(16,), num_classes=3)


def hparams_for(size, learning_rate=0.1, momentum=0.0, dropout=0.0, weight_decay=0.0):
    """Per-member hyperparameter arrays; each argument is a scalar or a list of ``size``."""
    values = dict(
        learning_rate=learning_rate, momentum=momentum, dropout=dropout, weight_decay=weight_decay
    )
    return {k: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (size,)) for k, v in values.items()}


def tree_allclose(a, b, **tolerance):
    leaves = jax.tree_util.tree_leaves(
        jax.tree_util.tree_map(
            lambda x, y: np.allclose(np.asarray(x), np.asarray(y), **tolerance), a, b
        )
    )
    return all(leaves)


def tree_equal(a, b):
    leaves = jax.tree_util.tree_leaves(
        jax.tree_util.tree_map(lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)), a, b)
    )
    return all(leaves)


def classifier(data, model, **options):
    """popjax's classification task on ``data``; batches of 16 unless told otherwise."""
    from popjax.tasks import supervised

    return supervised.classification(model, data, **{"batch_size": 16, **options})


def members(task, hparams, seed=42):
    """A population of the task, one member per entry of the ``[P]`` hyperparameter arrays."""
    from popjax.population import init_members, member_keys

    size = next(iter(hparams.values())).shape[0]
    return init_members(task, member_keys(jax.random.PRNGKey(seed), size), hparams)


def segment_of(task, steps):
    """The jitted training segment of ``steps`` steps, taking the population alone."""
    from popjax.train import make_segment

    segment = jax.jit(make_segment(task, steps))
    return lambda population: segment(population, task.data.train)


def popjax_command(*args, cwd, timeout=300, **env):
    """``popjax ARGS`` run to its end in a subprocess; ``env`` adds environment variables."""
    return run_process(
        [sys.executable, "-m", "popjax", *args],
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, **env},
    )


def popjax_cli(*args, cwd, report=False, **env):
    """``popjax ARGS`` started in a subprocess on one CPU device, where checkpoints compare bit
    for bit; ``env`` adds environment variables."""
    flags = ["--quiet"] + ([] if report else ["--no-report"])
    return start_process(
        [sys.executable, "-m", "popjax", *args, *flags],
        cwd=cwd,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "1", **env},
    )


def final_state(run_dir):
    """The population and fitness in the run's newest checkpoint, as host arrays."""
    from popjax.checkpoint import SweepCheckpoints

    checkpoints = SweepCheckpoints(run_dir)
    latest = checkpoints.rounds_saved()[-1]
    restored = checkpoints.manager.restore(latest)
    checkpoints.close()
    return latest, jax.tree_util.tree_leaves(jax.device_get(restored["state"]))


def wait_for_checkpoints(run_dir, count, process, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.communicate()
        folder = run_dir / "checkpoints"
        if folder.is_dir() and sum(p.name.isdigit() for p in folder.iterdir()) >= count:
            return
        time.sleep(0.05)
    raise AssertionError("no checkpoints appeared")
