"""The experiments' own claims: setups are chosen without the test split, tables pair seeds.

The scripts set JAX's CPU device count when imported, so each check runs in a subprocess.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import run_process

pytestmark = pytest.mark.slow  # every check runs in a subprocess

EXPERIMENTS = Path(__file__).parent.parent / "experiments"


def run_in_experiments(code: str, tmp_path) -> str:
    done = run_process(
        [sys.executable, "-c", code],
        cwd=EXPERIMENTS,
        timeout=300,
        env={"PYTHONPATH": str(EXPERIMENTS), "PATH": "", "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_development_data_holds_no_test_example(tmp_path):
    out = run_in_experiments(
        f"""
import numpy as np
from pathlib import Path
from design import development_data
from compare import method_config
from popjax.plan import Plan
config = method_config("digits_mlp", "pbt", 101)
real = Plan.from_config(config).load_data()
dev = np.load(development_data(config, 101, Path({str(tmp_path)!r})))
rows = lambda x: {{r.tobytes() for r in x.reshape(len(x), -1)}}
test = rows(real.x_test)
training = rows(np.concatenate([real.x_train, real.x_val]))
print(len(rows(dev["x"]) & test), len(rows(dev["x_test"]) & test),
      rows(dev["x"]) | rows(dev["x_test"]) <= training,
      len(dev["x"]) + len(dev["x_test"]) == len(training), len(dev["x_test"]) > 0)
""",
        tmp_path,
    )
    assert out.split() == ["0", "0", "True", "True", "True"]


def test_paired_lead_compares_the_same_seeds_with_a_95_percent_interval(tmp_path):
    out = run_in_experiments(
        """
from compare import paired_lead
runs = [{"task": "t", "method": m, "seed": s, "test_accuracy": a} for m, s, a in [
    ("pbt", 0, 0.90), ("pbt", 1, 0.80), ("pbt", 2, 0.70), ("pbt", 4, 0.5),
    ("random", 0, 0.85), ("random", 1, 0.74), ("random", 2, 0.71), ("random", 3, 0.10)]]
print(paired_lead(runs, "t"))
from compare import optimism
print("OPTIMISM", optimism({"val_accuracy": 0.9, "test_accuracy": 0.85}),
      optimism({"metric": "loss", "val_loss": 0.5, "test_loss": 0.6}),
      optimism({"metric": "return", "val_return": 100.0, "test_return": 90.0}))
""",
        tmp_path,
    )
    # Seeds 0-2 pair up, leads of 5, 6 and -1 points; seeds 3 and 4 have no partner. The
    # interval: mean ± t(0.975, 2 degrees of freedom) x standard error, t from a printed table.
    leads = np.array([5.0, 6.0, -1.0])
    half = 4.3027 * leads.std(ddof=1) / np.sqrt(3)
    lead_line, optimism_line = out.strip().splitlines()
    # Validation overstating test: 5 points of accuracy, a loss 0.1 lower, a return 10 higher.
    assert [float(x) for x in optimism_line.split()[1:]] == pytest.approx([5.0, 0.1, 10.0])
    out = lead_line
    mean, rest = out.split(" [")
    low, high = rest.split("]")[0].split(", ")
    assert float(mean) == pytest.approx(leads.mean(), abs=0.005)
    assert float(low) == pytest.approx(leads.mean() - half, abs=0.01)
    assert float(high) == pytest.approx(leads.mean() + half, abs=0.01)
    assert out.strip().endswith("2-1 of 3")  # seeds won and lost


def test_design_table_chooses_each_methods_best_mean(tmp_path):
    out = run_in_experiments(
        """
from design import design_table
runs = [{"method": m, "setup": s, "seed": i, "dev_test_accuracy": a}
        for m, s, accuracies in [("pbt", "a", (0.9, 0.7)), ("pbt", "b", (0.85, 0.85)),
                                 ("random", "a", (0.6, 0.6)), ("random", "b", (0.5, 0.5))]
        for i, a in enumerate(accuracies)]
for line in design_table(runs).splitlines()[2:]:
    print(line.split("|")[1].strip(), line.split("|")[2].strip(), line.split("|")[4].strip())
""",
        tmp_path,
    )
    # pbt: "b" (85%) beats "a" (80%); random: "a" (60%) beats "b" (50%)
    chosen = [line.strip() for line in out.splitlines()]
    assert chosen == ["pbt a", "pbt b yes", "random a yes", "random b"]


def test_design_keeps_the_saved_runs_of_the_methods_not_run_again(tmp_path):
    out = run_in_experiments(
        f"""
import json
from pathlib import Path
from design import with_saved_runs
out = Path({str(tmp_path / "design.json")!r})
out.write_text(json.dumps({{"task": "t", "runs": [
    {{"method": "halving", "seed": 0}}, {{"method": "pbt", "seed": 0}}]}}))
print([(r["method"], r["seed"]) for r in with_saved_runs(out, "t", [
    {{"method": "halving", "seed": 1}}])])
print(len(with_saved_runs(out, "other task", [{{"method": "halving", "seed": 1}}])))
""",
        tmp_path,
    )
    kept, other = out.strip().splitlines()
    assert kept == "[('pbt', 0), ('halving', 1)]"  # the old halving run replaced, in order
    assert other == "1"  # another task's file is not merged


def test_check_reruns_stored_rows_and_fails_outside_the_tolerance(tmp_path):
    out = run_in_experiments(
        f"""
import json
from compare import main
stored = {str(tmp_path / "results.json")!r}
args = ["diabetes_regression", "mfpbt", "0", "--out", stored]
assert main(["--tasks", args[0], "--methods", args[1], "--seeds", args[2], *args[3:]]) == 0
print("RC", main(["--check", *args]))
results = json.load(open(stored))
results["runs"][0]["test_loss"] += 0.05  # one seed: no spread, so the floor (0.01) decides
json.dump(results, open(stored, "w"))
before = open(stored).read()
print("RC", main(["--check", *args]))
print("UNCHANGED", open(stored).read() == before)
""",
        tmp_path,
    )
    lines = [
        line
        for line in out.splitlines()
        if "seed 0: stored" in line or line.startswith(("RC", "UNCHANGED"))
    ]
    assert "identical" in lines[0] and lines[1] == "RC 0"  # same machine: bit for bit
    assert "difference -0.0500 OUTSIDE" in lines[2] and lines[3] == "RC 1"
    assert lines[4] == "UNCHANGED True"
