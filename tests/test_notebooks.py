"""The notebooks run top to bottom, in this venv, and are committed without outputs."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT = 300
"""Seconds one cell may take (each notebook takes well under a minute in all)."""

PREFIX_MARK = "jgradcheck-kernel-prefix:"


def test_the_notebooks_are_there():
    assert {p.name for p in NOTEBOOKS} >= {
        "error_vs_epsilon.ipynb",
        "testing_custom_vjp.ipynb",
        "finding_a_backprop_bug.ipynb",
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, monkeypatch, tmp_path):
    monkeypatch.setenv("MPLBACKEND", "Agg")  # no windows; plt.show() is a no-op
    # Resolve the "python3" kernel from this venv only, not from a user-level
    # kernelspec that could point at another interpreter.
    monkeypatch.delenv("JUPYTER_PATH", raising=False)
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))
    # As for the tests in this process (conftest.py): a JAX persistent
    # compilation cache, the kernel's own and empty at the start, serves the
    # identical programs that the notebook's repeated checks compile.
    # Cached executables are the ones XLA compiled; the outputs are unchanged.
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax-cache"))
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    nb = nbformat.read(path, as_version=4)
    # One extra cell, on the in-memory copy only: which Python ran the kernel.
    nb.cells.append(
        nbformat.v4.new_code_cell(f"import sys; print({PREFIX_MARK!r}, sys.prefix)")
    )
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        startup_timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()  # raises CellExecutionError, with the traceback, on any error
    # The kernel may send one print as several stream messages (its output is
    # flushed on a timer, which a busy machine can hit between two writes).
    text = "".join(o["text"] for o in nb.cells[-1].outputs if o.get("name") == "stdout")
    assert text.split(PREFIX_MARK)[1].splitlines()[0].strip() == sys.prefix


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        k
        for k, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count)
    ]
    assert not dirty, (
        f"{path.name}: cells {dirty} have outputs or execution counts; clear them "
        "before committing (in Jupyter: Edit > Clear Outputs of All Cells)."
    )
