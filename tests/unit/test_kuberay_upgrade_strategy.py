"""spec.upgradeStrategy: rendered from the ClusterSpec (incremental through a gateway class, else NewCluster),
checked against the KubeRay v1.7 CRD schema and against the rules of the operator's ValidateRayServiceSpec."""

from __future__ import annotations

import copy

import pytest
import yaml
from pydantic import ValidationError

from llmd_ray.kuberay.cli import main
from llmd_ray.kuberay.crd import CRDRegistry
from llmd_ray.kuberay.render import render_spec_file
from llmd_ray.kuberay.upgrade_strategy import UpgradeSpec, describe_strategy
from llmd_ray.kuberay.validate import validate_document
from tests.unit.kuberay_fixtures import REPO

SPEC = REPO / "kuberay" / "specs" / "aggregated.yaml"
INC = "NewClusterWithIncrementalUpgrade"


@pytest.fixture(scope="module")
def registry() -> CRDRegistry:
    return CRDRegistry.load()


def problems(doc: dict, registry: CRDRegistry, severity: str = "error") -> list[str]:
    return [str(p) for p in validate_document(doc, registry, serve_schema=False) if p.severity == severity]


def test_without_a_gateway_class_the_manifest_upgrades_to_a_new_cluster(registry):
    doc = render_spec_file(SPEC, repo_root=REPO)
    assert doc["spec"]["upgradeStrategy"] == {"type": "NewCluster"}
    assert doc["spec"]["rayClusterDeletionDelaySeconds"] == 600
    assert problems(doc, registry) == [] and problems(doc, registry, "note") == []


def test_a_gateway_class_makes_it_incremental_with_valid_options(registry):
    doc = render_spec_file(SPEC, repo_root=REPO, gateway_class="istio")
    assert doc["spec"]["upgradeStrategy"] == {"type": INC, "clusterUpgradeOptions": {
        "gatewayClassName": "istio", "stepSizePercent": 10, "intervalSeconds": 30, "maxSurgePercent": 25}}
    assert problems(doc, registry) == []
    assert "through GatewayClass 'istio'" in describe_strategy(doc["spec"])


@pytest.mark.parametrize("edit, expected", [
    (lambda s: s["upgradeStrategy"].update(type="Recreate"),
     "spec.upgradeStrategy.type: 'Recreate' is not an upgrade type KubeRay v1.7 knows"),
    (lambda s: s["rayClusterConfig"].update(enableInTreeAutoscaling=False),
     f"spec.rayClusterConfig.enableInTreeAutoscaling: {INC} needs the Ray autoscaler"),
    (lambda s: s["upgradeStrategy"].pop("clusterUpgradeOptions"),
     f"spec.upgradeStrategy.clusterUpgradeOptions: required for {INC}"),
    (lambda s: s["upgradeStrategy"]["clusterUpgradeOptions"].update(stepSizePercent=50),
     "spec.upgradeStrategy.clusterUpgradeOptions.stepSizePercent: 50 must be <= maxSurgePercent (25)"),
    (lambda s: s["upgradeStrategy"]["clusterUpgradeOptions"].update(maxSurgePercent=101, stepSizePercent=5),
     "spec.upgradeStrategy.clusterUpgradeOptions.maxSurgePercent: 101 must be between 0 and 100"),
    (lambda s: s["upgradeStrategy"]["clusterUpgradeOptions"].update(intervalSeconds=0),
     "spec.upgradeStrategy.clusterUpgradeOptions.intervalSeconds: 0 must be greater than 0"),
    (lambda s: s["upgradeStrategy"]["clusterUpgradeOptions"].update(gatewayClassName=""),
     f"spec.upgradeStrategy.clusterUpgradeOptions.gatewayClassName: must name a GatewayClass for {INC}"),
    (lambda s: s["upgradeStrategy"]["clusterUpgradeOptions"].pop("intervalSeconds"),  # the CRD's own `required`
     "spec.upgradeStrategy.clusterUpgradeOptions.intervalSeconds: required field is missing"),
    (lambda s: s["upgradeStrategy"]["clusterUpgradeOptions"].update(stepSizePercent="10"),  # the CRD's types
     "spec.upgradeStrategy.clusterUpgradeOptions.stepSizePercent: '10' is not of type 'integer'"),
    (lambda s: s.update(rayClusterDeletionDelaySeconds=-1),
     "spec.rayClusterDeletionDelaySeconds: -1 is less than the minimum of 0"),
], ids=["type", "autoscaler", "options", "step>surge", "surge-range", "interval", "gateway", "required", "type-int",
        "deletion-delay"])
def test_what_kuberay_refuses_is_an_error_with_its_path(registry, edit, expected):
    doc = render_spec_file(SPEC, repo_root=REPO, gateway_class="istio")
    edit(doc["spec"])
    assert expected in "\n".join(problems(doc, registry))


def test_options_without_the_incremental_type_are_a_note_not_an_error(registry):
    doc = render_spec_file(SPEC, repo_root=REPO)
    doc["spec"]["upgradeStrategy"]["clusterUpgradeOptions"] = {"gatewayClassName": "istio", "stepSizePercent": 10,
                                                                "intervalSeconds": 30}
    assert problems(doc, registry) == []
    assert problems(doc, registry, "note") == [
        "spec.upgradeStrategy.clusterUpgradeOptions: note: ignored: only NewClusterWithIncrementalUpgrade reads them "
        "(type is NewCluster)"]


def test_the_spec_model_refuses_a_step_larger_than_the_surge():
    with pytest.raises(ValidationError, match="step_size_percent 30 must be <= max_surge_percent 20"):
        UpgradeSpec(gateway_class="istio", step_size_percent=30, max_surge_percent=20)
    assert UpgradeSpec().type == "NewCluster" and UpgradeSpec(gateway_class="eg").type == INC


def test_cli_render_takes_a_gateway_class(tmp_path, capsys):
    out = tmp_path / "agg.yaml"
    assert main(["render", str(SPEC), "-o", str(out), "--gateway-class", "eg"]) == 0
    text = out.read_text()
    assert "--gateway-class eg` from" in text.splitlines()[0]
    doc = yaml.safe_load(text)
    assert doc["spec"]["upgradeStrategy"]["clusterUpgradeOptions"]["gatewayClassName"] == "eg"
    assert main(["validate", str(out), "--schema-only"]) == 0
    # the checked-in manifests are rendered without one
    assert yaml.safe_load((REPO / "kuberay" / "aggregated.yaml").read_text())["spec"]["upgradeStrategy"] == {
        "type": "NewCluster"}
    capsys.readouterr()


def test_every_checked_in_manifest_sets_a_strategy(registry):
    for path in sorted((REPO / "kuberay").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc.get("kind") == "RayService":
                assert copy.deepcopy(doc["spec"]["upgradeStrategy"])["type"] in ("NewCluster", INC), path
