"""Reports: plots and report.md from a run folder, the lineage colours, TensorBoard events."""

import struct
import sys

import numpy as np
import pytest

import popjax
from popjax.lineage import Lineage
from popjax.plots import founders
from popjax.report import PLOTS, write_report

from conftest import run_process

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, small_data, small_model):
    out = tmp_path_factory.mktemp("report") / "run"
    popjax.run(
        data=small_data,
        model=small_model,
        population=4,
        steps=60,
        interval=10,
        batch_size=16,
        out=out,
        progress=False,
        tensorboard=True,
    )
    return out


def test_founders_follow_every_copy():
    lineage = Lineage(interval=10)
    lineage.record([0, 1, 2], {"learning_rate": [0.1, 0.2, 0.3]})
    lineage.record([0, 0, 2], {"learning_rate": [0.1, 0.1, 0.3]})  # 1 copies 0
    lineage.record([1, 1, 1], {"learning_rate": [0.1, 0.1, 0.1]})  # all copy 1 (carrying 0)
    assert founders(lineage).tolist() == [[0, 1, 2], [0, 0, 2], [0, 0, 0]]


def test_report_writes_every_plot_and_a_summary(run_dir):
    report = write_report(run_dir)
    for name in PLOTS.values():
        assert (run_dir / name).read_bytes()[:8] == PNG_MAGIC, name
        assert f"]({name})" in report.read_text()
    text = report.read_text()
    from popjax.runfolder import read_summary

    summary = read_summary(run_dir)
    assert f"## Best member: {summary['best_member']}" in text
    assert f"{summary['test']['accuracy']:.4f}" in text
    for name, value in summary["best_hparams"].items():
        assert f"| `{name}` | {value:.4g} |" in text


def test_report_command_on_a_folder_that_is_no_run(tmp_path):
    done = run_process(
        [sys.executable, "-m", "popjax", "report", str(tmp_path)],
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "is not a finished run folder" in done.stderr
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
