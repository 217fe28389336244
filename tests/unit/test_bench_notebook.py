"""notebooks/02_benchmarks.ipynb runs top to bottom on the committed sample results."""

import json
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "02_benchmarks.ipynb"
SAMPLES = ROOT / "tests" / "data" / "bench"


def test_sample_results_load():
    from llmd_ray.bench.report import load_records, load_result

    results = sorted(SAMPLES.rglob("result.json"))
    assert len(results) >= 4
    for p in results:
        res = load_result(p)
        assert res.summary.completed > 0 and len(load_records(p)) == res.summary.completed + res.summary.failed
    assert list(SAMPLES.rglob("sweep.json")) and list(SAMPLES.rglob("compare.json"))


@pytest.mark.timeout(600)
def test_notebook_executes(monkeypatch):
    monkeypatch.setenv("BENCH_RESULTS", str(SAMPLES))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert sum(1 for o in outputs if "image/png" in o.get("data", {})) >= 4
    text = "".join(o.get("text", "") for o in outputs)
    runs = sorted(r.parent.relative_to(SAMPLES).as_posix() for r in SAMPLES.rglob("result.json"))
    assert f"{len(runs)} runs under {SAMPLES.resolve()}" in text
    table = text.splitlines()
    for name in runs:  # the summary table has a row per run
        assert any(line.startswith(name + " ") for line in table), name
    for path in sorted(SAMPLES.rglob("compare.json")):  # and each A/B compare its header line
        cmp = json.loads(path.read_text())
        assert f"{cmp['name']}: {cmp['label_a']} / {cmp['label_b']}, {cmp['phases']} phase pair(s)" in text
