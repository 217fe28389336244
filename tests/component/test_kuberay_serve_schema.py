"""serveConfigV2 of the rendered RayServices against Ray's own ServeDeploySchema
and our AppArgs (these checks import Ray, so they live in this tier).
No Ray cluster is started."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from llmd_ray.kuberay.crd import CRDRegistry
from llmd_ray.kuberay.validate import validate_document, validate_serve_config_text

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((REPO / "kuberay").glob("*.yaml"))


@pytest.fixture(scope="module")
def registry() -> CRDRegistry:
    return CRDRegistry.load()


def serve_cfg(name: str = "aggregated.yaml") -> tuple[dict, list]:
    doc = yaml.safe_load((REPO / "kuberay" / name).read_text())
    return yaml.safe_load(doc["spec"]["serveConfigV2"]), doc["spec"]["rayClusterConfig"]["workerGroupSpecs"]


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_checked_in_manifests_pass_serve_deploy_schema_and_app_args(path, registry):
    for doc in yaml.safe_load_all(path.read_text()):
        assert [str(p) for p in validate_document(doc, registry)] == []  # no errors, and nothing left unchecked


def test_serve_schema_errors_carry_the_path():
    cfg, groups = serve_cfg()
    cfg["applications"][0]["deployments"][0]["max_ongoing_requests"] = 0
    msgs = [str(p) for p in validate_serve_config_text(yaml.safe_dump(cfg), groups)]
    assert len(msgs) == 1
    assert msgs[0].startswith("spec.serveConfigV2.applications[0].deployments[0].max_ongoing_requests: ServeDeploySchema: ")


def test_app_args_are_checked_with_our_model():
    cfg, groups = serve_cfg()
    args = cfg["applications"][0]["args"]
    args["num_replica"] = 3
    args["engine"]["max_model_len"] = 1
    msgs = sorted(str(p) for p in validate_serve_config_text(yaml.safe_dump(cfg), groups))
    assert msgs[0] == "spec.serveConfigV2.applications[0].args.engine.max_model_len: AppArgs: Input should be greater than or equal to 16"
    assert msgs[1] == "spec.serveConfigV2.applications[0].args.num_replica: AppArgs: Extra inputs are not permitted"


def test_unknown_builders_are_reported_not_passed_silently():
    cfg, groups = serve_cfg()
    cfg["applications"][0]["import_path"] = "example:build_other_app"
    (p,) = validate_serve_config_text(yaml.safe_dump(cfg), groups)
    assert p.severity == "note"
    assert str(p).startswith("spec.serveConfigV2.applications[0].args: note: not checked: no known args model for "
                             "import_path 'example:build_other_app' (known: llmd_ray:build_app, llmd_ray:build_pd_app")


def test_pd_args_are_checked_with_the_pd_model():
    cfg, groups = serve_cfg("pd.yaml")
    cfg["applications"][0]["args"]["pd"]["transport"] = "carrier-pigeon"
    (p,) = validate_serve_config_text(yaml.safe_dump(cfg), groups)
    assert str(p).startswith("spec.serveConfigV2.applications[0].args.pd.transport: PDAppArgs: Input should be ")


def test_missing_hash_seed_and_bad_yaml_are_errors():
    cfg, groups = serve_cfg()
    broken = copy.deepcopy(cfg)
    del broken["applications"][0]["runtime_env"]["env_vars"]["PYTHONHASHSEED"]
    (p,) = validate_serve_config_text(yaml.safe_dump(broken), groups)
    assert str(p).startswith("spec.serveConfigV2.applications[0].runtime_env.env_vars.PYTHONHASHSEED: missing")
    (p,) = validate_serve_config_text("applications: [\n", groups)
    assert str(p).startswith("spec.serveConfigV2: not valid YAML")
