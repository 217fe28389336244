"""ClusterSpec -> RayService: head and worker groups, serveConfigV2, and the
deployment -> worker-group wiring through `llmd-variant-<name>` Ray resources."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from llmd_ray.errors import ConfigError
from llmd_ray.kuberay.render import render_rayservice, render_spec_file
from llmd_ray.kuberay.serve_config import build_serve_config, load_serve_config
from llmd_ray.kuberay.spec import ClusterSpec, VariantSpec, load_spec
from llmd_ray.kuberay.validate import check_wiring

REPO = Path(__file__).resolve().parents[2]
DEFAULT = yaml.safe_load((REPO / "serve_configs" / "default.yaml").read_text())

# A two-deployment app, shaped like a P/D config, written here so the test
# does not depend on which serve configs exist.
PD_LIKE = {
    "proxy_location": "EveryNode",
    "http_options": {"host": "127.0.0.1", "port": 8000},
    "applications": [{
        "name": "default", "route_prefix": "/", "import_path": "example:build_pd_app",
        "args": {"prefill": {"engine": {"model": "tiny-llama"}}, "decode": {"engine": {"model": "tiny-llama"}}},
        "deployments": [{"name": "DecodeServer", "max_ongoing_requests": 64,
                         "autoscaling_config": {"target_ongoing_requests": 8},
                         "ray_actor_options": {"runtime_env": {"env_vars": {"X": "1"}}}}],
    }],
}


def spec(**over) -> ClusterSpec:
    base = {
        "name": "llama", "namespace": "llm", "image": "img:1", "serve_config": "unused.yaml",
        "model": {"name": "meta-llama/Llama-3.1-8B-Instruct", "pvc": {"claim_name": "weights", "path": "llama"}},
        "variants": [
            {"name": "h100-prefill", "deployment": "PrefillServer", "role": "prefill", "accelerator": "H100",
             "gpus_per_replica": 2, "replicas_per_pod": 4, "cpus_per_replica": 1.5, "min_replicas": 1, "max_replicas": 9,
             "pod": {"cpu": "16", "memory": "128Gi"}, "node_selector": {"gpu": "h100"},
             "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
            {"name": "l4-decode", "deployment": "DecodeServer", "role": "decode", "accelerator": "L4",
             "gpus_per_replica": 1, "min_replicas": 2, "max_replicas": 2, "node_selector": {"gpu": "l4"}},
        ],
    }
    base.update(over)
    return ClusterSpec.model_validate(base)


def rendered(s: ClusterSpec | None = None, cfg: dict | None = None) -> tuple[dict, dict]:
    doc = render_rayservice(s or spec(), copy.deepcopy(cfg or PD_LIKE), "serve_configs/pd.yaml")
    return doc, yaml.safe_load(doc["spec"]["serveConfigV2"])


def test_head_schedules_no_gpu_work_and_autoscaling_is_v2():
    doc, _ = rendered()
    rc = doc["spec"]["rayClusterConfig"]
    head = rc["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    (container,) = head["template"]["spec"]["containers"]
    assert not any(k.endswith("gpu") for k in container["resources"]["limits"])
    assert "resources" not in head  # no llmd-variant-* resource: no LLM replica can land on the head
    assert rc["enableInTreeAutoscaling"] is True and rc["autoscalerOptions"]["version"] == "v2"
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayService"


def test_one_worker_group_per_variant_with_its_hardware():
    doc, _ = rendered()
    groups = doc["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert [g["groupName"] for g in groups] == ["h100-prefill", "l4-decode"]
    h100, l4 = groups
    pod = h100["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "h100"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    limits = pod["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "16", "memory": "128Gi", "nvidia.com/gpu": "8"}  # 4 replicas x 2 GPUs
    # 1..9 replicas at 4 per pod -> 1..3 pods
    assert (h100["minReplicas"], h100["maxReplicas"], h100["replicas"]) == (1, 3, 1)
    assert h100["resources"] == {"llmd-variant-h100-prefill": "4"}
    assert (l4["minReplicas"], l4["maxReplicas"]) == (2, 2)
    assert l4["template"]["spec"]["nodeSelector"] == {"gpu": "l4"}
    assert l4["template"]["metadata"]["labels"]["llmd-ray/role"] == "decode"


def test_ray_start_params_are_strings_everywhere():
    doc, _ = rendered()
    rc = doc["spec"]["rayClusterConfig"]
    for group in [rc["headGroupSpec"], *rc["workerGroupSpecs"]]:
        assert group["rayStartParams"] and all(isinstance(v, str) for v in group["rayStartParams"].values())
        assert all(isinstance(v, str) for v in group.get("resources", {}).values())


def test_each_deployment_requests_its_groups_resource():
    doc, serve = rendered()
    deps = {d["name"]: d for d in serve["applications"][0]["deployments"]}
    groups = {g["groupName"]: g for g in doc["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    for variant, dep in (("h100-prefill", "PrefillServer"), ("l4-decode", "DecodeServer")):
        wanted = deps[dep]["ray_actor_options"]["resources"]
        assert wanted == {f"llmd-variant-{variant}": 1}
        assert f"llmd-variant-{variant}" in groups[variant]["resources"]
    assert deps["PrefillServer"]["ray_actor_options"]["num_gpus"] == 2
    assert deps["PrefillServer"]["ray_actor_options"]["num_cpus"] == 1.5
    assert check_wiring(serve["applications"], list(groups.values())) == []


def test_replica_bounds_and_existing_deployment_options_are_kept():
    _, serve = rendered()
    deps = {d["name"]: d for d in serve["applications"][0]["deployments"]}
    assert deps["PrefillServer"]["num_replicas"] == "auto"
    assert deps["PrefillServer"]["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 9}
    decode = deps["DecodeServer"]  # min == max: a fixed count, the serve config's autoscaling dropped
    assert decode["num_replicas"] == 2 and "autoscaling_config" not in decode
    assert decode["max_ongoing_requests"] == 64
    assert decode["ray_actor_options"]["runtime_env"] == {"env_vars": {"X": "1"}}


def test_serve_config_is_the_same_file_with_documented_changes_only():
    s = spec(variants=[{"name": "h100", "accelerator": "H100", "max_replicas": 4}])
    _, serve = rendered(s, DEFAULT)
    expected = copy.deepcopy(DEFAULT)
    expected["http_options"]["host"] = "0.0.0.0"
    app = expected["applications"][0]
    app["args"]["engine"].update(model="/models/llama", served_model_name="meta-llama/Llama-3.1-8B-Instruct")
    app["deployments"] = [{
        "name": "LLMServer",
        "ray_actor_options": {"num_cpus": 1.0, "num_gpus": 1, "resources": {"llmd-variant-h100": 1}},
        "num_replicas": "auto", "autoscaling_config": {"min_replicas": 1, "max_replicas": 4},
    }]
    assert serve == expected
    assert serve["applications"][0]["runtime_env"]["env_vars"]["PYTHONHASHSEED"] == "0"


def test_hash_seed_is_added_when_the_serve_config_lacks_it():
    cfg = copy.deepcopy(PD_LIKE)
    _, serve = rendered(spec(python_hash_seed="42"), cfg)
    assert serve["applications"][0]["runtime_env"]["env_vars"] == {"PYTHONHASHSEED": "42"}


def test_every_engine_block_points_at_the_pvc_model_and_pods_mount_it():
    doc, serve = rendered()
    args = serve["applications"][0]["args"]
    for role in ("prefill", "decode"):
        assert args[role]["engine"]["model"] == "/models/llama"
        assert args[role]["engine"]["served_model_name"] == "meta-llama/Llama-3.1-8B-Instruct"
    rc = doc["spec"]["rayClusterConfig"]
    for group in [rc["headGroupSpec"], *rc["workerGroupSpecs"]]:  # the head's ingress needs the tokenizer
        pod = group["template"]["spec"]
        assert {"name": "model", "persistentVolumeClaim": {"claimName": "weights", "readOnly": True}} in pod["volumes"]
        assert {"name": "model", "mountPath": "/models", "readOnly": True} in pod["containers"][0]["volumeMounts"]


def test_hub_model_takes_its_token_from_the_secret():
    s = spec(model={"name": "meta-llama/Llama-3.1-8B-Instruct", "hub": {"secret_name": "hf", "secret_key": "tok"}})
    doc, serve = rendered(s)
    assert serve["applications"][0]["args"]["decode"]["engine"] == {"model": "meta-llama/Llama-3.1-8B-Instruct"}
    env = doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "tok"}}} in env
    assert {"name": "PYTHONHASHSEED", "value": "0"} in env


def test_proxy_listens_on_all_interfaces():
    _, serve = rendered()
    assert serve["http_options"] == {"host": "0.0.0.0", "port": 8000}


@pytest.mark.parametrize("over, needle", [
    ({"variants": [{"name": "a", "accelerator": "H100", "max_replicas": 2},
                   {"name": "a", "accelerator": "L4", "max_replicas": 2, "deployment": "X"}]}, "names must be unique"),
    ({"variants": [{"name": "a", "accelerator": "H100", "max_replicas": 2},
                   {"name": "b", "accelerator": "L4", "max_replicas": 2}]}, "claimed by more than one variant"),
    ({"variants": [{"name": "a", "accelerator": "H100", "min_replicas": 3, "max_replicas": 2}]}, "min_replicas 3 > max_replicas 2"),
    ({"variants": [{"name": "A_B", "accelerator": "H100", "max_replicas": 2}]}, "DNS-1123"),
    ({"variants": [{"name": "a", "accelerator": "H100", "max_replicas": 2, "gpu": 1}]}, "Extra inputs are not permitted"),
    ({"variants": [{"name": "a", "accelerator": "H100", "max_replicas": 2, "pod": {"cpu": "8 cores", "memory": "1Gi"}}]},
     "not a Kubernetes quantity"),
    ({"model": {"name": "m", "pvc": {"claim_name": "c"}, "hub": {"secret_name": "s"}}}, "exactly one of"),
])
def test_bad_specs_are_rejected_naming_the_problem(over, needle):
    with pytest.raises(Exception, match=needle):
        spec(**over)


def test_variant_for_a_missing_application_is_a_config_error():
    s = spec(variants=[{"name": "a", "application": "nope", "accelerator": "H100", "max_replicas": 2}])
    with pytest.raises(ConfigError, match="application 'nope' is not deployed"):
        build_serve_config(s, copy.deepcopy(DEFAULT))


def test_application_selection_and_overrides_name_real_apps():
    two = copy.deepcopy(DEFAULT)
    two["applications"].append({**copy.deepcopy(DEFAULT["applications"][0]), "name": "batch", "route_prefix": "/batch"})
    v = [{"name": "h100", "accelerator": "H100", "max_replicas": 2}]
    cfg = build_serve_config(spec(variants=v, applications=["default"]), copy.deepcopy(two))
    assert [a["name"] for a in cfg["applications"]] == ["default"]
    with pytest.raises(ConfigError, match=r"applications: \['nope'\] not in the serve config"):
        build_serve_config(spec(variants=v, applications=["nope"]), copy.deepcopy(two))
    with pytest.raises(ConfigError, match=r"args_overrides: \['typo'\] not among the applications"):
        build_serve_config(spec(variants=v, args_overrides={"typo": {}}), copy.deepcopy(two))


def test_gpus_per_replica_must_match_the_tensor_parallel_degree():
    s = spec(variants=[{"name": "h100x2", "accelerator": "H100", "gpus_per_replica": 2, "max_replicas": 4}])
    with pytest.raises(ConfigError, match="2 GPUs per replica but engine.tensor_parallel_size is 1"):
        build_serve_config(s, copy.deepcopy(DEFAULT))
    s = s.model_copy(update={"args_overrides": {"default": {"engine": {"tensor_parallel_size": 2}}}})
    app = build_serve_config(s, copy.deepcopy(DEFAULT))["applications"][0]
    assert app["deployments"][0]["ray_actor_options"]["num_gpus"] == 2


def test_wiring_check_catches_a_deployment_no_group_can_host():
    doc, serve = rendered()
    groups = doc["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    groups[1]["resources"] = {"llmd-variant-typo": "1"}
    groups[0]["maxReplicas"] = 1
    groups[0]["rayStartParams"]["num-gpus"] = "4"
    msgs = [str(p) for p in check_wiring(serve["applications"], groups)]
    assert any("deployments[0].ray_actor_options.resources.llmd-variant-l4-decode: no worker group advertises" in m for m in msgs)
    assert any("4 replica(s) per pod x 2 GPUs exceed the 4 GPUs of group 'h100-prefill'" in m for m in msgs)
    assert any("scales to 9 replicas but group 'h100-prefill' holds at most 1 pods x 4 = 4" in m for m in msgs)


def test_spec_file_paths_resolve_next_to_the_spec(tmp_path):
    (tmp_path / "serve").mkdir()
    (tmp_path / "serve" / "app.yaml").write_text(yaml.safe_dump(DEFAULT))
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "s.yaml").write_text(yaml.safe_dump({
        "name": "x", "image": "i", "serve_config": "../serve/app.yaml",
        "variants": [{"name": "cpu", "accelerator": "cpu", "gpus_per_replica": 0, "max_replicas": 2}]}))
    s, serve_path = load_spec(tmp_path / "specs" / "s.yaml")
    assert serve_path == (tmp_path / "serve" / "app.yaml").resolve()
    doc = render_spec_file(tmp_path / "specs" / "s.yaml", repo_root=tmp_path)
    assert doc["metadata"]["annotations"]["llmd-ray/serve-config"] == "serve/app.yaml"
    worker = doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert "nvidia.com/gpu" not in worker["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert worker["rayStartParams"]["num-gpus"] == "0"
    assert load_serve_config(serve_path) == DEFAULT


def test_missing_serve_config_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_serve_config(tmp_path / "pd.yaml")


@pytest.mark.parametrize("model, field", [(m.__name__, f) for m in (ClusterSpec, VariantSpec) for f in m.model_fields])
def test_kuberay_readme_documents_every_spec_field(model, field):
    assert f"| `{field}` |" in (REPO / "kuberay" / "README.md").read_text(), f"{model}.{field} is not in kuberay/README.md"
