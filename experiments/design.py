"""Chooses a task's PBT setup without looking at its test split.

Each method may pick between a few setups, but only on a development split: for every
development seed, the task's training data (train + validation, never test) is split again into
training data and a development test set (20%, digits' share for its real test split), saved
as an ``.npz`` and run through the same loading path as a user's data. Each setup runs there; the
table gives the accuracy on that development test set, mean and spread over seeds. The setup
with the higher mean for each method is the one `compare.py` uses.

The candidates (experiments/README.md tells how they came to be these):

* ``metric``: what PBT ranks members by and every method picks its best member by, validation
  ``accuracy`` or validation ``loss``. With a few hundred validation examples near 98%, accuracy
  moves in steps of a whole example and many members tie; the loss does not.
* ``interval``: steps between PBT rounds (random search does not depend on it).
* ``space``: the task's own search space, or that space with per-member data augmentation
  (``shift``, ``noise``, ``scale``), where PBT learns an augmentation schedule as in Population
  Based Augmentation (Ho et al., 2019) and random search keeps its first draw.

    python experiments/design.py                      # digits_mlp, development seeds 100-109
    python experiments/design.py --task mnist1d_mlp --methods pbt pb2 halving random \
        --seeds 100 101 --metrics accuracy --intervals 250 --out design_mnist1d_mlp.json

It writes ``design.json`` (or ``--out``) and the table beside it as ``.md``; `compare.py`
reads every ``design*.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from pathlib import Path

import numpy as np

from popjax.api import run
from popjax.plan import Plan

# compare also spreads the members over the CPU cores
from compare import AUGMENTATION, HERE, METHODS, MNIST1D_AUGMENTATION, TASKS, method_config

METRICS = ("accuracy", "loss")
INTERVALS = (100, 250)
DEV_TEST_FRACTION = 0.2  # as large a share as digits' real test split
# Changes to the task's search space, as a config's [space] table writes them.
SPACES = {
    "own space": {},
    "with augmentation": AUGMENTATION,
}
TASK_AUGMENTATION = {"mnist1d_mlp": MNIST1D_AUGMENTATION, "mnist1d_cnn": MNIST1D_AUGMENTATION}


def development_data(config, seed: int, folder: Path) -> Path:
    """The task's training data split into train and a development test set, as an .npz."""
    data = Plan.from_config(config, seed=seed).load_data()
    x = np.concatenate([data.x_train, data.x_val])
    y = np.concatenate([data.y_train, data.y_val])
    order = np.random.default_rng(seed + 7).permutation(len(x))
    held = int(round(len(x) * DEV_TEST_FRACTION))
    test, train = order[:held], order[held:]
    path = folder / f"dev_{seed}.npz"
    np.savez(path, x=x[train], y=y[train], x_test=x[test], y_test=y[test])
    return path


def setups(method: str, task: str = "digits_mlp", metrics=METRICS, intervals=INTERVALS):
    """The candidate setups of a method: (label, config changes)."""
    spaces = {**SPACES, "with augmentation": TASK_AUGMENTATION.get(task, AUGMENTATION)}
    for space, metric in itertools.product(spaces, metrics):
        if method in ("pbt", "pb2") and len(intervals) > 1:  # what changes between rounds
            for interval in intervals:
                yield (
                    f"{space}, {metric}, interval {interval}",
                    {"space": spaces[space], "metric": metric, "interval": interval},
                )
        else:
            yield f"{space}, {metric}", {"space": spaces[space], "metric": metric}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits_mlp", choices=TASKS)
    parser.add_argument("--methods", nargs="+", default=["pbt", "random"], choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(100, 110)))
    parser.add_argument("--metrics", nargs="+", default=list(METRICS), choices=METRICS)
    parser.add_argument("--intervals", nargs="+", type=int, default=list(INTERVALS))
    parser.add_argument("--out", default="design.json", help="file name, beside results.json")
    args = parser.parse_args(argv)

    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            base = method_config(args.task, "pbt", seed, {})
            path = development_data(base, seed, Path(folder))
            data = {**base.data, "name": "npz", "path": str(path)}
            for method in args.methods:
                for label, changes in setups(method, args.task, args.metrics, args.intervals):
                    config = method_config(args.task, method, seed, changes).replace(data=data)
                    result = run(config, write=False, progress=False)
                    runs.append(
                        {
                            "method": method,
                            "setup": label,
                            "changes": changes,
                            "seed": seed,
                            "dev_test_accuracy": result.best_test["accuracy"],
                        }
                    )
                    print(
                        f"seed {seed} {method:7s} {label:40s} dev test "
                        f"{result.best_test['accuracy']:.4f}",
                        flush=True,
                    )
    out = HERE / args.out
    runs = with_saved_runs(out, args.task, runs)
    table = design_table(runs)
    out.write_text(json.dumps({"task": args.task, "runs": runs}, indent=1))
    out.with_suffix(".md").write_text(
        f"Task {args.task}, development seeds {sorted({r['seed'] for r in runs})}.\n\n{table}\n"
    )
    print()
    print(table)


def with_saved_runs(out: Path, task: str, runs: list[dict]) -> list[dict]:
    """``runs`` after the runs ``out`` already holds of the same task's other methods, so a
    method can be run again without running the rest (as compare.py does)."""
    if not out.exists():
        return runs
    saved = json.loads(out.read_text())
    if saved["task"] != task:
        return runs
    methods = {r["method"] for r in runs}
    merged = [r for r in saved["runs"] if r["method"] not in methods] + runs
    return sorted(merged, key=lambda r: METHODS.index(r["method"]))  # in compare.py's order


def design_table(runs) -> str:
    """Markdown: development test accuracy per method and setup, mean ± std over seeds, with
    each method's best mean marked as its choice."""
    accuracy = {}
    for r in runs:
        accuracy.setdefault((r["method"], r["setup"]), []).append(100 * r["dev_test_accuracy"])
    mean = {key: np.mean(values) for key, values in accuracy.items()}
    best = {
        method: max((s for m, s in mean if m == method), key=lambda s: mean[method, s])
        for method, _ in mean
    }
    lines = ["| method | setup | dev test accuracy (%) | chosen |", "|---|---|---|---|"]
    for (method, setup), values in accuracy.items():
        lines.append(
            f"| {method} | {setup} | {np.mean(values):.2f} ± {np.std(values):.2f} "
            f"(n={len(values)}) | {'yes' if best[method] == setup else ''} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
