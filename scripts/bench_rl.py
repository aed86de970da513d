"""Benchmark: environment steps per second of a population of PPO or SAC agents against one
agent trained alone, in one run on one machine.

* popjax: the jitted round (PBT, ``--interval`` train calls of every agent as one ``lax.scan``
  over the vmapped call, then evaluation) at each population size;
* alone: one agent's train call jitted and called in a Python loop, the way a single-file PPO
  or SAC script trains one agent, then its evaluation (jitted) once, as the round evaluates
  once: both do the same work. The figures count training's environment steps; evaluation's
  are the same on both sides (long with Brax's 1,000-step episodes).

Both run on JAX's default device (one CPU device here, so neither gets more cores); each figure
is the fastest of ``--repeats`` timed runs, compilation excluded. With each population size goes
XLA's memory plan of its round per member, as ``popjax run`` plans it (for SAC, mostly the
replay buffer). Several agent-environment pairs run one after another in one run: by default
PPO on CartPole-v1 (discrete actions, a categorical policy), PPO on Pendulum-v1 (continuous
actions, a Gaussian policy with running observation and return statistics) and SAC on
Pendulum-v1.

    python scripts/bench_rl.py                          # the three, P = 1 8 32 128
    python scripts/bench_rl.py --runs ppo:Acrobot-v1 --populations 1 16
    python scripts/bench_rl.py --runs ppo:brax:inverted_pendulum --populations 1 8
    python scripts/bench_rl.py --runs sac:Pendulum-v1
"""

from __future__ import annotations

import argparse
import json
import time

import jax

from popjax.amounts import format_bytes
from popjax.config import PBTConfig
from popjax.memory import compiled_bytes
from popjax.mesh import member_sharding, population_mesh
from popjax.population import init_population, select
from popjax.round import SelectionState, make_round
from popjax.space import SearchSpace
from popjax.tasks.rl import ppo
from popjax.tasks.sac import sac

DEFAULT_RUNS = ["ppo:CartPole-v1", "ppo:Pendulum-v1", "sac:Pendulum-v1"]


def fastest(run, repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return min(seconds)


def agent_task(agent: str, env: str):
    """The task and the environment steps of one of its train calls."""
    if agent == "ppo":
        num_envs, rollout_steps = 4, 128  # the task's defaults, named to count its steps
        return ppo(env, num_envs=num_envs, rollout_steps=rollout_steps), num_envs * rollout_steps
    # SAC's defaults, learning from the first step: the timed calls make their updates.
    num_envs, rollout_steps = 4, 8
    task = sac(env, num_envs=num_envs, rollout_steps=rollout_steps, learning_starts=0)
    return task, num_envs * rollout_steps


def bench_run(agent: str, env: str, args) -> dict:
    """One agent on one environment: one agent alone, then each population size."""
    task, per_update = agent_task(agent, env)
    space = SearchSpace(task.space, builtin=False)
    mesh = population_mesh(jax.devices()[:1])

    one = select(init_population(jax.random.PRNGKey(0), task, space, 1), 0)
    update, evaluate = jax.jit(task.train), jax.jit(task.evaluate)
    state, key = one.state, jax.random.PRNGKey(1)
    jax.block_until_ready((update(state, one.hparams, key, 0), evaluate(state, one.hparams, key)))

    def alone():
        nonlocal state, key
        for step in range(args.interval):
            key, step_key = jax.random.split(key)
            state, _ = update(state, one.hparams, step_key, step)
        key, eval_key = jax.random.split(key)
        jax.block_until_ready(evaluate(state, one.hparams, eval_key))

    alone_rate = args.interval * per_update / fastest(alone, args.repeats)
    rows = []
    for size in args.populations:
        population = init_population(jax.random.PRNGKey(0), task, space, size)
        population = jax.device_put(population, member_sharding(mesh))
        round_fn = jax.jit(
            make_round(task, args.interval, space, PBTConfig(), jax.random.PRNGKey(2), mesh=mesh),
            out_shardings=member_sharding(mesh),
        )
        standing = SelectionState.initial(size)
        # As popjax run plans it: donated, so the state is counted once.
        planned = compiled_bytes(
            jax.jit(round_fn, donate_argnums=(0, 1)).lower(population, standing, 1).compile()
        )
        jax.block_until_ready(round_fn(population, standing, 1))

        def one_round():
            jax.block_until_ready(round_fn(population, standing, 1))

        rate = size * args.interval * per_update / fastest(one_round, args.repeats)
        member_bytes = planned / size if planned is not None else None
        rows.append(
            {
                "population": size,
                "env_steps_per_s": rate,
                "vs_alone": rate / alone_rate,
                "round_bytes_per_member": member_bytes,
            }
        )
        plan = f", round plan {format_bytes(member_bytes)} a member" if member_bytes else ""
        print(
            f"{agent} {env} P={size:5d}: {rate:12,.0f} environment steps/s "
            f"({rate / alone_rate:.1f}x one agent alone){plan}",
            flush=True,
        )
    print(
        f"{agent} {env}, one agent alone, jitted loop: {alone_rate:,.0f} environment steps/s "
        f"({jax.devices()[0].device_kind}, jax {jax.__version__})",
        flush=True,
    )
    return {"agent": agent, "env": env, "alone_env_steps_per_s": alone_rate, "rows": rows}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", nargs="+", default=DEFAULT_RUNS, help="AGENT:ENV pairs, AGENT ppo or sac"
    )
    parser.add_argument("--populations", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--interval", type=int, default=10, help="train calls per round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    runs = [run.split(":", 1) for run in args.runs]
    if any(len(run) != 2 or run[0] not in ("ppo", "sac") for run in runs):
        parser.error("--runs takes AGENT:ENV pairs, AGENT ppo or sac (e.g. sac:Pendulum-v1)")
    results = [bench_run(agent, env, args) for agent, env in runs]
    if args.out:
        with open(args.out, "w") as file:
            json.dump({"runs": results, "device": jax.devices()[0].device_kind}, file, indent=1)


if __name__ == "__main__":
    main()
