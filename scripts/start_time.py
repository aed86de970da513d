"""Time to the first round of ``popjax run``, cold and warm, as a user waits for it.

Each try starts ``popjax run ARGS`` in a fresh process and times it from the start of the process
to the first line of its metrics.jsonl (the first round's record), then stops it. "cold" starts
with an empty popjax cache (no compiled programs, no generated datasets); "warm" reruns the same
command with the cache the cold run left; "off" runs with the cache turned off. The tries
alternate, so load on a shared machine falls on each alike, and each figure is the fastest of its
tries.

Run:
    python scripts/start_time.py                        # the default sweep, 3 tries each
    python scripts/start_time.py --tries 2 -- --population 16 --steps 2000 --interval 200
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def time_to_first_round(args: list[str], cache_dir: Path, cache: str, timeout: float) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(scratch) / "run"
        env = {**os.environ, "POPJAX_CACHE_DIR": str(cache_dir), "POPJAX_CACHE": cache}
        command = [sys.executable, "-m", "popjax", "run", *args, "--out", str(run_dir), "--quiet"]
        start = time.perf_counter()
        process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        metrics = run_dir / "metrics.jsonl"
        try:
            while time.perf_counter() - start < timeout:
                if metrics.exists() and metrics.read_text().count("\n") >= 1:
                    return time.perf_counter() - start
                if process.poll() is not None:
                    raise SystemExit(f"popjax run ended early: {process.stderr.read()[-2000:]}")
                time.sleep(0.02)
            raise SystemExit(f"no round within {timeout} s")
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tries", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("run_args", nargs="*", help="arguments of popjax run (after --)")
    options = parser.parse_args()
    seconds = {"cold": [], "warm": [], "off": []}
    for _ in range(options.tries):
        cache_dir = Path(tempfile.mkdtemp(prefix="popjax-cache-"))
        try:
            for kind in ("cold", "warm", "off"):
                cache = "off" if kind == "off" else "on"
                seconds[kind].append(
                    time_to_first_round(options.run_args, cache_dir, cache, options.timeout)
                )
                print(f"{kind}: {seconds[kind][-1]:.1f} s", flush=True)
        finally:
            shutil.rmtree(cache_dir, ignore_errors=True)
    command = " ".join(["popjax run", *options.run_args]).strip()
    print(f"\ntime to the first round of `{command}`, fastest of {options.tries}:")
    for kind, values in seconds.items():
        print(f"  {kind:>5}: {min(values):6.1f} s")


if __name__ == "__main__":
    main()
