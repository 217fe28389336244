"""The CRD -> JSON Schema converter against KubeRay v1.7.0's CRDs (the structural schema the
package ships; no ../shared needed): good manifests pass, and a bad manifest gets one error of
each kind, by JSON path."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from llmd_ray.kuberay.cli import main
from llmd_ray.kuberay.crd import CRDRegistry, apply_defaults, to_json_schema
from llmd_ray.kuberay.validate import validate_document

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((REPO / "kuberay").glob("*.yaml"))


@pytest.fixture(scope="module")
def registry() -> CRDRegistry:
    return CRDRegistry.load()


@pytest.fixture
def good() -> dict:
    return yaml.safe_load((REPO / "kuberay" / "aggregated.yaml").read_text())


def errors(doc: dict, registry: CRDRegistry) -> list[str]:
    return [str(p) for p in validate_document(doc, registry, serve_schema=False) if p.severity == "error"]


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_checked_in_manifests_are_valid(path, registry):
    for doc in yaml.safe_load_all(path.read_text()):
        assert errors(doc, registry) == []


def test_the_cluster_part_is_a_valid_raycluster(good, registry):
    cluster = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "c", "namespace": "llm"},
               "spec": good["spec"]["rayClusterConfig"]}
    assert errors(cluster, registry) == []


def test_bad_manifest_gets_one_error_of_each_kind(good, registry):
    bad = copy.deepcopy(good)
    rc = bad["spec"]["rayClusterConfig"]
    head = rc["headGroupSpec"]["template"]["spec"]["containers"][0]
    worker = rc["workerGroupSpecs"][0]
    worker["rayStartParams"]["num-gpus"] = 1                          # type
    worker["minReplica"] = 1                                          # unknown field (typo)
    del head["name"]                                                  # required
    rc["autoscalerOptions"]["version"] = "v3"                         # enum
    head["resources"]["limits"]["memory"] = "16 GB"                   # pattern (quantity)
    worker["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = 8.5  # int-or-string
    rc["rayVersion"] = None                                           # null where not nullable
    worker["maxReplicas"] = 2**31                                     # int32 range
    bad["spec"]["rayClusterDeletionDelaySeconds"] = -1                # minimum
    bad["metadata"]["label"] = {"a": "b"}                             # unknown ObjectMeta field
    quantity = r"'^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$'"
    assert errors(bad, registry) == [
        "metadata.label: unknown field 'label' (did you mean 'labels'?)",
        "spec.rayClusterConfig.autoscalerOptions.version: 'v3' is not one of ['v1', 'v2']",
        "spec.rayClusterConfig.headGroupSpec.template.spec.containers[0].name: required field is missing",
        f"spec.rayClusterConfig.headGroupSpec.template.spec.containers[0].resources.limits.memory: '16 GB' does not match {quantity}",
        "spec.rayClusterConfig.rayVersion: None is not of type 'string'",
        "spec.rayClusterConfig.workerGroupSpecs[0].maxReplicas: 2147483648 is out of range for int32",
        "spec.rayClusterConfig.workerGroupSpecs[0].minReplica: unknown field 'minReplica' (did you mean 'minReplicas'?)",
        "spec.rayClusterConfig.workerGroupSpecs[0].rayStartParams.num-gpus: 1 is not of type 'string'",
        "spec.rayClusterConfig.workerGroupSpecs[0].template.spec.containers[0].resources.limits.cpu: 8.5 is not of type 'integer', 'string'",
        "spec.rayClusterDeletionDelaySeconds: -1 is less than the minimum of 0",
    ]


def test_defaults_apply_before_validation(good, registry):
    doc = copy.deepcopy(good)
    group = doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    del group["minReplicas"], group["maxReplicas"]  # both `required`, both defaulted
    assert errors(doc, registry) == []
    schema = registry.get("ray.io/v1", "RayService")
    defaulted = apply_defaults(copy.deepcopy(doc), schema.openapi)
    g = defaulted["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert (g["minReplicas"], g["maxReplicas"], g["numOfHosts"]) == (0, 2147483647, 1)
    assert "minReplicas" not in group  # the caller's document is not modified


def test_int_or_string_accepts_both_and_nullable_accepts_null(good, registry):
    doc = copy.deepcopy(good)
    limits = doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"]
    limits["cpu"], limits["memory"] = 8, "64Gi"
    doc["status"] = {"activeServiceStatus": {"rayClusterStatus": {"lastUpdateTime": None}}}
    assert errors(doc, registry) == []
    doc["status"]["activeServiceStatus"]["rayClusterStatus"]["lastUpdateTime"] = 5
    assert errors(doc, registry) == [
        "status.activeServiceStatus.rayClusterStatus.lastUpdateTime: 5 is not of type 'string', 'null'"]


def test_converter_rules_on_small_schemas():
    node = {"type": "object", "properties": {
        "port": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
        "when": {"type": "string", "nullable": True, "enum": ["a"]},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {"x": {"type": "string"}}},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    }}
    js = to_json_schema(node)
    assert js["additionalProperties"] is False
    assert js["properties"]["port"] == {"type": ["integer", "string"]}
    assert js["properties"]["when"] == {"type": ["string", "null"], "enum": ["a", None]}
    assert "additionalProperties" not in js["properties"]["free"]
    assert js["properties"]["labels"]["additionalProperties"] == {"type": "string"}


def test_unknown_kind_is_an_error(registry):
    (problem,) = validate_document({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}}, registry)
    assert "no CRD schema for apiVersion 'v1' kind 'Service'" in str(problem)


def test_cli_validate_exit_codes_and_paths(good, tmp_path, capsys):
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump(good))
    assert main(["validate", "--schema-only", str(ok)]) == 0
    assert "RayService/llama-aggregated: valid" in capsys.readouterr().out
    bad = copy.deepcopy(good)
    bad["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["rayStartParams"]["num-gpus"] = 1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump_all([good, bad]))
    assert main(["validate", "--schema-only", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}[1] RayService/llama-aggregated: spec.rayClusterConfig.workerGroupSpecs[0].rayStartParams.num-gpus: " \
           "1 is not of type 'string'" in out
    assert f"{path}[0] RayService/llama-aggregated: valid" in out


def test_cli_validates_a_cluster_spec_by_rendering_it(capsys):
    assert main(["validate", "--schema-only", str(REPO / "kuberay" / "specs" / "aggregated.yaml")]) == 0
    assert "valid" in capsys.readouterr().out
