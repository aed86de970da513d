"""The host's record of a round: one line of metrics.jsonl, one value per member."""

from __future__ import annotations

import numpy as np

from popjax.errors import PopjaxError

# Keys of a record that hold one value for the whole round, not one per member.
ROUND_KEYS = ("round", "step", "selects_on", "minimize", "hparams")


def check_not_all_diverged(
    record: dict, space, group: str | None = None, members: list[int] | None = None
) -> None:
    """Some members may diverge (PBT replaces them); all of them, or all of a group's
    ``members`` (PBT copies within a group only), is a space to narrow."""
    diverged = record["diverged"]
    if any(
        diverged[m] is False for m in (members if members is not None else range(len(diverged)))
    ):
        return
    ranges = ", ".join(
        f"{name} ({prior.low:g}..{prior.high:g})"
        for name, prior in space.priors.items()
        if hasattr(prior, "low")
    )
    who = f"every member of group '{group}'" if group else "every member"
    hint = (
        f": narrow the ranges of {ranges}, starting with the learning rate"
        if ranges
        else ": check the task's training for a source of NaN or inf"
    )
    raise PopjaxError(f"{who} diverged (non-finite metrics) by step {record['step']}{hint}")


def round_record(round_index: int, interval: int, host, last_epochs, task) -> dict:
    """One line of metrics.jsonl from the round's host copy: plain lists, one value per member.

    Each metric appears as ``train_<name>`` (averaged over the round) and ``val_<name>``.
    ``epochs`` counts the passes over the training split that each member's weights have had,
    through every copy (a copied member inherits its source's count); it needs the task's
    ``epochs_per_step``. ``task`` is the group's ``popjax.Task``.
    """
    output, hparams = host
    parents = np.asarray(output.parents)
    record = {
        "round": round_index,
        "step": (round_index + 1) * interval,
        "parents": [int(p) for p in parents],
        "selects_on": f"val_{task.fitness}",
        "minimize": bool(task.minimize),
    }
    for prefix, metrics in (("train", output.train), ("val", output.val)):
        for name, values in metrics.items():
            record[f"{prefix}_{name}"] = [float(x) for x in values]
    record["diverged"] = [not bool(np.isfinite(x)) for x in output.fitness]
    record["stopped"] = [bool(x) for x in output.stopped]
    restarted = np.asarray(output.restarted)
    if restarted.any():  # successive halving began these slots again as new trials
        record["restarted"] = [bool(x) for x in restarted]
    if task.epochs_per_step is not None:
        per_step = task.epochs_per_step({k: np.asarray(v) for k, v in hparams.items()})
        trained = np.where(
            np.asarray(output.stopped), 0.0, interval * np.broadcast_to(per_step, parents.shape)
        )
        before = np.asarray(last_epochs)[parents] if last_epochs is not None else 0.0
        before = np.where(restarted, 0.0, before)
        record["epochs"] = [round(float(x), 6) for x in before + trained]
    record["hparams"] = {k: [float(x) for x in v] for k, v in hparams.items()}
    return record


def merge_records(records: list[dict], groups) -> dict:
    """One round's record of the whole sweep from each group's: members numbered through the
    groups, parents shifted to sweep indices, a value a group lacks given as None."""
    if len(records) == 1:
        return records[0]
    merged = {key: records[0][key] for key in ROUND_KEYS if key in records[0]}
    merged["parents"] = [p + g.offset for r, g in zip(records, groups) for p in r["parents"]]
    merged["group"] = [g.name for g in groups for _ in g.members]
    keys = dict.fromkeys(k for r in records for k in r if k not in (*ROUND_KEYS, "parents"))
    for key in keys:
        merged[key] = [
            x for r, g in zip(records, groups) for x in r.get(key, [None] * len(g.members))
        ]
    names = list(dict.fromkeys(n for r in records for n in r["hparams"]))
    merged["hparams"] = {
        n: [
            x for r, g in zip(records, groups) for x in r["hparams"].get(n, [None] * len(g.members))
        ]
        for n in names
    }
    return merged


def selected_metric(record: dict) -> tuple[str, np.ndarray]:
    """The metric PBT selected on (``"val_accuracy"``) and each member's value; NaN where a
    group lacks it."""
    key = record.get("selects_on", "val_accuracy")  # runs written before tasks had it
    return key, np.array([np.nan if v is None else v for v in record[key]], dtype=float)


def fitness_values(record: dict) -> np.ndarray:
    """Each member's selected metric, oriented so that higher is better; diverged: -inf."""
    values = selected_metric(record)[1]
    values = -values if record.get("minimize") else values
    return np.where(np.asarray(record["diverged"]) | np.isnan(values), -np.inf, values)
