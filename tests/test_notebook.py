"""The Colab notebook runs top to bottom here, on whatever devices there are, and its first cell
installs popjax from a wheel built here, as a user uploads it."""

import os
import shutil
import sys
from pathlib import Path

import jax
import nbclient
import nbformat
import pytest

from conftest import run_process

# A notebook kernel, a wheel built and installed; Colab runs it on the oldest versions.
pytestmark = [pytest.mark.slow, pytest.mark.version_sensitive]

ROOT = Path(__file__).parents[1]
NOTEBOOK = ROOT / "experiments" / "colab_tpu.ipynb"


def test_colab_notebook_runs_top_to_bottom(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = "".join(
        out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", [])
    )
    assert "devices:" in outputs
    assert "best member" in outputs and "learning rate" in outputs
    assert not any(
        out.get("output_type") == "error"
        for cell in notebook.cells
        for out in cell.get("outputs", [])
    )


@pytest.mark.timeout(120)
def test_install_cell_installs_an_uploaded_wheel_or_says_what_to_upload(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the cell writes its constraints into the current folder
    cell = nbformat.read(NOTEBOOK, as_version=4).cells[1].source
    assert 'POPJAX_SOURCE = ""' in cell and "github.com/popjax" not in cell
    cell_names = {}
    exec(compile(cell, "install cell", "exec"), cell_names)  # popjax is here: installs nothing
    assert not (tmp_path / "runtime-constraints.txt").exists()
    popjax_source, install_popjax = cell_names["popjax_source"], cell_names["install_popjax"]

    uploads = tmp_path / "content"
    uploads.mkdir()
    with pytest.raises(FileNotFoundError, match="no popjax to install: upload a popjax wheel"):
        popjax_source("", folder=str(uploads))
    assert popjax_source("git+https://example.org/me/popjax", folder=str(uploads)) == (
        "git+https://example.org/me/popjax"
    )

    # The wheel as the README builds it, from a copy of the source (the build writes beside it).
    source = tmp_path / "source"
    shutil.copytree(
        ROOT / "popjax", source / "popjax", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    built = run_process(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation"]
        + ["--wheel-dir", str(uploads)],
        cwd=source,
        timeout=100,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = popjax_source("", folder=str(uploads))
    assert Path(wheel).name.startswith("popjax-") and wheel.endswith("-py3-none-any.whl")
    archive = uploads / "popjax-0.1.0.tar.gz"  # a source archive uploaded later is the newest
    archive.write_bytes(b"")
    os.utime(archive, (os.path.getmtime(wheel) + 10,) * 2)
    assert popjax_source("", folder=str(uploads)) == str(archive)
    archive.unlink()

    site = tmp_path / "site"
    install_popjax(wheel, "--no-deps", "--no-index", "--target", str(site))
    # The runtime's jax is pinned, and the popjax installed is the wheel's.
    constraints = (tmp_path / "runtime-constraints.txt").read_text().splitlines()
    assert f"jax=={jax.__version__}" in constraints
    done = run_process(
        [sys.executable, "-c", "import popjax.schedules; print(popjax.__file__)"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert Path(done.stdout.strip()).is_relative_to(site)
