"""A task of one's own with a schedule in its config: the exported schedule against the rates
its best member's weights trained with, step by step (what its ``train`` saw, recorded as a
metric). Prints the largest absolute difference.

    python scripts/schedule_export_check.py [--steps 40]
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from test_task_schedules import CONFIG, SCHEDULED_TASK  # noqa: E402

from popjax import schedules  # noqa: E402
from popjax.lineage import Lineage  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "scheduled_tasks.py").write_text(SCHEDULED_TASK)
        (folder / "task.toml").write_text(CONFIG)
        run_args = ["run", "task.toml", "--out", "run", "--steps", str(args.steps)]
        for command in (run_args + ["--quiet", "--no-report"], ["export-schedule", "run"]):
            subprocess.run([sys.executable, "-m", "popjax", *command], cwd=folder, check=True)
        run = folder / "run"
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        best = json.loads((run / "summary.json").read_text())["best_member"]
        ancestry = Lineage.load(run / "lineage.json").ancestry(best)
        loaded = schedules.load(folder / "schedule.json")
        for name, metric in (("learning_rate", "train_lr"), ("momentum", "train_mom")):
            trained = np.array([metrics[s][metric][ancestry[s]] for s in range(args.steps)])
            exported = np.asarray(jax.vmap(loaded[name])(jnp.arange(args.steps)))
            print(
                f"{name}: {args.steps} steps, max |exported - trained| = "
                f"{np.abs(exported - trained).max():.3g} (peak {trained.max():.4g})"
            )


if __name__ == "__main__":
    main()
