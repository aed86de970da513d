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
    metric = result.fitness
    val = np.asarray(last[f"val_{metric}"], dtype=float)
    order = np.argsort(-fitness_values(last), kind="stable")[:top]
    groups = result.plan.groups
    fixed = fixed_hyperparameters(groups, result.lineage.hparams)
    options = named_options(groups)
    names = [name for name in last["hparams"] if name not in fixed]
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
            *(shown_value(last["hparams"][name][member], options.get(name)) for name in names),
        ]
        for rank, member in enumerate(order)
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def shown_value(value, options: tuple[str, ...] | None = None) -> str:
    """A hyperparameter's value as the report prints it: a named choice by its name."""
    if value is None:
        return "-"  # not a hyperparameter of this member's group
    if options and float(value).is_integer() and 0 <= value < len(options):
        return options[int(value)]
    return f"{value:.4g}"


def _priors(groups) -> dict[str, list]:
    """Each hyperparameter's prior in every group whose space names it."""
    priors: dict[str, list] = {}
    for group in groups:
        for name, prior in group.config.space.priors.items():
            priors.setdefault(name, []).append(prior)
    return priors


def fixed_hyperparameters(groups, rounds: list[dict]) -> dict[str, float]:
    """The hyperparameters held at one value by every member all run long, with that value.

    The groups' priors decide (a ``Fixed`` prior at one value in every group that has it); for
    a name that no group's space gives, the records do: every member's value identical in every
    round. ``rounds`` is the lineage's ``hparams``.
    """
    priors = _priors(groups)
    fixed = {}
    for name in rounds[0] if rounds else ():
        if name in priors:
            values = {_fixed_value(p) for p in priors[name]}
        else:
            values = {v for record in rounds for v in record[name] if v is not None}
        if len(values) == 1 and None not in values:
            fixed[name] = values.pop()
    return fixed


def _fixed_value(prior) -> float | None:
    from popjax.space import Choice, Fixed

    if isinstance(prior, Fixed):
        return prior.value
    if isinstance(prior, Choice) and len(prior.values) == 1:
        return prior.values[0]
    return None


def log_scaled(groups) -> set[str]:
    """The hyperparameters drawn log-uniformly (in any group): plotted on a log axis."""
    from popjax.space import LogUniform

    return {n for n, ps in _priors(groups).items() if any(isinstance(p, LogUniform) for p in ps)}


def named_options(groups) -> dict[str, tuple[str, ...]]:
    """The built-in choices made by name (``activation``: relu, gelu, ...), for labels."""
    from popjax.hyperparameters import NAMED_CHOICES

    return {
        name: NAMED_CHOICES[name]
        for group in groups
        if group.config.space.builtin
        for name in group.config.space.priors
        if name in NAMED_CHOICES
    }


def choice_values(groups) -> dict[str, tuple[float, ...]]:
    """The values a choice hyperparameter can take, for its axis ticks."""
    from popjax.space import Choice

    values: dict[str, set] = {}
    for name, ps in _priors(groups).items():
        if all(isinstance(p, Choice) for p in ps):
            values[name] = {v for p in ps for v in p.values}
    return {name: tuple(sorted(v)) for name, v in values.items()}


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
    from popjax.runfolder import write_atomic

    run_dir = Path(run_dir)
    run = _read_run(run_dir)
    figures = _draw(run_dir, *run)
    plan, summary, history, lineage = run
    fixed = fixed_hyperparameters(plan.groups, lineage.hparams)
    text = report_markdown(
        plan.config, summary, history, lineage, fixed, named_options(plan.groups), set(figures)
    )
    write_atomic(run_dir / REPORT, text)
    return run_dir / REPORT


def draw_plots(run_dir) -> dict:
    """Draws the report's plots of a finished run folder into it as PNGs.

    Returns:
      The matplotlib figures by ``PLOTS`` key, closed; the hyperparameter plots are left out
      when no hyperparameter varied.
    """
    run_dir = Path(run_dir)
    return _draw(run_dir, *_read_run(run_dir))


def _read_run(run_dir: Path):
    from popjax.lineage import Lineage
    from popjax.plan import Plan
    from popjax.runfolder import CONFIG, LINEAGE, SUMMARY, read_metrics, read_summary

    missing = [f for f in (CONFIG, LINEAGE, SUMMARY) if not (run_dir / f).is_file()]
    if missing:
        raise PopjaxError(
            f"{run_dir} is not a finished run folder (no {', '.join(missing)}): "
            "give a folder that popjax run completed"
        )
    plan = Plan.from_run(run_dir)
    lineage = Lineage.load(run_dir / LINEAGE)
    return plan, read_summary(run_dir), read_metrics(run_dir), lineage


def _draw(run_dir: Path, plan, summary: dict, history: list[dict], lineage) -> dict:
    from popjax import plots

    best = int(summary["best_member"])
    fixed = fixed_hyperparameters(plan.groups, lineage.hparams)
    names = [name for name in lineage.hparams[0] if name not in fixed]
    log_scale = log_scaled(plan.groups)
    options = named_options(plan.groups)
    ticks = {
        name: (list(values), [shown_value(v, options.get(name)) for v in values])
        for name, values in choice_values(plan.groups).items()
        if len(values) <= 12
    }
    figures = {
        "fitness": plots.fitness_over_steps(history, run_dir / PLOTS["fitness"]),
        "family_tree": plots.family_tree(lineage, best, run_dir / PLOTS["family_tree"]),
    }
    if names:  # with nothing searched, no panels to draw
        figures["hyperparameters"] = plots.hyperparameters_over_steps(
            lineage, log_scale, run_dir / PLOTS["hyperparameters"], names, ticks
        )
        figures["final_hyperparameters"] = plots.final_hyperparameters(
            history[-1], best, log_scale, run_dir / PLOTS["final_hyperparameters"], names, ticks
        )
    return figures


def describe_pbt(config, lineage) -> str:
    """How the population was searched, in a few words: PBT's methods, or successive
    halving's rungs and restarts."""
    settings = config.pbt
    if not settings.enabled:
        return "off (random search: hyperparameters drawn once)"
    explore = "PB2" if settings.explore == "pb2" else "perturbation"
    burn_in = f", the first after {settings.burn_in} steps" if settings.burn_in else ""
    if settings.exploit == "frequencies":
        every = ", ".join(map(str, settings.frequencies))
        return (
            f"multiple-frequencies PBT (sub-populations selecting every {every} rounds) "
            f"and {explore}, rounds of {config.interval} steps{burn_in}"
        )
    if settings.exploit != "halving":
        return f"{settings.exploit} and {explore}, every {config.interval} steps{burn_in}"
    # A rung within the burn-in decides nothing (only copies take a burn-in).
    judged = judged_rungs(settings.rungs, lineage.rounds)
    rungs = ", ".join(str(r) for r in judged if r * config.interval >= settings.burn_in) or "none"
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


def report_markdown(
    config,
    summary: dict,
    history: list[dict],
    lineage,
    fixed: dict[str, float] | None = None,
    options: dict[str, tuple[str, ...]] | None = None,
    plotted=tuple(PLOTS),
) -> str:
    """The report's text. ``fixed``: the hyperparameters held at one value (named in a line,
    not in the tables); ``options``: named choices; ``plotted``: the ``PLOTS`` keys drawn."""
    fixed, options = fixed or {}, options or {}
    best = int(summary["best_member"])
    copies = sum(p != m for parents in lineage.parents for m, p in enumerate(parents))
    ancestry = lineage.ancestry(best)
    switches = sum(a != b for a, b in zip(ancestry, ancestry[1:]))
    from popjax.plots import metric_label
    from popjax.records import selected_metric

    label = metric_label(history[0])
    values = np.array([selected_metric(r)[1] for r in history], dtype=float)
    best_of = np.nanmin if history[0].get("minimize") else np.nanmax
    test = summary.get("test") or {}
    metrics = "\n".join(
        f"| {name} | {value:.4f} |"
        + (f" {test[name]:.4f} |" if name in test else " - |" if test else "")
        for name, value in summary["val"].items()
        if value is not None
    )
    header = (
        "| | validation | test |\n| --- | --- | --- |"
        if test
        else "| | validation |\n| --- | --- |"
    )
    searched = {
        name: value
        for name, value in summary["best_hparams"].items()
        if name not in fixed and value is not None
    }
    hparams = (
        "Its final hyperparameters:\n\n| hyperparameter | value |\n| --- | --- |\n"
        + "\n".join(
            f"| `{name}` | {shown_value(value, options.get(name))} |"
            for name, value in searched.items()
        )
        + "\n\n"
        if searched
        else ""
    )
    held = (
        "Fixed for every member all run long (not plotted): "
        + ", ".join(f"`{n}` = {shown_value(v, options.get(n))}" for n, v in fixed.items())
        + ".\n\n"
        if fixed
        else ""
    )
    direction = "lower" if history[0].get("minimize") else "higher"
    pbt = describe_pbt(config, lineage)
    sections = {
        "hyperparameters": "## Hyperparameters over the run, coloured by lineage\n\n"
        "![hyperparameters](hyperparameters.png)\n\n",
        "family_tree": "## Family tree\n\n![who copied whom, when](family_tree.png)\n\n",
        "final_hyperparameters": f"## Final hyperparameters against the {label}\n\n"
        "![final hyperparameters](final_hyperparameters.png)\n\n",
    }
    return (
        f"""# Sweep report: {summary["name"]}

{summary["population"]} members, {summary["steps"]} steps each, PBT {pbt};
{summary["wall_time_s"]:.1f} s on {len(summary["devices"])} device(s), {summary["compilations"]}
compilation(s) of the training round.

## Best member: {best}

{header}
{metrics}

{hparams}{held}Its weights passed through {switches} other member(s) by exploit; the population made
{copies} copies in all over {lineage.rounds} rounds. The median {label} ({direction} is better)
went from {np.nanmedian(values[0]):.4f} after the first round to {np.nanmedian(values[-1]):.4f}
at the end (best: {best_of(values[0]):.4f} to {best_of(values[-1]):.4f}).

## {label.capitalize()}

![best and median {label}](fitness.png)

"""
        + "".join(text for key, text in sections.items() if key in plotted).rstrip("\n")
        + "\n"
    )
