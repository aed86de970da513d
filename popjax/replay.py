"""A member's lineage replayed: the hyperparameter schedules its weights trained with, and a
retraining from scratch with them.

A PBT run changes a member's hyperparameters at every exploit, and the member carries the
weights of different ancestors. ``trajectories`` follows its ancestry in a run folder (or a
``SweepResult``) and returns, for each hyperparameter, the piecewise schedule its weights
actually trained with; ``schedule`` gives one as a jax function, ``export`` writes them all to
JSON (``popjax.schedules.load`` reads them back with jax alone).

``retrain`` replays those schedules on a fresh member (fresh initial state, fresh key stream):
it shows whether the schedule itself, rather than the luck of one lineage, reaches the
member's result. It works for any task: the member's own task trains, its hyperparameters read
from the schedules each step.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

from popjax import data as datasets
from popjax.errors import PopjaxError
from popjax.groups import Group
from popjax.lineage import Lineage
from popjax.plan import Plan
from popjax.population import init_members, member_keys
from popjax.runfolder import LINEAGE, read_metrics, read_summary
from popjax.schedules import FORMAT, from_trajectories
from popjax.stream import Stream, train_at
from popjax.train import make_evaluate, make_segment


def trajectories(run, member="best") -> dict:
    """A member's hyperparameters along its ancestry, as plain data.

    Args:
      run: a run folder (its ``lineage.json`` and ``summary.json``) or a ``SweepResult``.
      member: a member id, or "best" for the run's best member.
    Returns:
      ``{"format", "member", "interval", "steps", "schedule_kinds", "total_steps",
      "schedules": {name: {"boundaries", "values"}}}`` where value ``i`` holds on steps
      ``[boundaries[i-1], boundaries[i])``. ``schedule_kinds`` names the schedule of each
      scheduled hyperparameter, whose values are then the schedule's peaks; ``total_steps`` is
      the run's length that its decays run over.
    """
    lineage, best, plan = _run_record(run)
    member = best if member == "best" else int(member)
    population = len(lineage.parents[0]) if lineage.parents else 0
    if not 0 <= member < population:
        raise PopjaxError(f"member {member} is not in the run: give 'best' or 0..{population - 1}")
    kinds, total_steps = {}, None
    if plan is not None:  # the schedules of the member's own group
        group = plan.group_of(member)
        kinds, total_steps = group.config.space.scheduled(), group.config.steps
    history = lineage.history(member)
    # Steps count from the start of the member's trial (a restart by successive halving
    # begins a new one, its step count at 0).
    first_step = history[0]["start_step"]
    boundaries = [entry["end_step"] - first_step for entry in history[:-1]]
    names = list(history[0]["hparams"])
    return {
        "format": FORMAT,
        "member": member,
        "interval": lineage.interval,
        "steps": history[-1]["end_step"] - first_step,
        "schedule_kinds": kinds,
        "total_steps": total_steps,
        "schedules": {
            name: {"boundaries": boundaries, "values": [e["hparams"][name] for e in history]}
            for name in names
        },
    }


def schedule(run, member="best", name="learning_rate"):
    """The schedule of hyperparameter ``name`` that ``member``'s weights trained with.

    At every step it gives the value that the member, or the ancestor whose weights it carried
    then, trained with, following every exploit. For a hyperparameter under a schedule (warmup,
    decay), that is its value at that step from the schedule parameters of that round.

    Example:
      >>> lr = popjax.replay.schedule("runs/mnist1d-mlp-...", member="best")
      >>> optimizer = optax.sgd(learning_rate=lr, momentum=0.9)
    """
    return from_trajectories(trajectories(run, member), name)


def export(run, path, member="best") -> dict:
    """Writes all of a member's replayed schedules to JSON; returns what it wrote."""
    written = trajectories(run, member)
    Path(path).write_text(json.dumps(written, indent=1))
    return written


def _run_record(run):
    """``(lineage, best member, plan or None)`` of a result or a run folder."""
    if hasattr(run, "lineage") and hasattr(run, "best_member"):
        # A bare lineage has no plan: hyperparameters as they were, no schedule.
        return run.lineage, run.best_member, getattr(run, "plan", None)
    run_dir = Path(run)
    if not (run_dir / LINEAGE).is_file():
        raise PopjaxError(f"{run_dir} is not a finished run folder (no {LINEAGE})")
    return (
        Lineage.load(run_dir / LINEAGE),
        int(read_summary(run_dir)["best_member"]),
        Plan.from_run(run_dir),
    )


@dataclass
class ReplayResult:
    member: int
    steps: int
    seed: int
    metric: str  # what the sweep selected on
    minimize: bool
    member_val: float  # what the member reached in the sweep, in ``metric``
    member_test: float | None  # known for the run's best member only
    val: dict[str, float]  # what the replay reached
    test: dict[str, float]
    wall_time: float

    @property
    def val_gap(self) -> float:
        """Replay minus member in the selected metric, on validation."""
        return self.val[self.metric] - self.member_val

    @property
    def test_gap(self) -> float | None:
        """Replay minus member on test: free of the member's selection on validation."""
        if self.member_test is None or self.metric not in self.test:
            return None
        return self.test[self.metric] - self.member_test

    def summary(self) -> dict:
        return {
            "member": self.member,
            "steps": self.steps,
            "seed": self.seed,
            "metric": self.metric,
            "minimize": self.minimize,
            "member_val": self.member_val,
            "member_test": self.member_test,
            "val": self.val,
            "test": self.test,
            "val_gap": self.val_gap,
            "test_gap": self.test_gap,
            "wall_time_s": round(self.wall_time, 3),
        }


def retrain(
    run,
    member="best",
    *,
    seed: int | None = None,
    task=None,
    model=None,
    loss_fn=None,
    data: datasets.Dataset | None = None,
    progress: bool = True,
) -> ReplayResult:
    """Trains one new member with ``member``'s replayed schedules, on the run's task.

    Args:
      run: a finished run folder.
      member: a member id, or "best".
      seed: initial state and key stream; the run's seed by default (the member itself
        started from another key, so this is a fresh member either way).
      task, model, loss_fn, data: what the run was given instead of its config's, if anything.
    Returns:
      A ``ReplayResult``: the replay's validation and test figures beside the member's.
    """
    start = time.perf_counter()
    run_dir = Path(run)
    plan = Plan.from_run(run_dir)
    replayed = trajectories(run_dir, member)
    member = replayed["member"]
    group = plan.group_of(member)
    alone = Plan(group.config, (Group(group.name, group.config, 0),))  # its group, one member
    alone, [group_task] = alone.build(data=data, model=model, loss_fn=loss_fn, task=task)
    task, config = group_task.task, alone.config
    seed = config.seed if seed is None else seed
    # A replayed schedule is already the value at each step, the space's schedules included.
    schedules = {name: from_trajectories(replayed, name) for name in replayed["schedules"]}
    missing = set(group_task.space.names) - set(schedules)
    if missing:
        raise PopjaxError(
            f"the run's lineage lacks {', '.join(sorted(missing))}: it was "
            "written by another version of the space"
        )
    # The data goes in as an argument, as in the sweep: a task may index it with traced values.
    train_data = task.data.train if task.data is not None else None
    streamed = isinstance(train_data, Stream)  # each round's window, as the sweep had it
    train_data = train_at(train_data, 0)
    step_once = make_segment(task, 1)

    @jax.jit
    def segment(population, first_step, train_data):
        def body(population, step):
            hparams = {name: schedule(step)[None] for name, schedule in schedules.items()}
            population, metrics = step_once(population._replace(hparams=hparams), train_data)
            return population, metrics

        return jax.lax.scan(body, population, first_step + jnp.arange(config.interval))[0]

    first = {
        name: jnp.asarray([s["values"][0]], jnp.float32)
        for name, s in replayed["schedules"].items()
    }
    population = init_members(task, member_keys(jax.random.PRNGKey(seed), 1), first, train_data)
    for first_step in tqdm(
        range(0, replayed["steps"], config.interval),
        desc=f"replay of member {member}",
        unit="round",
        disable=not progress,
    ):
        if streamed:
            train_data = train_at(task.data.train, first_step // config.interval)
        population = segment(population, first_step, train_data)

    last = {
        name: jnp.asarray([schedule(replayed["steps"] - 1)]) for name, schedule in schedules.items()
    }
    evaluate = jax.jit(lambda population, split: make_evaluate(task)(population, split, False)[1])
    population = population._replace(hparams=last)
    figures = {}
    for split_name in ("val", "test"):
        if task.data is None and split_name == "test":
            continue  # a task without data evaluates itself: once is enough
        split = getattr(task.data, split_name) if task.data is not None else None
        if task.data is not None and split is None:
            continue
        figures[split_name] = {k: float(v[0]) for k, v in evaluate(population, split).items()}
    summary = read_summary(run_dir)
    last_round = read_metrics(run_dir)[-1]
    return ReplayResult(
        member=member,
        steps=replayed["steps"],
        seed=seed,
        metric=task.fitness,
        minimize=task.minimize,
        member_val=float(last_round[f"val_{task.fitness}"][member]),
        member_test=(
            summary["test"].get(task.fitness) if member == summary["best_member"] else None
        ),
        val=figures["val"],
        test=figures.get("test", {}),
        wall_time=time.perf_counter() - start,
    )
