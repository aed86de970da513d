"""What a finished sweep shows: a table for the terminal, a Markdown report with plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from popjax.errors import PopjaxError


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
         *("-" if last["hparams"][name][member] is None else
           f"{last['hparams'][name][member]:.4g}" for name in names)]
        for rank, member in enumerate(order)
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


REPORT = "report.md"
PLOTS = {
    "accuracy": "accuracy.png",
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
    from popjax.config import SweepConfig
    from popjax.groups import resolve_groups
    from popjax.lineage import Lineage
    from popjax.runfolder import CONFIG, LINEAGE, SUMMARY, read_metrics, read_summary, \
        write_atomic
    from popjax.space import LogUniform

    run_dir = Path(run_dir)
    missing = [f for f in (CONFIG, LINEAGE, SUMMARY) if not (run_dir / f).is_file()]
    if missing:
        raise PopjaxError(f"{run_dir} is not a finished run folder (no {', '.join(missing)}): "
                          "give a folder that popjax run completed")
    config = SweepConfig.from_toml(run_dir / CONFIG)
    summary, history = read_summary(run_dir), read_metrics(run_dir)
    lineage = Lineage.load(run_dir / LINEAGE)
    best = int(summary["best_member"])
    log_scale = {n for group in resolve_groups(config.validate())
                 for n, p in group.config.space.priors.items() if isinstance(p, LogUniform)}

    plots.accuracy_over_steps(history, run_dir / PLOTS["accuracy"])
    plots.hyperparameters_over_steps(lineage, log_scale, run_dir / PLOTS["hyperparameters"])
    plots.family_tree(lineage, best, run_dir / PLOTS["family_tree"])
    plots.final_hyperparameters(history[-1], best, log_scale,
                                run_dir / PLOTS["final_hyperparameters"])
    write_atomic(run_dir / REPORT, report_markdown(config, summary, history, lineage))
    return run_dir / REPORT


def report_markdown(config, summary: dict, history: list[dict], lineage) -> str:
    best = int(summary["best_member"])
    copies = sum(p != m for parents in lineage.parents for m, p in enumerate(parents))
    ancestry = lineage.ancestry(best)
    switches = sum(a != b for a, b in zip(ancestry, ancestry[1:]))
    accuracy = np.array([r["val_accuracy"] for r in history], dtype=float)
    hparams = "\n".join(f"| `{name}` | {value:.4g} |"
                        for name, value in summary["best_hparams"].items())
    pbt = ("off (random search: hyperparameters drawn once)" if not config.pbt.enabled else
           f"{config.pbt.exploit}, every {config.interval} steps")
    return f"""# Sweep report: {summary['name']}

{summary['population']} members, {summary['steps']} steps each, PBT {pbt};
{summary['wall_time_s']:.1f} s on {len(summary['devices'])} device(s), {summary['compilations']}
compilation(s) of the training round.

## Best member: {best}

| | validation | test |
| --- | --- | --- |
| accuracy | {summary['val']['accuracy']:.4f} | {summary['test']['accuracy']:.4f} |
| loss | {summary['val']['loss']:.4f} | {summary['test']['loss']:.4f} |

Its final hyperparameters:

| hyperparameter | value |
| --- | --- |
{hparams}

Its weights passed through {switches} other member(s) by exploit; the population made
{copies} copies in all over {lineage.rounds} rounds. Median validation accuracy went from
{np.nanmedian(accuracy[0]):.4f} after the first round to {np.nanmedian(accuracy[-1]):.4f} at the end
(best: {np.nanmax(accuracy[0]):.4f} to {np.nanmax(accuracy[-1]):.4f}).

## Validation accuracy

![best and median validation accuracy](accuracy.png)

## Hyperparameters over the run, coloured by lineage

![hyperparameters](hyperparameters.png)

## Family tree

![who copied whom, when](family_tree.png)

## Final hyperparameters against fitness

![final hyperparameters](final_hyperparameters.png)
"""
