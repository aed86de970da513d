"""Time to the first round of ``popjax run``, cold and warm, as a user waits for it, and where
that time goes.

Each try starts ``popjax run ARGS`` for one round in a fresh process and times it from the
start of the process to the first line of its metrics.jsonl (the first round's record). It then
lets the run finish and reads its ``summary.json``'s ``start_s``: the seconds of each stage of
the run's start (JAX's devices, the data, compiling the round, the population's first state,
the first round). What the stages leave of the time to the first round is the process's start,
its imports and the config ("before the run"). On Linux it also reads the CPU seconds the
process had used by the first round and how many cores that kept busy on average: a start that
keeps every core busy can gain nothing from doing more of its work side by side.

"cold" starts with an empty popjax cache (no compiled programs, no generated datasets); "warm"
reruns the same command with the cache the cold run left; "off" runs with the cache turned off.
The tries alternate, so load on a shared machine falls on each alike, and each line is the try
with the shortest time to the first round.

Run:
    python scripts/start_time.py                        # the default sweep, 3 tries each
    python scripts/start_time.py --tries 2 -- --population 16 --interval 200
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KINDS = ("cold", "warm", "off")


def one_round(args: list[str]) -> list[str]:
    """``popjax run``'s arguments for the first round alone: its steps set to one interval."""
    from popjax.cli import command_parser, run_plan_of

    plan, _ = run_plan_of(command_parser().parse_args(["run", *args]))
    return [*args, "--steps", str(plan.config.interval), "--no-report"]


def start_up(args: list[str], cache_dir: Path, cache: str, timeout: float) -> dict[str, float]:
    """The time to the first round's record and the run's own stages, in seconds."""
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(scratch) / "run"
        env = {**os.environ, "POPJAX_CACHE_DIR": str(cache_dir), "POPJAX_CACHE": cache}
        command = [sys.executable, "-m", "popjax", "run", *args, "--out", str(run_dir), "--quiet"]
        start = time.perf_counter()
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        metrics = run_dir / "metrics.jsonl"
        try:
            while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
                if process.poll() is not None:
                    raise SystemExit(f"popjax run ended early: {process.stderr.read()[-2000:]}")
                if time.perf_counter() - start > timeout:
                    raise SystemExit(f"no round within {timeout} s")
                time.sleep(0.02)
            first_round = time.perf_counter() - start
            cpu = cpu_seconds(process.pid)
            _, errors = process.communicate(timeout=timeout)
        finally:
            process.kill()
            process.wait()
        if process.returncode != 0:
            raise SystemExit(f"popjax run failed: {errors[-2000:]}")
        stages = json.loads((run_dir / "summary.json").read_text())["start_s"]
    times = {"first round": first_round, "before the run": first_round - sum(stages.values())}
    times |= stages
    if cpu is not None:  # how much of the machine the start kept busy
        times |= {"process CPU s": cpu, "cores busy": cpu / first_round}
    return times


def cpu_seconds(pid: int) -> float | None:
    """The CPU seconds a process has used so far, all its threads (Linux's /proc; None
    elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tries", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("run_args", nargs="*", help="arguments of popjax run (after --)")
    options = parser.parse_args()
    args = one_round(options.run_args)
    tries = {kind: [] for kind in KINDS}
    for _ in range(options.tries):
        cache_dir = Path(tempfile.mkdtemp(prefix="popjax-cache-"))
        try:
            for kind in KINDS:
                cache = "off" if kind == "off" else "on"
                tries[kind].append(start_up(args, cache_dir, cache, options.timeout))
                print(f"{kind}: {tries[kind][-1]['first round']:.1f} s", flush=True)
        finally:
            shutil.rmtree(cache_dir, ignore_errors=True)
    command = " ".join(["popjax run", *options.run_args]).strip()
    fastest = {kind: min(found, key=lambda t: t["first round"]) for kind, found in tries.items()}
    print(
        f"\ntime to the first round of `{command}` (s), fastest of {options.tries}, on "
        f"{os.cpu_count()} cores:"
    )
    stages = list(dict.fromkeys(name for found in fastest.values() for name in found))
    print(f"  {'':>16}" + "".join(f"{kind:>8}" for kind in KINDS))
    for stage in stages:
        row = "".join(f"{fastest[kind].get(stage, 0.0):8.2f}" for kind in KINDS)
        print(f"  {stage:>16}{row}")


if __name__ == "__main__":
    main()
