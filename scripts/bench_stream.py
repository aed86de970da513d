"""Benchmark: training on resident data against data streamed from a host memmap.

One run builds a synthetic classification set as a ``.npy`` memmap (``--examples`` x
``--features`` float32, 10 classes) and trains the same sweep on it three ways: resident (the
training split placed on the devices once) and streamed with two window sizes (each round's
window gathered from the memmap and placed while the round before trains). For each it prints
member-steps per second, timed between the end of the first round and the end of the last (so
compiling and the first window are left out), and for the streamed runs the seconds spent
preparing windows (host gather + copy to the devices) and waiting for them.

Run:
    python scripts/bench_stream.py                       # prints a table, writes bench_stream.json
    python scripts/bench_stream.py --windows 1024 65536 --population 32 --interval 50
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=128)
    parser.add_argument("--windows", type=int, nargs=2, default=[4096, 32768])
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--interval", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", default="bench_stream.json")
    return parser.parse_args(argv)


def write_memmap(folder: Path, examples: int, features: int) -> Path:
    rng = np.random.default_rng(0)
    x = np.lib.format.open_memmap(folder / "x.npy", "w+", np.float32, (examples, features))
    weights = rng.normal(size=(features, 10)).astype(np.float32)
    labels = np.empty(examples, np.int32)
    for start in range(0, examples, 65536):  # written in blocks: the set need not fit in memory
        block = rng.normal(size=(min(65536, examples - start), features)).astype(np.float32)
        x[start : start + len(block)] = block
        labels[start : start + len(block)] = (block @ weights).argmax(axis=1)
    x.flush()
    np.save(folder / "y.npy", labels)
    test = rng.normal(size=(1000, features)).astype(np.float32)
    np.save(folder / "x_test.npy", test)
    np.save(folder / "y_test.npy", (test @ weights).argmax(axis=1).astype(np.int32))
    return folder


def timed_run(folder: Path, window, args) -> dict:
    import popjax
    from popjax.nn import MLP

    data = popjax.data.from_npy(folder, window=window)
    ends = []
    result = popjax.run(
        data=data,
        model=MLP(hidden=(256, 256), num_classes=10),
        population=args.population,
        steps=args.interval * args.rounds,
        interval=args.interval,
        batch_size=args.batch_size,
        write=False,
        progress=False,
        on_round=lambda record: ends.append(time.perf_counter()),
    )
    member_steps = args.population * args.interval * (len(ends) - 1)
    figures = {
        "window": window,
        "member_steps_per_s": round(member_steps / (ends[-1] - ends[0])),
        "val_accuracy": round(float(result.best_val["accuracy"]), 4),
    }
    if result.stream:
        stats = result.stream["all"]
        figures["prepare_s_per_window"] = round(stats["prepare_s"] / max(1, stats["windows"]), 4)
        figures["wait_s"] = stats["wait_s"]
    return figures


def main(argv=None):
    args = parse_args(argv)
    import jax

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_memmap(Path(tmp), args.examples, args.features)
        rows = [timed_run(folder, window, args) for window in (None, *args.windows)]
    report = {
        "device": str(jax.devices()[0].device_kind),
        "devices": jax.device_count(),
        "machine": platform.processor() or platform.machine(),
        "examples": args.examples,
        "features": args.features,
        "population": args.population,
        "interval": args.interval,
        "rounds": args.rounds,
        "runs": rows,
    }
    print(f"{'window':>10} {'member-steps/s':>15} {'prepare s/window':>17} {'wait s':>8}")
    for row in rows:
        print(
            f"{row['window'] or 'resident':>10} {row['member_steps_per_s']:>15} "
            f"{row.get('prepare_s_per_window', '-'):>17} {row.get('wait_s', '-'):>8}"
        )
    Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
