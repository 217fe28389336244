"""How a ClusterSpec adapts the serve config (args_overrides merge), what the renderer refuses (old spec
`variants:`, build_pd_app, variants a worker group cannot hold), and the validator's wiring check."""

from __future__ import annotations

import copy

import pytest
import yaml

from llmd_ray.errors import ConfigError
from llmd_ray.kuberay.render import render_rayservice
from llmd_ray.kuberay.serve_config import build_serve_config, merge_args
from llmd_ray.kuberay.spec import ClusterSpec
from llmd_ray.kuberay.validate import check_app_args, check_wiring

from tests.unit.kuberay_fixtures import DEFAULT, PD_APP, spec


def app_with(**variant_over) -> dict:
    cfg = copy.deepcopy(PD_APP)
    cfg["applications"][0]["args"]["variants"][0].update(variant_over)
    return cfg


def test_merge_is_a_json_merge_patch_with_variants_merged_by_name():
    base = {"num_replicas": 2, "engine": {"model": "m", "cpu_bind": "0"}, "router": {"config": {"plugins": [1, 2]}},
            "variants": [{"name": "a", "engine": {"cpu_bind": "0"}, "num_replicas": 1, "role": "prefill"},
                         {"name": "b", "num_replicas": 1}, {"name": "c"}]}
    over = {"num_replicas": None, "engine": {"cpu_bind": None, "max_model_len": 8192},
            "router": {"config": {"plugins": [3]}},
            "variants": [{"name": "a", "engine": {"cpu_bind": None}, "num_replicas": None, "max_replicas": 4},
                         {"name": "c", "$patch": "delete"}, {"name": "d", "accelerator": "L4", "pod": None}]}
    assert merge_args(base, over) == {
        "engine": {"model": "m", "max_model_len": 8192}, "router": {"config": {"plugins": [3]}},
        "variants": [{"name": "a", "engine": {}, "role": "prefill", "max_replicas": 4},
                     {"name": "b", "num_replicas": 1}, {"name": "d", "accelerator": "L4"}]}
    assert base["variants"][0]["num_replicas"] == 1  # the serve config is not modified
    with pytest.raises(ConfigError, match="needs a `name` to merge by"):
        merge_args(base, {"variants": [{"accelerator": "L4"}]})
    with pytest.raises(ConfigError, match="'x' to delete is not in the serve config"):
        merge_args(base, {"variants": [{"name": "x", "$patch": "delete"}]})


@pytest.mark.parametrize("over, needle", [
    ({"variants": [{"name": "a", "accelerator": "H100", "max_replicas": 2}]},
     "a ClusterSpec no longer declares variants: declare each variant once in the serve config's `args.variants`"),
    ({"name": "A_B"}, "DNS-1123"),
    ({"workers": {"shm_size": "8 gigs"}}, "not a Kubernetes quantity"),
    ({"head": {"resources": {"cpu": "4 cores", "memory": "1Gi"}}}, "not a Kubernetes quantity"),
    ({"gpu": 1}, "Extra inputs are not permitted"),
    ({"model": {"name": "m", "pvc": {"claim_name": "c"}, "hub": {"secret_name": "s"}}}, "exactly one of"),
])
def test_bad_specs_are_rejected_naming_the_problem(over, needle):
    with pytest.raises(Exception, match=needle):
        spec(**over)


@pytest.mark.parametrize("cfg, needle", [
    (app_with(min_replicas=3, max_replicas=2), r"args.variants.0: Value error, min_replicas: 3 > max_replicas 2"),
    (app_with(accelerator="H100 SXM"), "accelerator 'H100 SXM' is not a Kubernetes label value"),
    (app_with(engine={}), "2 GPUs per replica but engine.tensor_parallel_size is 1"),
    (app_with(accelerators_per_replica=1), "2 GPUs per replica but accelerators_per_replica is 1"),
    (app_with(replica_num_cpus=5), "4 replica\\(s\\) x 5 CPUs do not fit a pod of 16 CPUs"),
    (app_with(replica_num_gpus=0.3, engine={}, accelerators_per_replica=1), "is not a whole number of GPUs"),
    (app_with(resources={"llmd-variant-l4-decode": 1}), "requests llmd-variant-l4-decode, another variant's"),
])
def test_variants_a_worker_group_cannot_hold_are_config_errors(cfg, needle):
    with pytest.raises(ConfigError, match=needle):
        render_rayservice(spec(), cfg, "x.yaml")


def test_an_app_without_variants_must_get_them_from_the_spec():
    with pytest.raises(ConfigError, match=r"application 'default': its args declare no `variants`.*"
                                          r"args_overrides.default.variants \(with num_replicas: null\)"):
        build_serve_config(spec(), copy.deepcopy(DEFAULT))
    with pytest.raises(ConfigError, match="num_replicas is set next to variants"):
        build_serve_config(spec(args_overrides={"default": {"variants": [{"name": "a"}]}}), copy.deepcopy(DEFAULT))


def test_deployment_entries_may_tune_a_variant_but_not_replace_it():
    cfg = copy.deepcopy(PD_APP)
    cfg["applications"][0]["deployments"] = [{"name": "LLMServer-l4-decode", "ray_actor_options": {"num_cpus": 2}}]
    with pytest.raises(ConfigError, match="'LLMServer-l4-decode' sets ray_actor_options, which replaces what build_app "
                                          "derives from the variant; set replica_num_cpus"):
        build_serve_config(spec(), cfg)
    cfg["applications"][0]["deployments"] = [{"name": "LLMServer", "max_ongoing_requests": 4}]
    with pytest.raises(ConfigError, match="with variants there is no LLMServer deployment"):
        build_serve_config(spec(), cfg)


def test_variant_names_are_unique_across_applications():
    two = copy.deepcopy(PD_APP)
    two["applications"].append({**copy.deepcopy(PD_APP["applications"][0]), "name": "b", "route_prefix": "/b"})
    with pytest.raises(ConfigError, match="variant 'h100-prefill' is in applications 'default' and 'b'"):
        render_rayservice(spec(), two, "x.yaml")


@pytest.mark.parametrize("import_path", ["llmd_ray:build_pd_app", "llmd_ray.serving.pd_app:build_pd_app"])
def test_build_pd_app_fails_saying_to_use_build_app_with_roles(import_path):
    cfg = copy.deepcopy(PD_APP)
    cfg["applications"][0]["import_path"] = import_path
    with pytest.raises(ConfigError, match="build_pd_app is gone: use import_path llmd_ray:build_app with `variants` with roles"):
        build_serve_config(spec(), cfg)
    (p,) = check_app_args(cfg["applications"][0], "spec.serveConfigV2.applications[0]", serve_schema=False)
    assert p.severity == "error" and str(p).startswith(
        "spec.serveConfigV2.applications[0].import_path: build_pd_app is gone: use import_path llmd_ray:build_app")


def rendered_pd() -> tuple[list, list]:
    doc = render_rayservice(spec(), copy.deepcopy(PD_APP), "x.yaml")
    return yaml.safe_load(doc["spec"]["serveConfigV2"])["applications"], doc["spec"]["rayClusterConfig"]["workerGroupSpecs"]


def test_wiring_check_catches_a_variant_no_group_can_host():
    apps, groups = rendered_pd()
    groups[1]["resources"] = {"llmd-variant-typo": "1"}
    groups[0]["maxReplicas"] = 1
    groups[0]["rayStartParams"]["num-gpus"] = "4"
    msgs = [str(p) for p in check_wiring(apps, groups)]
    assert len(msgs) == 3, msgs
    assert "spec.serveConfigV2.applications[0].args.variants[1].resources.llmd-variant-l4-decode: no worker group " \
           "advertises this Ray resource" in msgs[2]
    assert "4 replica(s) per pod x 2 GPUs exceed the 4 GPUs of group 'h100-prefill'" in msgs[0]
    assert "scales to 9 replicas but group 'h100-prefill' holds at most 1 pods x 4 = 4" in msgs[1]


def test_wiring_check_reads_what_serve_would_run():
    apps, groups = rendered_pd()
    del apps[0]["args"]["variants"][1]["resources"]  # a hand-written manifest: the variant is not pinned
    (p,) = check_wiring(apps, groups)
    assert str(p).startswith("spec.serveConfigV2.applications[0].args.variants[1].resources: deployment "
                             "'LLMServer-l4-decode' requests no llmd-variant-* resource")
    # A deployments entry replaces the variant's ray_actor_options and bounds, as Serve does.
    apps[0]["deployments"] = [{"name": "LLMServer-l4-decode", "num_replicas": 5,
                               "ray_actor_options": {"num_gpus": 1, "resources": {"llmd-variant-l4-decode": 1}}}]
    (p,) = check_wiring(apps, groups)
    assert str(p).startswith("spec.serveConfigV2.applications[0].deployments[0].ray_actor_options.resources."
                             "llmd-variant-l4-decode: deployment scales to 5 replicas but group 'l4-decode' holds at most 2")


def test_old_style_spec_file_fails_at_load(tmp_path):
    from llmd_ray.kuberay.cli import main

    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "image": "i", "serve_config": "s.yaml",
                                    "variants": [{"name": "h100", "accelerator": "H100", "max_replicas": 2}]}))
    assert main(["render", str(path)]) == 2
    with pytest.raises(Exception, match="declare each variant once in the serve config's `args.variants`"):
        ClusterSpec.model_validate(yaml.safe_load(path.read_text()))
