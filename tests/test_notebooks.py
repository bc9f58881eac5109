"""The notebooks in notebooks/: stored executed, so they read on GitHub without running them
(`scripts/execute_notebooks.py` writes them from a real run), and still running top to bottom on
a small slice, as CI executes them (in memory: the stored copies are never rewritten)."""

import hashlib
import os
from pathlib import Path

import nbformat
import pytest
from conftest import missing, shared_data_dir
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
IDS = [path.name for path in NOTEBOOKS]
PNG = "iVBORw0KGgo="  # what an image output holds, base64; its content does not matter here


def execution_problems(notebook) -> list[str]:
    """Why `notebook` is not a copy executed top to bottom in one fresh kernel: code cells not
    executed or out of order (counts must read 1, 2, 3, ...), error outputs, no PNG image."""
    problems, counts = [], []
    images = 0
    for number, cell in enumerate(notebook.cells, 1):
        if cell.cell_type != "code" or not cell.source.strip():  # an empty cell is never executed
            continue
        counts.append(cell.get("execution_count"))
        if counts[-1] is None:
            problems.append(f"cell {number} has no execution count (not executed)")
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                problems.append(f"cell {number} has an error output: {output.get('ename')}: {output.get('evalue')}")
            images += "image/png" in output.get("data", {})
    if None not in counts and counts != list(range(1, len(counts) + 1)):
        problems.append(f"execution counts {counts} are not 1, 2, 3, ... in cell order")
    if not images:
        problems.append("no image/png output")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_stored_executed(path):
    problems = execution_problems(nbformat.read(path, as_version=4))
    assert not problems, f"{path.name} is not stored executed (run scripts/execute_notebooks.py {path.name}): " + (
        "; ".join(problems)
    )


def _executed_notebook():
    cells = [
        new_markdown_cell("# Title"),
        new_code_cell("x = 1", execution_count=1),
        new_code_cell(
            "plot()",
            execution_count=2,
            outputs=[new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"})],
        ),
        new_code_cell("", execution_count=None),
    ]
    return new_notebook(cells=cells)


def test_execution_check_accepts_an_executed_notebook():
    assert execution_problems(_executed_notebook()) == []


def test_execution_check_flags_unexecuted_notebooks():
    # Outputs cleared, as the notebooks were stored before: no count, no image.
    cleared = _executed_notebook()
    for cell in cleared.cells:
        if cell.cell_type == "code":
            cell.execution_count, cell.outputs = None, []
    assert execution_problems(cleared) == [
        "cell 2 has no execution count (not executed)",
        "cell 3 has no execution count (not executed)",
        "no image/png output",
    ]
    # A cell left unexecuted, cells run out of order or twice, a failed cell.
    partly = _executed_notebook()
    partly.cells[1].execution_count = None
    assert execution_problems(partly) == ["cell 2 has no execution count (not executed)"]
    reordered = _executed_notebook()
    reordered.cells[1].execution_count, reordered.cells[2].execution_count = 2, 1
    assert execution_problems(reordered) == ["execution counts [2, 1] are not 1, 2, 3, ... in cell order"]
    rerun = _executed_notebook()
    rerun.cells[2].execution_count = 5
    assert execution_problems(rerun) == ["execution counts [1, 5] are not 1, 2, 3, ... in cell order"]
    failed = _executed_notebook()
    failed.cells[1].outputs = [new_output("error", ename="NameError", evalue="name 'y' is not defined", traceback=[])]
    assert execution_problems(failed) == ["cell 2 has an error output: NameError: name 'y' is not defined"]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs(path, tmp_path, monkeypatch):
    if not shared_data_dir().is_dir():
        missing(f"real data not found at {shared_data_dir()}")
    stored = path.read_bytes()
    notebook = nbformat.reads(stored.decode("utf-8"), as_version=4)
    monkeypatch.setenv("NOTEBOOK_SLICE", "200")
    monkeypatch.setenv("TFATTN_SHARED_DATA", str(shared_data_dir()))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # figures show through the kernel's inline backend
    # Outputs (plots, exports, temporary folders) go to a scratch folder; the kernel imports
    # tfattn from this checkout.
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(path.parents[1]), os.environ.get("PYTHONPATH")]))
    )
    NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    assert not execution_problems(notebook)
    # Executed in memory only: the stored, executed copy is what scripts/execute_notebooks.py wrote.
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(stored).digest()
