"""The checked-in manifests in kuberay/ are exactly what their specs render to.

Fix a failure with: python -m llmd_ray.kuberay render kuberay/specs/*.yaml --out-dir kuberay
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llmd_ray.kuberay.cli import main, render_text
from llmd_ray.kuberay.spec import load_spec

REPO = Path(__file__).resolve().parents[2]
SPECS = sorted((REPO / "kuberay" / "specs").glob("*.yaml"))
MANIFESTS = sorted((REPO / "kuberay").glob("*.yaml"))


def test_there_are_specs_for_the_documented_examples():
    assert {p.stem for p in SPECS} >= {"aggregated", "prefix_routing", "multi_variant", "pd"}


@pytest.mark.parametrize("spec_path", SPECS, ids=[p.stem for p in SPECS])
def test_manifest_matches_its_spec(spec_path):
    _, serve_config = load_spec(spec_path)
    if not serve_config.exists():
        pytest.skip(f"{serve_config.relative_to(REPO)} does not exist; kuberay/{spec_path.name} is rendered from it")
    manifest = REPO / "kuberay" / spec_path.name
    assert manifest.exists(), f"{manifest.relative_to(REPO)} missing: render it from {spec_path.relative_to(REPO)}"
    assert manifest.read_text() == render_text(spec_path), (
        f"{manifest.relative_to(REPO)} is out of date: "
        "python -m llmd_ray.kuberay render kuberay/specs/*.yaml --out-dir kuberay")


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_every_manifest_has_a_spec(manifest):
    assert (REPO / "kuberay" / "specs" / manifest.name).exists(), f"{manifest.name} has no spec in kuberay/specs/"


def test_worker_groups_are_the_serve_configs_variants():
    """Each checked-in manifest has one worker group per variant of its serveConfigV2 args, with its bounds."""
    import yaml

    for spec_path in SPECS:
        doc = yaml.safe_load(render_text(spec_path))
        args = yaml.safe_load(doc["spec"]["serveConfigV2"])["applications"][0]["args"]
        groups = doc["spec"]["rayClusterConfig"]["workerGroupSpecs"]
        assert [g["groupName"] for g in groups] == [v["name"] for v in args["variants"]], spec_path.name
        for g, v in zip(groups, args["variants"]):
            per_pod = (v.get("pod") or {}).get("replicas_per_pod", 1)
            assert g["maxReplicas"] == -(-v.get("max_replicas", v.get("num_replicas", 1)) // per_pod), spec_path.name


def test_render_check_reports_drift(tmp_path, capsys):
    spec = REPO / "kuberay" / "specs" / "aggregated.yaml"
    assert main(["render", str(spec), "--out-dir", str(tmp_path)]) == 0
    assert main(["render", str(spec), "--out-dir", str(tmp_path), "--check"]) == 0
    out = tmp_path / "aggregated.yaml"
    out.write_text(out.read_text().replace("maxReplicas: 8", "maxReplicas: 9"))
    assert main(["render", str(spec), "--out-dir", str(tmp_path), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err
