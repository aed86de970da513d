"""The host's record of a round: one line of metrics.jsonl, plain lists with one value per member.
"""

from __future__ import annotations

import numpy as np

from popjax.config import SweepConfig
from popjax.errors import PopjaxError
from popjax.groups import Group


def check_not_all_diverged(record: dict, config: SweepConfig) -> None:
    """Some members may diverge (PBT replaces them); all of them is a space to narrow."""
    if any(d is False for d in record["diverged"]):
        return
    ranges = ", ".join(f"{name} ({prior.low:g}..{prior.high:g})"
                       for name, prior in config.space.priors.items() if hasattr(prior, "low"))
    raise PopjaxError(f"every member diverged (non-finite loss) by step {record['step']}: "
                      f"narrow the ranges of {ranges}, starting with learning_rate")


def round_record(round_index: int, config: SweepConfig, host, last_epochs, num_train: int
                 ) -> dict:
    """One line of metrics.jsonl from the round's host copy: plain lists, one value per member.

    ``epochs`` counts the passes over the training split that each member's weights have had,
    through every copy (a copied member inherits its source's count).
    """
    output, hparams = host
    parents = np.asarray(output.source)
    fraction = np.asarray(hparams.get("batch_fraction", np.ones(len(parents))))
    used = np.clip(np.round(fraction * config.batch_size), 1, config.batch_size)
    trained = np.where(np.asarray(output.stopped), 0.0, config.interval * used / num_train)
    before = np.asarray(last_epochs)[parents] if last_epochs is not None else 0.0
    return {
        "round": round_index,
        "step": (round_index + 1) * config.interval,
        "parents": [int(p) for p in output.source],
        "train_loss": [float(x) for x in output.train_loss],
        "val_loss": [float(x) for x in output.val_loss],
        "val_accuracy": [float(x) for x in output.val_accuracy],
        "diverged": [not bool(np.isfinite(x)) for x in output.fitness],
        "stopped": [bool(x) for x in output.stopped],
        "epochs": [round(float(x), 6) for x in before + trained],
        "hparams": {k: [float(x) for x in v] for k, v in hparams.items()},
    }


def merge_records(records: list[dict], groups: list[Group]) -> dict:
    """One round's record of the whole sweep from each group's: members numbered through the
    groups, parents shifted to sweep indices, a hyperparameter a group lacks given as None."""
    if len(records) == 1:
        return records[0]
    merged = {"round": records[0]["round"], "step": records[0]["step"]}
    merged["parents"] = [p + g.offset for r, g in zip(records, groups) for p in r["parents"]]
    merged["group"] = [g.name for g in groups for _ in g.members]
    for key in ("train_loss", "val_loss", "val_accuracy", "diverged", "stopped", "epochs"):
        merged[key] = [x for r in records for x in r[key]]
    names = list(dict.fromkeys(n for r in records for n in r["hparams"]))
    merged["hparams"] = {n: [x for r, g in zip(records, groups)
                             for x in r["hparams"].get(n, [None] * g.config.population)]
                         for n in names}
    return merged
