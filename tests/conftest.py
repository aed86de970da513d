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
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Before JAX starts: a device count set in the environment (JAX_NUM_CPU_DEVICES, or XLA's
# forced host device count) applies neither to this process nor to the popjax processes the
# tests start, which take popjax's own default unless a test sets one.
os.environ.pop("JAX_NUM_CPU_DEVICES", None)
if "XLA_FLAGS" in os.environ:
    os.environ["XLA_FLAGS"] = re.sub(
        r"--xla_force_host_platform_device_count=\S*", "", os.environ["XLA_FLAGS"]
    ).strip()
# The suite's time is mostly XLA compiling small programs. Two of XLA's CPU options halve it:
# without LLVM's optimizations each program compiles in about half the time, and without XLA's
# newer fusion emitters the rest in about two thirds (the same operations, in slower code; the
# tests run little of it). The popjax processes the tests start inherit the flags; a flag
# already set in XLA_FLAGS stays as it is.
TEST_XLA_FLAGS = {
    "--xla_backend_optimization_level": "0",
    "--xla_cpu_use_fusion_emitters": "false",
}
for flag, value in TEST_XLA_FLAGS.items():
    if flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}={value}".strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from popjax import data as datasets  # noqa: E402

# JAX starts here, on one CPU device, before any test runs: popjax.run's device per core
# applies only where JAX has not started, so no test's devices depend on the tests before it.
jax.devices()
from popjax import cache as caches  # noqa: E402
from popjax.nn import MLP  # noqa: E402

# popjax's cache (compiled programs, MNIST-1D) in a folder of the test run's own, shared by the
# popjax processes the tests start, and removed at the end: nothing is left in the user's cache.
# pytest-xdist's workers are sessions of their own, started with the environment of the process
# that made the folder: they share it, so a program one of them compiled the others load.
SESSION_CACHE = os.environ.get("POPJAX_TEST_CACHE") or tempfile.mkdtemp(prefix="popjax-test-cache-")
OWNS_CACHE = "POPJAX_TEST_CACHE" not in os.environ
os.environ["POPJAX_TEST_CACHE"] = SESSION_CACHE
os.environ["POPJAX_CACHE_DIR"] = SESSION_CACHE
os.environ.pop("POPJAX_CACHE", None)
# This process too: a program that several tests compile (the same tiny sweep, the same step) is
# compiled once a session, whichever worker or test compiles it first.
caches.enable_compilation_cache()


def pytest_sessionfinish(session, exitstatus):
    for process in STARTED:
        stop(process)
    if OWNS_CACHE:
        shutil.rmtree(SESSION_CACHE, ignore_errors=True)


# Every subprocess the tests start, in its own process group; a test's are killed at its end.
STARTED: list[subprocess.Popen] = []


def start_process(args, *, cwd=None, env=None, devices=None, merge_stderr=False):
    """A subprocess with text pipes, registered to be killed (its whole process group) when the
    test ends; ``env`` replaces the environment, as in ``subprocess.Popen``; ``devices`` runs it
    on that many CPU devices. The one way the tests start a process: the other helpers call it.

    ``args`` may start with ``python``: this interpreter, so the subprocess imports this popjax.
    """
    if args[0] == "python":
        args = [sys.executable, *args[1:]]
    if devices is not None:
        env = {**(os.environ if env is None else env)}
        env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices))
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


def run_process(args, *, cwd=None, timeout=300, env=None, devices=None):
    """``subprocess.run(args, capture_output=True, text=True)``, its process killed on failure;
    the arguments as ``start_process``'s."""
    process = start_process(args, cwd=cwd, env=env, devices=devices)
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
        ["python", "-m", "popjax", *args], cwd=cwd, timeout=timeout, env={**os.environ, **env}
    )


def popjax_cli(*args, cwd, report=False, devices=1, **env):
    """``popjax ARGS`` started in a subprocess on ``devices`` CPU devices (one by default, where
    checkpoints compare bit for bit); ``env`` adds environment variables."""
    flags = ["--quiet"] + ([] if report else ["--no-report"])
    devices = env.pop("JAX_NUM_CPU_DEVICES", devices)
    command = ["python", "-m", "popjax", *args, *flags]
    return start_process(command, cwd=cwd, env={**os.environ, **env}, devices=devices)


def final_state(run_dir):
    """The population and fitness in the run's newest checkpoint, as host arrays."""
    from popjax.checkpoint import SweepCheckpoints

    checkpoints = SweepCheckpoints(run_dir)
    latest = checkpoints.rounds_saved()[-1]
    restored = checkpoints.manager.restore(latest)
    checkpoints.close()
    return latest, jax.tree_util.tree_leaves(jax.device_get(restored["state"]))


def saved_rounds(run_dir):
    """The rounds whose checkpoints are whole in the run folder, in order."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def died_after(run_dir, copy, rounds: int) -> list[int]:
    """Copies the run folder ``run_dir`` to ``copy`` as if its run had died after round
    ``rounds``: the later checkpoints and the summary gone. The rounds it had saved."""
    shutil.copytree(run_dir, copy)
    saved = saved_rounds(copy)
    for late in saved:
        if late > rounds:
            shutil.rmtree(Path(copy) / "checkpoints" / str(late))
    (Path(copy) / "summary.json").unlink()
    return saved


def wait_for_checkpoints(run_dir, count, process, timeout=240):
    """Waits until ``count`` checkpoints are whole while the process (or every process of a
    list) still runs."""
    processes = process if isinstance(process, list) else [process]
    deadline = time.time() + timeout
    while time.time() < deadline:
        for one in processes:
            assert one.poll() is None, one.communicate()[1][-3000:]
        if len(saved_rounds(run_dir)) >= count:
            return
        time.sleep(0.02)
    raise AssertionError("no checkpoints appeared")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sweep_processes(*args, cwd, processes=1, devices=1, **env):
    """``popjax ARGS`` started as the ``processes`` processes of one run (process 0 first),
    ``devices`` CPU devices each, as ``popjax_cli`` starts it."""
    if processes == 1:
        return [popjax_cli(*args, cwd=cwd, devices=devices, **env)]
    flags = ["--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", str(processes)]
    return [
        popjax_cli(*args, *flags, "--process-id", str(i), cwd=cwd, devices=devices, **env)
        for i in range(processes)
    ]


def finish_sweep(processes, timeout=400):
    """Waits for every process of a run to end, each successfully; their stderr."""
    errors = []
    for process in processes:
        _, err = finish_process(process, timeout)
        assert process.returncode == 0, err[-3000:]
        errors.append(err)
    return errors


def kill_and_resume(config, cwd, *, checkpoints, pause=0.0, processes=1, devices=1, **env):
    """``popjax run CONFIG --out killed`` in ``cwd``, every process killed (SIGKILL) once
    ``checkpoints`` rounds are saved and ``pause`` seconds more, then resumed in the same layout
    and run to its end (in this process where its layout is this process's: one process, one
    device, no other environment). Returns the newest round saved when it was killed; the
    resume's own seconds, from its start to its end, are left in ``kill_and_resume.resumed_s``."""
    run_dir = Path(cwd) / "killed"
    layout = dict(cwd=cwd, processes=processes, devices=devices, **env)
    started = sweep_processes("run", config, "--out", "killed", **layout)
    wait_for_checkpoints(run_dir, checkpoints, started)
    time.sleep(pause)
    for process in started:
        stop(process)
    assert not (run_dir / "summary.json").exists()  # killed before its end
    killed_after = saved_rounds(run_dir)[-1]
    began = time.perf_counter()
    if (processes, devices, env) == (1, 1, {}):
        # The layout of this process: the resume runs here, on the programs already compiled
        # here or in the session's cache, without a process's start. The kill is the process's.
        from popjax.cli import main

        assert main(["run", "--resume", str(run_dir), "--quiet", "--no-report"]) == 0
    else:
        finish_sweep(sweep_processes("run", "--resume", "killed", **layout))
    kill_and_resume.resumed_s = time.perf_counter() - began
    return killed_after


# The sweep the kill-and-resume tests stop and resume: 24 rounds, a checkpoint after every second
# (a checkpoint costs more than a round of this small sweep), every one kept (a test may cut the
# run back to any of them); 8 members, one a device on 8 devices. A kill between checkpoints
# makes the resumed run train a round again. A round's cost is mostly its fixed part (the host's
# records, PBT, the processes agreeing), not its steps: fewer rounds make a test cheaper.
# MNIST-1D, which each process loads from the session's cache in a moment, where the digits cost
# each process seconds importing sklearn.
RUN_TOML = """
name = "resume"
population = 8
steps = 480
interval = 20
batch_size = 16
checkpoint_every = 2
keep_checkpoints = 30

[data]
name = "mnist1d"

[model]
name = "mlp"
hidden = [32]
"""
ROUNDS = 24


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory, mnist1d):
    """``uninterrupted(processes=1, devices=1, toml=RUN_TOML)``: the run folder of the sweep
    ``toml`` run to its end in that layout without a stop, run once a session for each (on one
    device, in this process, whose programs the killed processes then load from the session's
    cache). MNIST-1D is in the session's cache before any process of the sweep starts."""
    runs = {}

    def run(processes=1, devices=1, toml=RUN_TOML):
        if (processes, devices, toml) not in runs:
            cwd = tmp_path_factory.mktemp("whole")
            (cwd / "run.toml").write_text(toml)
            if (processes, devices) == (1, 1):  # this process's layout: run here, compile once
                from popjax.cli import main

                out = ["--out", str(cwd / "whole"), "--quiet", "--no-report"]
                assert main(["run", str(cwd / "run.toml"), *out]) == 0
            else:
                layout = dict(cwd=cwd, processes=processes, devices=devices)
                finish_sweep(sweep_processes("run", "run.toml", "--out", "whole", **layout))
            runs[processes, devices, toml] = cwd / "whole"
        return runs[processes, devices, toml]

    return run


# A tiny sweep: a small classifier, a few rounds; what a test changes goes in its arguments.
TINY_RUN = dict(population=4, steps=60, interval=10, batch_size=16, progress=False)


@pytest.fixture(scope="session")
def tiny_run(small_data, small_model):
    """``tiny_run(config=None, **settings)``: ``popjax.run`` of TINY_RUN on ``small_data`` and
    ``small_model``, ``settings`` overriding; it writes a run folder only when given ``out``."""
    import popjax

    def run(*config, **settings):
        settings = {"data": small_data, "model": small_model, **TINY_RUN, **settings}
        settings.setdefault("write", "out" in settings)
        return popjax.run(*config, **settings)

    return run


def random_policy_return(env_name: str, steps: int, episodes: int) -> float:
    """The mean return of ``episodes`` episodes of at most ``steps`` steps on a gymnax
    environment under uniformly random actions (its action space's own sampler), played with
    gymnax directly: the chance level a learning test beats."""
    import gymnax

    env, params = gymnax.make(env_name)
    space = env.action_space(params)

    def episode(key):
        reset_key, play_key = jax.random.split(key)
        _, state = env.reset(reset_key, params)

        def step(carry, key):
            state, total, running = carry
            action_key, step_key = jax.random.split(key)
            out = env.step(step_key, state, space.sample(action_key), params)
            state, reward = out[1], out[2]
            done = out[3] | out[4] if len(out) == 6 else out[3]
            return (state, total + reward * running, running & ~done), None

        (_, total, _), _ = jax.lax.scan(
            step, (state, 0.0, jnp.bool_(True)), jax.random.split(play_key, steps)
        )
        return total

    keys = jax.random.split(jax.random.PRNGKey(9), episodes)
    return float(jax.jit(jax.vmap(episode))(keys).mean())


def jitted_population(task, space, size, seed=0):
    """``init_population`` of ``size`` members, compiled as one program: run eagerly, a task's
    init (an agent's networks, its environments' resets) dispatches and compiles op by op."""
    from popjax.population import init_population

    return jax.jit(lambda key: init_population(key, task, space, size))(jax.random.PRNGKey(seed))


def jitted_pbt_step(space, config):
    """``pbt_step(key, population, fitness, space, config, active=True)``, compiled as one
    program, as the round runs it."""
    from popjax.pbt import pbt_step

    return jax.jit(
        lambda key, population, fitness: pbt_step(
            key, population, fitness, space, config, active=True
        )
    )
