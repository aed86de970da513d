"""Streams each round's figures to TensorBoard event files, for people who watch runs there.

Population summaries (best, median) and the best member's hyperparameters go under their own
tags, one point per PBT round at its training step. Needs ``tensorboardX``
(``pip install 'popjax[tensorboard]'``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from popjax.errors import PopjaxError
from popjax.records import fitness_values, selected_metric


def summary_writer_class():
    """tensorboardX's writer; checked before a run writes anything."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise PopjaxError(
            "--tensorboard needs tensorboardX: pip install 'popjax[tensorboard]'"
        ) from None
    return SummaryWriter


class TensorBoardLogger:
    """A round callback (see ``popjax.sweep.run_plan``): ``start`` opens the event files in
    ``<run folder>/tensorboard``, unless given ``log_dir`` here; ``logger(record)`` writes one
    round; ``close()`` flushes. A sweep that writes no run folder logs nothing."""

    def __init__(self, log_dir=None):
        self.log_dir = self.writer = None
        if log_dir is not None:
            self._open(log_dir)

    def _open(self, log_dir) -> None:
        self.log_dir = Path(log_dir)
        self.writer = summary_writer_class()(str(self.log_dir))

    def start(self, config, first_round: int, run_dir) -> None:
        if self.writer is None and run_dir is not None:
            self._open(Path(run_dir) / "tensorboard")

    def __call__(self, record: dict) -> None:
        if self.writer is None:
            return
        step = record["step"]
        key, values = selected_metric(record)
        best = int(np.argmax(fitness_values(record)))
        medians = {
            f"{name}/median": np.nanmedian(np.asarray(v, dtype=float))
            for name, v in record.items()
            if name.startswith(("train_", "val_")) and isinstance(v, list)
        }
        scalars = {
            f"{key}/best": values[best],
            **medians,
            "pbt/copies": sum(p != m for m, p in enumerate(record["parents"])),
            "pbt/diverged": sum(record["diverged"]),
            **{
                f"best_member_hparams/{name}": values[best]
                for name, values in record["hparams"].items()
                if values[best] is not None
            },
        }
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, float(value), step)
        self.writer.add_histogram(f"{key}/members", values[np.isfinite(values)], step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
