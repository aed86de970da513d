"""The suite itself: a test that fails or runs out of time leaves no process behind."""

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from conftest import run_process

pytestmark = pytest.mark.slow  # a pytest session in a subprocess

ROOT = Path(__file__).parents[1]

HANGING = '''
import sys
from pathlib import Path

import pytest

from conftest import start_process

# A child that starts a grandchild of its own, writes both ids, and waits forever.
FAMILY = """
import os, subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(sys.argv[1], "w").write(f"{os.getpid()} {grandchild.pid}")
time.sleep(600)
"""


@pytest.mark.timeout(4)
def test_runs_out_of_time(tmp_path):
    start_process([sys.executable, "-c", FAMILY, str(Path(sys.argv[0]).parent / "pids")])
    while True:
        pass


def test_fails(tmp_path):
    start_process([sys.executable, "-c", FAMILY, str(Path(sys.argv[0]).parent / "pids2")])
    while not (Path(sys.argv[0]).parent / "pids2").exists():
        pass
    assert False
'''


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has ended but not yet been reaped by its parent: it runs nothing.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


@pytest.mark.timeout(120)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_failed_and_timed_out_tests_leave_no_process_behind(tmp_path):
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")  # the suite's settings
    (tmp_path / "test_inner.py").write_text(HANGING.replace("sys.argv[0]", "__file__"))
    done = run_process(
        ["python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", "test_inner.py"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=100,
    )
    assert "2 failed" in done.stdout, done.stdout[-3000:]
    assert "Timeout" in done.stdout
    pids = [int(p) for name in ("pids", "pids2") for p in (tmp_path / name).read_text().split()]
    assert len(pids) == 4
    deadline = time.time() + 10
    while any(alive(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if alive(pid)]
