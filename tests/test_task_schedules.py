"""A task of one's own gets schedules, replay and export as the built-in tasks do: what its
``train`` sees at each step is the schedule, computed here again in numpy from the lineage."""

import contextlib
import json
import math
import sys

import numpy as np
import pytest

from popjax.cli import main
from popjax.lineage import Lineage

from test_readme import code_block

# Written with the public API alone. ``train`` reports the rates it sees, so that with an
# interval of one step each round's metric is the value at that step.
SCHEDULED_TASK = """
import jax, jax.numpy as jnp, numpy as np, optax
import popjax


def linear(features=4):
    rng = np.random.default_rng(0)
    w_true = rng.normal(size=features)

    def split(n):
        x = rng.normal(size=(n, features)).astype(np.float32)
        return {"x": x, "y": (x @ w_true).astype(np.float32)}

    def loss(w, batch):
        return jnp.mean((batch["x"] @ w - batch["y"]) ** 2)

    def init(key, hparams, data):
        w = jnp.zeros(features)
        return {"w": w, "opt_state": popjax.optim.init_state(w, hparams)}

    def train(state, hparams, key, step, data):
        i = jax.random.randint(key, (16,), 0, data["y"].shape[0])
        value, grad = jax.value_and_grad(loss)(state["w"], {k: v[i] for k, v in data.items()})
        optimizer = popjax.optim.member_optimizer(hparams)
        updates, opt_state = optimizer.update(grad, state["opt_state"], state["w"])
        metrics = {"loss": value, "lr": hparams["learning_rate"], "mom": hparams["momentum"]}
        return {"w": optax.apply_updates(state["w"], updates), "opt_state": opt_state}, metrics

    def evaluate(state, hparams, key, data):
        return {"loss": loss(state["w"], data)}

    space = {"learning_rate": popjax.LogUniform(0.01, 0.2), "momentum": popjax.Uniform(0.5, 0.9)}
    data = popjax.TaskData(split(400), split(100), split(100))
    return popjax.Task(init, train, evaluate, fitness="loss", minimize=True, data=data, space=space)
"""

CONFIG = """
task = "scheduled_tasks:linear"
population = 4
steps = 12
interval = 1
checkpoint_every = 100

[space]
schedule = {learning_rate = "warmup_cosine", momentum = "warmup_linear"}
warmup_steps = {prior = "uniform", low = 0, high = 6}
momentum_warmup_steps = {prior = "uniform", low = 0, high = 6}
"""


def warmup_cosine(step, peak, warmup, total):
    if step < warmup:
        return peak * step / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min((step - warmup) / (total - warmup), 1.0)))


def warmup_linear(step, peak, warmup, total):
    if step < warmup:
        return peak * step / warmup
    return peak * (1 - min((step - warmup) / (total - warmup), 1.0))


@contextlib.contextmanager
def own_module(name):
    """The task module ``name`` imported afresh from the folder the commands run in, and
    forgotten after: another test's module of the same name is another file."""
    sys.modules.pop(name, None)
    try:
        yield
    finally:
        sys.modules.pop(name, None)


def command(folder, *args) -> None:
    """``popjax ARGS`` in ``folder`` through the command's entry point, which must succeed (its
    error, if any, is on the test's stderr)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setattr(sys, "path", list(sys.path))  # the folder the task loader puts first
        assert main(list(args)) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The scheduled task run for 12 steps, and again with --steps 24."""
    folder = tmp_path_factory.mktemp("scheduled")
    (folder / "scheduled_tasks.py").write_text(SCHEDULED_TASK)
    (folder / "task.toml").write_text(CONFIG)
    with own_module("scheduled_tasks"):
        for name, extra in (("run", ()), ("long", ("--steps", "24"))):
            command(folder, "run", "task.toml", "--out", name, "--quiet", "--no-report", *extra)
    return folder


def seen_and_expected(run_dir, total):
    """Per round and member: the rates ``train`` saw, and the schedule's rates computed here
    from the hyperparameters the lineage says the member trained with."""
    lineage = Lineage.load(run_dir / "lineage.json")
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    seen, expected = [], []
    for step, (record, hparams) in enumerate(zip(metrics, lineage.hparams)):
        seen.append([record["train_lr"], record["train_mom"]])
        expected.append(
            [
                [
                    warmup_cosine(step, hp_lr, hp_w, total)
                    for hp_lr, hp_w in zip(hparams["learning_rate"], hparams["warmup_steps"])
                ],
                [
                    warmup_linear(step, hp_m, hp_w, total)
                    for hp_m, hp_w in zip(hparams["momentum"], hparams["momentum_warmup_steps"])
                ],
            ]
        )
    return np.asarray(seen, float), np.asarray(expected, float)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_task_sees_its_configs_schedules_at_every_step(runs):
    for name, total in (("run", 12), ("long", 24)):
        seen, expected = seen_and_expected(runs / name, total)
        assert seen.shape == (total, 2, 4)
        np.testing.assert_allclose(seen, expected, rtol=1e-5, atol=1e-7)
    # Every warmup is under 6 steps: the 12-step run's rates end below 7% of their peaks
    # (cosine at 5/6 of its decay or later), while at step 11 of the 24-step run they are still
    # above half their peaks (at most half-way): --steps moved the schedule's end.
    peaks = {
        name: np.asarray(Lineage.load(runs / name / "lineage.json").hparams[11]["learning_rate"])
        for name in ("run", "long")
    }
    assert np.all(seen_and_expected(runs / "run", 12)[0][11, 0] < 0.07 * peaks["run"])
    assert np.all(seen_and_expected(runs / "long", 24)[0][11, 0] > 0.5 * peaks["long"])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_exported_schedule_is_what_the_best_member_trained_with(runs):
    import jax
    import jax.numpy as jnp

    from popjax import schedules

    command(runs, "export-schedule", "run", "--out", "s.json")
    loaded = schedules.load(runs / "s.json")
    summary = json.loads((runs / "run" / "summary.json").read_text())
    lineage = Lineage.load(runs / "run" / "lineage.json")
    ancestry = lineage.ancestry(summary["best_member"])
    seen, _ = seen_and_expected(runs / "run", 12)
    for index, name in enumerate(("learning_rate", "momentum")):
        trained = [seen[step, index, ancestry[step]] for step in range(12)]
        exported = np.asarray(jax.vmap(loaded[name])(jnp.arange(12)))
        np.testing.assert_allclose(exported, trained, rtol=1e-6, atol=1e-8)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_replay_retrains_a_task_of_ones_own_with_data_as_arguments(runs):
    with own_module("scheduled_tasks"):
        command(runs, "replay", "run", "--quiet", "--out", "replay.json")
    replayed = json.loads((runs / "replay.json").read_text())
    assert replayed["metric"] == "loss" and replayed["steps"] == 12
    # Noise-free least squares: the replay, a fresh member on the same schedules, ends within
    # a tenth of the member's validation loss or under 0.05 absolute (the data's scale is 4).
    assert replayed["val"]["loss"] < max(0.05, 1.1 * replayed["member_val"]), replayed


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_popjax_replay_on_the_guide_task(tmp_path):
    (tmp_path / "my_tasks.py").write_text(code_block("# my_tasks.py", "python"))
    (tmp_path / "my.toml").write_text(code_block("# my.toml", "toml"))
    with own_module("my_tasks"):
        command(tmp_path, "run", "my.toml", "--out", "run", "--quiet", "--no-report")
        command(tmp_path, "replay", "run", "--quiet", "--out", "replay.json")
    replayed = json.loads((tmp_path / "replay.json").read_text())
    # The guide's task (docs/tasks.md) has label noise of variance 0.01: both reach it within 0.05.
    assert replayed["member_val"] < 0.05 and replayed["val"]["loss"] < 0.05, replayed
    assert abs(replayed["test_gap"]) < 0.05, replayed


def test_a_schedule_on_a_hyperparameter_the_task_lacks_is_one_line():
    import popjax
    from popjax.plan import own_space

    task = popjax.Task(
        lambda k, h: {}, lambda s, h, k, t: (s, {}), lambda s, h, k: {"fitness": 0.0}
    )
    space = popjax.SearchSpace(schedule="warmup_cosine", builtin=False)
    with pytest.raises(popjax.PopjaxError, match="learning_rate has no prior") as error:
        own_space(task, space)
    assert "\n" not in str(error.value)
    # A task may name its default schedule in its own space, as a config's [space] does.
    task = task._replace(
        space={"learning_rate": popjax.LogUniform(0.01, 0.1), "schedule": "warmup_linear"}
    )
    space = own_space(task, popjax.SearchSpace(builtin=False))
    assert space.scheduled() == {"learning_rate": "warmup_linear"}
    assert "warmup_steps" in space.names
