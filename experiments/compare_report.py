"""compare.py's scoring and figures: a run's test figure, each task's figure per method, and
the RL return curves."""

from __future__ import annotations

import numpy as np

PAPER_LINES = {"mnist1d_mlp": ("paper MLP", 68), "mnist1d_cnn": ("paper CNN", 94)}


# Every method, in the order of tables; a method keeps its colour in every plot.
METHODS = ("pbt", "pb2", "halving", "mfpbt", "random", "fixed")


def score(run: dict) -> float:
    """A run's test figure: accuracy in %, or the loss a regression selected on."""
    metric = run.get("metric", "accuracy")
    return 100 * run["test_accuracy"] if metric == "accuracy" else run[f"test_{metric}"]


def task_metric(task: str, runs) -> str:
    return next(r.get("metric", "accuracy") for r in runs if r["task"] == task)


def score_name(task: str, runs) -> str:
    metric = task_metric(task, runs)
    if metric == "accuracy":
        return "test accuracy (%)"
    return (
        "test return (fresh episodes)" if metric == "return" else f"test {metric} (lower is better)"
    )


def decimals(task: str, runs, default: int) -> int:
    """Decimals to print a task's figures with: a loss (a regression's) needs 3."""
    return 3 if task_metric(task, runs) not in ("accuracy", "return") else default


def panels(plt, count: int, columns: int, width: float, height: float):
    """A figure of ``count`` panels in rows of ``columns`` at most; its axes, in order."""
    columns = min(columns, count)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def plot(runs, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in runs))
    methods = [m for m in METHODS if any(r["method"] == m for r in runs)]
    fig, axes = panels(plt, len(tasks), 3, 3.6, 3.6)
    for ax, task in zip(axes, tasks):
        for i, method in enumerate(methods):
            accuracy = [score(r) for r in runs if r["task"] == task and r["method"] == method]
            if not accuracy:  # a method not run on this task yet
                continue
            ax.bar(i, np.mean(accuracy), color=f"C{i}", alpha=0.6)
            ax.errorbar(i, np.mean(accuracy), yerr=np.std(accuracy), color="black", capsize=4)
            ax.scatter([i] * len(accuracy), accuracy, color="black", s=10, zorder=3)
        if task in PAPER_LINES:
            label, value = PAPER_LINES[task]
            ax.axhline(value, color="gray", ls="--", label=f"{label} ({value}%)")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xticks(range(len(methods)), methods, rotation=30)
        ax.set(title=task, ylabel=score_name(task, runs))
        if score_name(task, runs) == "test accuracy (%)":
            everything = [score(r) for r in runs if r["task"] == task]
            ax.set_ylim(min(everything + [PAPER_LINES.get(task, ("", 100))[1]]) - 5, 100)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_curves(runs, path) -> None:
    """Return against environment steps: each method's mean over seeds of its best member."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in runs if "curve" in r))
    if not tasks:
        return
    fig, axes = panels(plt, len(tasks), 3, 4.5, 3.4)
    for ax, task in zip(axes, tasks):
        for i, method in enumerate(METHODS):
            curves = [
                r["curve"]
                for r in runs
                if r["task"] == task and r["method"] == method and "curve" in r
            ]
            if not curves:
                continue
            steps, best = np.array(curves)[0, :, 0], np.array(curves)[:, :, 1]
            ax.plot(steps, best.mean(0), color=f"C{i}", label=method)
            ax.fill_between(steps, best.min(0), best.max(0), color=f"C{i}", alpha=0.15)
        ax.set(
            title=task,
            xlabel="environment steps per agent",
            ylabel="best member's evaluation return",
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
