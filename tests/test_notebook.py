"""The Colab notebook runs top to bottom here, on whatever devices there are."""

from pathlib import Path

import nbclient
import nbformat

NOTEBOOK = Path(__file__).parents[1] / "experiments" / "colab_tpu.ipynb"


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
