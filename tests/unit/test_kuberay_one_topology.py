"""Issue 13's done-when: changing a variant's bounds in one place changes the app, the policy and the
RayService together.

From one rendered RayService this reads three views of variant `cpu-b`:
- the app: the autoscaling_config its deployment gets (``build_app`` passes exactly
  ``Variant.serve_autoscaling_config(carried(variant, qos))``; the component tier checks that with
  ``build_app`` itself, in test_kuberay_serve_schema.py);
- the autoscaler: what the app-level policy reads from that config (``topology.carry.read``);
- the RayService: the worker group's maxReplicas.
The one place is the serve config when the spec does not touch the bounds, else the spec's args_overrides.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from llmd_ray.kuberay.render import render_spec_file
from llmd_ray.topology import QoSConfig, Variant
from llmd_ray.topology.carry import carried, read

REPO = Path(__file__).resolve().parents[2]
VARIANTS = yaml.safe_load((REPO / "serve_configs" / "variants.yaml").read_text())
# The cluster adapts cpu-b's pods (2 replicas each); the bounds stay wherever the test puts them.
POD = {"name": "cpu-b", "pod": {"replicas_per_pod": 2, "node_selector": {"pool": "cpu"}}}


def write(tmp_path: Path, cpu_b_max_in_serve: int, spec_over: dict | None) -> Path:
    cfg = copy.deepcopy(VARIANTS)
    (cpu_b,) = [v for v in cfg["applications"][0]["args"]["variants"] if v["name"] == "cpu-b"]
    cpu_b["max_replicas"] = cpu_b_max_in_serve
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(cfg))
    variants = [{**POD, **(spec_over or {})}]
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({
        "name": "t", "image": "i", "serve_config": "serve.yaml", "args_overrides": {"default": {"variants": variants}}}))
    return tmp_path / "spec.yaml"


def three_views(spec_path: Path) -> tuple[int, int, int]:
    """(the app's max_replicas, the autoscaler's, the worker group's maxReplicas x replicas per pod) of cpu-b."""
    doc = render_spec_file(spec_path)
    args = yaml.safe_load(doc["spec"]["serveConfigV2"])["applications"][0]["args"]
    qos = QoSConfig.model_validate(args.get("qos") or {})
    (v,) = [Variant.model_validate(raw) for raw in args["variants"] if raw["name"] == "cpu-b"]
    app_cfg = v.serve_autoscaling_config(carried(v, qos))  # what build_app gives LLMServer-cpu-b
    seen, _ = read(app_cfg["policy"]["policy_kwargs"])  # what the variant autoscaler plans with
    (group,) = [g for g in doc["spec"]["rayClusterConfig"]["workerGroupSpecs"] if g["groupName"] == "cpu-b"]
    assert int(group["resources"]["llmd-variant-cpu-b"]) == 2  # replicas per pod
    assert args["variants"][1]["resources"] == {"llmd-variant-cpu-b": 1}
    return app_cfg["max_replicas"], seen.max_replicas, group["maxReplicas"]


@pytest.mark.parametrize("where", ["serve_config", "args_overrides"])
def test_one_change_of_max_replicas_moves_app_policy_and_rayservice_together(tmp_path, where):
    def render(n: int) -> tuple[int, int, int]:
        if where == "serve_config":
            return three_views(write(tmp_path, n, None))
        return three_views(write(tmp_path, 1, {"max_replicas": n}))

    before, after = render(3), render(7)
    assert before == (3, 3, 2)  # 3 replicas at 2 per pod: 2 pods
    assert after == (7, 7, 4)   # 7 replicas at 2 per pod: 4 pods


def test_the_spec_overrides_the_serve_config_bounds_and_only_them(tmp_path):
    app, policy, pods = three_views(write(tmp_path, 9, {"max_replicas": 5}))
    assert (app, policy, pods) == (5, 5, 3)
    doc = render_spec_file(write(tmp_path, 9, {"max_replicas": 5}))
    args = yaml.safe_load(doc["spec"]["serveConfigV2"])["applications"][0]["args"]
    cpu_b = args["variants"][1]
    assert (cpu_b["min_replicas"], cpu_b["cost_per_hour"], cpu_b["profile"]) == (0, 0.06, "cpu-1core-tiny-llama")
    assert cpu_b["pod"]["node_selector"] == {"pool": "cpu"}
