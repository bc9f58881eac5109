"""Execute the walkthrough notebooks on the shared data and store them executed, in place.

    .venv/bin/python scripts/execute_notebooks.py                      # every notebook in notebooks/
    .venv/bin/python scripts/execute_notebooks.py notebooks/conll_ner.ipynb ...

Each notebook runs top to bottom in a fresh kernel (nbclient), as a reader would run it: without
NOTEBOOK_SLICE, so it does its real run on the shared corpora ($TFATTN_SHARED_DATA, default
../shared/data), offline, importing tfattn from this checkout. The kernel works in a scratch
folder (its current directory and TMPDIR), removed afterwards, so nothing lands in the repository
but the notebook.

The executed copy replaces the stored one only after the whole notebook ran without an error,
and atomically (written beside it, then renamed). A failing cell leaves the stored copy as it was;
the script prints one line naming the notebook and cell, goes on with the other notebooks and
exits 1. Volatile metadata (execution timings) is not stored, so a rerun's diff shows what the
outputs changed; outputs and images are kept.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
# Seconds one cell may run; a real run's training cell takes minutes on 2 CPU cores.
CELL_TIMEOUT = 3600
# Cells slower than this are reported as they finish, so a long run shows progress.
REPORT_CELLS_OVER = 5.0


def default_shared_data() -> Path:
    override = os.environ.get("TFATTN_SHARED_DATA")
    return Path(override) if override else REPO.parent / "shared" / "data"


def strip_volatile_metadata(notebook) -> None:
    """Drop what changes on every run without the outputs changing: per-cell execution timings
    (nbclient's `metadata.execution`) and notebook-level run records, if any."""
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("ExecuteTime", None)  # jupyter_contrib's timings, from a hand run
    for key in ("papermill", "widgets"):
        notebook.metadata.pop(key, None)


def kernel_environment(scratch: Path, shared_data: Path) -> dict:
    """The kernel's environment: a real run (no NOTEBOOK_SLICE) on the shared data, offline,
    tfattn from this checkout, temporary files in the scratch folder."""
    env = dict(os.environ)
    env.pop("NOTEBOOK_SLICE", None)
    env.pop("MPLBACKEND", None)  # the kernel's own inline backend shows figures
    env["TFATTN_SHARED_DATA"] = str(shared_data)
    env["HF_HUB_OFFLINE"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # no C++ start-up lines (CUDA probing on a CPU machine)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    tmp = scratch / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env["TMPDIR"] = str(tmp)
    return env


class Failure(Exception):
    """A notebook did not run to the end; the message names its cell."""


def execute(path: Path, shared_data: Path) -> nbformat.NotebookNode:
    """Run the notebook at `path` top to bottom; return the executed notebook (not written)."""
    notebook = nbformat.read(path, as_version=4)
    code_cells = [index for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
    current = {"index": None, "start": time.monotonic()}

    def on_cell_start(cell, cell_index, **_):
        current.update(index=cell_index, start=time.monotonic())

    def on_cell_executed(cell, cell_index, **_):
        seconds = time.monotonic() - current["start"]
        if cell.cell_type == "code" and seconds >= REPORT_CELLS_OVER:
            print(f"  code cell {code_cells.index(cell_index) + 1}/{len(code_cells)}: {seconds:.0f} s", flush=True)

    scratch = Path(tempfile.mkdtemp(prefix="execute_notebooks_"))
    try:
        client = NotebookClient(
            notebook,
            timeout=CELL_TIMEOUT,
            kernel_name="python3",
            record_timing=False,
            coalesce_streams=True,  # one stdout / stderr block per cell, as Jupyter shows it
            resources={"metadata": {"path": str(scratch)}},
            on_cell_start=on_cell_start,
            on_cell_executed=on_cell_executed,
        )
        try:
            client.execute(env=kernel_environment(scratch, shared_data))
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as error:
            raise Failure(describe_failure(path, notebook, current["index"], code_cells, error)) from error
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    strip_volatile_metadata(notebook)
    return notebook


def describe_failure(path, notebook, cell_index, code_cells, error) -> str:
    where = "before its first cell"
    if cell_index is not None:
        first_line = next((line for line in notebook.cells[cell_index].source.splitlines() if line.strip()), "")
        number = code_cells.index(cell_index) + 1 if cell_index in code_cells else None
        where = f"cell {cell_index + 1}" + (f" (code cell {number})" if number else "") + f" `{first_line[:60]}`"
    if isinstance(error, CellExecutionError):
        what = f"{error.ename}: {error.evalue}"
    elif isinstance(error, CellTimeoutError):
        what = f"timed out after {CELL_TIMEOUT} s"
    else:
        what = f"the kernel died ({type(error).__name__})"
    return f"error: {path.name}, {where}: {' '.join(what.split())[:300]}"


def write_atomically(notebook, path: Path) -> None:
    """Replace `path` by `notebook`, or leave it as it was if writing fails."""
    nbformat.validate(notebook)
    text = nbformat.writes(notebook) + "\n"
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(staging, 0o644)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def summary(notebook) -> str:
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    images = sum("image/png" in output.get("data", {}) for output in outputs)
    return f"{len(outputs)} outputs, {images} images"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (default: all in notebooks/)")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(NOTEBOOK_DIR.glob("*.ipynb"))
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        print(f"error: no such notebook: {', '.join(missing)}", file=sys.stderr)
        return 2
    shared_data = default_shared_data()
    if not shared_data.is_dir():
        print(f"error: shared data not found at {shared_data} (set TFATTN_SHARED_DATA)", file=sys.stderr)
        return 2

    failures = []
    for number, path in enumerate(paths, 1):
        path = path.resolve()
        print(f"[{number}/{len(paths)}] executing {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
        started = time.monotonic()
        try:
            notebook = execute(path, shared_data)
        except Failure as failure:
            print(str(failure), file=sys.stderr, flush=True)
            failures.append(path.name)
            continue
        write_atomically(notebook, path)
        seconds = time.monotonic() - started
        size = path.stat().st_size / 1024
        print(f"  stored in {seconds / 60:.1f} min ({seconds:.0f} s): {summary(notebook)}, {size:.0f} KiB", flush=True)
    if failures:
        print(f"{len(failures)} of {len(paths)} notebooks failed, left as they were: {', '.join(failures)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
