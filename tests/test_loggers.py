"""W&B and MLflow loggers: one entry per round with the expected keys, the config and the best
member, read back from what each tracker wrote (W&B offline, MLflow's file store), both in
tmp_path; a missing package is a one-line error before anything is written."""

import json
import struct
import sys

import numpy as np
import pytest

import popjax
import popjax.cli
from popjax.interrupt import SweepInterrupted
from popjax.loggers import MLFLOW_RUN, WANDB_RUN, round_figures

SETTINGS = dict(population=4, steps=30, interval=10, seed=3)


def test_round_figures_of_a_record():
    record = {
        "round": 0,
        "step": 10,
        "selects_on": "val_loss",
        "minimize": True,
        "parents": [0, 0, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        "diverged": [False] * 10 + [True],
        "train_loss": [2.0, 1.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 9.5, float("nan")],
        "val_loss": [0.5, 0.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, float("nan")],
        "hparams": {"learning_rate": [0.1 * (m + 1) for m in range(11)], "momentum": [None] * 11},
    }
    figures = round_figures(record)
    assert figures["val_loss/best"] == 0.25  # the least loss: minimized
    assert figures["best_member_hparams/learning_rate"] == pytest.approx(0.2)
    assert figures["train_loss/median"] == 5.5  # of the ten finite values
    assert figures["pbt/copies"] == 1 and figures["pbt/diverged"] == 1
    # Padded member numbers sort in order; a diverged member's NaN and a None are left out.
    members = sorted(k for k in figures if k.startswith("val_loss/member_"))
    assert members == [f"val_loss/member_{m:02d}" for m in range(10)]
    assert figures["hparams/learning_rate/member_10"] == pytest.approx(1.1)
    assert not any("momentum" in k for k in figures)


def wandb_records(run_folder):
    """The records of an offline W&B run's ``.wandb`` file (LevelDB's log format: blocks of
    32 KiB holding chunks with a 7-byte header), as ``wandb sync`` reads them."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_folder.glob("run-*.wandb")
    data, block, offset, chunk, records = path.read_bytes(), 32768, 7, b"", []
    while offset + 7 <= len(data):
        if block - offset % block < 7:  # a block's tail too short for a header is padding
            offset += block - offset % block
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + 7])
        if kind == 0:
            break
        chunk += data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):  # a whole record, or a record's last chunk
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def wandb_items(items):
    return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory, tiny_run):
    pytest.importorskip("wandb", reason="needs wandb: pip install 'popjax[wandb]'")
    folder = tmp_path_factory.mktemp("wandb")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WANDB_DIR", str(folder))
        env.setenv("WANDB_SILENT", "true")
        env.delenv("WANDB_API_KEY", raising=False)
        result = tiny_run(
            out=folder / "run", wandb={"project": "popjax-test", "mode": "offline"}, **SETTINGS
        )
    (run_folder,) = (folder / "wandb").glob("offline-run-*")
    return result, run_folder, wandb_records(run_folder)


@pytest.mark.slow
def test_wandb_logs_one_entry_per_round(wandb_run):
    result, _, records = wandb_run
    rows = [wandb_items(r.history.item) for r in records if r.HasField("history")]
    assert [row["_step"] for row in rows] == [r["step"] for r in result.history]
    for row, record in zip(rows, result.history):
        assert row["val_accuracy/best"] == pytest.approx(max(record["val_accuracy"]))
        assert row["train_loss/median"] == pytest.approx(np.median(record["train_loss"]))
        for m in range(SETTINGS["population"]):
            assert row[f"val_accuracy/member_{m}"] == pytest.approx(record["val_accuracy"][m])
            rate = record["hparams"]["learning_rate"][m]
            assert row[f"hparams/learning_rate/member_{m}"] == pytest.approx(rate)
        best = int(np.argmax(record["val_accuracy"]))
        rate = record["hparams"]["learning_rate"][best]
        assert row["best_member_hparams/learning_rate"] == pytest.approx(rate)


@pytest.mark.slow
def test_wandb_keeps_the_config_and_the_best_member(wandb_run):
    result, run_folder, records = wandb_run
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config = wandb_items(run.config.update)
    assert config["population"] == 4 and config["steps"] == 30
    assert run.display_name == "run"  # the run folder's name
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update(wandb_items(r.summary.update))
    assert summary["best_member"] == result.best_member
    assert summary["best_test/accuracy"] == pytest.approx(result.best_test["accuracy"])
    for name, value in result.best_hparams.items():
        assert summary[f"best_hparams/{name}"] == pytest.approx(value)
    (exit_record,) = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
    assert exit_record.exit_code == 0
    stored = json.loads((result.run_dir / WANDB_RUN).read_text())["run_id"]
    assert run_folder.name.endswith(f"-{stored}") and run.run_id == stored


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="needs mlflow: pip install 'popjax[mlflow]'")
    from mlflow.tracking import MlflowClient

    # MLflow 3 keeps its file store for those who ask for it; a database takes far longer to
    # create than a test should.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    return uri, MlflowClient(uri)


def stop_at_round_one(record):
    if record["round"] == 1:  # as Ctrl-C ends a sweep, after its checkpoint of round 0
        raise SweepInterrupted("stopped", 2)


@pytest.mark.slow
def test_mlflow_logs_rounds_and_a_resumed_run_goes_on_in_the_same_run(
    mlflow_store, tmp_path, tiny_run, small_data, small_model
):
    uri, client = mlflow_store
    out = tmp_path / "run"
    settings = {"tracking_uri": uri, "experiment": "tests"}
    with pytest.raises(SweepInterrupted):
        tiny_run(
            out=out, mlflow=settings, on_round=stop_at_round_one, checkpoint_every=1, **SETTINGS
        )
    run_id = json.loads((out / MLFLOW_RUN).read_text())["run_id"]
    assert client.get_run(run_id).info.status == "KILLED"

    result = popjax.run(
        resume=out, data=small_data, model=small_model, progress=False, mlflow=settings
    )
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 1
    steps = [r["step"] for r in result.history]
    best = {m.step: m.value for m in client.get_metric_history(run_id, "val_accuracy/best")}
    assert sorted(best) == steps  # round 1 again after the resume: its last value is kept
    np.testing.assert_allclose(
        [best[s] for s in steps], [max(r["val_accuracy"]) for r in result.history], rtol=1e-6
    )
    for m in range(SETTINGS["population"]):
        history = client.get_metric_history(run_id, f"hparams/learning_rate/member_{m}")
        assert sorted({h.step for h in history}) == steps
    params = run.data.params
    assert params["population"] == "4" and params["task.name"] == "classification"
    assert float(params["best_hparams.learning_rate"]) == result.best_hparams["learning_rate"]
    metrics = run.data.metrics  # each metric's last value
    assert metrics["best_member"] == result.best_member
    assert metrics["best_test/accuracy"] == pytest.approx(result.best_test["accuracy"])


def test_a_missing_tracker_is_a_one_line_error_before_anything_is_written(
    tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    for option, module in (("--wandb", "wandb"), ("--mlflow", "mlflow")):
        monkeypatch.setitem(sys.modules, module, None)  # its import fails
        code = popjax.cli.main(["run", option, "x", "--out", str(out), "--cpu-devices", "one"])
        error = capsys.readouterr().err
        assert code == 2 and error.count("\n") == 1
        assert f"pip install 'popjax[{module}]'" in error
        assert not out.exists()


def test_tracker_settings_of_the_wrong_kind_are_one_line_errors():
    with pytest.raises(popjax.PopjaxError, match="wandb must be a project or a dict"):
        popjax.run(population=2, steps=10, interval=5, write=False, wandb=3)
