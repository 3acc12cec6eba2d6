"""The example notebooks (docs/notebooks) run headless from a clean kernel and say what they should."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "docs" / "notebooks"


def run(name, tmp_path) -> str:
    """Execute ``name`` in ``tmp_path``; the text of its outputs."""
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in book.cells:  # what is saved for the docs must not count here
        if cell.cell_type == "code":
            cell.outputs = []
    nbclient.NotebookClient(book, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    texts = []
    for cell in book.cells:
        for output in cell.get("outputs", []):
            assert output.output_type != "error", output
            texts.append(output.get("text", "") + output.get("data", {}).get("text/plain", ""))
    return "\n".join(texts)


def figures(name) -> int:
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    return sum("image/png" in o.get("data", {}) for c in book.cells for o in c.get("outputs", []))


@pytest.mark.slow
def test_sxdm_notebook_reduces_a_map_file_to_maps(tmp_path):
    text = run("sxdm_reduction.ipynb", tmp_path)
    inside, total = map(int, re.search(r"(\d+) of (\d+) points in the mask", text).groups())
    assert total == 256 and 40 < inside < 200
    assert "signal: strain axes: ['y', 'x']" in text
    assert (tmp_path / "maps.h5").is_file() and (tmp_path / "data" / "nmc622_master.h5").is_file()
    assert figures("sxdm_reduction.ipynb") == 2  # the saved notebook shows its figures in the docs


@pytest.mark.slow
def test_bcdi_notebook_goes_from_a_rocking_scan_to_strain(tmp_path):
    text = run("bcdi_strain.ipynb", tmp_path)
    assert float(re.search(r"mode fraction ([\d.]+)", text).group(1)) > 0.95
    assert float(re.search(r"PRTF resolution (\d+) nm", text).group(1)) < 80
    for name in ("bcdi.cxi", "bcdi.vti", "bcdi_summary.json"):
        assert (tmp_path / "bcdi" / name).is_file(), name
    assert figures("bcdi_strain.ipynb") == 2
