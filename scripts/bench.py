"""Benchmark: a vmapped popjax population against the same members trained one after another.

For each population size P it measures member-steps per second (P x steps / seconds) of

* popjax: ``jax.jit(make_train_segment(...))``, one ``lax.scan`` over the vmapped step that
  trains all P members ``--steps`` steps in one call;
* sequential: the single-model code a user writes without popjax, a jitted
  ``train_step(params, opt_state, hparams, key)`` (one member's step: the same MLP, SGD with
  momentum and weight decay, batch sampling and dropout) called in a Python for-loop for
  ``--steps`` steps, member after member.

Both sides start from the same members (weights, hyperparameters, key streams), run on MNIST-1D
held on the device, exclude compile time (popjax's segment is compiled ahead of time, the
sequential step by one warm-up call) and block on the result before stopping the clock. Each
side is timed ``--repeats`` times and the fastest run is reported, since other load on the
machine only slows a run down. The speedup is popjax / sequential, measured in the same run on
the same machine. Members are independent, so for large populations the sequential side times only the
first ``--max-sequential-members`` members and its per-member rate stands for all of them; the
table and the JSON say when that happened.

Run:
    python scripts/bench.py                      # P = 1 8 32 128, writes bench.json
    python scripts/bench.py --populations 1 8 --steps 100 --out /tmp/bench.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

import jax

import popjax
from popjax.data import mnist1d, to_device
from popjax.mesh import member_sharding, population_mesh, replicated
from popjax.nn import MLP
from popjax.population import init_population, select
from popjax.space import SearchSpace
from popjax.train import cross_entropy, make_member_step, make_train_segment


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--populations", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--width", type=int, default=256, help="MLP hidden widths (width, width)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=200, help="training steps per member")
    parser.add_argument("--max-sequential-members", type=int, default=16,
                        help="time at most this many members on the sequential side")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs per measurement; the fastest is reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench.json")
    return parser.parse_args(argv)


def timings(run, repeats) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``run``; it blocks on its own result."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return seconds


def time_popjax(model, train, population, batch_size, steps, repeats) -> list[float]:
    """Seconds per jitted segment that trains every member ``steps`` steps."""
    # As popjax runs a sweep: the member axis sharded over every device, the data replicated.
    # (on as many devices as divide the population: one member cannot be split)
    mesh = population_mesh(jax.devices()[: math.gcd(population.size, jax.device_count())])
    population = jax.device_put(population, member_sharding(mesh))
    train = jax.device_put(train, replicated(mesh))
    segment = jax.jit(make_train_segment(model, cross_entropy, train, batch_size, steps),
                      out_shardings=member_sharding(mesh))
    # Compile ahead of time: excludes compilation without spending a whole untimed segment.
    compiled = segment.lower(population).compile()
    return timings(lambda: jax.block_until_ready(compiled(population)), repeats)


def make_sequential_step(model, train, batch_size):
    """The plain single-model step, jitted on its own: the same update as one popjax member's.

    Hyperparameters are passed as jnp scalars, so members share one compilation.
    """
    return jax.jit(make_member_step(model, cross_entropy, train, batch_size))


def train_members_sequentially(train_step, members, steps) -> None:
    for member in members:
        params, opt_state, key = member.params, member.opt_state, member.rng
        for _ in range(steps):
            params, opt_state, key, loss = train_step(params, opt_state, member.hparams, key)
        # Block per member, as a user reading the final loss would; dispatch stays async within.
        jax.block_until_ready((params, loss))


def time_sequential(train_step, members, steps, repeats) -> list[float]:
    """Seconds to train ``members`` one after another, ``steps`` Python-loop steps each."""
    first = members[0]
    jax.block_until_ready(train_step(first.params, first.opt_state, first.hparams, first.rng))
    return timings(lambda: train_members_sequentially(train_step, members, steps), repeats)


def bench_population(size, args, model, train, sample_input, train_step) -> dict:
    population = init_population(jax.random.PRNGKey(args.seed), model, sample_input, SearchSpace(),
                                 size)
    popjax_seconds = time_popjax(model, train, population, args.batch_size, args.steps,
                                 args.repeats)

    # Slice members out of the same population so both sides train identical members.
    timed = min(size, args.max_sequential_members)
    members = [select(population, i) for i in range(timed)]
    sequential_seconds = time_sequential(train_step, members, args.steps, args.repeats)

    # The fastest repeat: other load on the machine only ever makes a run slower.
    popjax_rate = size * args.steps / min(popjax_seconds)
    sequential_rate = timed * args.steps / min(sequential_seconds)
    return {
        "population": size,
        "popjax_seconds_per_repeat": popjax_seconds,
        "popjax_member_steps_per_s": popjax_rate,
        "sequential_members_timed": timed,
        "sequential_seconds_per_repeat": sequential_seconds,
        "sequential_extrapolated": timed < size,
        "sequential_member_steps_per_s": sequential_rate,
        "speedup": popjax_rate / sequential_rate,
    }


def print_table(rows) -> None:
    header = f"{'population':>10}  {'popjax m-steps/s':>17}  {'sequential m-steps/s':>21}  {'speedup':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        mark = "*" if row["sequential_extrapolated"] else " "
        print(f"{row['population']:>10}  {row['popjax_member_steps_per_s']:>17,.0f}  "
              f"{row['sequential_member_steps_per_s']:>20,.0f}{mark}  {row['speedup']:>7.1f}x")
    for row in rows:
        if row["sequential_extrapolated"]:
            print(f"* population {row['population']}: sequential rate measured on the first "
                  f"{row['sequential_members_timed']} members and extrapolated "
                  "(members are independent)")


def main(argv=None) -> None:
    args = parse_args(argv)
    dataset = mnist1d(seed=args.seed)
    train = to_device(dataset.x_train, dataset.y_train)
    sample_input = train.x[: args.batch_size]
    model = MLP(hidden=(args.width, args.width), num_classes=dataset.num_classes)
    train_step = make_sequential_step(model, train, args.batch_size)

    started = time.perf_counter()
    rows = []
    for size in args.populations:
        rows.append(bench_population(size, args, model, train, sample_input, train_step))
        print(f"population {size}: done ({time.perf_counter() - started:.0f}s elapsed)",
              flush=True)

    print()
    print(f"MLP ({args.width}, {args.width}) on MNIST-1D, batch {args.batch_size}, "
          f"{args.steps} steps per member, backend {jax.default_backend()}, "
          f"fastest of {args.repeats} runs, compile excluded")
    print_table(rows)

    result = {
        "what": "member-steps per second: vmapped popjax population vs. jitted per-step "
                "Python loop over members one after another; compile time excluded; "
                "rates from the fastest of `repeats` timed runs",
        "jax_version": jax.__version__,
        "popjax_version": getattr(popjax, "__version__", None),
        "python_version": platform.python_version(),
        "backend": jax.default_backend(),
        "devices": [str(device) for device in jax.devices()],
        "cpu_count": os.cpu_count(),
        # Other processes slow a benchmark down; the load average shows whether any ran.
        "load_average_at_end": list(os.getloadavg()),
        "dataset": "mnist1d",
        "model": "MLP",
        "width": args.width,
        "hidden": [args.width, args.width],
        "batch_size": args.batch_size,
        "steps": args.steps,
        "repeats": args.repeats,
        "max_sequential_members": args.max_sequential_members,
        "sequential_extrapolation_note": "where sequential_members_timed < population, the "
            "sequential rate was measured on that many members and applies to all, since "
            "members train independently",
        "total_seconds": time.perf_counter() - started,
        "results": rows,
    }
    with open(args.out, "w") as file:
        json.dump(result, file, indent=2)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
