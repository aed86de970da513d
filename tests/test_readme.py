"""The task of the guide's page on tasks (docs/tasks.md), written from scratch, runs as the page
says: from Python and from the command line."""

import json
import re
import sys
from pathlib import Path

import pytest

from conftest import popjax_command, run_process

pytestmark = pytest.mark.slow  # the page's task in subprocesses

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
TASKS_PAGE = ROOT / "docs" / "tasks.md"


def code_block(starting: str, language: str, page: Path = TASKS_PAGE) -> str:
    """The page's fenced ``language`` block whose first line is ``starting``."""
    for block in re.findall(rf"```{language}\n(.*?)```", page.read_text(), flags=re.S):
        if block.startswith(starting):
            return block
    raise AssertionError(f"no {language} block starting with {starting!r} in {page.name}")


def test_the_guide_task_runs_from_python_and_from_the_command(tmp_path):
    (tmp_path / "my_tasks.py").write_text(code_block("# my_tasks.py", "python"))
    assert len(code_block("# my_tasks.py", "python").splitlines()) <= 40
    script = code_block("import popjax\nfrom my_tasks import linear", "python")
    done = run_process([sys.executable, "-c", script], cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    val_loss, test_loss = (float(x) for x in done.stdout.split()[:2])
    assert val_loss < 0.05 and test_loss < 0.05  # the noise alone costs 0.01

    (tmp_path / "my.toml").write_text(code_block("# my.toml", "toml"))
    done = popjax_command(
        "run", "my.toml", "--out", "run", "--quiet", cwd=tmp_path, JAX_NUM_CPU_DEVICES="1"
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["task"] == "my_tasks:linear" and summary["val"]["loss"] < 0.05
    assert 0.5 <= summary["best_hparams"]["momentum"] <= 0.99  # the config's [space] applied
    assert (tmp_path / "run" / "report.md").is_file()
