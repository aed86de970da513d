"""The checkpoint's share of a round: synchronous saving (the sweep waits for the files)
against asynchronous saving (the files are written while the next round trains).

Each run is the default sweep (or ARGS) with a checkpoint after every round, at each
population asked for, in three ways: "sync", "async" and "none" (a checkpoint only at the
end). It reports per round, leaving out the first (it compiles):

- blocked: how long the loop waited in ``save``, as a share of the round;
- overhead: how much longer a round took than without checkpoints, as a share of the round.

The ways alternate within each try, so load on a shared machine falls on each alike; each
figure is the median over the rounds of all tries.

Run:
    python scripts/checkpoint_share.py                      # 32 and 128 members, 2 tries
    python scripts/checkpoint_share.py --populations 32 --rounds 4 --tries 1
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from pathlib import Path

import popjax
import popjax.sweep
from popjax.checkpoint import SweepCheckpoints

WAYS = ("none", "sync", "async")


def timed_sweep(way: str, population: int, rounds: int, interval: int, scratch: Path) -> dict:
    """Per-round wall times and save times of one sweep saved the given way."""
    saves, ends = [], []

    class Checkpoints(SweepCheckpoints):
        def save(self, *args, **kwargs):
            start = time.perf_counter()
            super().save(*args, **kwargs)
            saves.append(time.perf_counter() - start)

    popjax.sweep.SweepCheckpoints = functools.partial(Checkpoints, asynchronous=way == "async")
    try:
        popjax.run(
            population=population,
            steps=rounds * interval,
            interval=interval,
            checkpoint_every=1 if way != "none" else 10**6,
            out=scratch / f"{way}-{population}-{time.time_ns()}",
            progress=False,
            on_round=lambda record: ends.append(time.perf_counter()),
        )
    finally:
        popjax.sweep.SweepCheckpoints = SweepCheckpoints
    # A round's time runs from one record to the next: the checkpoint of round k is taken
    # after its record, so it falls into round k + 1's time. The first round compiles.
    rounds_s = [b - a for a, b in zip(ends, ends[1:])]
    return {"round_s": rounds_s, "save_s": saves[1:] if way != "none" else []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--populations", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--interval", type=int, default=250)
    parser.add_argument("--tries", type=int, default=2)
    args = parser.parse_args()

    print(f"{'members':>7} {'way':>5} {'round s':>8} {'save s':>7} {'blocked':>8} {'overhead':>8}")
    with tempfile.TemporaryDirectory() as scratch:
        for population in args.populations:
            times = {way: {"round_s": [], "save_s": []} for way in WAYS}
            for _ in range(args.tries):
                for way in WAYS:
                    run = timed_sweep(way, population, args.rounds, args.interval, Path(scratch))
                    for key in run:
                        times[way][key] += run[key]
            plain = statistics.median(times["none"]["round_s"])
            for way in WAYS:
                round_s = statistics.median(times[way]["round_s"])
                save_s = statistics.median(times[way]["save_s"]) if times[way]["save_s"] else 0
                print(
                    f"{population:>7} {way:>5} {round_s:>8.3f} {save_s:>7.3f} "
                    f"{save_s / round_s:>8.1%} {(round_s - plain) / round_s:>8.1%}"
                )


if __name__ == "__main__":
    main()
