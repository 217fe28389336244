"""`python -m llmd_ray.kuberay upgrade` end to end against a real kube-apiserver (v1.20.2, built by
kuberay/build_apiserver.sh) with etcd and the KubeRay v1.7.0 CRDs.

The command runs as its own process: it patches the RayService (a JSON Patch through the official
`kubernetes` client) and follows a watch. No KubeRay operator can run here, so the test plays it: it
writes, through the status subresource, the statuses the operator writes during a rollout
(tests/support/kuberay_rollouts.py, shaped after rayservice_controller.go), one at a time, each once
the command has printed the previous one. Skipped when the binary or etcd is missing (the reason says
how to get them).
"""

from __future__ import annotations

import copy
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from llmd_ray.kuberay.apiserver import LocalAPIServer, install_crds, missing_reason
from llmd_ray.kuberay.render import render_spec_file
from tests.support import kuberay_rollouts as R

REPO = Path(__file__).resolve().parents[2]
NS = "llm"
pytestmark = [
    pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason())),
    pytest.mark.timeout(300),
]


@pytest.fixture(scope="module")
def apiserver():
    from kubernetes import client

    with LocalAPIServer() as srv:
        install_crds(srv.api_client())
        client.CoreV1Api(srv.api_client()).create_namespace({"metadata": {"name": NS}})
        yield srv


@pytest.fixture(scope="module")
def kube(apiserver):
    from llmd_ray.kuberay.client import KubeRayClient

    return KubeRayClient(apiserver.api_client())


def running_service(apiserver, kube, name: str, gateway_class: str | None = None) -> dict:
    """A RayService at generation 1, with the status of a running cluster R.OLD."""
    doc = render_spec_file(REPO / "kuberay" / "specs" / "aggregated.yaml", repo_root=REPO, gateway_class=gateway_class)
    doc["metadata"]["name"] = name
    assert kube.apply(doc)["metadata"]["generation"] == 1
    write_status(apiserver, name, R.BEFORE)
    return doc


def write_status(apiserver, name: str, status: dict) -> None:
    """What the operator does (``r.Status().Update``): replace the whole status through the subresource."""
    from kubernetes import client

    api = client.CustomObjectsApi(apiserver.api_client())
    obj = api.get_namespaced_custom_object("ray.io", "v1", NS, "rayservices", name)
    obj["status"] = copy.deepcopy(status)
    api.replace_namespaced_custom_object_status("ray.io", "v1", NS, "rayservices", name, obj)


class Command:
    """`python -m llmd_ray.kuberay ARGS` with its output read line by line."""

    def __init__(self, apiserver, *args: str):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "llmd_ray.kuberay", *args, "-n", NS,
                                      "--kubeconfig", str(apiserver.kubeconfig)], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.out: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.put(line.rstrip("\n"))

    def next_line(self, timeout_s: float = 30.0) -> str:
        line = self.lines.get(timeout=timeout_s)
        self.out.append(line)
        return line

    def until(self, pred, timeout_s: float = 30.0) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.next_line(max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no matching line in {timeout_s} s; so far: {self.out}; "
                                     f"exit {self.proc.poll()}") from None
            if pred(line):
                return line

    def finish(self, timeout_s: float = 30.0) -> tuple[int, str, str]:
        rc = self.proc.wait(timeout_s)
        self._reader.join(10)  # it has read up to EOF
        while not self.lines.empty():
            self.out.append(self.lines.get_nowait())
        return rc, "\n".join(self.out), self.proc.stderr.read()  # type: ignore[union-attr]


def upgrade(apiserver, name: str, *args: str) -> Command:
    """Start `upgrade NAME ARGS`; return once it has patched and printed the status it starts from."""
    cmd = Command(apiserver, "upgrade", name, *args)
    cmd.until(lambda line: "patched: generation 2" in line)
    cmd.until(lambda line: line.startswith("["))
    return cmd


def play(cmd: Command, apiserver, name: str, statuses: list[dict]) -> None:
    """Write each status once the command has printed something after the previous one (every status
    of these sequences changes what it prints)."""
    for st in statuses:
        write_status(apiserver, name, st)
        cmd.until(lambda line: line.startswith("["))


def wait_generation(kube, name: str, generation: int, timeout_s: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while (obj := kube.get(name, NS))["metadata"]["generation"] < generation:
        assert time.monotonic() < deadline, f"generation {generation} never came: {obj['metadata']}"
        time.sleep(0.05)
    return obj


def test_an_image_upgrade_is_patched_and_followed_until_the_new_cluster_is_active(apiserver, kube):
    name = "upg-new-cluster"
    old_image = running_service(apiserver, kube, name)["spec"]["rayClusterConfig"]["headGroupSpec"]["template"][
        "spec"]["containers"][0]["image"]
    cmd = upgrade(apiserver, name, "--image", "llmd-ray:0.2.0-cuda", "--timeout", "120")
    stored = wait_generation(kube, name, 2)
    rc_spec = stored["spec"]["rayClusterConfig"]
    assert rc_spec["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] == "llmd-ray:0.2.0-cuda"
    assert rc_spec["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["image"] == "llmd-ray:0.2.0-cuda"
    play(cmd, apiserver, name, R.NEW_CLUSTER[1:])
    rc, out, err = cmd.finish()
    assert rc == 0, (out, err)
    assert f"change: image of head: {old_image} -> llmd-ray:0.2.0-cuda" in out
    assert "rollout: KubeRay starts a new RayCluster" in out
    assert f"new RayCluster {R.NEW} is starting next to {R.OLD}" in out
    assert f"pending {R.NEW} default DEPLOYING" in out
    assert out.splitlines()[-1] == (f"upgraded: {R.NEW} is now active; the old cluster {R.OLD} is deleted 600 s "
                                    "after the switch")


def test_an_incremental_upgrade_shows_the_traffic_moving(apiserver, kube):
    name = "upg-incremental"
    running_service(apiserver, kube, name, gateway_class="istio")
    cmd = upgrade(apiserver, name, "--image", "llmd-ray:0.2.0-cuda", "--timeout", "120")
    play(cmd, apiserver, name, R.INCREMENTAL)
    rc, out, err = cmd.finish()
    assert rc == 0, (out, err)
    assert "NewClusterWithIncrementalUpgrade through GatewayClass 'istio'" in out
    for active, pending in [(75, 25), (50, 50), (25, 75), (0, 100)]:
        assert f"traffic {active}%" in out and f"traffic {pending}%" in out
    assert out.splitlines()[-1].startswith(f"upgraded: {R.NEW} is now active")


def test_a_serve_config_change_from_a_manifest_is_followed_in_place(apiserver, kube, tmp_path):
    name = "upg-in-place"
    doc = running_service(apiserver, kube, name)
    new = copy.deepcopy(doc)
    new["spec"]["serveConfigV2"] = doc["spec"]["serveConfigV2"].replace("max_model_len: 8192", "max_model_len: 4096")
    path = tmp_path / "new.yaml"
    path.write_text(yaml.safe_dump(new))
    cmd = upgrade(apiserver, name, "--manifest", str(path), "--timeout", "120")
    assert "max_model_len: 4096" in kube.get(name, NS)["spec"]["serveConfigV2"]
    play(cmd, apiserver, name, R.IN_PLACE[1:])
    rc, out, err = cmd.finish()
    assert rc == 0, (out, err)
    assert "rollout: the running cluster is updated in place" in out
    assert out.splitlines()[-1] == "upgraded: updated in place"


def test_a_failed_new_version_exits_non_zero_with_the_reason(apiserver, kube):
    name = "upg-failed"
    running_service(apiserver, kube, name)
    cmd = upgrade(apiserver, name, "--image", "llmd-ray:broken", "--timeout", "120")
    play(cmd, apiserver, name, R.DEPLOY_FAILED[:1])
    write_status(apiserver, name, R.DEPLOY_FAILED[1])
    rc, out, err = cmd.finish()
    assert rc == 1, (out, err)
    assert "upgrade failed: application default of the new version is DEPLOY_FAILED" in err
    assert "ImportError: no module named 'llmd_ray'" in err


def test_without_an_operator_it_times_out_saying_what_it_waited_for(apiserver, kube):
    name = "upg-timeout"
    running_service(apiserver, kube, name)
    cmd = Command(apiserver, "upgrade", name, "--image", "llmd-ray:0.2.0-cuda", "--timeout", "3")
    rc, out, err = cmd.finish(60)
    assert rc == 1, (out, err)
    assert "timed out after 3 s waiting for the operator to observe generation 2" in err


def test_dry_run_stores_nothing_and_a_concurrent_change_fails_the_patch(apiserver, kube):
    from llmd_ray.kuberay.client import KubeAPIError
    from llmd_ray.kuberay.rollout import patch
    from llmd_ray.kuberay.upgrade import plan_upgrade

    name = "upg-dry-run"
    running_service(apiserver, kube, name)
    cmd = Command(apiserver, "upgrade", name, "--image", "llmd-ray:0.2.0-cuda", "--dry-run")
    rc, out, err = cmd.finish(60)
    assert rc == 0 and "accepted (dry run, not persisted)" in out, (out, err)
    assert kube.get(name, NS)["metadata"]["generation"] == 1
    plan = plan_upgrade(kube.get(name, NS), image="llmd-ray:0.2.0-cuda")
    patch(kube, name, NS, plan_upgrade(kube.get(name, NS), image="someone-else:3").ops)  # lands first
    with pytest.raises(KubeAPIError) as e:
        patch(kube, name, NS, plan.ops)
    assert e.value.status == 422, str(e.value)
    head = kube.get(name, NS)["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == "someone-else:3"
