"""The structural schema the package ships (llmd_ray/kuberay/schemas/kuberay-crds.json):
it is what our own converter derives from ../shared/kuberay-crds (drift fails), it
round-trips, and validation uses it by default, so nothing here needs ../shared
except the drift checks."""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path

import pytest
import yaml

from llmd_ray.errors import ConfigError
from llmd_ray.kuberay.cli import main
from llmd_ray.kuberay.crd import CRDRegistry
from llmd_ray.kuberay.structural import (
    SHIPPED, VERSION_KEYS, crd_source, derive, dumps, kuberay_version, load, read_crd_files, shipped_crds, strip_docs,
)

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "kuberay-crds"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"no {SHARED}: cannot check the shipped schema for drift")
KINDS = ["RayCluster.ray.io/v1", "RayCluster.ray.io/v1alpha1", "RayService.ray.io/v1", "RayService.ray.io/v1alpha1"]


def comparable(crd: dict) -> dict:
    """A source CRD as the shipped file keeps it: no documentation, printer columns or annotations."""
    spec = crd["spec"]
    versions = [{**{k: v[k] for k in VERSION_KEYS if k in v},
                 "schema": {"openAPIV3Schema": strip_docs(v["schema"]["openAPIV3Schema"])}} for v in spec["versions"]]
    return {"apiVersion": crd["apiVersion"], "kind": crd["kind"], "metadata": {"name": crd["metadata"]["name"]},
            "spec": {"group": spec["group"], "names": spec["names"], "scope": spec["scope"], "versions": versions}}


@needs_shared
def test_shipped_schema_is_regenerated_without_drift(capsys):
    rc = main(["schema", "--crds", str(SHARED), "--kuberay-version", kuberay_version(), "--check"])
    assert rc == 0, ("llmd_ray/kuberay/schemas/kuberay-crds.json differs from what ../shared/kuberay-crds gives: "
                     "python -m llmd_ray.kuberay schema --crds ../shared/kuberay-crds --kuberay-version v1.7.0\n"
                     + capsys.readouterr().err)


@needs_shared
def test_crds_rebuilt_from_the_shipped_schema_equal_the_source_crds():
    source = sorted(read_crd_files(sorted(SHARED.glob("*.yaml"))), key=lambda c: c["metadata"]["name"])
    assert shipped_crds() == [comparable(c) for c in source]


def test_shipped_schema_records_kuberay_v1_7_0_and_stays_small():
    data = load()
    assert data["kuberay_version"] == "v1.7.0"
    assert sorted(data["sources"]) == ["ray.io_rayclusters.yaml", "ray.io_rayservices.yaml"]
    assert SHIPPED.stat().st_size < 100_000  # the two source CRDs are ~2 MB of YAML
    assert "description" not in SHIPPED.read_text().replace('"description":{', "")  # no docs (a field may be named so)


def test_the_wheel_carries_the_shipped_schema():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["llmd_ray"]
    pkg = REPO / "llmd_ray"
    assert any(SHIPPED in pkg.glob(pattern) for pattern in data), data


def test_validation_uses_the_shipped_schema_by_default(monkeypatch):
    monkeypatch.delenv("LLMD_RAY_KUBERAY_CRDS", raising=False)
    assert crd_source() is None
    assert CRDRegistry.load().kinds() == KINDS
    assert {c["metadata"]["name"] for c in shipped_crds()} == {"rayclusters.ray.io", "rayservices.ray.io"}


def _small_crd(kind: str = "Widget") -> dict:
    shared = {"type": "object", "description": "doc", "properties": {
        f"field{i}": {"type": "string", "description": f"doc {i}"} for i in range(15)}}
    once = {"type": "object", "properties": {f"only{i}": {"type": "integer"} for i in range(15)}}
    schema = {"type": "object", "description": "a widget", "properties": {
        "spec": {"type": "object", "properties": {
            "left": copy.deepcopy(shared), "right": copy.deepcopy(shared),
            "pair": {"type": "array", "items": {"type": "object", "properties": {"a": once, "b": copy.deepcopy(shared)}}},
            "description": {"type": "string", "default": "a field named description"},
            "opts": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "default": {"description": "data"}},
            "port": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
        }, "required": ["left"]},
    }}
    plural = kind.lower() + "s"
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.example.com", "annotations": {"x": "y"}},
            "spec": {"group": "example.com", "scope": "Namespaced",
                     "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
                     "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                                   "additionalPrinterColumns": [{"name": "age", "type": "date", "jsonPath": ".x"}],
                                   "schema": {"openAPIV3Schema": schema}}]}}


def test_packing_round_trips_and_stores_a_repeated_subtree_once(tmp_path):
    crd = _small_crd()
    (tmp_path / "w.yaml").write_text(yaml.safe_dump(crd))
    text = dumps(derive([tmp_path / "w.yaml"], "v0.0.1"))
    data = json.loads(text)
    assert list(data["definitions"]) == [next(iter(data["definitions"]))]  # one: the thrice-repeated subtree
    assert next(iter(data["definitions"])).startswith("left-")
    assert text.count('"field7"') == 1 and '"only7"' in text and "doc" not in text
    out = tmp_path / "packed.json"
    out.write_text(text)
    rebuilt = shipped_crds(out)
    assert rebuilt == [comparable(crd)]
    spec = rebuilt[0]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["description"] == {"type": "string", "default": "a field named description"}
    assert spec["opts"]["default"] == {"description": "data"}  # data is not documentation
    assert CRDRegistry.from_crds(rebuilt).kinds() == ["Widget.example.com/v1"]


def test_schema_cli_writes_checks_and_refuses_bad_input(tmp_path, capsys):
    crds = tmp_path / "crds"
    crds.mkdir()
    (crds / "w.yaml").write_text(yaml.safe_dump(_small_crd()))
    out = tmp_path / "out"
    out.mkdir()
    assert main(["schema", "--crds", str(crds), "--kuberay-version", "v9.9.9", "--out", str(out)]) == 0
    written = out / SHIPPED.name
    assert load(written)["kuberay_version"] == "v9.9.9"
    assert main(["schema", "--crds", str(crds), "--kuberay-version", "v9.9.9", "-o", str(written), "--check"]) == 0
    (crds / "w.yaml").write_text(yaml.safe_dump(_small_crd("Gadget")))
    assert main(["schema", "--crds", str(crds), "--kuberay-version", "v9.9.9", "-o", str(written), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err
    assert main(["schema", "--crds", str(crds), "--kuberay-version", "1.7", "-o", str(written)]) == 2
    assert main(["schema", "--crds", str(out / "none"), "--kuberay-version", "v1.7.0", "-o", str(written)]) == 2


def test_a_crds_dir_or_the_env_var_overrides_the_shipped_schema(tmp_path, monkeypatch):
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(_small_crd("Gadget")))
    assert CRDRegistry.load(tmp_path).kinds() == ["Gadget.example.com/v1"]
    monkeypatch.setenv("LLMD_RAY_KUBERAY_CRDS", str(tmp_path))
    assert CRDRegistry.load().kinds() == ["Gadget.example.com/v1"]
    assert CRDRegistry.load(str(tmp_path)) is CRDRegistry.load()  # cached per source
    with pytest.raises(ConfigError, match="no CRD files in"):
        CRDRegistry.load(tmp_path / "empty")
