"""What a finished sweep returns: the best member, every round's record, the lineage and the
final population, and the summary written to ``summary.json``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from popjax.config import SweepConfig
from popjax.lineage import Lineage
from popjax.plan import Plan
from popjax.population import Population


@dataclass
class SweepResult:
    """A finished sweep. ``history`` holds one dict of per-member lists per round."""

    config: SweepConfig
    best_member: int
    best_hparams: dict[str, float]
    best_val: dict[str, float]
    best_test: dict[str, float]
    history: list[dict]
    lineage: Lineage
    population: Population
    test: dict[str, np.ndarray]
    wall_time: float
    devices: list[str]
    compilations: int
    run_dir: Path | None
    groups: dict[str, list[int]] | None = None  # name -> [first member, end)
    fitness: str = "accuracy"  # the name of the metric PBT selected on, on the validation data
    minimize: bool = False
    # Per group: the slices of members its round ran in and XLA's plan of its bytes per device.
    memory: dict | None = None
    plan: Plan | None = None  # the plan the sweep ran, resolved
    # Per group whose training split streamed: its window, windows placed, seconds spent
    # preparing them (host gather and copy) and waiting for them (``popjax.stream``).
    stream: dict | None = None
    # Per program: compiles, seconds tracing, lowering and compiling, how many the cache served.
    compile: dict | None = None
    # Seconds of each stage of the run's start, up to its first round's record (``start_up``).
    start: dict | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.config.name,
            "task": self.config.task["name"],
            "selects_on": self.fitness,  # the files keep their key
            "minimize": self.minimize,
            "best_member": self.best_member,
            "best_hparams": self.best_hparams,
            "val": self.best_val,
            "test": self.best_test,
            "population": self.config.population,
            "steps": self.config.steps,
            "wall_time_s": round(self.wall_time, 3),
            "devices": self.devices,
            "compilations": self.compilations,
            "groups": self.groups,
            "memory": self.memory,
            "compile": self.compile,
            "start_s": self.start,
        }
