"""The same members trained one after another by a plain jitted loop, against ``popjax.run``.

The plain loop is the way a population is trained without popjax: for each member, a jitted
step called from a Python loop, validation every ``interval`` steps. Both sides run the same
task functions on the same members (popjax's random search: PBT off, so the work is the same),
in this one process, compiling from scratch (popjax's cache off), or with ``--cache DIR`` both
reading and filling one persistent compilation cache (a first run cold, a second warm). Prints
wall times per phase and the ratio.

    cd experiments/own_tasks
    python plain_loop.py --task transformer --population 8 --steps 100 --interval 50
    python plain_loop.py --task equinox_mlp --population 16 --steps 1000 --interval 250
"""

from __future__ import annotations

import argparse
import time

import popjax

popjax.use_cpu_cores()  # as `popjax run` does, before JAX starts: one CPU device per core

import jax  # noqa: E402
import numpy as np  # noqa: E402

TASKS = {
    "transformer": ("transformer", "language_model", {"batch_size": 16, "eval_windows": 128}),
    "equinox_mlp": ("equinox_mlp", "classifier", {}),
}


def build_task(name: str) -> popjax.Task:
    module, factory, fields = TASKS[name]
    return getattr(__import__(module), factory)(**fields)


def plain_loop(task: popjax.Task, hparams: dict, steps: int, interval: int, seed: int):
    """Each member in turn: init, ``steps`` calls of a jitted step, validation every interval.
    Returns the wall time of each phase and each member's last validation metrics."""
    times = {"compile": 0.0, "init": 0.0, "train": 0.0, "evaluate": 0.0}
    init = jax.jit(task.init)
    step_fn = jax.jit(task.train, donate_argnums=0)
    evaluate = jax.jit(task.evaluate)
    data = jax.device_put(task.data)
    count = len(next(iter(hparams.values())))
    scores = []
    for member in range(count):
        member_hparams = {name: np.float32(value[member]) for name, value in hparams.items()}
        key = jax.random.fold_in(jax.random.PRNGKey(seed), member)
        if member == 0:  # the first call of each program compiles it
            start = time.perf_counter()
            state = init(key, member_hparams, data.train)
            out = step_fn(state, member_hparams, key, np.int32(0), data.train)
            jax.block_until_ready(evaluate(out[0], member_hparams, key, data.val))
            times["compile"] += time.perf_counter() - start
        start = time.perf_counter()
        state = jax.block_until_ready(init(key, member_hparams, data.train))
        times["init"] += time.perf_counter() - start
        for first in range(0, steps, interval):
            # Dispatch is asynchronous: a segment's time ends when its last state is ready.
            start = time.perf_counter()
            for step in range(first, first + interval):
                key, step_key = jax.random.split(key)
                state, _ = step_fn(state, member_hparams, step_key, np.int32(step), data.train)
            jax.block_until_ready(state)
            times["train"] += time.perf_counter() - start
            start = time.perf_counter()
            score = jax.device_get(evaluate(state, member_hparams, step_key, data.val))
            times["evaluate"] += time.perf_counter() - start
        scores.append(score)
    return times, scores


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=TASKS, default="transformer")
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--interval", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cache",
        metavar="DIR",
        help="a persistent compilation cache for both sides (empty: cold; filled: warm)",
    )
    args = parser.parse_args(argv)
    if args.cache:
        # popjax's cache folder, whose "jax" folder both sides then read and fill.
        import os

        os.environ["POPJAX_CACHE_DIR"] = args.cache
        from popjax import cache as caches

        caches.enable_compilation_cache()

    start = time.perf_counter()
    task = build_task(args.task)
    built = time.perf_counter() - start

    rounds = []
    start_popjax = time.perf_counter()
    result = popjax.run(
        on_round=lambda record: rounds.append(time.perf_counter()),
        task=task,
        population=args.population,
        steps=args.steps,
        interval=args.interval,
        seed=args.seed,
        pbt={"enabled": False},
        write=False,
        progress=False,
        cache=bool(args.cache),
    )
    popjax_time = time.perf_counter() - start_popjax
    hparams = {name: np.asarray(value) for name, value in result.population.hparams.items()}

    start = time.perf_counter()
    times, scores = plain_loop(task, hparams, args.steps, args.interval, args.seed)
    plain_time = time.perf_counter() - start

    fitness = [float(s[task.fitness]) for s in scores]
    # After the first round every program is compiled: the rounds' time per step, on each side.
    popjax_per_step = (rounds[-1] - rounds[0]) / (args.steps - args.interval)
    plain_per_step = (times["train"] + times["evaluate"]) / args.steps
    print(f"task {args.task}: {args.population} members x {args.steps} steps, {jax.devices()}")
    print(f"building the task (data): {built:.1f} s")
    print(
        f"popjax.run: {popjax_time:.1f} s (to the end of the first round, compiling included, "
        f"{rounds[0] - start_popjax:.1f}; later rounds {rounds[-1] - rounds[0]:.1f}; after the "
        f"last round {start_popjax + popjax_time - rounds[-1]:.1f})"
    )
    print(
        f"plain loop: {plain_time:.1f} s (compile {times['compile']:.1f}, init "
        f"{times['init']:.1f}, train {times['train']:.1f}, evaluate {times['evaluate']:.1f}, "
        f"the rest {plain_time - sum(times.values()):.1f})"
    )
    print(f"whole process, plain loop / popjax.run: {plain_time / popjax_time:.2f}x")
    print(
        f"per step once compiled (all members, validation included): plain loop "
        f"{1e3 * plain_per_step:.1f} ms, popjax {1e3 * popjax_per_step:.1f} ms, ratio "
        f"{plain_per_step / popjax_per_step:.2f}x"
    )
    print(
        f"best validation {task.fitness}: popjax {result.best_val[task.fitness]:.4f}, "
        f"plain loop {(min if task.minimize else max)(fitness):.4f}"
    )


if __name__ == "__main__":
    main()
