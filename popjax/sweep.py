"""The loop that ties a sweep together: rounds on the device, records on the host.

A round (``popjax.round``) is one jitted call per group: PBT, ``interval`` training steps for
every member, then validation. The host only reads back per-member figures (a few numbers per
member) to log, record the lineage (``popjax.records``), checkpoint and pass each round's
record to its callbacks (the face's progress bar, TensorBoard, W&B and MLflow, a user's
``on_round``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing, nullcontext
from pathlib import Path

import jax
import numpy as np

from popjax import cache as caches
from popjax import compile_log
from popjax import data as datasets
from popjax.checkpoint import SweepCheckpoints
from popjax.distributed import Distributed, barrier, is_main_process, main_process_value, to_host
from popjax.distributed import start as start_distributed
from popjax.interrupt import SweepInterrupted, stop_requests
from popjax.launch import with_import_folder
from popjax.lineage import Lineage
from popjax.plan import Plan
from popjax.programs import compiled_programs
from popjax.records import (
    check_not_all_diverged,
    fitness_values,
    merge_records,
    round_record,
)
from popjax.result import SweepResult
from popjax.runfolder import LINEAGE, SUMMARY, RunFolder, check_new, default_run_dir
from popjax.startup import StartUp
from popjax.task import Task


def run_plan(
    plan: Plan,
    *,
    task: Task | Callable | None = None,
    model=None,
    loss_fn=None,
    data: datasets.Dataset | None = None,
    out: str | Path | None = None,
    write: bool = True,
    resume: bool = False,
    distributed: Distributed | None = None,
    cache: bool = True,
    callbacks: Sequence = (),
) -> SweepResult:
    """Runs the sweep that ``plan`` (from ``popjax.launch.plan_run``) resolved; see ``popjax.run``.

    The plan is taken as it is, but for the two steps of its resolution that need more than
    the config, each of which returns a new plan: ``Plan.build`` turns an ``epochs`` budget
    into steps once the data's size is known, and ``size_population`` sizes
    ``population = "auto"`` from the devices' memory.

    Args:
      resume: continue ``out``, a run folder, from its newest readable checkpoint.
      callbacks: what watches the rounds, on the main process: each is called with every
        round's record (a metrics.jsonl line) and, where it has them, ``start(config,
        first_round, run_dir)`` once the run's length and first round are known (``run_dir``
        the run folder this process writes, else None), ``end(result)`` once the sweep has
        finished (not on an error or a stop), and ``close()`` on every way out; before the
        first round, ``starting(stage)`` as each stage of the start begins (``StartUp``).
    """
    # The watchers close on every way out, an error before the first round included.
    with compile_log.recording() as log, ExitStack() as watchers_closed:
        start = time.perf_counter()
        stages = StartUp()
        with stages.stage("devices"):
            devices = started_devices(cache, distributed)
        # Which process is the main one is known once the processes have met.
        watchers = watching(callbacks, watchers_closed, stages)
        run_dir = (
            Path(out)
            if out is not None
            else default_run_dir(plan.config.name, when=main_process_value(int(time.time())))
        )
        if write and not resume:
            check_new(run_dir)

        plan, programs, members = compiled_programs(
            plan, data, model, loss_fn, task, devices, stages, with_init=not resume
        )
        config = plan.config

        folder = None
        if write and not resume:
            # Process 0 makes the folder once every process has seen that it is new; then all of
            # them write their checkpoints into it.
            barrier("popjax: run folder checked")
            if is_main_process():
                folder = RunFolder(run_dir, with_import_folder(config).to_toml())
            barrier("popjax: run folder made")

        with ExitStack() as opened:  # closed on every way out: the end, an error, a signal
            checkpoints = None
            if write:
                # Every process writes its shards of each checkpoint; process 0 the other files.
                checkpoints = opened.enter_context(
                    closing(SweepCheckpoints(run_dir, config.keep_checkpoints))
                )
            first_round, states, lineage, history, elapsed = first_states(
                plan, programs, members, checkpoints, resume, stages
            )
            # The run's wall time is summed over its processes: this one's clock starts where
            # the checkpoint's left off (the rounds after it that a kill lost count once more,
            # as they are trained again).
            start -= elapsed
            if resume and is_main_process():
                folder = RunFolder.reopen(run_dir, history)
            for watcher in watchers:
                if hasattr(watcher, "start"):
                    watcher.start(config, first_round, folder.path if folder else None)
            stops = opened.enter_context(stop_requests())
            # The test compiles in a second thread while the rounds train (an accelerator leaves
            # the host's cores idle meanwhile), so the end finds it compiled.
            compiling, tests_compiled = opened.enter_context(ThreadPoolExecutor(1)), []
            for round_index in range(first_round, config.rounds):
                with stages.stage("first_round") if round_index == first_round else nullcontext():
                    record = play_round(programs, states, round_index, history, plan)
                if round_index == first_round:
                    tests_compiled = [compiling.submit(p.compile_test, members) for p in programs]
                lineage.record(
                    record["parents"],
                    record["hparams"],
                    record.get("epochs"),
                    record.get("restarted"),
                )
                history.append(record)
                if folder:
                    folder.append_round(record)
                for watcher in watchers:
                    watcher(record)
                for program in programs:
                    group = program.group.name if len(programs) > 1 else None
                    check_not_all_diverged(record, program.space, group, program.group.members)
                saved_or_stopped(
                    round_index + 1,
                    stops.agreed(),
                    checkpoints,
                    config,
                    states,
                    lineage,
                    history,
                    time.perf_counter() - start,
                    run_dir,
                )
            for future in tests_compiled:
                future.result()  # raises what the compile raised
            # The last checkpoint is written while the members are tested.
            result = finish(plan, programs, states, history, lineage, devices, start, run_dir)
            for watcher in watchers:
                if hasattr(watcher, "end"):
                    watcher.end(result)
        result.compile = log.summary()
        result.start = stages.seconds
        if folder:
            folder.write_json(LINEAGE, lineage.to_dict())
            folder.write_json(SUMMARY, result.summary())
        return result


def watching(callbacks, closed: ExitStack, stages: StartUp) -> list:
    """The round callbacks of this process (the main one's; none elsewhere), each closed by
    ``closed`` where it has ``close``, and told each stage of the start where it has
    ``starting``."""
    watchers = list(callbacks) if is_main_process() else []
    for watcher in watchers:
        if hasattr(watcher, "close"):
            closed.enter_context(closing(watcher))
    stages.listeners = [watcher.starting for watcher in watchers if hasattr(watcher, "starting")]
    return watchers


def started_devices(cache: bool, distributed: Distributed | None) -> list:
    """JAX's devices, once the compilation cache is set (or turned off) and the processes of
    a distributed run have met."""
    if not cache:
        caches.disable()
    caches.enable_compilation_cache()
    if distributed is not None:
        start_distributed(distributed)
    return jax.devices()


def saved_or_stopped(
    done, signum, checkpoints, config, states, lineage, history, wall_time, run_dir
):
    """After ``done`` rounds: a checkpoint when one is due (every ``checkpoint_every`` rounds,
    the last round, a stop request agreed by every process, ``signum``); then, on a stop
    before the last round, ``SweepInterrupted``, saying how to resume."""
    if checkpoints and (done % config.checkpoint_every == 0 or done == config.rounds or signum):
        meta = {"lineage": lineage.to_dict(), "history": history, "wall_time_s": wall_time}
        checkpoints.save(done, states, meta)
    if signum and done < config.rounds:
        where = (
            f"resume with: popjax run --resume {run_dir}"
            if checkpoints
            else "no checkpoint was written"
        )
        raise SweepInterrupted(f"stopped after round {done} of {config.rounds}; {where}", signum)


def first_states(plan: Plan, programs, members, checkpoints, resume: bool, stages: StartUp):
    """``(first round, states, lineage, history, wall time so far)``: from a resumed run's
    newest checkpoint, else every group's init. A resumed run killed before its first
    checkpoint starts again from round 0 in its folder, and the time it ran is lost."""
    if resume:
        with stages.stage("restore"):
            restored = restore(checkpoints, programs, members)
        if restored is not None:
            return restored
    with stages.stage("init"):
        states = [program.init(program.train_data) for program in programs]
        jax.block_until_ready(states)  # its own time, not the first round's
    groups = plan.member_ranges() if len(plan.groups) > 1 else {}
    return 0, states, Lineage(plan.config.interval, groups=groups), [], 0.0


def restore(checkpoints: SweepCheckpoints, programs, members):
    """``(first round, states, lineage, history, wall time so far)`` from the newest readable
    checkpoint, arrays with the member sharding; None if the run has no checkpoint yet."""
    if not checkpoints.rounds_saved():
        return None
    abstract = [program.abstract_state(members) for program in programs]
    first_round, states, meta = checkpoints.restore_latest(abstract)
    # Checkpoints written before the wall time was kept count from this process on.
    elapsed = meta.get("wall_time_s", 0.0)
    return first_round, states, Lineage.from_dict(meta["lineage"]), meta["history"], elapsed


def play_round(programs, states, round_index: int, history: list[dict], plan: Plan) -> dict:
    """Runs every group's round (``states`` is updated in place) and returns its record."""
    # Every group's round is dispatched before any is read back, so they run back to back on
    # the device while the host waits once.
    outputs = []
    for index, program in enumerate(programs):
        data = program.round_data(round_index)
        population, selection, output = program.round_fn(*states[index], round_index, data)
        states[index] = (population, selection)
        outputs.append((output, population.hparams))
    if round_index + 1 < plan.config.rounds:
        for program in programs:  # a streamed split's next window, while the devices train
            program.prefetch(round_index + 1)
    records = []
    for program, host in zip(programs, to_host(outputs)):
        last_epochs = (
            [history[-1]["epochs"][m] for m in program.group.members]
            if history and "epochs" in history[-1]
            else None
        )
        records.append(
            round_record(round_index, plan.config.interval, host, last_epochs, program.task)
        )
    return merge_records(records, plan.groups)


def finish(plan: Plan, programs, states, history, lineage, devices, start, run_dir) -> SweepResult:
    """The result: the best member on the last validation, and every member's test figures."""
    # A task without data (an RL agent) is tested by one more evaluation, with keys that no
    # selection saw: fresh episodes.
    test_metrics = [
        to_host(program.test(population, program.data.test if program.data else None))
        for program, (population, _) in zip(programs, states)
        if program.data is None or program.data.test is not None
    ]
    last = history[-1]
    fitness = fitness_values(last)
    best = int(np.argmax(fitness))
    names = list(dict.fromkeys(k for metrics in test_metrics for k in metrics))
    test_per_member = (
        {name: np.concatenate([np.asarray(m[name]) for m in test_metrics]) for name in names}
        if len(test_metrics) == len(programs)
        else {}
    )
    task = programs[0].task
    populations = [population for population, _ in states]
    return SweepResult(
        config=plan.config,
        plan=plan,
        best_member=best,
        best_hparams={k: v[best] for k, v in last["hparams"].items() if v[best] is not None},
        best_val={k[len("val_") :]: v[best] for k, v in last.items() if k.startswith("val_")},
        best_test={k: float(v[best]) for k, v in test_per_member.items()},
        history=history,
        lineage=lineage,
        population=populations[0] if len(populations) == 1 else populations,
        test=test_per_member,
        wall_time=time.perf_counter() - start,
        devices=[str(d) for d in devices],
        compilations=sum(program.round_fn._cache_size() for program in programs),
        run_dir=run_dir,
        groups=plan.member_ranges(),
        fitness=task.fitness,
        minimize=task.minimize,
        memory={
            program.group.name: {
                "slices": program.slices,
                "round_bytes": program.round_bytes_planned,
            }
            for program in programs
        },
        stream={program.group.name: program.feed.stats() for program in programs if program.feed}
        or None,
    )
