"""The task interface: a task written here with popjax's public interface alone runs under
``popjax.run`` and ``popjax run``, PBT copies its whole state, its metrics are recorded, and a
killed run of it resumes bit-identically. Bad tasks fail in one line."""

import json
import re
import signal
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import popjax

from conftest import popjax_command, run_process

NOISE = 0.1


def linear_regression(features: int = 4, examples: int = 256, seed: int = 0) -> popjax.Task:
    """Least squares by SGD with momentum: its own velocity (optimizer state) and a running
    mean of its training loss live in its state."""
    rng = np.random.default_rng(seed)
    w_true = rng.normal(size=features)

    def split(n):
        x = rng.normal(size=(n, features)).astype(np.float32)
        return {"x": x, "y": (x @ w_true + NOISE * rng.normal(size=n)).astype(np.float32)}

    def mse(w, split):
        return jnp.mean((split["x"] @ w - split["y"]) ** 2)

    def init(key, hparams, train):
        return {
            "w": 0.1 * jax.random.normal(key, (features,)),
            "velocity": jnp.zeros(features),
            "running_loss": jnp.float32(0.0),
        }

    def train(state, hparams, key, step, train):
        index = jax.random.randint(key, (32,), 0, train["x"].shape[0])
        loss, grad = jax.value_and_grad(mse)(state["w"], {k: v[index] for k, v in train.items()})
        velocity = hparams["momentum"] * state["velocity"] + grad
        return {
            "w": state["w"] - hparams["learning_rate"] * velocity,
            "velocity": velocity,
            "running_loss": 0.9 * state["running_loss"] + 0.1 * loss,
        }, {"loss": loss}

    def evaluate(state, hparams, key, split):
        return {"loss": mse(state["w"], split), "running_loss": state["running_loss"]}

    return popjax.Task(
        init,
        train,
        evaluate,
        fitness="loss",
        minimize=True,
        data=popjax.TaskData(split(examples), split(128), split(128)),
        space={"learning_rate": popjax.LogUniform(1e-3, 0.3), "momentum": popjax.Uniform(0.0, 0.9)},
        name="linear",
    )


def broken(kind: str) -> popjax.Task:
    """The linear task with one function returning the wrong thing."""
    task = linear_regression()
    if kind == "state":
        return task._replace(train=lambda s, h, k, step, d: ({"w": s["w"]}, {"loss": 0.0}))
    if kind == "metrics":
        return task._replace(train=lambda s, h, k, step, d: (s, {"loss": jnp.zeros(3)}))
    if kind == "fitness":
        return task._replace(evaluate=lambda s, h, k, d: {"error": jnp.float32(0)})
    return task._replace(init=lambda k, h, d: {"w": "zeros"})


TOML = """
population = 4
steps = {steps}
interval = 20
checkpoint_every = 1
keep_checkpoints = 3
task = "{factory}"
"""
TESTS = str(Path(__file__).parent)


def test_a_task_of_ones_own_trains_and_pbt_selects_the_lowest_loss():
    task = linear_regression()
    result = popjax.run(
        task=task, population=8, steps=200, interval=20, write=False, progress=False
    )
    assert result.selects_on == "loss" and result.minimize
    # Independently: the least-squares fit on the training data, scored on validation.
    train, val = task.data.train, task.data.val
    w_hat = np.linalg.lstsq(train["x"], train["y"], rcond=None)[0]
    best_possible = np.mean((val["x"] @ w_hat - val["y"]) ** 2)
    assert result.best_val["loss"] < 1.5 * best_possible
    last = result.history[-1]
    assert result.best_val["loss"] == min(last["val_loss"])
    assert set(last) >= {"train_loss", "val_loss", "val_running_loss"}
    # The best member's weights on the test split, computed here.
    w = np.asarray(result.population.state["w"])[result.best_member]
    test = task.data.test
    expected = np.mean((test["x"] @ w - test["y"]) ** 2)
    assert result.best_test["loss"] == pytest.approx(expected, rel=1e-5)


def test_pbt_copies_every_leaf_of_a_tasks_state():
    from popjax.config import PBTConfig
    from popjax.pbt import pbt_step
    from popjax.population import init_population, select
    from popjax.train import make_segment

    task = linear_regression()
    space = popjax.SearchSpace(task.space, builtin=False)
    population = init_population(jax.random.PRNGKey(0), task, space, 8)
    step = jax.jit(make_segment(task, 5))
    population, _ = step(population, task.data.train)  # velocities and running losses differ now
    fitness = jnp.arange(8.0)
    new, source, replaced = pbt_step(
        jax.random.PRNGKey(1), population, fitness, space, PBTConfig(), active=True
    )
    assert int(replaced.sum()) == 2
    for member in range(8):
        got, want = select(new, member), select(population, int(source[member]))
        for name in ("w", "velocity", "running_loss"):
            np.testing.assert_array_equal(got.state[name], want.state[name])
        np.testing.assert_array_equal(got.rng, population.rng[member])  # its own key stream
    # The copy's next step draws its batch from its own key: it moves unlike its source.
    after, _ = step(new, task.data.train)
    copy = int(np.flatnonzero(np.asarray(replaced))[0])
    assert not np.array_equal(after.state["w"][copy], after.state["w"][int(source[copy])])


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    from conftest import popjax_cli

    cwd = tmp_path_factory.mktemp("task")
    (cwd / "task.toml").write_text(TOML.format(steps=600, factory="test_task:linear_regression"))
    done = popjax_cli("run", "task.toml", "--out", "whole", cwd=cwd, report=True, PYTHONPATH=TESTS)
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    return cwd, out


def test_the_command_runs_a_task_named_in_a_config(cli_run):
    cwd, out = cli_run
    run = cwd / "whole"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 30
    assert lines[0]["selects_on"] == "val_loss" and lines[0]["minimize"] is True
    assert all(len(line["val_running_loss"]) == 4 for line in lines)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "test_task:linear_regression"
    assert summary["val"]["loss"] == min(lines[-1]["val_loss"])
    assert (run / "report.md").is_file() and (run / "fitness.png").is_file()
    assert "validation loss" in out


def test_a_killed_task_run_resumes_bit_identically(tmp_path, cli_run):
    from conftest import final_state, popjax_cli, wait_for_checkpoints

    (tmp_path / "task.toml").write_text(
        TOML.format(steps=600, factory="test_task:linear_regression")
    )
    process = popjax_cli("run", "task.toml", "--out", "killed", cwd=tmp_path, PYTHONPATH=TESTS)
    wait_for_checkpoints(tmp_path / "killed", 2, process)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert not (tmp_path / "killed" / "summary.json").exists()  # it did die midway
    resumed = popjax_cli("run", "--resume", "killed", cwd=tmp_path, PYTHONPATH=TESTS)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    rounds, leaves = final_state(tmp_path / "killed")
    whole_rounds, whole_leaves = final_state(cli_run[0] / "whole")
    assert rounds == whole_rounds == 30
    for got, want in zip(leaves, whole_leaves):
        np.testing.assert_array_equal(got, want)
    history = (tmp_path / "killed" / "metrics.jsonl").read_text()
    assert history == (cli_run[0] / "whole" / "metrics.jsonl").read_text()


@pytest.mark.parametrize(
    "factory, message",
    [
        ("no_such_module:task", "cannot import task module 'no_such_module'"),
        ("test_task:no_such_task", "module 'test_task' has no 'no_such_task'"),
        ("test_task:NOISE", "test_task:NOISE is a float, not a function"),
        ("test_task:broken_state", "task train returned the state .* expected the structure"),
        ("test_task:broken_metrics", "task train returned the metrics .* dict of scalars"),
        ("test_task:broken_fitness", "without the fitness 'loss'"),
        ("test_task:broken_init", "task init returned .* expected a pytree of arrays"),
    ],
)
def test_a_bad_task_stops_in_one_line_and_writes_nothing(tmp_path, factory, message):
    (tmp_path / "task.toml").write_text(TOML.format(steps=40, factory=factory))
    done = popjax_command(
        "run", "task.toml", "--out", "run", cwd=tmp_path, timeout=120, PYTHONPATH=TESTS
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("popjax: error: "), done.stderr
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "run").exists()


def broken_state():
    return broken("state")


def broken_metrics():
    return broken("metrics")


def broken_fitness():
    return broken("fitness")


def broken_init():
    return broken("init")


def test_import_popjax_schedules_needs_jax_and_optax_alone():
    code = (
        "import sys, popjax.schedules; "
        "print(sorted(m for m in ('orbax', 'flax', 'tqdm', 'matplotlib', 'popjax.sweep', "
        "'popjax.config') if m in sys.modules))"
    )
    done = run_process([sys.executable, "-c", code], timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
