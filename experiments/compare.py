"""PBT against random search and a fixed textbook setting, at equal compute, over seeds.

Every method trains the same number of members for the same number of steps from the same
config; only what happens between rounds differs:

* pbt: exploit (truncation, q = 0.25) and explore (x0.8 / x1.2, resample with p = 0.25);
* random: the same population, hyperparameters drawn once from the same priors, never changed;
* fixed: every member with one textbook setting (learning rate 0.05, momentum 0.9, no dropout,
  weight decay 5e-4), differing only in initial weights and batch order.

Each picks its best member on the validation split; the table reports that member's test
accuracy, mean and spread over seeds.

    python experiments/compare.py                       # all tasks, 3 seeds
    python experiments/compare.py --tasks digits_mlp --seeds 0

It writes ``results.json`` (every run), ``results.md`` (the table beside the MNIST-1D paper's) and
``results.png`` (test accuracy per task and method, one dot per seed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
from pathlib import Path

from popjax.mesh import use_cpu_cores

use_cpu_cores(16)  # on a CPU, members spread over the cores, as `popjax run` does

import jax  # noqa: E402
import numpy as np  # noqa: E402

import popjax  # noqa: E402
from popjax.space import Fixed, SearchSpace  # noqa: E402

HERE = Path(__file__).parent
TASKS = ("mnist1d_mlp", "mnist1d_cnn", "digits_mlp")
TEXTBOOK = SearchSpace({"learning_rate": Fixed(0.05), "momentum": Fixed(0.9),
                        "dropout": Fixed(0.0), "weight_decay": Fixed(5e-4)})


def method_config(task: str, method: str, seed: int) -> popjax.SweepConfig:
    config = popjax.SweepConfig.from_toml(HERE / f"{task}.toml").replace(seed=seed)
    if method == "random":
        return config.replace(pbt=dataclasses.replace(config.pbt, enabled=False))
    if method == "fixed":
        return config.replace(space=TEXTBOOK, pbt=dataclasses.replace(config.pbt, enabled=False))
    return config


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--methods", nargs="+", default=["pbt", "random", "fixed"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default=str(HERE / "results.json"))
    args = parser.parse_args(argv)

    runs = []
    for task in args.tasks:
        for method in args.methods:
            for seed in args.seeds:
                result = popjax.run(method_config(task, method, seed), write=False,
                                    progress=False)
                runs.append({"task": task, "method": method, "seed": seed,
                             "val_accuracy": result.best_val["accuracy"],
                             "test_accuracy": result.best_test["accuracy"],
                             "best_hparams": result.best_hparams,
                             "wall_time_s": result.wall_time})
                print(f"{task:12s} {method:7s} seed {seed}: val {runs[-1]['val_accuracy']:.4f} "
                      f"test {runs[-1]['test_accuracy']:.4f} ({result.wall_time:.0f} s)",
                      flush=True)
    machine = {"platform": platform.platform(), "processor": platform.processor(),
               "devices": [str(d) for d in jax.devices()], "jax": jax.__version__}
    out = Path(args.out)
    out.write_text(json.dumps({"machine": machine, "runs": runs}, indent=1))
    table = results_table(runs)
    out.with_suffix(".md").write_text(
        f"{table}\n\nMNIST-1D paper (test accuracy): {PAPER}.\n\nMachine: {machine}\n")
    plot(runs, out.with_suffix(".png"))
    print()
    print(table)


PAPER = "logistic regression 32%, MLP 68%, CNN 94%, GRU 91%, human 96%"
PAPER_LINES = {"mnist1d_mlp": ("paper MLP", 68), "mnist1d_cnn": ("paper CNN", 94)}


def plot(runs, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in runs))
    methods = list(dict.fromkeys(r["method"] for r in runs))
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for i, method in enumerate(methods):
            accuracy = [100 * r["test_accuracy"] for r in runs
                        if r["task"] == task and r["method"] == method]
            ax.bar(i, np.mean(accuracy), color=f"C{i}", alpha=0.6)
            ax.errorbar(i, np.mean(accuracy), yerr=np.std(accuracy), color="black", capsize=4)
            ax.scatter([i] * len(accuracy), accuracy, color="black", s=10, zorder=3)
        if task in PAPER_LINES:
            label, value = PAPER_LINES[task]
            ax.axhline(value, color="gray", ls="--", label=f"{label} ({value}%)")
            ax.legend(fontsize=7, loc="lower right")
        everything = [100 * r["test_accuracy"] for r in runs if r["task"] == task]
        ax.set_ylim(min(everything + [PAPER_LINES.get(task, ("", 100))[1]]) - 5, 100)
        ax.set_xticks(range(len(methods)), methods)
        ax.set(title=task, ylabel="test accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def results_table(runs) -> str:
    """Markdown: test accuracy of the member chosen on validation, mean ± std over seeds."""
    tasks = list(dict.fromkeys(r["task"] for r in runs))
    methods = list(dict.fromkeys(r["method"] for r in runs))
    lines = ["| task | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for task in tasks:
        cells = []
        for method in methods:
            accuracy = [100 * r["test_accuracy"] for r in runs
                        if r["task"] == task and r["method"] == method]
            cells.append(f"{np.mean(accuracy):.1f} ± {np.std(accuracy):.1f} (n={len(accuracy)})")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
