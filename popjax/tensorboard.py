"""Streams each round's figures to TensorBoard event files, for people who watch runs there.

Population summaries (best, median) and the best member's hyperparameters go under their own
tags, one point per PBT round at its training step. Needs ``tensorboardX``
(``pip install 'popjax[tensorboard]'``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from popjax.errors import PopjaxError


def summary_writer_class():
    """tensorboardX's writer; checked before a run writes anything."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise PopjaxError("--tensorboard needs tensorboardX: pip install 'popjax[tensorboard]'"
                          ) from None
    return SummaryWriter


class TensorBoardLogger:
    """A round callback: ``logger(record)`` writes one round; ``close()`` flushes."""

    def __init__(self, log_dir):
        self.log_dir = Path(log_dir)
        self.writer = summary_writer_class()(str(self.log_dir))

    def __call__(self, record: dict) -> None:
        step = record["step"]
        accuracy = np.asarray(record["val_accuracy"], dtype=float)
        best = int(np.nanargmax(np.where(record["diverged"], -np.inf, accuracy)))
        scalars = {
            "val_accuracy/best": np.nanmax(accuracy),
            "val_accuracy/median": np.nanmedian(accuracy),
            "val_loss/median": np.nanmedian(record["val_loss"]),
            "train_loss/median": np.nanmedian(record["train_loss"]),
            "pbt/copies": sum(p != m for m, p in enumerate(record["parents"])),
            "pbt/diverged": sum(record["diverged"]),
            **{f"best_member_hparams/{name}": values[best]
               for name, values in record["hparams"].items() if values[best] is not None},
        }
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, float(value), step)
        self.writer.add_histogram("val_accuracy/members", accuracy[np.isfinite(accuracy)], step)

    def close(self) -> None:
        self.writer.close()
