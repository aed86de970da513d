"""The `popjax` command as a user runs it: sweeps end to end in a subprocess; refusals, which
end before anything compiles, through the command's entry point in this process
(tests/test_bad_input.py checks their one line in real processes too)."""

import json
import math
import re

import pytest

from popjax.cli import main
from popjax.devices import cpu_cores

from conftest import popjax_command


def refused(folder, monkeypatch, capsys, *args) -> str:
    """``popjax ARGS`` run in ``folder`` through the command's entry point, which must exit 2
    with one line on stderr and no traceback; that line."""
    monkeypatch.chdir(folder)
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


TINY_TOML = """
name = "tiny"
population = 4
steps = 40
interval = 20
batch_size = 16

[data]
name = "digits"

[model]
name = "mlp"
hidden = [16]

[space.learning_rate]
prior = "log_uniform"
low = 0.01
high = 0.3
"""


@pytest.mark.slow
def test_run_writes_the_run_folder(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY_TOML)
    done = popjax_command(
        "run", "tiny.toml", "--out", "run1", "--seed", "3", cwd=tmp_path, JAX_PLATFORMS="cpu"
    )
    assert done.returncode == 0, done.stderr
    run = tmp_path / "run1"
    assert {p.name for p in run.iterdir()} == {
        "config.toml",
        "metrics.jsonl",
        "lineage.json",
        "summary.json",
        "checkpoints",
        "report.md",
        "fitness.png",
        "hyperparameters.png",
        "family_tree.png",
        "final_hyperparameters.png",
    }
    summary = json.loads((run / "summary.json").read_text())
    # On the CPU the command spreads the 4 members over one device per core.
    assert len(summary["devices"]) == math.gcd(cpu_cores(), 4)
    assert summary["population"] == 4 and summary["steps"] == 40
    assert set(summary["best_hparams"]) == {"learning_rate", "momentum", "dropout", "weight_decay"}
    assert 0.01 <= summary["best_hparams"]["learning_rate"] <= 0.3
    assert 0.0 <= summary["test"]["accuracy"] <= 1.0 and summary["devices"]
    rounds = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rounds] == [20, 40]
    assert len(rounds[0]["val_accuracy"]) == 4
    lineage = json.loads((run / "lineage.json").read_text())
    assert len(lineage["parents"]) == 2
    assert "seed = 3" in (run / "config.toml").read_text()
    assert "best member" in done.stdout and "val acc" in done.stdout
    # The resolved config runs again as it is, into a new folder.
    again = popjax_command(
        "run", "run1/config.toml", "--out", "run2", "--quiet", "--no-report", cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "run2" / "summary.json").read_text())["test"] == summary["test"]
    assert not (tmp_path / "run2" / "report.md").exists()


@pytest.mark.parametrize(
    "toml, args, message",
    [
        (
            "[space.learning_rat]\nprior='uniform'\nlow=0.1\nhigh=0.2\n",
            [],
            "did you mean 'learning_rate'",
        ),
        ("[space.momentum]\nprior='uniform'\nlow=0.9\nhigh=0.1\n", [], "low must be below high"),
        ("[space.learning_rate]\nprior='log_uniform'\nlow=0\nhigh=0.1\n", [], "needs low > 0"),
        ("populaton = 4\n", [], "did you mean 'population'"),
        ("steps = [\n", [], "is not valid TOML"),
        ("[data]\nname='npz'\npath='missing.npz'\n", [], "does not exist"),
        ("", ["--interval", "500", "--steps", "100"], "longer than the run"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    tmp_path, monkeypatch, capsys, toml, args, message
):
    (tmp_path / "bad.toml").write_text(toml)
    err = refused(tmp_path, monkeypatch, capsys, "run", "bad.toml", "--out", "run", *args)
    assert message in err
    assert not (tmp_path / "run").exists()


def test_an_existing_run_folder_is_never_overwritten(tmp_path, monkeypatch, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text("keep me")
    assert "already exists" in refused(tmp_path, monkeypatch, capsys, "run", "--out", "run")
    assert (tmp_path / "run" / "summary.json").read_text() == "keep me"


def test_data_that_does_not_fit_the_model_is_one_line(tmp_path, monkeypatch, capsys):
    import numpy as np

    # 1-D convolutions over inputs of shape [N, 4, 4, 4, 4] cannot work.
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "bad.npz",
        x=rng.normal(size=(50, 4, 4, 4, 4)),
        y=np.arange(50) % 3,
        x_test=rng.normal(size=(10, 4, 4, 4, 4)),
        y_test=np.arange(10) % 3,
    )
    (tmp_path / "bad.toml").write_text(
        "population = 2\nsteps = 20\ninterval = 10\n[data]\nname = 'npz'\npath = 'bad.npz'\n"
        "[model]\nname = 'cnn'\n"
    )
    err = refused(tmp_path, monkeypatch, capsys, "run", "bad.toml", "--out", "run")
    assert "the model cannot take inputs of shape (4, 4, 4, 4)" in err
    assert not (tmp_path / "run").exists()


def test_resume_of_a_folder_that_is_no_run_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "empty").mkdir()
    err = refused(tmp_path, monkeypatch, capsys, "run", "--resume", "empty")
    assert "is not a run folder" in err
    assert list((tmp_path / "empty").iterdir()) == []


@pytest.mark.slow
def test_groups_of_odd_sizes_run_from_the_command(tmp_path):
    # One device per core would not divide a group of 3: the command sizes devices by the groups.
    (tmp_path / "odd.toml").write_text(
        TINY_TOML
        + """
[[groups]]
population = 3

[[groups]]
population = 2
"""
    )
    done = popjax_command("run", "odd.toml", "--out", "run", "--quiet", "--no-report", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["groups"] == {"group0": [0, 3], "group1": [3, 5]}


@pytest.mark.slow
def test_name_batch_size_tensorboard_and_one_cpu_device_in_one_run(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY_TOML)
    done = popjax_command(
        "run",
        "tiny.toml",
        "--name",
        "flags",
        "--batch-size",
        "8",
        "--tensorboard",
        "--cpu-devices",
        "one",
        "--quiet",
        "--no-report",
        cwd=tmp_path,
        JAX_PLATFORMS="cpu",
    )
    assert done.returncode == 0, done.stderr
    # The default run folder, runs/<name>-<timestamp>/, under the name given.
    (run,) = (tmp_path / "runs").iterdir()
    assert re.fullmatch(r"flags-\d{8}-\d{6}", run.name), run.name
    config = (run / "config.toml").read_text().splitlines()
    assert 'name = "flags"' in config and "batch_size = 8" in config
    # One CPU device, where the command would otherwise take gcd(cores, 4) of them.
    summary = json.loads((run / "summary.json").read_text())
    assert len(summary["devices"]) == 1
    events = list((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)
