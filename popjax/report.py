"""Tables for the terminal: the best members of a finished sweep."""

from __future__ import annotations

import numpy as np


def best_members_table(result, top: int = 5) -> str:
    """The ``top`` members by final validation fitness, with their hyperparameters and test."""
    last = result.history[-1]
    val_accuracy = np.asarray(last["val_accuracy"])
    order = np.argsort(-np.nan_to_num(val_accuracy, nan=-np.inf))[:top]
    names = list(last["hparams"])
    header = ["rank", "member", "val acc", "test acc", *names]
    rows = [
        [str(rank + 1), str(member), f"{val_accuracy[member]:.4f}",
         f"{result.test['accuracy'][member]:.4f}",
         *(f"{last['hparams'][name][member]:.4g}" for name in names)]
        for rank, member in enumerate(order)
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
