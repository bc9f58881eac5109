"""Executes every notebook in notebooks/ top to bottom on a small slice (as CI does)."""

import os
from pathlib import Path

import nbformat
import pytest
from conftest import shared_data_dir
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    notebook = nbformat.read(path, as_version=4)
    monkeypatch.setenv("NOTEBOOK_SLICE", "200")
    monkeypatch.setenv("TFATTN_SHARED_DATA", str(shared_data_dir()))
    # Outputs (plots, exports) go to a scratch folder; the kernel imports tfattn from this checkout.
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(path.parents[1]), os.environ.get("PYTHONPATH")]))
    )
    NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [
        o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"
    ]
    assert not errors
