"""PB2's share of a round: the time its explore takes on the device against the whole round.

For each population size, two sweeps of the default config run a few rounds, one exploring by
perturbation and one by PB2, alternating over tries so load on a shared machine falls on both
alike. It reports the median round time of each (the first round, which compiles, left out),
and the time of PB2's explore alone (``popjax.pb2.propose`` jitted, on a full window of
observations of that many members), as a share of the PB2 round.

Run:
    python scripts/pb2_share.py                        # 32 and 128 members, 2 tries
    python scripts/pb2_share.py --populations 32 --rounds 3 --tries 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

import popjax
from popjax import pb2


def round_times(population: int, explore: str, rounds: int, interval: int) -> list[float]:
    ends = []
    popjax.run(
        population=population,
        steps=rounds * interval,
        interval=interval,
        pbt=popjax.PBTConfig(explore=explore),
        write=False,
        progress=False,
        on_round=lambda record: ends.append(time.perf_counter()),
    )
    return [b - a for a, b in zip(ends, ends[1:])]


def propose_time(population: int, window: int, repeats: int = 5) -> float:
    """Seconds of one PB2 explore of ``population`` members, compiled beforehand."""
    space = popjax.SearchSpace()
    dims = len(pb2.searched(space))
    key = jax.random.PRNGKey(0)
    hparams = space.sample(key, population)
    size = population * window
    observations = (
        jax.random.uniform(key, (size, dims)),
        jnp.repeat(jnp.arange(window, dtype=jnp.float32), population),
        jax.random.normal(key, (size,)),
        jnp.ones(size, bool),
    )
    replaced = jnp.arange(population) < population // 4
    propose = jax.jit(pb2.propose, static_argnames=("space",))
    jax.block_until_ready(propose(key, observations, hparams, space, replaced, float(window)))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(propose(key, observations, hparams, space, replaced, float(window)))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--populations", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--interval", type=int, default=250)
    parser.add_argument("--tries", type=int, default=2)
    args = parser.parse_args()

    window = popjax.PBTConfig().window
    print(f"{'members':>7} {'perturb s':>9} {'pb2 s':>7} {'explore s':>9} {'share':>6}")
    for population in args.populations:
        times = {"perturb": [], "pb2": []}
        for _ in range(args.tries):
            for explore in times:
                times[explore] += round_times(population, explore, args.rounds, args.interval)
        perturb, chosen = (statistics.median(times[e]) for e in ("perturb", "pb2"))
        explore_s = propose_time(population, window)
        print(
            f"{population:>7} {perturb:>9.3f} {chosen:>7.3f} {explore_s:>9.4f} "
            f"{explore_s / chosen:>6.1%}"
        )


if __name__ == "__main__":
    main()
