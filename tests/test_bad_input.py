"""Bad input, tried at scale: several hundred generated malformed configs, flags and data sets.

Each is fed to ``popjax.run`` and to the ``popjax run`` command (its entry point called in this
process, a few as real subprocesses). Every one must end in a one-line PopjaxError (exit code 2)
that names what is wrong, before anything is compiled or written.
"""

from __future__ import annotations

import dataclasses
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tomli_w

import popjax
from popjax import data as datasets
from popjax import programs
from popjax.cli import main
from popjax.config import SweepConfig
from popjax.errors import PopjaxError

# A warning would be a second line on the command's stderr.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

# A small run that would be valid: every case breaks one thing in it.
BASE = {
    "population": 2,
    "steps": 4,
    "interval": 2,
    "batch_size": 8,
    "data": {"name": "digits"},
    "model": {"name": "mlp", "hidden": [8]},
}
NAN, INF = float("nan"), float("inf")
HUGE = 10**20  # 20 digits
COUNTS = ("population", "steps", "interval", "batch_size", "checkpoint_every", "keep_checkpoints")


class WouldTrain(BaseException):
    """Raised where a sweep would start compiling: bad input must be refused before it."""


@dataclasses.dataclass(frozen=True)
class Case:
    label: str
    word: str  # the message must name it: the key, field or array at fault
    table: dict | None = None  # a config, run as TOML and as Python overrides
    text: str | bytes | None = None  # a config file's raw text
    args: tuple = ()  # command-line flags


def wrong_values(key):
    """The wrong values a whole-number key can get."""
    values = ["abc", "", 1.5, True, [1], {"a": 1}, -1, NAN, INF, -INF, HUGE, 2**63 - 1]
    if key != "seed":
        values.append(0)
    else:
        values.append(2**32)
    return values


def config_cases() -> list[Case]:
    cases = []

    def add(label, word, **table):
        cases.append(Case(label, word, table={**BASE, **table}))

    for key in ("seed", *COUNTS):
        for value in wrong_values(key):
            add(f"{key}={value!r}", key, **{key: value})
    add("population='many'", "population", population="many")
    add("batch_size over the training split", "batch_size", batch_size=100000)
    add("steps not a multiple of interval", "steps", steps=5)
    add("interval over steps", "interval", interval=8)
    for value in ("abc", -1, NAN, INF, -INF, 1e30, True, [1], {}):
        add(f"epochs={value!r}", "epochs", epochs=value)
    for value in (5, [], {}, "a/b", "a\\b", "..", ".", "x" * 1000, "tab\tname", True):
        add(f"name={value!r}", "name", name=value)
    for value in (5, [], "f1", "loss " * 3, {}):
        add(f"metric={value!r}", "metric", metric=value)
    for value in ("abc", -1, "0GiB", "-2GiB", NAN, INF, [], True, "1e400GiB", "2 parsecs"):
        add(f"memory_limit={value!r}", "memory_limit", memory_limit=value)
    for value in (5, [], {}, {"name": 5}, "nope", {"name": "classification", "x": 1}, ":f", "m:"):
        add(f"task={value!r}", "task", task=value)
    for value in (5, "digits", [], {"name": 5}, {"name": "nope"}, {"name": []}, {"bogus": 1}):
        add(f"data={value!r}", "data", data=value)
    add("data npz without path", "path", data={"name": "npz"})
    add("data npz path missing", "missing.npz", data={"name": "npz", "path": "missing.npz"})
    for value in (5, [], True, {}):
        add(f"data.path={value!r}", "path", data={"name": "npz", "path": value})
    add("data.path empty", "path", data={"name": "npz", "path": ""})
    add("data.path NUL", "path", data={"name": "npz", "path": "a\x00b"})
    for value in (NAN, INF, -INF, -1, 0, 1, 2, "a", True, [], 1e-9):
        add(
            f"val_fraction={value!r}",
            "val_fraction",
            data={"name": "digits", "val_fraction": value},
        )
    add("regression on digits", "digits", task="regression")
    add("classification on diabetes", "diabetes", data={"name": "diabetes"})
    mlp = {"name": "mlp"}
    # An empty [model] table is the default model: valid.
    for value in (5, "abc", []):
        add(f"model={value!r}", "model", model=value)
    for value in (5, [], "nope", {}):
        add(f"model.name={value!r}", "model", model={"name": value})
    for value in ("abc", [0], [-1], [1.5], [True], 5, [[8]], [NAN], ["8"], [HUGE], {}):
        add(f"mlp.hidden={value!r}", "hidden", model={**mlp, "hidden": value})
    for value in ("int8", 5, [], "float64"):
        add(f"mlp.dtype={value!r}", "dtype", model={**mlp, "dtype": value})
    for value in ("yes", 5, [], 1.5):
        add(f"mlp.batch_norm={value!r}", "batch_norm", model={**mlp, "batch_norm": value})
    add("mlp.bogus", "bogus", model={**mlp, "bogus": 1})
    add("mlp.num_classes", "num_classes", model={**mlp, "num_classes": 3})
    cnn = {"name": "cnn", "channels": [4], "hidden": 8}
    for value in ("abc", [0], [-2], 5, [1.5], [True], [HUGE]):
        add(f"cnn.channels={value!r}", "channels", model={**cnn, "channels": value})
    for value in ("abc", 0, -1, [8], 1.5, True):
        add(f"cnn.hidden={value!r}", "hidden", model={**cnn, "hidden": value})
    for value in (5, [], "nope", "", {}):
        add(f"loss={value!r}", "loss", loss=value)
    pbt_values = {
        "exploit": (5, "x", [], "", True),
        "fraction": (NAN, INF, 0, 0.9, -1, "a", True, [], 1e300),
        "perturb_factors": ("ab", [], [0], [-1], [NAN], [INF], 5, ["a"], [[1]], 1.2, {}),
        "resample_probability": (NAN, INF, -0.1, 2, "a", [], True),
        "enabled": ("yes", 5, [], 0.5),
        "explore": (5, "pb3", [], ""),
        "window": (0, -1, 1.5, "a", True, NAN, HUGE),
        "rungs": ([0, 1], [2, 1], [1, 1], "a", 5, [1.5], [True], [HUGE], [NAN]),
        "restart": (5, "later", [], True),
        "frequencies": ([1], [2, 1], [0, 2], [1, 1], "a", 5, [1.5], [True, 2], [1, HUGE], [NAN]),
        "burn_in": (-1, 1.5, "a", True, NAN, [10]),
    }
    for key, values in pbt_values.items():
        for value in values:
            add(f"pbt.{key}={value!r}", key, pbt={key: value})
    add("pbt=5", "pbt", pbt=5)
    add("pbt=[]", "pbt", pbt=[])
    add("pbt.bogus", "bogus", pbt={"bogus": 1})
    lr = "learning_rate"
    bad_priors = [
        {"prior": "log_uniform", "low": 0, "high": 1},
        {"prior": "log_uniform", "low": -1, "high": 1},
        {"prior": "uniform", "low": NAN, "high": 1},
        {"prior": "uniform", "low": 0, "high": INF},
        {"prior": "uniform", "low": -INF, "high": 0},
        {"prior": "uniform", "low": 1, "high": 0},
        {"prior": "uniform", "low": 1, "high": 1},
        {"prior": "uniform", "low": "a", "high": 1},
        {"prior": "uniform", "low": [], "high": 1},
        {"prior": "uniform", "low": 0},
        {"prior": "uniform", "high": 1},
        {"prior": "uniform", "low": 0, "high": 1, "mid": 0.5},
        {"prior": "x", "low": 0, "high": 1},
        {"prior": 5},
        {"low": 0, "high": 1},
        {"prior": "choice", "values": []},
        {"prior": "choice", "values": "abc"},
        {"prior": "choice", "values": [NAN]},
        {"prior": "choice", "values": [INF, 1]},
        {"prior": "choice", "values": 5},
        {"prior": "choice"},
        {"prior": "fixed", "value": NAN},
        {"prior": "fixed", "value": INF},
        {"prior": "fixed", "value": "a"},
        {"prior": "fixed", "value": []},
        {"prior": "fixed"},
        "abc",
        [],
        NAN,
        INF,
        True,
    ]
    for prior in bad_priors:
        add(f"space.{lr}={prior!r}", lr, space={lr: prior})
    add("space=5", "space", space=5)
    add("space=[]", "space", space=[])
    add("space.bogus", "bogus", space={"bogus": {"prior": "fixed", "value": 1}})
    add("space.schedule", "schedule", space={"schedule": "nope"})
    add("space.schedule=5", "schedule", space={"schedule": 5})
    add("space.optimizer", "optimizer", space={"optimizer": "nope"})
    add("space.optimizer=[]", "optimizer", space={"optimizer": []})
    add("space.activation", "activation", space={"activation": {"prior": "fixed", "value": "x"}})
    add("space.activation=9", "activation", space={"activation": {"prior": "fixed", "value": 9}})
    add("space.beta1 without adam", "beta1", space={"beta1": {"prior": "fixed", "value": 0.9}})
    group = {"population": 2}
    bad_groups = [
        (5, "groups"),
        ("a", "groups"),
        ([5], "group"),
        ([{}], "population"),
        ([{"population": 0}], "population"),
        ([{"population": -1}], "population"),
        ([{"population": "a"}], "population"),
        ([{"population": 1.5}], "population"),
        ([{"population": HUGE}], "population"),
        ([{**group, "bogus": 1}], "bogus"),
        ([{**group, "name": "a"}, {**group, "name": "a"}], "'a'"),
        ([{**group, "name": 5}, {**group, "name": "5"}], "'5'"),
        ([{**group, "model": 5}], "model"),
        ([{**group, "model": {"name": "nope"}}], "model"),
        ([{**group, "model": {"hidden": [0]}}], "hidden"),
        ([{**group, "model": {"bogus": 1}}], "bogus"),
        ([{**group, "loss": 5}], "loss"),
        ([{**group, "loss": "nope"}], "loss"),
        ([{**group, "space": 5}], "space"),
        ([{**group, "space": {"bogus": 1}}], "bogus"),
        ([{**group, "space": {lr: {"prior": "uniform", "low": 1, "high": 0}}}], lr),
    ]
    for value, word in bad_groups:
        add(f"groups={value!r}", word, groups=value)
    add("population auto with groups", "population", population="auto", groups=[group, group])
    # Unknown and misspelt keys, at every level.
    for key in ("sed", "populaton", "Steps", "batchsize", "epoch", "x" * 200, "pbt.fraction"):
        add(f"unknown key {key!r}", key[:40], **{key: 1})
    return cases


BROKEN_TOML = [
    "steps = ",
    "steps = [\n",
    "[pbt",
    "steps = 1\nsteps = 2",
    "= 3",
    "name = 'unterminated",
    'name = """open',
    "steps = 0x",
    "[[groups]\n",
    "a.b.c = [",
    "steps = 1 2",
    "[pbt]\n[pbt]\n",
    "steps = 01",
    "seed = +-1",
    "data = {name = 'digits',}",
    "steps = 4\n\x00",
    "\ufeff[[",
    "steps = 1979-05-27T07:32:00Z\n[",
    b"steps = 4\n\xff\xfe",
    b"\x89PNG\r\n\x1a\n\x00\x00",
]


def toml_cases() -> list[Case]:
    cases = [
        Case(f"broken TOML {i}: {text!r}", "TOML", text=text) for i, text in enumerate(BROKEN_TOML)
    ]
    # Valid TOML of the wrong shape.
    for text, word in (
        ("steps = 1979-05-27", "steps"),
        ("steps = 1e999", "steps"),
        ("seed = nan", "seed"),
        ("seed = -inf", "seed"),
        ("seed = 123456789012345678", "seed"),
        ("[steps]\n", "steps"),
        ("[[seed]]\n", "seed"),
        ("[model]\nhidden = 'abc'", "hidden"),
        ("[data]\nval_fraction = nan", "val_fraction"),
        ("[pbt]\nfraction = inf", "fraction"),
        ("[space]\nlearning_rate = nan", "learning_rate"),
        ("[space]\nlearning_rate = inf", "learning_rate"),
        ("[space]\nlearning_rate = 1979-05-27", "learning_rate"),
        ("[space.learning_rate]\nprior = 'uniform'\nlow = 1979-05-27\nhigh = 1", "learning_rate"),
    ):
        cases.append(Case(f"TOML {text!r}", word, text=text))
    return cases


# Values of types no TOML holds, given from Python.
PYTHON_VALUES = (object(), b"bytes", 1 + 2j, np.float32("nan"), np.array([1, 2]), lambda: 1)


def python_cases() -> list[Case]:
    cases = []
    keys = ("seed", *COUNTS, "epochs", "name", "metric", "memory_limit", "task", "data", "model")
    for key in (*keys, "loss", "pbt", "space", "groups"):
        for value in PYTHON_VALUES:
            cases.append(Case(f"python {key}={type(value).__name__}", key, {**BASE, key: value}))
    cases.append(Case("python seed=np.int64(-1)", "seed", {**BASE, "seed": np.int64(-1)}))
    return cases


FLAG_CASES = [
    (("--seed", "-1"), "seed"),
    (("--seed", "1" * 20), "seed"),
    (("--seed", str(2**32)), "seed"),
    (("--seed", "abc"), "seed"),
    (("--seed", "1.5"), "seed"),
    (("--seed",), "seed"),
    (("--steps", "0"), "steps"),
    (("--steps", "-4"), "steps"),
    (("--steps", "abc"), "steps"),
    (("--steps", "9" * 30), "steps"),
    (("--interval", "0"), "interval"),
    (("--interval", "3"), "steps"),
    (("--interval", "1e3"), "interval"),
    (("--batch-size", "100000"), "batch_size"),
    (("--batch-size", "0"), "batch_size"),
    (("--batch-size", "-8"), "batch_size"),
    (("--batch-size", ""), "batch-size"),
    (("--population", "0"), "population"),
    (("--population", "-2"), "population"),
    (("--population", "1.5"), "population"),
    (("--population", "lots"), "population"),
    (("--population", "9" * 25), "population"),
    (("--memory-limit", "abc"), "memory_limit"),
    (("--memory-limit=-1GiB",), "memory_limit"),
    (("--memory-limit", "-1GiB"), "memory-limit"),  # argparse takes -1GiB for a flag
    (("--memory-limit", "0"), "memory_limit"),
    (("--memory-limit", "nan"), "memory_limit"),
    (("--name", "a/b"), "name"),
    (("--name", ""), None),  # valid: the name then comes from the data and model
    (("--name", "x" * 1000), "name"),
    (("--cpu-devices", "all"), "cpu-devices"),
    (("--bogus",), "--bogus"),
    (("--num-processes", "abc"), "num-processes"),
    (("--process-id", "x"), "process-id"),
    (("--out",), "--out"),
]


def flag_cases() -> list[Case]:
    cases = [
        Case(f"flags {args!r}", word, table=dict(BASE), args=args)
        for args, word in FLAG_CASES
        if word
    ]
    cases.append(Case("flags resume nowhere", "nowhere", args=("--resume", "nowhere")))
    cases.append(Case("flags resume no run", "run folder", args=("--resume", "inputs")))
    cases.append(
        Case("flags resume and config", "resume", table=dict(BASE), args=("--resume", "inputs"))
    )
    cases.append(Case("flags config missing", "missing.toml", args=("missing.toml",)))
    cases.append(Case("flags config is a folder", "inputs", args=("inputs",)))
    return cases


# Data sets: a small classification that would be valid; each case breaks one array.
def good_arrays(regression=False):
    rng = np.random.default_rng(0)
    x, x_test = (
        rng.normal(size=(60, 6)).astype(np.float32),
        rng.normal(size=(20, 6)).astype(np.float32),
    )
    if regression:
        return {
            "x": x,
            "y": rng.normal(size=60).astype(np.float32),
            "x_test": x_test,
            "y_test": rng.normal(size=20).astype(np.float32),
        }
    return {"x": x, "y": np.arange(60) % 3, "x_test": x_test, "y_test": np.arange(20) % 3}


def with_value(array, index, value):
    array = np.array(array, dtype=np.result_type(array, np.asarray(value)))
    array.flat[index] = value
    return array


def data_cases() -> list[tuple[str, str, dict, bool]]:
    """``(label, word, arrays, regression)``."""
    cases = []
    for name in ("x", "x_test"):
        for value in (NAN, INF, -INF):
            for index in (0, 7):
                cases.append(
                    (
                        f"{name}[{index}]={value}",
                        name,
                        {name: with_value(good_arrays()[name], index, value)},
                        False,
                    )
                )
        cases.append(
            (f"{name} all NaN", name, {name: np.full_like(good_arrays()[name], NAN)}, False)
        )
        cases.append(
            (
                f"{name} float64 overflow",
                name,
                {name: np.full(good_arrays()[name].shape, 1e300)},
                False,
            )
        )
    for name in ("y", "y_test"):
        for value in (NAN, INF):
            cases.append(
                (
                    f"regression {name}={value}",
                    name,
                    {name: with_value(good_arrays(True)[name], 3, value)},
                    True,
                )
            )
        for value in (-1, -(2**40), 10**6, 2**40, 2**31):
            cases.append(
                (
                    f"{name} label {value}",
                    name,
                    {name: with_value(good_arrays()[name], 3, value)},
                    False,
                )
            )
        cases.append(
            (f"{name} float labels", name, {name: good_arrays()[name].astype(np.float32)}, False)
        )
        cases.append((f"{name} bool labels", name, {name: good_arrays()[name] > 0}, False))
        cases.append(
            (f"{name} string labels", name, {name: good_arrays()[name].astype(str)}, False)
        )
        cases.append(
            (
                f"{name} 2-D labels",
                name,
                {name: good_arrays()[name].reshape(-1, 1).repeat(2, 1)},
                False,
            )
        )
        cases.append(
            (f"regression {name} strings", name, {name: good_arrays(True)[name].astype(str)}, True)
        )
        cases.append((f"{name} one short", name, {name: good_arrays()[name][:-1]}, False))
        cases.append((f"{name} scalar", name, {name: np.int64(1)}, False))
    for name in ("x", "x_test"):
        cases.append(
            (
                f"{name} strings",
                name,
                {name: np.array([["a"] * 6] * len(good_arrays()[name]))},
                False,
            )
        )
        cases.append(
            (f"{name} numeric strings", name, {name: good_arrays()[name].astype(str)}, False)
        )
        cases.append(
            (
                f"{name} objects",
                name,
                {name: np.array([[None] * 6] * len(good_arrays()[name]), dtype=object)},
                False,
            )
        )
        cases.append((f"{name} complex", name, {name: good_arrays()[name] + 1j}, False))
        cases.append(
            (
                f"{name} dates",
                name,
                {name: np.zeros(good_arrays()[name].shape, "datetime64[s]")},
                False,
            )
        )
        cases.append((f"{name} one short", name, {name: good_arrays()[name][:-1]}, False))
        cases.append((f"{name} other width", name, {name: good_arrays()[name][:, :4]}, False))
        cases.append((f"{name} 1-D", name, {name: good_arrays()[name][:, 0]}, False))
        cases.append((f"{name} scalar", name, {name: np.float32(1)}, False))
        cases.append((f"{name} zero width", name, {name: good_arrays()[name][:, :0]}, False))
    cases.append(
        (
            "empty train split",
            "x",
            {"x": np.zeros((0, 6), np.float32), "y": np.zeros(0, int)},
            False,
        )
    )
    cases.append(
        (
            "empty test split",
            "x_test",
            {"x_test": np.zeros((0, 6), np.float32), "y_test": np.zeros(0, int)},
            False,
        )
    )
    cases.append(
        (
            # from_arrays cannot hold out a validation split; a Dataset of one is below the
            # batch size.
            "one training example",
            "examples",
            {"x": np.zeros((1, 6), np.float32), "y": np.zeros(1, int)},
            False,
        )
    )
    cases.append(("one class", "y", {"y": np.zeros(60, int), "y_test": np.zeros(20, int)}, False))
    return cases


NPZ_FILES = (
    "truncated",
    "empty",
    "random bytes",
    "text",
    "missing key",
    "pickled objects",
    "folder",
    "zip of nothing",
    "corrupt member",
)


def write_npz_file(kind: str, path) -> str:
    """A broken .npz of ``kind`` at ``path``; returns the word its error must name."""
    buffer = io.BytesIO()
    np.savez(buffer, **good_arrays())
    whole = buffer.getvalue()
    if kind == "truncated":
        path.write_bytes(whole[: len(whole) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(999))
    elif kind == "text":
        path.write_text("x,y\n1,2\n")
    elif kind == "missing key":
        np.savez(path, **{k: v for k, v in good_arrays().items() if k != "y_test"})
        return "y_test"
    elif kind == "pickled objects":
        np.savez(path, **{**good_arrays(), "x": np.array([{"a": 1}] * 60, dtype=object)})
        return "x"
    elif kind == "folder":
        path.mkdir()
    elif kind == "zip of nothing":
        zipfile.ZipFile(path, "w").close()
        return "x"
    elif kind == "corrupt member":
        # The zip's directory intact, one array's compressed bytes garbled.
        np.savez_compressed(path, **good_arrays())
        raw = bytearray(path.read_bytes())
        raw[100:140] = bytes(40)
        path.write_bytes(bytes(raw))
    return path.name


# ---------------------------------------------------------------------------------------------
# Feeding the cases


FIT_PROGRAM = programs.group_programs


@pytest.fixture(autouse=True)
def refuse_to_train(monkeypatch):
    """Whatever reaches the first compilation counts as accepted, so no case trains."""

    def would_train(*args, **kwargs):
        raise WouldTrain

    monkeypatch.setattr(programs, "group_programs", would_train)
    monkeypatch.setattr(programs, "size_population", would_train)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """``tmp_path`` as the current folder, with the cases' inputs in ``inputs/``."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "inputs").mkdir()
    return tmp_path


def contents(path) -> set:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def check_refused(message: str, word: str, before: set, folder) -> None:
    assert "Traceback" not in message
    assert len(message.strip().splitlines()) == 1, message
    assert word.lower() in message.lower(), f"{word!r} not named in: {message}"
    assert not (folder / "run").exists()
    assert contents(folder) == before


def run_in_process(folder, word, *args, **kwargs) -> str:
    """``popjax.run`` on a case: its error message; fails on anything but a PopjaxError."""
    if not args:
        # ``data`` and ``model`` are popjax.run's own arguments: a config's tables go in the config.
        tables = {
            key: kwargs.pop(key) for key in ("data", "model") if isinstance(kwargs.get(key), dict)
        }
        args = (SweepConfig(**tables),)
    before = contents(folder)
    with pytest.raises(PopjaxError) as error:
        popjax.run(*args, out=folder / "run", progress=False, **kwargs)
    check_refused(str(error.value), word, before, folder)
    return str(error.value)


def command_in_process(folder, capsys, word, *args) -> str:
    """``popjax run ARGS`` through the command's entry point: its one line on stderr."""
    before = contents(folder)
    capsys.readouterr()
    try:
        code = main(["run", *args, "--out", "run", "--quiet", "--no-report"])
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("popjax"), err
    check_refused(err, word, before, folder)
    return err


def write_config(folder, case: Case):
    path = folder / "inputs" / "case.toml"
    if case.text is not None:
        if isinstance(case.text, bytes):
            path.write_bytes(case.text)
        else:
            path.write_text(case.text)
    else:
        path.write_text(tomli_w.dumps(case.table))
    return "inputs/case.toml"


def toml_ready(case: Case) -> bool:
    """Whether the case can be a config file (TOML has no integers beyond 64 bits)."""
    if case.table is None:
        return case.text is not None
    try:
        tomli_w.dumps(case.table)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


CONFIG_CASES = config_cases() + toml_cases()
TOML_CASES = [c for c in CONFIG_CASES if toml_ready(c)]
PYTHON_CASES = python_cases()
FLAGS = flag_cases()
DATA = data_cases()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", [c for c in CONFIG_CASES if c.table], ids=lambda c: c.label[:60])
def test_bad_config_in_python(folder, case):
    overrides = {k: v for k, v in case.table.items()}
    run_in_process(folder, case.word, **overrides)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", PYTHON_CASES, ids=lambda c: c.label[:60])
def test_bad_python_values(folder, case):
    run_in_process(folder, case.word, **case.table)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", TOML_CASES, ids=lambda c: c.label[:60])
def test_bad_config_file(folder, capsys, case):
    path = write_config(folder, case)
    run_in_process(folder, case.word, path)
    command_in_process(folder, capsys, case.word, path)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", FLAGS, ids=lambda c: c.label[:60])
def test_bad_flags(folder, capsys, case):
    args = case.args
    if case.table is not None:
        args = (write_config(folder, case), *args)
    command_in_process(folder, capsys, case.word, *args)


def broken_arrays(arrays, regression):
    return {**good_arrays(regression), **arrays}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("label, word, arrays, regression", DATA, ids=[c[0][:60] for c in DATA])
def test_bad_arrays(folder, capsys, label, word, arrays, regression):
    arrays = broken_arrays(arrays, regression)
    # Through from_arrays, as a script gives its data.
    with pytest.raises(PopjaxError) as error:
        datasets.from_arrays(**arrays, regression=regression)
    assert word in str(error.value) and len(str(error.value).splitlines()) == 1
    # As a Dataset built by hand, given to popjax.run.
    split = {
        "x_val": arrays["x"][:10] if np.ndim(arrays["x"]) else arrays["x"],
        "y_val": arrays["y"][:10] if np.ndim(arrays["y"]) else arrays["y"],
    }
    dataset = datasets.Dataset(
        arrays["x"], arrays["y"], split["x_val"], split["y_val"], arrays["x_test"], arrays["y_test"]
    )
    task = "regression" if regression else "classification"
    run_in_process(
        folder, word, data=dataset, task=task, **{k: v for k, v in BASE.items() if k != "data"}
    )
    # As an .npz named by a config, through popjax.run and the command.
    np.savez(folder / "inputs" / "data.npz", **arrays)
    case = Case(
        label,
        word,
        table={**BASE, "task": task, "data": {"name": "npz", "path": "inputs/data.npz"}},
    )
    path = write_config(folder, case)
    run_in_process(folder, word, path)
    command_in_process(folder, capsys, word, path)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", NPZ_FILES)
def test_broken_npz_files(folder, capsys, kind):
    word = write_npz_file(kind, folder / "inputs" / "data.npz")
    case = Case(kind, word, table={**BASE, "data": {"name": "npz", "path": "inputs/data.npz"}})
    path = write_config(folder, case)
    run_in_process(folder, word, path)
    command_in_process(folder, capsys, word, path)
    with pytest.raises(PopjaxError, match=word):
        datasets.from_npz(folder / "inputs" / "data.npz")


# What popjax.run's own arguments get instead of a module, a function and a Dataset.
NOT_MODULES = [{"name": "mlp", "hidden": [8]}, "mlp", 5, popjax.nn.MLP]
NOT_FUNCTIONS = ["cross_entropy", 5, {"a": 1}]
NOT_DATASETS = [good_arrays(), (1, 2), "digits", 5]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("model", NOT_MODULES, ids=["dict", "str", "int", "class"])
def test_model_that_is_no_module(folder, model):
    config = SweepConfig(**{k: v for k, v in BASE.items() if k != "model"})
    message = run_in_process(folder, "model=", config, model=model)
    assert "flax" in message


@pytest.mark.timeout(30)
@pytest.mark.parametrize("loss_fn", NOT_FUNCTIONS, ids=["str", "int", "dict"])
def test_loss_fn_that_is_no_function(folder, loss_fn):
    run_in_process(folder, "loss_fn", SweepConfig(**BASE), loss_fn=loss_fn)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("data", NOT_DATASETS, ids=["dict", "tuple", "str", "int"])
def test_data_that_is_no_dataset(folder, data):
    run_in_process(folder, "data=", SweepConfig(**BASE), data=data)


@pytest.mark.timeout(10)
def test_several_hundred_inputs_are_tried():
    tried = (
        len([c for c in CONFIG_CASES if c.table])
        + len(PYTHON_CASES)
        + 2 * len(TOML_CASES)
        + len(FLAGS)
        + 4 * len(DATA)
        + 3 * len(NPZ_FILES)
        + len(NOT_MODULES + NOT_FUNCTIONS + NOT_DATASETS)
    )
    print(f"malformed inputs tried: {tried}")
    assert tried >= 300


@pytest.mark.timeout(120)
def test_valid_edge_values_run(folder, monkeypatch):
    # The edges of each range are accepted, and such a sweep trains: the largest seed, a batch
    # of the whole training split, the longest name.
    monkeypatch.setattr(programs, "group_programs", FIT_PROGRAM)
    train = len(popjax.Plan.from_config(SweepConfig(**BASE)).load_data().x_train)
    edges = {**BASE, "seed": 2**32 - 1, "batch_size": train, "name": "x" * 200, "steps": 2}
    result = popjax.run(SweepConfig(**edges), write=False, progress=False)
    assert 0.0 <= result.best_test["accuracy"] <= 1.0
    assert np.isfinite(result.history[-1]["val_loss"]).all()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_headline_cases_as_a_user_runs_them(tmp_path):
    """The cases first met by hand, each as a real ``popjax run`` process, side by side."""
    from conftest import popjax_cli

    arrays = good_arrays()
    arrays["x"] = with_value(arrays["x"], 5, NAN)
    np.savez(tmp_path / "nan.npz", **arrays)
    (tmp_path / "nan.toml").write_text(
        tomli_w.dumps({**BASE, "data": {"name": "npz", "path": "nan.npz"}})
    )
    (tmp_path / "tiny.toml").write_text(tomli_w.dumps(BASE))
    runs = {
        "seed": ("tiny.toml", "--seed", "-1"),
        "seed ": ("tiny.toml", "--seed", "1" * 20),
        "batch_size": ("--batch-size", "100000", "--steps", "20", "--interval", "10"),
        "x ": ("nan.toml",),
    }
    inputs = contents(tmp_path)
    # The popjax this process imports, in the processes too.
    package_root = os.pathsep.join(
        [str(Path(popjax.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
    )
    processes = {
        word: popjax_cli(
            "run", *args, "--out", f"run{i}", cwd=tmp_path, report=True, PYTHONPATH=package_root
        )
        for i, (word, args) in enumerate(runs.items())
    }
    for word, process in processes.items():
        out, err = process.communicate(timeout=200)
        assert process.returncode == 2, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert word.strip() in err, err
    assert contents(tmp_path) == inputs
