"""Reports: plots and report.md from a run folder, the lineage colours, TensorBoard events."""

import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import popjax
from popjax.cli import main
from popjax.lineage import Lineage
from popjax.plots import founders
from popjax.report import PLOTS, best_members_table, draw_plots, fixed_hyperparameters, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_run):
    out = tmp_path_factory.mktemp("report") / "run"
    tiny_run(
        out=out,
        tensorboard=True,
        # One hyperparameter held fixed, one chosen by name among popjax's options.
        space={"dropout": 0.0, "activation": {"prior": "choice", "values": ["relu", "tanh"]}},
    )
    return out


def test_founders_follow_every_copy():
    lineage = Lineage(interval=10)
    lineage.record([0, 1, 2], {"learning_rate": [0.1, 0.2, 0.3]})
    lineage.record([0, 0, 2], {"learning_rate": [0.1, 0.1, 0.3]})  # 1 copies 0
    lineage.record([1, 1, 1], {"learning_rate": [0.1, 0.1, 0.1]})  # all copy 1 (carrying 0)
    assert founders(lineage).tolist() == [[0, 1, 2], [0, 0, 2], [0, 0, 0]]


@pytest.fixture(scope="module")
def report(run_dir):
    """report.md and its plots written for the run, once for the tests that read them."""
    return write_report(run_dir)


def test_report_writes_every_plot_and_a_summary(run_dir, report):
    for name in PLOTS.values():
        assert (run_dir / name).read_bytes()[:8] == PNG_MAGIC, name
        assert f"]({name})" in report.read_text()
    text = report.read_text()
    from popjax.runfolder import read_summary

    summary = read_summary(run_dir)
    assert f"## Best member: {summary['best_member']}" in text
    assert f"{summary['test']['accuracy']:.4f}" in text
    options = ("relu", "gelu", "tanh", "silu")  # popjax's activations, by index
    for name, value in summary["best_hparams"].items():
        if name != "dropout":  # fixed: named in a line of its own
            shown = options[int(value)] if name == "activation" else f"{value:.4g}"
            assert f"| `{name}` | {shown} |" in text


def panels(figure, axis="y"):
    """The hyperparameter each visible panel of a report figure plots, by its axis label."""
    return [getattr(ax, f"get_{axis}label")() for ax in figure.axes if ax.get_visible()]


def test_report_leaves_out_a_fixed_hyperparameter_and_labels_choices(run_dir, report):
    from popjax.runfolder import read_metrics

    figures = draw_plots(run_dir)
    searched = [n for n in read_metrics(run_dir)[-1]["hparams"] if n != "dropout"]
    assert set(searched) == {"learning_rate", "momentum", "weight_decay", "activation"}
    over_steps, final = figures["hyperparameters"], figures["final_hyperparameters"]
    assert panels(over_steps) == searched and panels(final, "x") == searched
    scales = {ax.get_ylabel(): ax.get_yscale() for ax in over_steps.axes}
    assert scales == {
        "learning_rate": "log",  # log-uniform by default
        "weight_decay": "log",
        "momentum": "linear",  # uniform
        "activation": "linear",
    }
    (activation,) = [ax for ax in over_steps.axes if ax.get_ylabel() == "activation"]
    assert [t.get_text() for t in activation.get_yticklabels()] == ["relu", "tanh"]
    text = report.read_text()
    assert "(not plotted): `dropout` = 0." in text
    assert "| `dropout` |" not in text and "| `activation` |" in text


def test_fixed_from_the_priors_else_from_the_records():
    from popjax.plan import Plan

    plan = Plan.from_config(
        popjax.SweepConfig(
            task={"name": "mine:task"},
            space={
                "a": {"prior": "fixed", "value": 0.5},
                "b": {"prior": "uniform", "low": 0, "high": 1},
            },
        )
    )
    rounds = [
        {"a": [0.5, 0.5], "b": [0.3, 0.3], "c": [1.0, None], "d": [1.0, 2.0]},
        {"a": [0.5, 0.5], "b": [0.3, 0.3], "c": [1.0, None], "d": [1.0, 1.0]},
    ]
    # b never moved, but its prior is uniform: it was searched. c and d no prior names.
    assert fixed_hyperparameters(plan.groups, rounds) == {"a": 0.5, "c": 1.0}


def bowl(curvature: float = 2.0) -> popjax.Task:
    """Noisy gradient descent into a quadratic bowl: a distance to minimise, no test split,
    one log-uniform, one uniform and one fixed hyperparameter, named as no built-in one is."""
    centre = jnp.arange(3.0)

    def init(key, hparams, train):
        return {"w": jax.random.normal(key, (3,))}

    def train(state, hparams, key, step, train):
        noise = hparams["noise"] * jax.random.normal(key, (3,))
        grad = hparams["curvature"] * (state["w"] - train) + noise
        return {"w": state["w"] - hparams["step_size"] * grad}, {}

    def evaluate(state, hparams, key, split):
        return {"distance": jnp.sum((state["w"] - split) ** 2)}

    return popjax.Task(
        init,
        train,
        evaluate,
        fitness="distance",
        minimize=True,
        data=popjax.TaskData(centre, centre),
        space={
            "step_size": popjax.LogUniform(1e-3, 0.3),
            "noise": popjax.Uniform(0.0, 0.1),
            "curvature": popjax.Fixed(curvature),
        },
    )


def test_report_of_a_task_of_ones_own(tmp_path):
    out = tmp_path / "run"
    result = popjax.run(task=bowl(), population=4, steps=30, interval=10, out=out, progress=False)
    figures = draw_plots(out)
    over_steps, final = figures["hyperparameters"], figures["final_hyperparameters"]
    scales = {"step_size": "log", "noise": "linear"}  # log-uniform and uniform; no curvature
    assert {ax.get_ylabel(): ax.get_yscale() for ax in over_steps.axes} == scales
    shown = [ax for ax in final.axes if ax.get_visible()]
    assert {ax.get_xlabel(): ax.get_xscale() for ax in shown} == scales and len(shown) == 2
    assert {ax.get_ylabel() for ax in shown} == {"validation distance"}
    text = write_report(out).read_text()
    assert "(not plotted): `curvature` = 2." in text
    assert "validation distance (lower is better)" in text
    assert "| | validation |\n" in text and "test" not in text  # no test split
    header = best_members_table(result).splitlines()[0].split()
    assert set(header[-2:]) == {"step_size", "noise"} and "curvature" not in header
    assert "test" not in " ".join(header)


def test_report_command_on_a_folder_that_is_no_run(tmp_path, capsys):
    capsys.readouterr()
    code = main(["report", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "is not a finished run folder" in err
    assert list(tmp_path.iterdir()) == []


def read_events(path):
    """Scalars from a TensorBoard event file: ``{tag: [(step, value), ...]}``."""
    from tensorboardX.proto import event_pb2

    data, scalars, offset = path.read_bytes(), {}, 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
        offset += 12 + length + 4
        for value in event.summary.value:
            if value.HasField("simple_value"):
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_tensorboard_gets_one_point_per_round(run_dir):
    from popjax.runfolder import read_metrics

    history = read_metrics(run_dir)
    (events,) = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    scalars = read_events(events)
    best = scalars["val_accuracy/best"]
    assert [step for step, _ in best] == [r["step"] for r in history]
    np.testing.assert_allclose(
        [v for _, v in best], [max(r["val_accuracy"]) for r in history], rtol=1e-6
    )
    assert {"val_accuracy/median", "pbt/copies", "best_member_hparams/learning_rate"} <= set(
        scalars
    )
