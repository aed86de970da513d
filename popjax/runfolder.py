"""The run folder: what a sweep writes, in which files, and how to read it back.

config.toml     the resolved config (runs again with ``popjax run config.toml``)
metrics.jsonl   one line per round: step, per-member train/validation figures, parents,
                hyperparameters; appended as the run goes
lineage.json    parents and hyperparameters of every member at every round
summary.json    the best member, its hyperparameters, validation and test metrics, wall time
                and devices
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from popjax.errors import PopjaxError

CONFIG, METRICS, LINEAGE, SUMMARY = "config.toml", "metrics.jsonl", "lineage.json", "summary.json"


def default_run_dir(name: str, root="runs", when: float | None = None) -> Path:
    """``root/<name>-<date>-<time>``, at ``when`` (seconds since the epoch) or now."""
    return Path(root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(when))}"


def check_new(run_dir: Path) -> None:
    """A run never writes into a folder that already holds something."""
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise PopjaxError(f"run folder {run_dir} already exists: choose another --out")


class RunFolder:
    """Writes one run's files. Created only once the sweep is ready to train."""

    def __init__(self, path: Path, config_toml: str):
        check_new(path)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        write_atomic(path / CONFIG, config_toml)
        (path / METRICS).touch()

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


def read_metrics(run_dir) -> list[dict]:
    lines = (Path(run_dir) / METRICS).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def read_summary(run_dir) -> dict:
    return json.loads((Path(run_dir) / SUMMARY).read_text())
