"""`upgrade`'s pure parts: the patch and rollout path (upgrade.py), and reading the operator's statuses
(upgrade_follow.py) on the status sequences KubeRay v1.7 writes (tests/support/kuberay_rollouts.py)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from llmd_ray.kuberay.render import render_spec_file
from llmd_ray.kuberay.upgrade import (BLOCKED, IN_PLACE, INCREMENTAL_PATH, NEW, NOTHING, images, needs_new_cluster,
                                      plan_upgrade)
from llmd_ray.kuberay.upgrade_follow import DONE, FAILED, Observation, Rollout
from tests.support import kuberay_rollouts as R

REPO = Path(__file__).resolve().parents[2]


def live(**spec_over) -> dict:
    doc = render_spec_file(REPO / "kuberay" / "specs" / "aggregated.yaml", repo_root=REPO)
    doc["spec"].update(spec_over)
    doc["metadata"].update(generation=1, resourceVersion="7")
    doc["status"] = copy.deepcopy(R.BEFORE)
    return doc


def apply_patch(doc: dict, ops: list[dict]) -> dict:
    """A minimal RFC 6902 applier (object members only), independent of the code under test."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        key = int(parts[-1]) if isinstance(parent, list) else parts[-1]
        if op["op"] == "test":
            assert parent[key] == op["value"], f"test failed at {op['path']}"
        elif op["op"] == "remove":
            del parent[key]
        else:
            assert op["op"] in ("add", "replace") and (op["op"] == "add" or key in parent or isinstance(parent, list))
            parent[key] = op["value"]
    return doc


def test_an_image_change_patches_every_ray_container_and_needs_a_new_cluster():
    doc = live()
    plan = plan_upgrade(doc, image="llmd-ray:0.2.0-cuda")
    assert plan.path == NEW and plan.strategy == "NewCluster" and plan.old_cluster == R.OLD
    after = apply_patch(doc, plan.ops)
    assert set(images(after["spec"]).values()) == {"llmd-ray:0.2.0-cuda"}
    assert set(images(after["spec"])) == {"head", "group h100"}
    assert after["spec"]["serveConfigV2"] == doc["spec"]["serveConfigV2"]
    ray = "/template/spec/containers/0/image"
    assert [op["path"] for op in plan.ops if op["op"] == "replace"] == [
        f"/spec/rayClusterConfig/headGroupSpec{ray}", f"/spec/rayClusterConfig/workerGroupSpecs/0{ray}"]
    tests = [op for op in plan.ops if op["op"] == "test"]  # each replaced value is tested first: no lost update
    assert [op["path"] for op in tests] == [op["path"] for op in plan.ops if op["op"] == "replace"]
    assert any("image of head:" in c for c in plan.changes)


def test_a_concurrent_change_to_a_patched_field_fails_the_test_op():
    doc = live()
    plan = plan_upgrade(doc, image="img:2")
    doc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] = "someone-else:3"
    with pytest.raises(AssertionError, match="test failed"):
        apply_patch(doc, plan.ops)


def test_a_serve_config_change_is_in_place_and_a_manifest_replaces_the_spec():
    doc = live()
    new = copy.deepcopy(doc)
    new["spec"]["serveConfigV2"] = doc["spec"]["serveConfigV2"].replace("max_model_len: 8192", "max_model_len: 4096")
    new["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] = 12  # muted in KubeRay's hash
    plan = plan_upgrade(doc, manifest=new)
    assert plan.path == IN_PLACE
    assert apply_patch(doc, plan.ops)["spec"] == new["spec"]
    assert "serveConfigV2 (the Serve applications) changes" in plan.changes


@pytest.mark.parametrize("change, new_cluster", [
    (lambda c: c["workerGroupSpecs"][0].update(replicas=5, minReplicas=2, maxReplicas=9), False),
    (lambda c: c["workerGroupSpecs"][0].setdefault("scaleStrategy", {}).update(workersToDelete=["p-1"]), False),
    (lambda c: c["workerGroupSpecs"][0]["template"]["spec"].update(tolerations=[]), False),
    (lambda c: c["workerGroupSpecs"].append({**copy.deepcopy(c["workerGroupSpecs"][0]), "groupName": "l4"}), False),
    (lambda c: c["workerGroupSpecs"].insert(0, {**copy.deepcopy(c["workerGroupSpecs"][0]), "groupName": "l4"}), True),
    (lambda c: c["workerGroupSpecs"][0]["rayStartParams"].update({"num-gpus": "2"}), True),
    (lambda c: c.update(rayVersion="2.61.0"), True),
    (lambda c: c["headGroupSpec"]["template"]["spec"]["containers"][0].update(image="x:2"), True),
], ids=["replicas", "workersToDelete", "tolerations", "group-appended", "group-prepended", "rayStartParams",
        "rayVersion", "image"])
def test_which_cluster_changes_need_a_new_cluster_follows_kuberays_hash(change, new_cluster):
    old = live()["spec"]["rayClusterConfig"]
    new = copy.deepcopy(old)
    change(new)
    assert needs_new_cluster(old, new) is new_cluster


@pytest.mark.parametrize("strategy, path", [
    ({"type": "NewCluster"}, NEW),
    ({"type": "NewClusterWithIncrementalUpgrade", "clusterUpgradeOptions": {
        "gatewayClassName": "istio", "stepSizePercent": 10, "intervalSeconds": 30}}, INCREMENTAL_PATH),
    ({"type": "None"}, BLOCKED),
])
def test_the_path_follows_the_strategy_of_the_new_spec(strategy, path):
    assert plan_upgrade(live(upgradeStrategy=strategy), image="img:2").path == path


def test_no_change_is_nothing_to_do():
    doc = live()
    same = plan_upgrade(doc, image=images(doc["spec"])["head"])
    assert same.path == NOTHING and same.ops == []


def test_keys_with_slashes_are_escaped_in_pointers():
    doc = live()
    new = copy.deepcopy(doc)
    new["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"][
        "limits"]["nvidia.com/gpu"] = "2"
    plan = plan_upgrade(doc, manifest=new)
    assert [op["path"] for op in plan.ops if op["op"] == "replace"] == [
        "/spec/rayClusterConfig/workerGroupSpecs/0/template/spec/containers/0/resources/limits/nvidia.com~1gpu"]
    assert apply_patch(doc, plan.ops)["spec"] == new["spec"]


def follow(seq: list[dict], path: str, generation: int = 2) -> tuple[Rollout, list[str]]:
    r = Rollout(generation=generation, path=path, old_cluster=R.OLD,
                before=Observation.parse(R.rayservice(1, R.BEFORE)).conditions, deletion_delay_s=600)
    lines: list[str] = []
    for st in seq:
        assert not r.verdict, f"decided too early ({r.verdict}: {r.reason}) before {st}"
        lines += r.step(R.rayservice(generation, st))
    return r, lines


@pytest.mark.parametrize("seq, path, verdict, reason", [
    (R.NEW_CLUSTER, NEW, DONE, f"{R.NEW} is now active; the old cluster {R.OLD} is deleted 600 s after the switch"),
    (R.INCREMENTAL, INCREMENTAL_PATH, DONE, f"{R.NEW} is now active"),
    (R.IN_PLACE, IN_PLACE, DONE, "updated in place"),
    (R.DEPLOY_FAILED, NEW, FAILED, "application default of the new version is DEPLOY_FAILED on llama-q7m4d: "
                                   "ImportError: no module named 'llmd_ray'"),
    (R.VALIDATION_FAILED, NEW, FAILED, "the operator refused the new spec: Ready=False (ValidationFailed): "
                                       "The RayService spec is invalid: Ray Autoscaler is required"),
    (R.ROLLBACK, INCREMENTAL_PATH, FAILED, f"KubeRay is rolling back to {R.OLD} (DesiredClusterSpecChanged"),
], ids=["new-cluster", "incremental", "in-place", "deploy-failed", "validation-failed", "rollback"])
def test_a_rollout_is_followed_to_its_verdict(seq, path, verdict, reason):
    r, lines = follow(seq, path)
    assert r.verdict == verdict, (r.reason, lines)
    assert r.reason.startswith(reason), r.reason


def test_unfinished_rollouts_are_not_done_and_say_what_they_wait_for():
    for seq, path, waiting in [
        (R.NEW_CLUSTER[:1], NEW, "the operator to observe generation 2"),
        (R.NEW_CLUSTER[:3], NEW, f"the new RayCluster {R.NEW} to become active and Ready"),
        (R.INCREMENTAL[:-1], INCREMENTAL_PATH, f"the new RayCluster {R.NEW} to become active and Ready"),
        (R.IN_PLACE[:2], IN_PLACE, "the applications to be RUNNING"),
        ([R.status(2, R.side(R.OLD))], NEW, "a new RayCluster (none was started"),
    ]:
        r, _ = follow(seq, path)
        assert not r.verdict, (seq, r.reason)
        assert r.waiting_for().startswith(waiting)


def test_the_operator_sees_each_step_including_the_traffic_split():
    _, lines = follow(R.INCREMENTAL, INCREMENTAL_PATH)
    text = "\n".join(lines)
    assert "the operator observed generation 2" in lines[0]
    assert f"new RayCluster {R.NEW} is starting next to {R.OLD}" in text
    assert f"active {R.OLD} default RUNNING traffic 75%, capacity 100%; pending {R.NEW} default RUNNING traffic 25%, capacity 50%" in text
    assert f"active {R.OLD} default RUNNING traffic 0%, capacity 0%" in text
    assert lines[-1].startswith(f"Ready=True (NonZeroServeEndpoints); 2 serve endpoint(s); active {R.NEW}")
    assert len(lines) == len(set(lines))  # a line per change, not per event
    _, lines = follow(R.NEW_CLUSTER, NEW)
    assert any("UpgradeInProgress" in ln and f"pending {R.NEW} default DEPLOYING (default/LLMServer-h100 UPDATING)" in ln
               for ln in lines)


def test_a_newer_generation_from_someone_else_fails_and_a_stale_refusal_does_not():
    r, _ = follow([R.status(2, R.side(R.OLD))], NEW, generation=2)
    r.step(R.rayservice(3, R.status(2, R.side(R.OLD))))
    assert r.verdict == FAILED and "generation 3 > 2" in r.reason
    refused = R.status(1, R.side(R.OLD), ready=False, ready_reason="ValidationFailed", ready_message="old problem")
    r = Rollout(generation=2, path=NEW, old_cluster=R.OLD, before=Observation.parse(R.rayservice(1, refused)).conditions)
    r.step(R.rayservice(2, refused))  # the same refusal as before the patch: not the new spec's
    assert not r.verdict


def test_an_old_operator_writing_only_service_status_is_understood():
    st = R.status(2, R.side(R.NEW), {})
    del st["conditions"]
    assert Observation.parse(R.rayservice(2, st)).ready
    r, _ = follow([st], NEW)
    assert r.verdict == DONE
