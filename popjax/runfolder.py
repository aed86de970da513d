"""The run folder: what a sweep writes, in which files, and how to read it back.

config.toml     the resolved config (runs again with ``popjax run config.toml``); a task of
                one's own with the folder its module was imported from
metrics.jsonl   one line per round: step, per-member train/validation figures, parents,
                hyperparameters; appended as the run goes
lineage.json    parents and hyperparameters of every member at every round
summary.json    the best member, its hyperparameters, validation and test metrics, wall time
                and devices
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from popjax.errors import PopjaxError

CONFIG, METRICS, LINEAGE, SUMMARY = "config.toml", "metrics.jsonl", "lineage.json", "summary.json"


def default_run_dir(name: str, root="runs", when: float | None = None) -> Path:
    """``root/<name>-<date>-<time>``, at ``when`` (seconds since the epoch) or now."""
    return Path(root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(when))}"


def check_new(run_dir: Path) -> None:
    """A run never writes into a folder that already holds something (but what a run killed
    while filling an empty folder left there)."""
    if run_dir.exists() and (not run_dir.is_dir() or not left_by_a_kill(run_dir)):
        if (run_dir / CONFIG).is_file():
            raise PopjaxError(
                f"run folder {run_dir} already exists: continue it with "
                f"popjax run --resume {run_dir}, or choose another --out"
            )
        raise PopjaxError(f"run folder {run_dir} already exists: choose another --out")


class RunFolder:
    """Writes one run's files. Created only once the sweep is ready to train."""

    def __init__(self, path: Path, config_toml: str):
        check_new(path)
        make_atomic(path, {CONFIG: config_toml, METRICS: ""})
        self.path = path

    @classmethod
    def reopen(cls, path: Path, history: list[dict]) -> RunFolder:
        """An existing run folder whose metrics go back to ``history`` (a resumed sweep)."""
        folder = cls.__new__(cls)
        folder.path = path
        write_atomic(path / METRICS, "".join(json.dumps(r) + "\n" for r in history))
        return folder

    def append_round(self, record: dict) -> None:
        with open(self.path / METRICS, "a") as f:
            f.write(json.dumps(record) + "\n")

    def write_json(self, filename: str, data) -> None:
        write_atomic(self.path / filename, json.dumps(data, indent=1))


def write_atomic(path: Path, text: str) -> None:
    """Writes through a temporary file, so a killed run never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def left_by_a_kill(run_dir: Path) -> bool:
    """Whether the folder holds nothing, or only what ``make_atomic`` writes before
    config.toml: an empty metrics.jsonl and temporary files."""
    names = {p.name for p in run_dir.iterdir()}
    metrics = run_dir / METRICS
    return names <= {METRICS, f"{METRICS}.tmp", f"{CONFIG}.tmp"} and (
        not metrics.is_file() or metrics.stat().st_size == 0
    )


def make_atomic(path: Path, files: dict[str, str]) -> None:
    """Makes the folder ``path`` holding ``files`` (config.toml among them), so that a kill at
    any instant leaves either no run folder or one that ``--resume`` accepts: they are written
    under a hidden name beside it, which is then renamed."""
    if path.is_dir():
        # An empty folder given as --out (the current one, say) is filled in place,
        # config.toml last: until it is there, the folder counts as new again.
        for name in sorted(files, key=lambda name: name == CONFIG):
            write_atomic(path / name, files[name])
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # left by a run killed while making it
    partial.mkdir()
    for name, text in files.items():
        (partial / name).write_text(text)
    try:
        os.replace(partial, path)
    except OSError:  # another run made the folder meanwhile
        shutil.rmtree(partial, ignore_errors=True)
        check_new(path)
        raise


def read_metrics(run_dir) -> list[dict]:
    lines = (Path(run_dir) / METRICS).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def read_summary(run_dir) -> dict:
    return json.loads((Path(run_dir) / SUMMARY).read_text())
