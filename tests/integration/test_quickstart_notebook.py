"""notebooks/01_quickstart.ipynb runs top to bottom (it starts its own cluster)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.own_cluster
def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMD_RAY_PORT", os.environ.get("LLMD_RAY_NB_PORT", "18100"))
    nb = nbformat.read(ROOT / "notebooks" / "01_quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "tiny-llama" in outputs
    assert "completion_tokens=12" in outputs
