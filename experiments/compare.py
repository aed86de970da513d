"""PBT, PB2, successive halving, random search and a fixed textbook setting, at equal compute,
over seeds.

Every method trains the same number of members for the same number of steps from the same
config; only what happens between rounds differs:

* pbt: exploit (truncation, q = 0.25) and explore (x0.8 / x1.2, resample with p = 0.25);
* pb2: the same exploit; a replaced member's hyperparameters maximise the upper confidence
  bound of a Gaussian process of the population's recent gains (``popjax.pb2``);
* halving: successive halving, the ASHA way: a trial that has trained 1, 2, 4, 8, ... rounds
  of its own stops if it is in the bottom half of every trial that reached that rung, and its
  slot begins again with fresh weights and hyperparameters from the priors;
* mfpbt: multiple-frequencies PBT (Doulazmi et al., 2025): the population split into
  sub-populations that select every 1, 10, 25 and 50 rounds (the paper's default; as many as
  the population gives blocks of 4, its brackets being quarters), with asymmetric migration;
  PBT's setup otherwise (design.py chose none for it);
* random: the same population, hyperparameters drawn once from the same priors, never changed;
* fixed: every member with one textbook setting (learning rate 0.05, momentum 0.9, no dropout,
  weight decay 5e-4), differing only in initial weights and batch order.

Each picks its best member on the validation split; the table reports that member's test
figure (accuracy, a regression's loss, an agent's return), mean and spread over seeds, and
paired leads seed by seed (PBT over random search, PB2 over PBT, successive halving over random
search, MF-PBT over PBT and over random search: the methods of one seed start from the same
members and data). Where a method had a
choice of setup, `design.py` made it on development data carved from the training split, and
this script reads the choice from the ``design*.json`` files it wrote (``chosen_setups``).

    python experiments/compare.py                       # all tasks, their default seeds
    python experiments/compare.py --tasks digits_mlp --seeds 0
    python experiments/compare.py --check digits_mlp pbt 0 1   # rerun stored rows, compare

Runs of the tasks given replace those tasks' runs in ``results.json``; other tasks' stay.

It writes ``results.json`` (every run), ``results.md`` (the table beside the MNIST-1D paper's) and
``results.png`` (test accuracy per task and method, one dot per seed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
from pathlib import Path

from popjax.devices import use_cpu_cores

use_cpu_cores(16)  # on a CPU, members spread over the cores, as `popjax run` does

import jax  # noqa: E402
import numpy as np  # noqa: E402
from compare_report import METHODS, decimals, plot, plot_curves, score, task_metric  # noqa: E402

import popjax  # noqa: E402
from popjax.space import Fixed, SearchSpace  # noqa: E402
from popjax.tasks.rl import TEXTBOOK as PPO_SETTING  # noqa: E402
from popjax.tasks.rl import TEXTBOOK_CONTINUOUS as PPO_CONTINUOUS_SETTING  # noqa: E402
from popjax.tasks.sac import TEXTBOOK as SAC_SETTING  # noqa: E402

HERE = Path(__file__).parent
TASKS = (
    "mnist1d_mlp",
    "mnist1d_cnn",
    "digits_mlp",
    "diabetes_regression",
    "cartpole_ppo",
    "acrobot_ppo",
    "pendulum_ppo",
    "pendulum_sac",
    "inverted_pendulum_brax",  # needs popjax[brax]
)
# Where each task's config is, when not experiments/<task>.toml.
CONFIGS = {
    "cartpole_ppo": HERE / "rl" / "cartpole.toml",
    "acrobot_ppo": HERE / "rl" / "acrobot.toml",
    "pendulum_ppo": HERE / "rl" / "pendulum.toml",
    "pendulum_sac": HERE / "rl" / "pendulum_sac.toml",
    "inverted_pendulum_brax": HERE / "rl" / "brax_inverted_pendulum.toml",
}
TEXTBOOK = SearchSpace(
    {
        "learning_rate": Fixed(0.05),
        "momentum": Fixed(0.9),
        "dropout": Fixed(0.0),
        "weight_decay": Fixed(5e-4),
    }
)
# PPO's usual setting for classic control, for the RL tasks' fixed method.
PPO_TEXTBOOK = SearchSpace({k: Fixed(v) for k, v in PPO_SETTING.items()}, builtin=False)
# The fixed method's setting of each task whose agent is not PPO on classic control: the usual
# continuous PPO; SAC's usual setting with the largest batch pendulum_sac.toml samples (128).
FIXED = {
    "pendulum_ppo": PPO_CONTINUOUS_SETTING,
    "pendulum_sac": {**SAC_SETTING, "batch_size": 128.0},
    "inverted_pendulum_brax": PPO_CONTINUOUS_SETTING,
}
# Per-member data augmentation, as a config's [space] table writes it.
AUGMENTATION = {
    "shift": {"prior": "uniform", "low": 0.0, "high": 1.0},  # up to one position
    "noise": {"prior": "uniform", "low": 0.0, "high": 0.2},
    "scale": {"prior": "uniform", "low": 0.0, "high": 0.2},
}
# MNIST-1D's own augmentation: its sequences are 40 long, and the dataset itself is made of
# templates shifted, scaled and noised.
MNIST1D_AUGMENTATION = {
    "shift": {"prior": "uniform", "low": 0.0, "high": 4.0},
    "noise": {"prior": "uniform", "low": 0.0, "high": 0.1},
    "scale": {"prior": "uniform", "low": 0.0, "high": 0.2},
}
# MF-PBT's default sub-populations: the rounds between two selections of each (the paper's).
MF_PBT_FREQUENCIES = (1, 10, 25, 50)
# Ten seeds a task: a paired lead's 95% interval from fewer is too wide to call most leads.
SEEDS = list(range(10))


def chosen_setups() -> dict:
    """Each method's best setup on development data, from the runs design.py saved
    (``design*.json``): ``{(task, method): changes}``. The test split played no part. Tasks
    and methods not there run their config as it is."""
    chosen = {}
    for path in sorted(HERE.glob("design*.json")):
        saved = json.loads(path.read_text())
        accuracy = {}
        for r in saved["runs"]:
            key = (r["method"], json.dumps(r["changes"], sort_keys=True))
            accuracy.setdefault(key, []).append(r["dev_test_accuracy"])
        for method in dict.fromkeys(m for m, _ in accuracy):
            best = max((k for k in accuracy if k[0] == method), key=lambda k: np.mean(accuracy[k]))
            chosen[saved["task"], method] = json.loads(best[1])
    return chosen


SETUPS = chosen_setups()


def method_config(task: str, method: str, seed: int, setup: dict | None = None):
    """The task's config run by a method: with its chosen ``SETUPS`` unless given ``setup``."""
    path = CONFIGS.get(task, HERE / f"{task}.toml")
    config = popjax.SweepConfig.from_toml(path).replace(seed=seed)
    chosen = SETUPS.get((task, "pbt" if method == "mfpbt" else method), {})
    config = with_setup(config, chosen if setup is None else setup)
    if method == "mfpbt":
        blocks = max(2, min(len(MF_PBT_FREQUENCIES), config.population // 4))
        mf_pbt = dict(exploit="frequencies", frequencies=MF_PBT_FREQUENCIES[:blocks])
        return config.replace(pbt=dataclasses.replace(config.pbt, **mf_pbt))
    if method == "pb2":
        return config.replace(pbt=dataclasses.replace(config.pbt, explore="pb2"))
    if method == "halving":
        halving = dict(exploit="halving", fraction=0.5, restart="prior")
        return config.replace(pbt=dataclasses.replace(config.pbt, **halving))
    if method == "random":
        return config.replace(pbt=dataclasses.replace(config.pbt, enabled=False))
    if method == "fixed":
        textbook = TEXTBOOK if config.builtin_task else PPO_TEXTBOOK
        if task in FIXED:
            textbook = SearchSpace({k: Fixed(v) for k, v in FIXED[task].items()}, builtin=False)
        return config.replace(space=textbook, pbt=dataclasses.replace(config.pbt, enabled=False))
    return config


def with_setup(config: popjax.SweepConfig, changes: dict) -> popjax.SweepConfig:
    """The config with a setup's changes; ``space`` holds changes to its search space."""
    changes = dict(changes)
    space = popjax.Plan.from_config(config).config.space.updated(changes.pop("space", {}))
    return config.replace(space=space, **changes)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        help="seeds for every task (default: 0-9)",
    )
    parser.add_argument(
        "--as-configured",
        action="store_true",
        help="run every method on its task's config as it is, without SETUPS",
    )
    parser.add_argument(
        "--check",
        nargs="+",
        metavar=("TASK METHOD SEED", "SEED"),
        help="rerun these stored rows of --out and compare their test figures (writes nothing)",
    )
    parser.add_argument(
        "--missing",
        action="store_true",
        help="run only the rows --out does not hold yet (to finish a stopped comparison)",
    )
    parser.add_argument("--out", default=str(HERE / "results.json"))
    args = parser.parse_args(argv)
    setup = {} if args.as_configured else None
    if args.check:
        return check_rows(parser, args.check, Path(args.out), setup)

    out = Path(args.out)
    runs = stored_runs(out)
    for task in args.tasks:
        # Seed by seed, every method: a comparison stopped early still pairs its seeds.
        for seed in args.seeds or SEEDS:
            for method in args.methods:
                key = (task, method, seed)
                if args.missing and key in {row_key(r) for r in stored_runs(out)}:
                    continue
                row = run_row(task, method, seed, setup)
                # The file is read again and written after every row: a stopped comparison
                # keeps the rows it finished, and two comparisons may share one file. A rerun
                # row replaces its stored one.
                runs = [r for r in stored_runs(out) if row_key(r) != key] + [row]
                runs.sort(key=lambda r: (TASKS.index(r["task"]), r["seed"]))
                out.write_text(json.dumps({"runs": runs}, indent=1))
    table = results_table(runs) + "\n\n" + optimism_table(runs)
    machines = "\n".join(f"- {m}" for m in dict.fromkeys(str(r["machine"]) for r in runs))
    out.with_suffix(".md").write_text(
        f"{table}\n\nMNIST-1D paper (test accuracy): {PAPER}.\n\nMachines:\n{machines}\n"
    )
    plot(runs, out.with_suffix(".png"))
    plot_curves(runs, out.with_name(out.stem + "_rl_curves.png"))
    print()
    print(table)
    return 0


def stored_runs(path: Path) -> list[dict]:
    """The rows ``path`` holds, each with the machine that ran it (rows from before rows named
    their machine get the file's)."""
    if not path.exists():
        return []
    stored = json.loads(path.read_text())
    return [{"machine": stored.get("machine"), **row} for row in stored["runs"]]


def row_key(row: dict) -> tuple[str, str, int]:
    return row["task"], row["method"], row["seed"]


def run_row(task: str, method: str, seed: int, setup: dict | None = None) -> dict:
    """One run of ``method`` on ``task`` with ``seed``, as results.json stores it."""
    config = method_config(task, method, seed, setup)
    result = popjax.run(config, write=False, progress=False)
    # A classifier is scored by accuracy whatever it selected its member on.
    metric = "accuracy" if "accuracy" in result.best_test else result.fitness
    row = {
        "task": task,
        "method": method,
        "seed": seed,
        "metric": metric,
        "selected_on": result.fitness,
        f"val_{metric}": result.best_val[metric],
        f"test_{metric}": result.best_test[metric],
        "best_hparams": result.best_hparams,
        "wall_time_s": result.wall_time,
        "machine": this_machine(),
    }
    if "val_env_steps" in result.history[0]:
        row["curve"] = return_curve(result.history)
    print(
        f"{task:12s} {method:7s} seed {seed}: val {metric} "
        f"{result.best_val[metric]:.4f} test {result.best_test[metric]:.4f} "
        f"({result.wall_time:.0f} s)",
        flush=True,
    )
    return row


def this_machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "devices": [str(d) for d in jax.devices()],
        "jax": jax.__version__,
    }


# The least difference --check lets pass, in score's units: a rerun on the same machine and
# device layout is bit-identical, but another processor or jax release takes other rounding
# paths, and PBT's selections amplify them into another run of the same distribution.
CHECK_FLOOR = {"accuracy": 0.5, "return": 5.0}  # points of accuracy; a return
CHECK_FLOOR_LOSS = 0.01  # a regression's loss
CHECK_SPREADS = 2  # standard deviations of the stored task+method over seeds


def check_rows(parser, words: list[str], path: Path, setup: dict | None) -> int:
    """``--check TASK METHOD SEED [SEED ...]``: reruns the rows and prints, for each, the stored
    test figure, the rerun's, their difference and whether it is within the tolerance
    (``max(floor, CHECK_SPREADS standard deviations of the stored task+method over seeds)``).
    Returns 1 if any is outside it; writes nothing."""
    if len(words) < 3 or words[0] not in TASKS or words[1] not in METHODS:
        parser.error(
            f"--check takes TASK METHOD SEED [SEED ...]: a task of {', '.join(TASKS)}, "
            f"a method of {', '.join(METHODS)} (got {' '.join(words)})"
        )
    task, method = words[:2]
    try:
        seeds = [int(word) for word in words[2:]]
    except ValueError:
        parser.error(f"--check: seeds are whole numbers (got {' '.join(words[2:])})")
    if not path.is_file():
        parser.error(f"--check: no stored results at {path}: give --out a results.json")
    rows = {r["seed"]: r for r in stored_runs(path) if r["task"] == task and r["method"] == method}
    missing = [s for s in seeds if s not in rows]
    if missing:
        parser.error(f"--check: {path} has no {task} {method} row for seed(s) {missing}")
    spread = float(np.std([score(r) for r in rows.values()]))
    metric = next(iter(rows.values())).get("metric", "accuracy")
    tolerance = max(CHECK_FLOOR.get(metric, CHECK_FLOOR_LOSS), CHECK_SPREADS * spread)
    print(
        f"tolerance {tolerance:.4g} (max of the floor and {CHECK_SPREADS} x {spread:.4g}, the "
        f"spread over {len(rows)} stored seeds)"
    )
    outside = 0
    for seed in seeds:
        old = score(rows[seed])
        new = score(run_row(task, method, seed, setup))
        ok = abs(new - old) <= tolerance
        outside += not ok
        verdict = "identical" if new == old else ("within" if ok else "OUTSIDE")
        if rows[seed]["machine"] == this_machine():
            verdict += " (stored on a machine that reads the same as this one)"
        print(
            f"{task} {method} seed {seed}: stored {old:.4f} rerun {new:.4f} "
            f"difference {new - old:+.4f} {verdict}"
        )
    return 1 if outside else 0


PAPER = "logistic regression 32%, MLP 68%, CNN 94%, GRU 91%, human 96%"


def return_curve(history: list[dict]) -> list[list[float]]:
    """An RL run's best evaluation return after each round, against environment steps."""
    return [[max(r["val_env_steps"]), max(r["val_return"])] for r in history]


# The paired comparisons the table reports: (method, baseline).
LEADS = (
    ("pbt", "random"),
    ("pb2", "pbt"),
    ("halving", "random"),
    ("mfpbt", "pbt"),
    ("mfpbt", "random"),
)


def results_table(runs) -> str:
    """Markdown: the test figure of the member chosen on validation (accuracy in %, or a
    regression's loss), mean ± std over seeds, and the paired ``LEADS``: PBT over random
    search, PB2 over PBT, successive halving over random search (the same draws, without early
    stopping), MF-PBT over PBT and over random search."""
    tasks = list(dict.fromkeys(r["task"] for r in runs))
    methods = [m for m in METHODS if any(r["method"] == m for r in runs)]
    lines = [
        "| task | " + " | ".join(methods + [f"{a} − {b}, paired" for a, b in LEADS]) + " |",
        "|---" * (len(methods) + len(LEADS) + 1) + "|",
    ]
    for task in tasks:
        cells = []
        digits = decimals(task, runs, 1)
        for method in methods:
            values = [score(r) for r in runs if r["task"] == task and r["method"] == method]
            cells.append(
                f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f} (n={len(values)})"
                if values
                else "not run"
            )
        leads = [paired_lead(runs, task, a, b) for a, b in LEADS]
        lines.append(f"| {task} | " + " | ".join(cells + leads) + " |")
    return "\n".join(lines)


def paired_lead(runs, task, method="pbt", baseline="random") -> str:
    """``method``'s test figure minus ``baseline``'s on the same seed: the mean, its 95%
    interval (Student's t over the seeds), and the seeds ``method`` won and lost (the rest
    tied), e.g. ``+3.53 [+0.98, +6.08] 8-2 of 10``. For a loss lower is better: a negative lead
    favours ``method``, and a seed is won where the lead is below 0."""
    lead = paired_differences(runs, task, method, baseline)
    if len(lead) < 2:
        return "n/a"
    low, high = interval95(lead)
    sign = 1 if task_metric(task, runs) in ("accuracy", "return") else -1
    won, lost = int(np.sum(sign * lead > 0)), int(np.sum(sign * lead < 0))
    digits = decimals(task, runs, 2)
    return (
        f"{np.mean(lead):+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}] "
        f"{won}-{lost} of {len(lead)}"
    )


def optimism_table(runs) -> str:
    """Markdown: how far the chosen member's validation figure overstates its test figure
    (validation minus test; for a loss, test minus validation), mean and 95% interval over
    seeds. A method that selects again and again on the same noisy validation data picks
    members that were lucky on it: its figure is larger than random search's, which selects
    once."""
    tasks = list(dict.fromkeys(r["task"] for r in runs))
    methods = [m for m in METHODS if any(r["method"] == m for r in runs)]
    lines = [
        "| chosen member's validation − test | " + " | ".join(methods) + " |",
        "|---" * (len(methods) + 1) + "|",
    ]
    for task in tasks:
        cells = []
        for method in methods:
            gaps = np.array(
                [optimism(r) for r in runs if r["task"] == task and r["method"] == method]
            )
            if len(gaps) < 2:
                cells.append("n/a")
                continue
            low, high = interval95(gaps)
            digits = decimals(task, runs, 1)
            cells.append(f"{np.mean(gaps):+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def optimism(run: dict) -> float:
    """The chosen member's validation figure less its test figure, in ``score``'s units, signed
    so that a positive value overstates it (for a loss: test less validation)."""
    metric = run.get("metric", "accuracy")
    gap = run[f"val_{metric}"] - run[f"test_{metric}"]
    if metric == "accuracy":
        return 100 * gap
    return gap if metric == "return" else -gap


def paired_differences(runs, task, method, baseline) -> np.ndarray:
    """``method``'s test figure minus ``baseline``'s, seed by seed, where both ran."""
    by_seed = {(r["method"], r["seed"]): score(r) for r in runs if r["task"] == task}
    return np.array(
        [
            by_seed[method, s] - by_seed[baseline, s]
            for m, s in sorted(by_seed)
            if m == method and (baseline, s) in by_seed
        ]
    )


def interval95(values) -> tuple[float, float]:
    """The 95% interval of the mean of ``values`` (Student's t, n - 1 degrees of freedom)."""
    from scipy import stats

    values = np.asarray(values, float)
    half = stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values))
    return float(np.mean(values) - half), float(np.mean(values) + half)


if __name__ == "__main__":
    raise SystemExit(main())
