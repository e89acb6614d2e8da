"""The tutorial notebooks under examples/ run clean, top to bottom, in a fresh kernel (nbclient), so they never
fall out of date with the API. Each notebook asserts its own claims in its last cells (the RTL bit-exact
against qonnx, the simulation passed, the resources measured), so a run that finishes is a run that held.
The block-families notebook runs in the default suite; the two with Verilator builds and place-and-route
are slow."""

from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("01_block_generate_simulate_synth.ipynb", marks=pytest.mark.slow),
        pytest.param("02_brevitas_compile.ipynb", marks=pytest.mark.slow),
        "03_compare_block_families.ipynb",
    ],
)
def test_notebook_runs_clean(name, tmp_path, tool_cache):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        f"{name} is committed with outputs: clear them"
    )
    # the kernel inherits HARDWIRE_CACHE (the module's tool cache) and writes its files in tmp_path
    NotebookClient(
        notebook, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert not errors
    shown = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "execute_result"
    ]
    assert any("text/markdown" in output.get("data", {}) for output in shown)  # a result rendered as tables
