"""serveConfigV2 of the rendered RayServices against Ray's own ServeDeploySchema
and our AppArgs, and the deployments build_app makes from the rendered args against
the worker groups (these import Ray, so they live in this tier). No Ray cluster is started."""

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
    cfg["applications"][0]["deployments"] = [{"name": "LLMServer-h100", "max_ongoing_requests": 0}]
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
                             "import_path 'example:build_other_app' (known: llmd_ray:build_app)")


def test_pd_args_are_checked_with_app_args():
    cfg, groups = serve_cfg("pd.yaml")
    cfg["applications"][0]["args"]["pd"]["transport"] = "carrier-pigeon"
    (p,) = validate_serve_config_text(yaml.safe_dump(cfg), groups)
    assert str(p).startswith("spec.serveConfigV2.applications[0].args.pd.transport: AppArgs: Input should be ")


def test_a_manifest_naming_build_pd_app_fails_saying_what_to_write():
    cfg, groups = serve_cfg("pd.yaml")
    cfg["applications"][0]["import_path"] = "llmd_ray:build_pd_app"
    msgs = [str(p) for p in validate_serve_config_text(yaml.safe_dump(cfg), groups)]
    assert msgs == ["spec.serveConfigV2.applications[0].import_path: build_pd_app is gone: use import_path "
                    "llmd_ray:build_app with `variants` with roles, e.g. [{name: prefill, role: prefill}, "
                    "{name: decode, role: decode}], and the transport and decider under `pd:`"]


def test_the_renderers_app_defaults_are_app_args_defaults():
    from llmd_ray.kuberay.groups import APP_DEFAULTS
    from llmd_ray.serving.app import AppArgs

    assert APP_DEFAULTS == {k: AppArgs.model_fields[k].default for k in APP_DEFAULTS}


@pytest.mark.parametrize("name", ["pd.yaml", "multi_variant.yaml", "aggregated.yaml"])
def test_build_app_on_the_rendered_args_makes_what_the_worker_groups_host(name):
    """The deployments build_app makes from serveConfigV2's args: one per variant, pinned to its group by
    llmd-variant-<name>, with the group's GPUs, bounds the group holds, and the variant the policy reads."""
    from ray.serve._private.build_app import build_app as serve_build

    from llmd_ray import build_app
    from llmd_ray.topology.carry import read

    cfg, groups = serve_cfg(name)
    app = cfg["applications"][0]
    built = serve_build(build_app(app["args"]), name=app["name"])
    deps = {d.name: d for d in built.deployments}
    for g in groups:
        dep = deps[f"LLMServer-{g['groupName']}"]
        per_pod = int(g["resources"][f"llmd-variant-{g['groupName']}"])
        assert dep.ray_actor_options["resources"] == {f"llmd-variant-{g['groupName']}": 1}
        assert dep.ray_actor_options["num_gpus"] * per_pod == int(g["rayStartParams"]["num-gpus"])
        auto = dep._deployment_config.autoscaling_config
        assert -(-auto.max_replicas // per_pod) == g["maxReplicas"]
        assert -(-auto.min_replicas // per_pod) == g["minReplicas"]
        variant, _ = read(auto.policy.policy_kwargs)
        assert (variant.name, variant.max_replicas, variant.accelerator) == (
            g["groupName"], auto.max_replicas, g["template"]["metadata"]["labels"]["llmd-ray/accelerator"])
    assert {d for d in deps if d.startswith("LLMServer")} == {f"LLMServer-{g['groupName']}" for g in groups}


def test_missing_hash_seed_and_bad_yaml_are_errors():
    cfg, groups = serve_cfg()
    broken = copy.deepcopy(cfg)
    del broken["applications"][0]["runtime_env"]["env_vars"]["PYTHONHASHSEED"]
    (p,) = validate_serve_config_text(yaml.safe_dump(broken), groups)
    assert str(p).startswith("spec.serveConfigV2.applications[0].runtime_env.env_vars.PYTHONHASHSEED: missing")
    (p,) = validate_serve_config_text("applications: [\n", groups)
    assert str(p).startswith("spec.serveConfigV2: not valid YAML")
