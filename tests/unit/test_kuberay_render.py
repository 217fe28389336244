"""ClusterSpec + serve config -> RayService: the head, one worker group per variant of the app's
`args.variants`, serveConfigV2, and the variant -> worker-group wiring through `llmd-variant-<name>`."""

from __future__ import annotations

import copy

import pytest
import yaml

from llmd_ray.errors import ConfigError
from llmd_ray.kuberay.render import render_rayservice, render_spec_file
from llmd_ray.kuberay.serve_config import build_serve_config, load_serve_config
from llmd_ray.kuberay.spec import ClusterSpec, WorkersSpec, load_spec
from llmd_ray.kuberay.validate import check_wiring
from llmd_ray.topology.pod import PodSpec

from tests.unit.kuberay_fixtures import DEFAULT, GPU_TAINT, PD_APP, REPO, spec


def rendered(s: ClusterSpec | None = None, cfg: dict | None = None) -> tuple[dict, dict]:
    doc = render_rayservice(s or spec(), copy.deepcopy(cfg or PD_APP), "serve_configs/pd.yaml")
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
    assert pod["tolerations"] == [GPU_TAINT]
    limits = pod["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "16", "memory": "128Gi", "nvidia.com/gpu": "8"}  # 4 replicas x 2 GPUs
    # 1..9 replicas at 4 per pod -> 1..3 pods
    assert (h100["minReplicas"], h100["maxReplicas"], h100["replicas"]) == (1, 3, 1)
    assert h100["resources"] == {"llmd-variant-h100-prefill": "4"}
    assert h100["rayStartParams"]["num-gpus"] == "8"
    assert (l4["minReplicas"], l4["maxReplicas"], l4["replicas"]) == (2, 2, 2)
    assert l4["template"]["spec"]["nodeSelector"] == {"gpu": "l4"}
    labels = l4["template"]["metadata"]["labels"]
    assert (labels["llmd-ray/variant"], labels["llmd-ray/role"], labels["llmd-ray/accelerator"]) == ("l4-decode", "decode", "L4")


def test_a_variant_without_pod_resources_gets_pods_sized_for_its_replica():
    # l4-decode: 1 CPU (the app's default), 1 GPU -> 1 + 1 CPUs, 4Gi per CPU + 16Gi per GPU + the 8Gi /dev/shm
    doc, _ = rendered()
    l4 = doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][1]
    assert l4["template"]["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "2", "memory": "32Gi", "nvidia.com/gpu": "1"}
    cfg = copy.deepcopy(PD_APP)
    cfg["applications"][0]["args"]["replica_num_cpus"] = 2.5
    del cfg["applications"][0]["args"]["variants"][1]["pod"]
    l4 = rendered(cfg=cfg)[0]["spec"]["rayClusterConfig"]["workerGroupSpecs"][1]
    assert l4["template"]["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "4", "memory": "40Gi", "nvidia.com/gpu": "1"}
    assert "nodeSelector" not in l4["template"]["spec"]


def test_ray_start_params_are_strings_everywhere():
    doc, _ = rendered()
    rc = doc["spec"]["rayClusterConfig"]
    for group in [rc["headGroupSpec"], *rc["workerGroupSpecs"]]:
        assert group["rayStartParams"] and all(isinstance(v, str) for v in group["rayStartParams"].values())
        assert all(isinstance(v, str) for v in group.get("resources", {}).values())


def test_each_variant_requests_its_groups_resource_and_nothing_else_is_added():
    doc, serve = rendered()
    app = serve["applications"][0]
    groups = {g["groupName"]: g for g in doc["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    for v in app["args"]["variants"]:
        assert v["resources"] == {f"llmd-variant-{v['name']}": 1}
        assert f"llmd-variant-{v['name']}" in groups[v["name"]]["resources"]
    # The deployments' options are what build_app derives from the variants: the serve config's entry is as written.
    assert app["deployments"] == [{"name": "LLMServer-l4-decode", "health_check_period_s": 5}]
    assert check_wiring(serve["applications"], list(groups.values())) == []


def test_serve_config_is_the_same_file_with_documented_changes_only():
    variant = {"name": "h100", "accelerator": "H100", "replica_num_gpus": 1, "max_replicas": 4}
    s = spec(args_overrides={"default": {"num_replicas": None, "variants": [variant]}})
    _, serve = rendered(s, DEFAULT)
    expected = copy.deepcopy(DEFAULT)
    expected["http_options"]["host"] = "0.0.0.0"
    args = expected["applications"][0]["args"]
    del args["num_replicas"]  # removed by the override's null
    args["engine"].update(model="/models/llama", served_model_name="meta-llama/Llama-3.1-8B-Instruct")
    args["variants"] = [{**variant, "resources": {"llmd-variant-h100": 1}}]
    assert serve == expected
    assert serve["applications"][0]["runtime_env"]["env_vars"]["PYTHONHASHSEED"] == "0"


def test_hash_seed_is_added_when_the_serve_config_lacks_it():
    cfg = copy.deepcopy(PD_APP)
    _, serve = rendered(spec(python_hash_seed="42"), cfg)
    assert serve["applications"][0]["runtime_env"]["env_vars"] == {"PYTHONHASHSEED": "42"}


def test_the_apps_engine_points_at_the_pvc_model_and_pods_mount_it():
    doc, serve = rendered()
    args = serve["applications"][0]["args"]
    assert args["engine"]["model"] == "/models/llama"
    assert args["engine"]["served_model_name"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert all("model" not in v.get("engine", {}) for v in args["variants"])  # variants serve the app's model
    rc = doc["spec"]["rayClusterConfig"]
    for group in [rc["headGroupSpec"], *rc["workerGroupSpecs"]]:  # the head's ingress needs the tokenizer
        pod = group["template"]["spec"]
        assert {"name": "model", "persistentVolumeClaim": {"claimName": "weights", "readOnly": True}} in pod["volumes"]
        assert {"name": "model", "mountPath": "/models", "readOnly": True} in pod["containers"][0]["volumeMounts"]


def test_hub_model_takes_its_token_from_the_secret():
    s = spec(model={"name": "meta-llama/Llama-3.1-8B-Instruct", "hub": {"secret_name": "hf", "secret_key": "tok"}})
    doc, serve = rendered(s)
    assert serve["applications"][0]["args"]["engine"] == {"model": "meta-llama/Llama-3.1-8B-Instruct"}
    env = doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "tok"}}} in env
    assert {"name": "PYTHONHASHSEED", "value": "0"} in env


def test_workers_section_sets_the_gpu_resource_and_shm_of_every_group():
    doc, _ = rendered(spec(workers={"gpu_resource": "amd.com/gpu", "shm_size": "16Gi"}))
    for g in doc["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        pod = g["template"]["spec"]
        assert "amd.com/gpu" in pod["containers"][0]["resources"]["limits"]
        assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in pod["volumes"]


def test_proxy_listens_on_all_interfaces():
    _, serve = rendered()
    assert serve["http_options"] == {"host": "0.0.0.0", "port": 8000}


def test_spec_file_paths_resolve_next_to_the_spec(tmp_path):
    (tmp_path / "serve").mkdir()
    (tmp_path / "serve" / "app.yaml").write_text(yaml.safe_dump(DEFAULT))
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "s.yaml").write_text(yaml.safe_dump({
        "name": "x", "image": "i", "serve_config": "../serve/app.yaml",
        "args_overrides": {"default": {"num_replicas": None, "variants": [{"name": "cpu", "max_replicas": 2}]}}}))
    s, serve_path = load_spec(tmp_path / "specs" / "s.yaml")
    assert serve_path == (tmp_path / "serve" / "app.yaml").resolve()
    doc = render_spec_file(tmp_path / "specs" / "s.yaml", repo_root=tmp_path)
    assert doc["metadata"]["annotations"]["llmd-ray/serve-config"] == "serve/app.yaml"
    worker = doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert "nvidia.com/gpu" not in worker["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert worker["rayStartParams"]["num-gpus"] == "0"
    assert worker["template"]["metadata"]["labels"]["llmd-ray/accelerator"] == "cpu"
    assert (worker["minReplicas"], worker["maxReplicas"], worker["replicas"]) == (0, 2, 0)
    assert load_serve_config(serve_path) == DEFAULT


def test_missing_serve_config_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_serve_config(tmp_path / "pd.yaml")


def test_application_selection_and_overrides_name_real_apps():
    two = copy.deepcopy(PD_APP)
    two["applications"].append({**copy.deepcopy(DEFAULT["applications"][0]), "name": "batch", "route_prefix": "/batch"})
    cfg = build_serve_config(spec(applications=["default"]), copy.deepcopy(two))
    assert [a["name"] for a in cfg["applications"]] == ["default"]
    with pytest.raises(ConfigError, match=r"applications: \['nope'\] not in the serve config"):
        build_serve_config(spec(applications=["nope"]), copy.deepcopy(two))
    with pytest.raises(ConfigError, match=r"args_overrides: \['typo'\] not among the applications"):
        build_serve_config(spec(args_overrides={"typo": {}}), copy.deepcopy(two))


@pytest.mark.parametrize("model, field", [(m.__name__, f) for m in (ClusterSpec, WorkersSpec, PodSpec)
                                          for f in m.model_fields])
def test_kuberay_readme_documents_every_spec_field(model, field):
    assert f"| `{field}` |" in (REPO / "kuberay" / "README.md").read_text(), f"{model}.{field} is not in kuberay/README.md"
