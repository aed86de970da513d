"""End to end: a popjax sweep against the same members trained one after another.

Both sides run as a user runs them, each a fresh process timed from its start to its end
(imports, data, compilation, training, the final evaluation):

* popjax: ``popjax run --population P --steps S --interval K --no-report --quiet``, PBT every
  K steps;
* one after another: the same P members (the same task, initial weights and hyperparameters),
  each trained S steps by a jitted per-step Python loop and evaluated on the test split, without
  PBT (which would only add to its time).

The two alternate ``--tries`` times; each figure is the fastest of its tries. Both use popjax's
cache as it stands (``--cold`` empties it before every try).

Run:
    python scripts/sweep_vs_loop.py                   # 16 MLPs 40-256-256-10, 2,000 steps
    python scripts/sweep_vs_loop.py --population 32 --steps 1000 --interval 250
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--interval", type=int, default=200)
    parser.add_argument("--tries", type=int, default=2)
    parser.add_argument("--cold", action="store_true", help="an empty cache for every try")
    parser.add_argument("--loop", action="store_true", help=argparse.SUPPRESS)  # the baseline
    return parser.parse_args()


def loop(args) -> None:
    """The baseline's process: members one after another, a jitted step per Python call."""
    import jax

    from popjax.plan import Plan
    from popjax.population import init_population, select
    from popjax.train import make_evaluate

    plan, (group_task,) = Plan.from_config(population=args.population, steps=args.steps).build()
    task = group_task.task
    data = jax.device_put(task.data)
    init_key, _ = jax.random.split(jax.random.PRNGKey(plan.config.seed))
    population = init_population(init_key, task, group_task.space, args.population, data.train)

    @jax.jit
    def step(state, hparams, rng, t, train):
        rng, key = jax.random.split(rng)
        state, metrics = task.train(state, hparams, key, t, train)
        return state, rng, metrics["loss"]

    evaluate = jax.jit(lambda member, split: make_evaluate(task)(member, split, False)[1])
    accuracies = []
    for index in range(args.population):
        member = select(population, index)
        state, rng = member.state, member.rng
        for t in range(args.steps):
            state, rng, loss = step(state, member.hparams, rng, t, data.train)
        trained = jax.tree_util.tree_map(lambda a: a[None], member._replace(state=state, rng=rng))
        accuracies.append(float(evaluate(trained, data.test)["accuracy"][0]))
    print(f"best test accuracy {max(accuracies):.3f}")


def timed(command, env) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    if args.loop:
        return loop(args)
    sizes = ["--population", str(args.population), "--steps", str(args.steps)]
    popjax = [sys.executable, "-m", "popjax", "run", *sizes, "--interval", str(args.interval)]
    baseline = [sys.executable, __file__, "--loop", *sizes]
    seconds = {"popjax": [], "loop": []}
    cache = tempfile.mkdtemp(prefix="popjax-cache-")
    env = {**os.environ, "POPJAX_CACHE_DIR": cache}
    try:
        for _ in range(args.tries):
            with tempfile.TemporaryDirectory() as scratch:
                if args.cold:
                    shutil.rmtree(cache, ignore_errors=True)
                seconds["popjax"].append(
                    timed([*popjax, "--out", f"{scratch}/run", "--quiet", "--no-report"], env)
                )
            if args.cold:
                shutil.rmtree(cache, ignore_errors=True)
            seconds["loop"].append(timed(baseline, env))
            print(f"popjax {seconds['popjax'][-1]:.1f} s, loop {seconds['loop'][-1]:.1f} s")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    fast = {name: min(values) for name, values in seconds.items()}
    print(
        f"\n{args.population} members x {args.steps} steps, end to end, fastest of "
        f"{args.tries}{' (cold cache)' if args.cold else ''}: popjax {fast['popjax']:.1f} s, "
        f"one after another {fast['loop']:.1f} s: {fast['loop'] / fast['popjax']:.2f}x"
    )


if __name__ == "__main__":
    main()
