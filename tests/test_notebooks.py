"""Every Colab notebook runs top to bottom on the tiny model with a few steps (KERASEMOTE_SMOKE=1)."""

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.slow  # every notebook end to end: minutes; `pytest -m slow -k notebook`
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("KERASEMOTE_SMOKE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors


def test_every_notebook_opens_with_drive_setup_and_parameters():
    assert {p.name for p in NOTEBOOKS} >= {"image_generation.ipynb", "training.ipynb", "interpolation.ipynb", "classification.ipynb"}
    for path in NOTEBOOKS:
        cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        assert "drive.mount" in cells[0].source and "%pip install" in cells[0].source, path.name
        assert "SMOKE" in cells[1].source, f"{path.name}: parameters come second"
