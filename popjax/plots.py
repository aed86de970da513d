"""Pictures of a finished sweep, drawn from its run folder's records with matplotlib.

Every function takes plain records (``metrics.jsonl`` rounds and the lineage), draws one figure
and saves it as a PNG. Colours follow lineage: a member's line takes the colour of the founding
member whose weights it carries, so a family that takes over the population shows as one colour
spreading.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from popjax.lineage import Lineage
from popjax.records import selected_metric


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def founders(lineage: Lineage) -> np.ndarray:
    """``[rounds, P]``: the founding member (round-0 slot) whose weights each member carries."""
    current = np.arange(len(lineage.parents[0]))
    rows = []
    for parents in lineage.parents:
        current = current[np.asarray(parents)]
        rows.append(current)
    return np.stack(rows)


def _colours(plt, size: int):
    cmap = plt.get_cmap("tab20" if size <= 20 else "turbo")
    return [cmap(i / max(size - 1, 1)) if size > 20 else cmap(i) for i in range(size)]


def metric_label(record: dict) -> str:
    """The selected metric as an axis reads it: "validation accuracy"."""
    return "validation " + selected_metric(record)[0].removeprefix("val_")


def fitness_over_steps(history: list[dict], path: Path):
    """The best, median and range of the selected metric over the run."""
    plt = _pyplot()
    steps = [r["step"] for r in history]
    label = metric_label(history[0])
    values = np.array([selected_metric(r)[1] for r in history], dtype=float)
    best = np.nanmin if history[0].get("minimize") else np.nanmax
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(steps, best(values, axis=1), label="best member")
    ax.plot(steps, np.nanmedian(values, axis=1), label="median member")
    ax.fill_between(
        steps, np.nanmin(values, axis=1), np.nanmax(values, axis=1), alpha=0.15, label="all members"
    )
    ax.set(xlabel="training step", ylabel=label, title=f"{label.capitalize()} of the population")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


def _scale_axis(ax, which: str, name: str, values, log_scale, ticks) -> None:
    """A hyperparameter's axis: log for a log-uniform one, ticks at a choice's values (named
    choices by name)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

    axis = ax.yaxis if which == "y" else ax.xaxis
    set_limits = ax.set_ylim if which == "y" else ax.set_xlim
    low, high = np.nanmin(values), np.nanmax(values)
    if name in ticks:
        low, high = min(low, *ticks[name][0]), max(high, *ticks[name][0])
    if name in log_scale and low > 0:
        (ax.set_yscale if which == "y" else ax.set_xscale)("log")
        set_limits(low / 1.3, high * 1.3)
        # Under a decade or so there is no power of ten to label, and matplotlib labels every
        # minor tick instead, in overlapping scientific notation.
        decades = np.log10(high / low) + 2 * np.log10(1.3)
        axis.set_major_locator(
            MaxNLocator(4) if decades < 1.5 else LogLocator(subs=(1.0,), numticks=6)
        )
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
        axis.set_minor_locator(NullLocator())
    else:
        pad = 0.05 * (high - low) or 0.05 * abs(high) or 0.05
        set_limits(low - pad, high + pad)
    if name in ticks:
        axis.set_ticks(*ticks[name])


def hyperparameters_over_steps(
    lineage: Lineage,
    log_scale: set[str],
    path: Path,
    names: list[str] | None = None,
    ticks: dict | None = None,
):
    """One panel per hyperparameter: every member's value in every round, coloured by family.

    Args:
      log_scale: the names to plot on a log axis (log-uniform priors).
      names: the hyperparameters to draw (default: every one in the lineage).
      ticks: ``{name: (values, labels)}`` for a choice hyperparameter's axis.

    Returns:
      The figure, saved to ``path`` and closed.
    """
    from matplotlib.collections import LineCollection

    plt = _pyplot()
    names = list(lineage.hparams[0]) if names is None else list(names)
    family = founders(lineage)
    colours = _colours(plt, family.shape[1])
    fig, axes = plt.subplots(
        len(names), 1, figsize=(7, max(3.0, 2.1 * len(names))), sharex=True, squeeze=False
    )
    interval = lineage.interval
    for ax, name in zip(axes[:, 0], names):
        segments, segment_colours = [], []
        for r, values in enumerate(lineage.hparams):
            for m, value in enumerate(values[name]):
                if value is None:  # not a hyperparameter of this member's group
                    continue
                segments.append([(r * interval, value), ((r + 1) * interval, value)])
                segment_colours.append(colours[family[r, m]])
        ax.add_collection(LineCollection(segments, colors=segment_colours, linewidths=1.5))
        values = np.array([v[name] for v in lineage.hparams], dtype=float)  # None -> nan
        _scale_axis(ax, "y", name, values, log_scale, ticks or {})
        ax.set_xlim(0, lineage.rounds * interval)
        ax.set_ylabel(name, fontsize=8)
    axes[-1, 0].set_xlabel("training step (colour: the founding member of each line of weights)")
    fig.suptitle("Hyperparameters of every member over the run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


def family_tree(lineage: Lineage, best_member: int, path: Path):
    """Member slots over rounds; an edge from the member each slot copied at each round."""
    from matplotlib.collections import LineCollection

    plt = _pyplot()
    family = founders(lineage)
    size = family.shape[1]
    colours = _colours(plt, size)
    kept, copied, kept_colours, copied_colours = [], [], [], []
    for r in range(1, lineage.rounds):
        for m, parent in enumerate(lineage.parents[r]):
            edge = [(r - 1, parent), (r, m)]
            if parent == m:
                kept.append(edge)
                kept_colours.append(colours[family[r, m]])
            else:
                copied.append(edge)
                copied_colours.append(colours[family[r, m]])
    fig, ax = plt.subplots(figsize=(8, max(3.5, 0.16 * size)))
    ax.add_collection(LineCollection(kept, colors=kept_colours, linewidths=1.0, alpha=0.6))
    ax.add_collection(LineCollection(copied, colors=copied_colours, linewidths=1.8))
    ancestry = lineage.ancestry(best_member)
    ax.plot(
        range(lineage.rounds - len(ancestry), lineage.rounds),  # from its trial's first round
        ancestry,
        color="black",
        lw=2.5,
        ls="--",
        label=f"ancestry of the best member ({best_member})",
    )
    ax.set(
        xlim=(-0.5, lineage.rounds - 0.5),
        ylim=(-1, size),
        xlabel="PBT round",
        ylabel="member",
        title=f"Family tree: {len(copied)} copies (slanted edges)",
    )
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


def final_hyperparameters(
    last_round: dict,
    best_member: int,
    log_scale: set[str],
    path: Path,
    names: list[str] | None = None,
    ticks: dict | None = None,
):
    """Each final hyperparameter against the member's final selected metric; the arguments
    are ``hyperparameters_over_steps``'s. Returns the figure, saved and closed."""
    plt = _pyplot()
    names = list(last_round["hparams"]) if names is None else list(names)
    label, fitness = metric_label(last_round), selected_metric(last_round)[1]
    columns = min(len(names), 3)
    rows = -(-len(names) // columns)
    # Wide enough for the title over a single panel.
    size = (max(3.4 * columns, 5.5), max(2.9 * rows, 3.4))
    fig, axes = plt.subplots(rows, columns, figsize=size, squeeze=False)
    for ax, name in zip(axes.flat, names):
        values = np.array(
            [np.nan if v is None else v for v in last_round["hparams"][name]], dtype=float
        )
        ax.scatter(values, fitness, s=18, alpha=0.8)
        ax.scatter(
            values[best_member], fitness[best_member], s=60, marker="*", color="C3", label="best"
        )
        _scale_axis(ax, "x", name, values, log_scale, ticks or {})
        ax.set(xlabel=name, ylabel=label)
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"Final hyperparameters against the {label}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig
