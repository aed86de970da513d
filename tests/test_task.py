"""The task interface: a task written here with popjax's public interface alone runs under
``popjax.run`` and ``popjax run``, PBT copies its whole state, its metrics are recorded, and a
killed run of it resumes bit-identically. Bad tasks fail in one line."""

import json
import re
import sys
from pathlib import Path

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import popjax
from popjax.cli import main
from popjax.errors import PopjaxError

from conftest import run_process

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
    if kind == "promoted":  # a scale made from a Python number: float32 in train, as in the run
        return task._replace(
            init=lambda k, h, d: {
                **task.init(k, h, d),
                "w": jnp.zeros(4, jnp.bfloat16),
                "scale": 1.0,
            },
            train=lambda s, h, k, step, d: ({**s, "w": s["w"] * s["scale"]}, {"loss": 0.0}),
        )
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
    assert result.fitness == "loss" and result.minimize
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


def test_a_state_with_weakly_typed_leaves_compiles_each_program_once():
    """A count started from a Python 0 in init and a flag set from Python floats in train are
    weakly typed under jit; the population is strongly typed at every round's edge, so the
    round compiled from init's shapes serves the first round and every later one."""
    base = linear_regression()

    def init(key, hparams, train):
        return {**base.init(key, hparams, train), "count": 0, "improving": 0.0}

    def train(state, hparams, key, step, train):
        inner = {k: v for k, v in state.items() if k not in ("count", "improving")}
        new, metrics = base.train(inner, hparams, key, step, train)
        improving = jnp.where(new["running_loss"] < state["running_loss"], 1.0, 0.0)
        return {**new, "count": state["count"] + 1, "improving": improving}, metrics

    task = popjax.Task(
        init,
        train,
        base.evaluate,
        fitness="loss",
        minimize=True,
        data=base.data,
        space=base.space,
        name="weak",
    )
    result = popjax.run(task=task, population=4, steps=30, interval=10, write=False, progress=False)
    for program in ("init", "round_fn", "test"):
        assert result.compile[program]["count"] == 1, program
    assert result.compilations == 1
    count, improving = result.population.state["count"], result.population.state["improving"]
    assert count.dtype == jnp.int32 and improving.dtype == jnp.float32
    np.testing.assert_array_equal(count, np.full(4, 30))  # every step counted


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    from conftest import popjax_cli

    cwd = tmp_path_factory.mktemp("task")
    (cwd / "task.toml").write_text(TOML.format(steps=600, factory="test_task:linear_regression"))
    done = popjax_cli("run", "task.toml", "--out", "whole", cwd=cwd, report=True, PYTHONPATH=TESTS)
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    return cwd, out


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_killed_task_run_resumes_bit_identically(tmp_path, cli_run):
    from conftest import final_state, kill_and_resume

    (tmp_path / "task.toml").write_text(
        TOML.format(steps=600, factory="test_task:linear_regression")
    )
    kill_and_resume("task.toml", tmp_path, checkpoints=2, PYTHONPATH=TESTS)
    rounds, leaves = final_state(tmp_path / "killed")
    whole_rounds, whole_leaves = final_state(cli_run[0] / "whole")
    assert rounds == whole_rounds == 30
    for got, want in zip(leaves, whole_leaves):
        np.testing.assert_array_equal(got, want)
    history = (tmp_path / "killed" / "metrics.jsonl").read_text()
    assert history == (cli_run[0] / "whole" / "metrics.jsonl").read_text()


def command_error(folder, monkeypatch, capsys, *args) -> str:
    """``popjax run ARGS --out run`` through the command's entry point in ``folder``, which must
    refuse it with exit code 2 and one line on stderr, writing no run folder: that line."""
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the folder the task loader puts first
    capsys.readouterr()
    code = main(["run", *args, "--out", "run", "--quiet", "--no-report"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("popjax: error: "), err
    assert not (folder / "run").exists()
    return lines[0]


# Each case is refused while the plan is made, before anything compiles: in this process, as
# the command's entry point, it takes a fraction of a second.
@pytest.mark.parametrize(
    "factory, message",
    [
        ("no_such_module:task", "cannot import task module 'no_such_module'"),
        ("test_task:no_such_task", "module 'test_task' has no 'no_such_task'"),
        ("test_task:NOISE", "test_task:NOISE is a float, not a function"),
        (
            "test_task:broken_state",
            r"differs from init's at \['running_loss'\]: float32\[\] from init, nothing from",
        ),
        ("test_task:broken_metrics", "task train returned the metrics .* dict of scalars"),
        ("test_task:broken_fitness", "without the fitness 'loss'"),
        ("test_task:broken_init", r"task init returned a str at \['w'\]: expected a pytree of"),
        (
            "test_task:broken_promoted",
            r"at \['w'\]: bfloat16\[4\] from init, float32\[4\] from train",
        ),
    ],
)
def test_a_bad_task_stops_in_one_line_and_writes_nothing(
    tmp_path, monkeypatch, capsys, factory, message
):
    (tmp_path / "task.toml").write_text(TOML.format(steps=40, factory=factory))
    line = command_error(tmp_path, monkeypatch, capsys, "task.toml")
    assert re.search(message, line), line


def broken_state():
    return broken("state")


def broken_metrics():
    return broken("metrics")


def broken_fitness():
    return broken("fitness")


def broken_init():
    return broken("init")


def broken_promoted():
    return broken("promoted")


@pytest.mark.slow
def test_import_popjax_schedules_needs_jax_and_optax_alone():
    code = (
        "import sys, popjax.schedules; "
        "print(sorted(m for m in ('orbax', 'flax', 'tqdm', 'matplotlib', 'popjax.sweep', "
        "'popjax.config') if m in sys.modules))"
    )
    done = run_process([sys.executable, "-c", code], timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def nnx_linear(wider: int = 0) -> popjax.Task:
    """An nnx.Linear as a task, the way a user writes one: split in init, merged in train;
    ``wider`` adds inputs to the kernel that train returns."""
    graphdef, _ = nnx.split(nnx.Linear(8, 4, rngs=nnx.Rngs(0)))

    def init(key, hparams):
        return nnx.split(nnx.Linear(8, 4, rngs=nnx.Rngs(key)))[1]

    def train(state, hparams, key, step):
        model = nnx.merge(graphdef, state)
        if wider:
            model = nnx.Linear(8 + wider, 4, rngs=nnx.Rngs(key))
        loss = jnp.mean(model(jnp.ones((2, 8 + wider))) ** 2)
        return nnx.split(model)[1], {"loss": loss}

    def evaluate(state, hparams, key):
        return {"loss": jnp.mean(nnx.merge(graphdef, state)(jnp.ones((2, 8))) ** 2)}

    space = {"learning_rate": popjax.LogUniform(1e-3, 0.1)}
    return popjax.Task(init, train, evaluate, fitness="loss", minimize=True, space=space)


def eqx_linear(outputs: int = 4) -> popjax.Task:
    """An equinox Linear as a task: its arrays are the state, the rest stays in the factory;
    train returns a layer with ``outputs`` outputs."""
    static = eqx.partition(eqx.nn.Linear(8, 4, key=jax.random.PRNGKey(0)), eqx.is_array)[1]

    def init(key, hparams):
        return eqx.partition(eqx.nn.Linear(8, 4, key=key), eqx.is_array)[0]

    def train(state, hparams, key, step):
        model = eqx.combine(state, static)
        if outputs != 4:
            model = eqx.nn.Linear(8, outputs, key=key)
        return eqx.partition(model, eqx.is_array)[0], {"loss": jnp.sum(model(jnp.ones(8)))}

    def evaluate(state, hparams, key):
        return {"loss": jnp.sum(eqx.combine(state, static)(jnp.ones(8)))}

    return popjax.Task(init, train, evaluate, fitness="loss", minimize=True)


HPARAMS = {"learning_rate": jnp.float32(0.01)}


def one_line_error(task) -> str:
    with pytest.raises(PopjaxError) as raised:
        popjax.task.check_task(task, HPARAMS)
    message = str(raised.value)
    assert "\n" not in message and len(message) < 250, message
    return message


@pytest.mark.parametrize(
    "task, message",
    [
        (nnx_linear(wider=1), "at ['kernel'].value: float32[8, 4] from init, float32[9, 4] from"),
        (eqx_linear(outputs=5), "at .weight: float32[4, 8] from init, float32[5, 8] from train"),
    ],
    ids=["nnx", "equinox"],
)
def test_a_state_of_the_wrong_shape_is_named_by_its_path_in_one_line(task, message):
    assert message in one_line_error(task)


def test_nnx_and_equinox_tasks_that_keep_their_state_pass_the_check():
    for task in (nnx_linear(), eqx_linear()):
        popjax.task.check_task(task, HPARAMS)


def test_an_equinox_model_with_function_leaves_is_told_to_partition():
    task = eqx_linear()._replace(init=lambda key, h: eqx.nn.MLP(3, 2, 4, 1, key=key))
    message = one_line_error(task)
    assert message.startswith("task init returned a custom_jvp at .activation:"), message
    assert "eqx.partition(model, eqx.is_array)" in message


def test_a_train_that_returns_no_metrics_shows_its_nnx_state_on_one_line():
    good = nnx_linear()
    task = good._replace(train=lambda state, h, key, step: good.train(state, h, key, step)[0])
    message = one_line_error(task)
    assert message.startswith("task train returned State({'bias': Param(value="), message
    assert message.endswith("expected (state, metrics)"), message


class LinenModel(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3, name="dense")(x)


class Scaled(eqx.Module):
    w: jax.Array
    scale: int = eqx.field(static=True)


def linen_params(key):
    return LinenModel().init(key, jnp.ones((1, 2)))


@pytest.mark.parametrize(
    "init, returned, message",
    [
        (
            lambda key: {"w": jnp.zeros(3), "count": jnp.int32(0)},
            lambda state: {**state, "count": jnp.float32(0)},
            "at ['count']: int32[] from init, float32[] from train",
        ),
        (
            linen_params,
            lambda state: jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), state),
            "at ['params']['dense']['bias']: float32[3] from init, bfloat16[3] from train",
        ),
        (
            lambda key: {"opt": {"mu": jnp.zeros(3), "nu": jnp.zeros(3)}, "w": jnp.zeros(3)},
            lambda state: {"opt": {"mu": state["opt"]["mu"]}, "w": state["w"]},
            "at ['opt']['nu']: float32[3] from init, nothing from train",
        ),
        (
            lambda key: {"w": jnp.zeros(3)},
            lambda state: {"w": state["w"], "step": jnp.int32(0)},
            "at ['step']: nothing from init, int32[] from train",
        ),
        (
            lambda key: {"w": (jnp.zeros(3), jnp.zeros(2))},
            lambda state: {"w": list(state["w"])},
            "at ['w']: a tuple from init, a list from train",
        ),
        (
            lambda key: Scaled(jnp.zeros(3), 1),
            lambda state: Scaled(state.w, 2),
            "at its root: a Scaled with static data",
        ),
    ],
    ids=["dtype", "linen-dtype", "missing-key", "extra-key", "container", "static-field"],
)
def test_a_state_that_differs_is_named_at_its_first_difference(init, returned, message):
    task = popjax.Task(
        lambda key, h: init(key),
        lambda state, h, key, step: (returned(state), {"loss": jnp.float32(0)}),
        lambda state, h, key: {"loss": jnp.float32(0)},
        fitness="loss",
    )
    got = one_line_error(task)
    assert message in got, got
    assert got.endswith("return the state with init's structure, shapes and dtypes"), got


BAD_NNX = """
import jax.numpy as jnp
from flax import nnx

import popjax


def bad():
    graphdef, _ = nnx.split(nnx.Linear(8, 4, rngs=nnx.Rngs(0)))

    def init(key, hparams):
        return nnx.split(nnx.Linear(8, 4, rngs=nnx.Rngs(key)))[1]

    def train(state, hparams, key, step):
        nnx.merge(graphdef, state)
        return nnx.split(nnx.Linear(8, 5, rngs=nnx.Rngs(key)))[1], {"loss": jnp.float32(0)}

    def evaluate(state, hparams, key):
        return {"loss": jnp.float32(0)}

    space = {"learning_rate": popjax.LogUniform(1e-3, 0.1)}
    return popjax.Task(init, train, evaluate, fitness="loss", minimize=True, space=space)
"""


def test_the_command_names_the_leaf_of_a_bad_nnx_state_and_writes_nothing(
    tmp_path, monkeypatch, capsys
):
    (tmp_path / "bad_nnx.py").write_text(BAD_NNX)
    (tmp_path / "task.toml").write_text(TOML.format(steps=40, factory="bad_nnx:bad"))
    sys.modules.pop("bad_nnx", None)  # this folder's module, imported anew and then forgotten
    try:
        line = command_error(tmp_path, monkeypatch, capsys, "task.toml")
    finally:
        sys.modules.pop("bad_nnx", None)
    assert "at ['bias'].value: float32[4] from init, float32[5] from train" in line
