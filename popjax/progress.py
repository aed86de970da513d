"""The progress bar of a sweep: a round callback that draws one tqdm step a round, with the best
and median member's selected metric beside it, and before the first round, on a terminal, a
line that says what the run is doing (loading the data, compiling, ...)."""

from __future__ import annotations

import sys

import numpy as np
from tqdm.auto import tqdm

from popjax.records import fitness_values, selected_metric

# What a stage of the run's start (``popjax.startup.StartUp``) is doing, as the user reads it.
STAGES = {
    "data": "loading the data",
    "memory_plan": "sizing the population to the memory",
    "compile": "compiling the round",
    "init": "initializing the population",
    "restore": "restoring the newest checkpoint",
}


class ProgressBar:
    """A round callback (see ``popjax.sweep.run_plan``): ``starting(stage)`` says what the
    run's start is doing, ``start`` opens the bar at the run's first round, ``bar(record)``
    steps it, ``close()`` closes it. ``enabled=False`` draws nothing."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar = None
        self.status = None  # the line that shows the start's stage until the bar opens

    def starting(self, stage: str) -> None:
        # Only on a terminal, which redraws the line in place: in a pipe, a log or a notebook
        # the stages would pile up as lines of their own.
        shown = self.enabled and sys.stderr.isatty() and self.bar is None
        if not shown or stage not in STAGES:
            return
        if self.status is None:
            self.status = tqdm(total=0, bar_format="{desc}", leave=False)
        self.status.set_description_str(f"popjax: {STAGES[stage]}")

    def start(self, config, first_round: int, run_dir) -> None:
        self.close_status()
        self.bar = tqdm(
            total=config.rounds,
            initial=first_round,
            desc=config.name,
            unit="round",
            disable=not self.enabled,
        )

    def __call__(self, record: dict) -> None:
        self.bar.set_postfix(**progress_figures(record))
        self.bar.update()

    def close_status(self) -> None:
        if self.status is not None:
            self.status.close()
            self.status = None

    def close(self) -> None:
        self.close_status()
        if self.bar is not None:
            self.bar.close()


def progress_figures(record: dict) -> dict[str, str]:
    """The best and median member's selected metric, for the progress bar."""
    values = selected_metric(record)[1]
    best = values[np.argmax(fitness_values(record))]
    return {"best": f"{best:.4g}", "median": f"{np.nanmedian(values):.4g}"}
