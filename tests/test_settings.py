"""Every setting is used or refused: a task of one's own receives the run's settings that its
factory names, and a setting that its run would not use stops the run in one line."""

import contextlib
import io
import json
import sys
import tomllib

import jax
import jax.numpy as jnp
import pytest
import tomli_w

import popjax
from popjax.cli import main
from popjax.config import ConfigError, SweepConfig

RUN = {"population": 2, "steps": 20, "interval": 10}


def quadratic(target: float = 1.0, **recorded) -> popjax.Task:
    """Gradient descent on (x - target)^2; ``recorded`` settings come back as metrics."""

    def init(key, hparams):
        return {"x": jax.random.normal(key, ())}

    def train(state, hparams, key, step):
        x = state["x"] - hparams["learning_rate"] * 2 * (state["x"] - target)
        return {"x": x}, {"loss": (x - target) ** 2}

    def evaluate(state, hparams, key):
        figures = {name: jnp.float32(value) for name, value in recorded.items()}
        return {"loss": (state["x"] - target) ** 2, **figures}

    space = {"learning_rate": popjax.LogUniform(0.01, 0.1)}
    return popjax.Task(init, train, evaluate, fitness="loss", minimize=True, space=space)


def plain(target: float = 1.0) -> popjax.Task:
    return quadratic(target)


def batched(batch_size: int, target: float = 1.0) -> popjax.Task:
    return quadratic(target, batch_size=batch_size)


def timed(steps: int, interval: int, seed: int, target: float = 1.0) -> popjax.Task:
    return quadratic(target, steps=steps, interval=interval, seed=seed)


def write(folder, **table) -> str:
    (folder / "run.toml").write_text(tomli_w.dumps({**RUN, **table}))
    return "run.toml"


def command(folder, *args) -> tuple[int, str]:
    """``popjax run ARGS`` in ``folder`` through the command's entry point: its exit code and
    stderr. Its tasks are this module's, imported from the tests' folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setattr(sys, "path", list(sys.path))  # the folder the task loader puts first
        with contextlib.redirect_stderr(io.StringIO()) as err:
            code = main(["run", *args, "--quiet"])
    return code, err.getvalue()


def refused(folder, *args, word: str):
    code, err = command(folder, *args, "--out", "run")
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("popjax: error: "), err
    assert word in lines[0], lines[0]
    assert not (folder / "run").exists()
    return lines[0]


def last_round(run) -> dict:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])


def test_batch_size_for_a_factory_without_one_is_refused(tmp_path):
    config = write(tmp_path, task="test_settings:plain")
    refused(tmp_path, config, "--batch-size", "64", word="batch_size")


def cli_run(folder, *args):
    code, err = command(folder, *args, "--no-report")
    assert code == 0, err


@pytest.mark.slow
def test_batch_size_reaches_the_factory_that_names_it(tmp_path):
    config = write(tmp_path, task="test_settings:batched")
    cli_run(tmp_path, config, "--batch-size", "64", "--out", "b")
    assert last_round(tmp_path / "b")["val_batch_size"] == [64.0, 64.0]
    assert "batch_size = 64" in (tmp_path / "b" / "config.toml").read_text().splitlines()


@pytest.mark.slow
def test_steps_reach_the_factory_and_the_written_config_runs_again(tmp_path):
    config = write(tmp_path, task="test_settings:timed", seed=5)
    cli_run(tmp_path, config, "--steps", "40", "--out", "twice")
    twice = last_round(tmp_path / "twice")
    assert twice["val_steps"] == [40.0, 40.0] and twice["step"] == 40
    assert twice["val_interval"] == [10.0, 10.0] and twice["val_seed"] == [5.0, 5.0]
    # A custom task's run records none of the built-in tasks' settings, and runs again as is.
    written = (tmp_path / "twice" / "config.toml").read_text()
    keys = {line.split("=")[0].strip() for line in written.splitlines()}
    assert keys.isdisjoint({"batch_size", "model", "loss", "data", "metric", "epochs"})
    assert "[data]" not in written and "[model]" not in written
    cli_run(tmp_path, "twice/config.toml", "--out", "again")
    assert last_round(tmp_path / "again") == twice
    # The same config at its own 20 steps: the factory is told half as many.
    once = popjax.run(tmp_path / config, write=False, progress=False)
    assert once.history[-1]["val_steps"] == [20.0, 20.0]


@pytest.mark.parametrize(
    "table, word",
    [
        ({"task": {"name": "test_settings:timed", "steps": 40}}, "set steps at the top level"),
        ({"task": {"name": "test_settings:plain", "seed": 1}}, "set seed at the top level"),
        ({"task": "test_settings:plain", "model": {"hidden": [8]}}, "model"),
        ({"task": "test_settings:plain", "loss": "squared_error"}, "loss"),
        ({"task": "test_settings:plain", "data": {"name": "digits"}}, "data"),
        ({"task": "test_settings:plain", "epochs": 2}, "epochs"),
        ({"epochs": 0}, "remove epochs to use steps"),
        ({"pbt": {"exploit": "halving", "rungs": []}}, "rungs"),
        ({"pbt": {"exploit": "halving", "rungs": [5]}}, "rungs"),
        ({"pbt": {"rungs": [1, 2]}}, "rungs"),
        ({"pbt": {"window": 8}}, "window"),
        ({"task": "regression", "loss": "cross_entropy"}, "loss"),
        ({"population": "auto", "groups": [{"population": 1}, {"population": 1}]}, "auto"),
    ],
)
def test_a_setting_that_would_do_nothing_is_refused_in_one_line(table, word):
    config = {**RUN, **table}
    with pytest.raises(ConfigError, match=word) as error:
        popjax.Plan.from_config(SweepConfig.from_dict(config))
    assert len(str(error.value).splitlines()) == 1
    python = {k: v for k, v in config.items() if k != "pbt"}
    with pytest.raises(ConfigError, match=word):
        SweepConfig(
            **python,
            pbt=popjax.PBTConfig(
                **{
                    k: tuple(v) if isinstance(v, list) else v
                    for k, v in table.get("pbt", {}).items()
                }
            ),
        ).validate()


def test_the_same_slips_from_the_command_line(tmp_path):
    write(tmp_path, groups=[{"population": 1}, {"population": 1}])
    refused(tmp_path, "run.toml", "--population", "auto", word="auto")
    write(tmp_path, task="test_settings:plain", model={"name": "mlp"})
    refused(tmp_path, "run.toml", word="model")
    write(tmp_path, epochs=0)
    refused(tmp_path, "run.toml", word="epochs")


def test_a_factory_from_python_receives_the_run_settings():
    got = {}

    def factory(steps, batch_size=1):
        got.update(steps=steps, batch_size=batch_size)
        return quadratic()

    popjax.run(task=factory, **RUN, write=False, progress=False)
    assert got == {"steps": 20, "batch_size": 1}
    popjax.run(task=factory, **{**RUN, "steps": 40}, batch_size=3, write=False, progress=False)
    assert got == {"steps": 40, "batch_size": 3}
    with pytest.raises(ConfigError, match="batch_size"):
        popjax.run(task=quadratic(), **RUN, batch_size=3, write=False, progress=False)


def test_the_built_in_defaults_are_filled_in_and_recorded():
    config = SweepConfig().validate()
    assert config.batch_size == 128 and config.loss == "cross_entropy"
    assert config.model == {"name": "mlp", "hidden": [256, 256]}
    written = SweepConfig.from_dict(tomllib.loads(config.to_toml())).validate()
    assert written.to_dict() == config.to_dict()
    assert SweepConfig(task="regression").validate().loss is None  # the squared error
