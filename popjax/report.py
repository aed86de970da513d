"""What a finished sweep shows: a table for the terminal, a Markdown report with plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from popjax.errors import PopjaxError
from popjax.halving import judged_rungs


def best_members_table(result, top: int = 5) -> str:
    """The ``top`` members by final validation fitness, with their hyperparameters and test."""
    from popjax.records import fitness_values

    last = result.history[-1]
    metric = result.selects_on
    val = np.asarray(last[f"val_{metric}"], dtype=float)
    order = np.argsort(-fitness_values(last), kind="stable")[:top]
    names = list(last["hparams"])
    test = result.test.get(metric)
    short = {"accuracy": "acc"}.get(metric, metric)
    header = [
        "rank",
        "member",
        f"val {short}",
        *([f"test {short}"] if test is not None else []),
        *names,
    ]
    rows = [
        [
            str(rank + 1),
            str(member),
            f"{val[member]:.4f}",
            *([f"{test[member]:.4f}"] if test is not None else []),
            *(
                "-"
                if last["hparams"][name][member] is None
                else f"{last['hparams'][name][member]:.4g}"
                for name in names
            ),
        ]
        for rank, member in enumerate(order)
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


REPORT = "report.md"
PLOTS = {
    "fitness": "fitness.png",
    "hyperparameters": "hyperparameters.png",
    "family_tree": "family_tree.png",
    "final_hyperparameters": "final_hyperparameters.png",
}


def write_report(run_dir) -> Path:
    """Writes the plots and ``report.md`` into a finished run folder; returns the report's path.

    Raises:
      PopjaxError: the folder is not a finished run.
    """
    from popjax import plots
    from popjax.lineage import Lineage
    from popjax.plan import Plan
    from popjax.runfolder import CONFIG, LINEAGE, SUMMARY, read_metrics, read_summary, write_atomic
    from popjax.space import LogUniform

    run_dir = Path(run_dir)
    missing = [f for f in (CONFIG, LINEAGE, SUMMARY) if not (run_dir / f).is_file()]
    if missing:
        raise PopjaxError(
            f"{run_dir} is not a finished run folder (no {', '.join(missing)}): "
            "give a folder that popjax run completed"
        )
    plan = Plan.from_run(run_dir)
    config = plan.config
    summary, history = read_summary(run_dir), read_metrics(run_dir)
    lineage = Lineage.load(run_dir / LINEAGE)
    best = int(summary["best_member"])
    log_scale = {
        n
        for group in plan.groups
        for n, p in group.config.space.priors.items()
        if isinstance(p, LogUniform)
    }

    plots.fitness_over_steps(history, run_dir / PLOTS["fitness"])
    plots.hyperparameters_over_steps(lineage, log_scale, run_dir / PLOTS["hyperparameters"])
    plots.family_tree(lineage, best, run_dir / PLOTS["family_tree"])
    plots.final_hyperparameters(
        history[-1], best, log_scale, run_dir / PLOTS["final_hyperparameters"]
    )
    write_atomic(run_dir / REPORT, report_markdown(config, summary, history, lineage))
    return run_dir / REPORT


def describe_pbt(config, lineage) -> str:
    """How the population was searched, in a few words: PBT's methods, or successive
    halving's rungs and restarts."""
    settings = config.pbt
    if not settings.enabled:
        return "off (random search: hyperparameters drawn once)"
    explore = "PB2" if settings.explore == "pb2" else "perturbation"
    if settings.exploit != "halving":
        return f"{settings.exploit} and {explore}, every {config.interval} steps"
    rungs = ", ".join(map(str, judged_rungs(settings.rungs, lineage.rounds))) or "none"
    if settings.restart == "copy":
        return (
            f"successive halving: the bottom {settings.fraction:g} copied top members after "
            f"rounds {rungs} ({config.interval} steps each), then {explore}"
        )
    restarts = sum(len(members) for members in lineage.restarts.values())
    return (
        f"successive halving (ASHA): of the trials that reached rungs {rungs} (rounds of their "
        f"own, {config.interval} steps each), the bottom {settings.fraction:g} stopped; "
        f"{restarts} slot(s) began again from the priors"
    )


def report_markdown(config, summary: dict, history: list[dict], lineage) -> str:
    best = int(summary["best_member"])
    copies = sum(p != m for parents in lineage.parents for m, p in enumerate(parents))
    ancestry = lineage.ancestry(best)
    switches = sum(a != b for a, b in zip(ancestry, ancestry[1:]))
    from popjax.plots import metric_label
    from popjax.records import selected_metric

    label = metric_label(history[0])
    values = np.array([selected_metric(r)[1] for r in history], dtype=float)
    best_of = np.nanmin if history[0].get("minimize") else np.nanmax
    metrics = "\n".join(
        f"| {name} | {value:.4f} | "
        + (f"{summary['test'][name]:.4f}" if name in summary.get("test", {}) else "-")
        + " |"
        for name, value in summary["val"].items()
        if value is not None
    )
    hparams = "\n".join(
        f"| `{name}` | {value:.4g} |" for name, value in summary["best_hparams"].items()
    )
    pbt = describe_pbt(config, lineage)
    return f"""# Sweep report: {summary["name"]}

{summary["population"]} members, {summary["steps"]} steps each, PBT {pbt};
{summary["wall_time_s"]:.1f} s on {len(summary["devices"])} device(s), {summary["compilations"]}
compilation(s) of the training round.

## Best member: {best}

| | validation | test |
| --- | --- | --- |
{metrics}

Its final hyperparameters:

| hyperparameter | value |
| --- | --- |
{hparams}

Its weights passed through {switches} other member(s) by exploit; the population made
{copies} copies in all over {lineage.rounds} rounds. The median {label} went from
{np.nanmedian(values[0]):.4f} after the first round to {np.nanmedian(values[-1]):.4f} at the end
(best: {best_of(values[0]):.4f} to {best_of(values[-1]):.4f}).

## {label.capitalize()}

![best and median {label}](fitness.png)

## Hyperparameters over the run, coloured by lineage

![hyperparameters](hyperparameters.png)

## Family tree

![who copied whom, when](family_tree.png)

## Final hyperparameters against fitness

![final hyperparameters](final_hyperparameters.png)
"""
