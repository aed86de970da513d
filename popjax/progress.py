"""The progress bar of a sweep: a round callback that draws one tqdm step a round, with the best
and median member's selected metric beside it."""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from popjax.records import fitness_values, selected_metric


class ProgressBar:
    """A round callback (see ``popjax.sweep.run_plan``): ``start`` opens the bar at the run's
    first round, ``bar(record)`` steps it, ``close()`` closes it. ``enabled=False`` draws
    nothing."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar = None

    def start(self, config, first_round: int, run_dir) -> None:
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

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def progress_figures(record: dict) -> dict[str, str]:
    """The best and median member's selected metric, for the progress bar."""
    values = selected_metric(record)[1]
    best = values[np.argmax(fitness_values(record))]
    return {"best": f"{best:.4g}", "median": f"{np.nanmedian(values):.4g}"}
