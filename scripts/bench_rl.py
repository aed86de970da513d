"""Benchmark: environment steps per second of a population of PPO agents against one agent
trained alone, in one run on one machine.

* popjax: the jitted round (PBT, ``--interval`` PPO updates of every agent as one ``lax.scan``
  over the vmapped update, then evaluation) at each population size;
* alone: one agent's PPO update jitted and called in a Python loop, the way a single-file PPO
  script trains one agent.

Both run on JAX's default device (one CPU device here, so neither gets more cores); each figure
is the fastest of ``--repeats`` timed runs, compilation excluded. Several environments run one
after another in one run: by default CartPole-v1 (discrete actions, a categorical policy) and
Pendulum-v1 (continuous actions, a Gaussian policy with running observation and return
statistics).

    python scripts/bench_rl.py                     # CartPole-v1 and Pendulum-v1, P = 1 8 32 128
    python scripts/bench_rl.py --env Acrobot-v1 --populations 1 16
    python scripts/bench_rl.py --env brax:inverted_pendulum --populations 1 8
"""

from __future__ import annotations

import argparse
import json
import time

import jax

from popjax.config import PBTConfig
from popjax.population import init_population, select
from popjax.round import SelectionState, make_round
from popjax.space import SearchSpace
from popjax.tasks.rl import ppo


def fastest(run, repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return min(seconds)


def bench_env(env: str, args) -> dict:
    """One environment's figures: one agent alone, then each population size."""
    num_envs, rollout_steps = 4, 128  # the task's defaults, named to count its steps
    task = ppo(env, num_envs=num_envs, rollout_steps=rollout_steps)
    space = SearchSpace(task.space, builtin=False)
    per_update = num_envs * rollout_steps

    one = select(init_population(jax.random.PRNGKey(0), task, space, 1), 0)
    update = jax.jit(task.train)
    state, key = one.state, jax.random.PRNGKey(1)
    jax.block_until_ready(update(state, one.hparams, key, 0))

    def alone():
        nonlocal state, key
        for step in range(args.interval):
            key, step_key = jax.random.split(key)
            state, metrics = update(state, one.hparams, step_key, step)
        jax.block_until_ready(metrics)

    alone_rate = args.interval * per_update / fastest(alone, args.repeats)
    rows = []
    for size in args.populations:
        population = init_population(jax.random.PRNGKey(0), task, space, size)
        round_fn = jax.jit(
            make_round(task, args.interval, space, PBTConfig(), jax.random.PRNGKey(2))
        )
        standing = SelectionState.initial(size)
        jax.block_until_ready(round_fn(population, standing, 1))

        def one_round():
            jax.block_until_ready(round_fn(population, standing, 1))

        rate = size * args.interval * per_update / fastest(one_round, args.repeats)
        rows.append({"population": size, "env_steps_per_s": rate, "vs_alone": rate / alone_rate})
        print(
            f"{env} P={size:5d}: {rate:12,.0f} environment steps/s ({rate / alone_rate:.1f}x "
            "one agent alone)",
            flush=True,
        )
    print(
        f"{env}, one agent alone, jitted update loop: {alone_rate:,.0f} environment steps/s "
        f"({jax.devices()[0].device_kind}, jax {jax.__version__})",
        flush=True,
    )
    return {"env": env, "alone_env_steps_per_s": alone_rate, "rows": rows}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", nargs="+", default=["CartPole-v1", "Pendulum-v1"])
    parser.add_argument("--populations", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--interval", type=int, default=10, help="PPO updates per round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    results = [bench_env(env, args) for env in args.env]
    if args.out:
        with open(args.out, "w") as file:
            json.dump({"envs": results, "device": jax.devices()[0].device_kind}, file, indent=1)


if __name__ == "__main__":
    main()
