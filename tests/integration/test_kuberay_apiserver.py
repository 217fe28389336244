"""The KubeRay client against a real kube-apiserver (v1.20.2, built by
kuberay/build_apiserver.sh) with etcd and the KubeRay v1.7.0 CRDs, rebuilt from the
structural schema the package ships (tests/unit/test_kuberay_schema.py checks that they
equal ../shared/kuberay-crds minus documentation and printer columns).

No operator runs, so the test writes the RayService status in its place, the
way KubeRay does: through the status subresource. Skipped when the binary or
etcd is missing (the reason says how to get them).
"""

from __future__ import annotations

import copy
import json
import threading
import time
from pathlib import Path

import pytest

from llmd_ray.kuberay.apiserver import LocalAPIServer, install_crds, missing_reason
from llmd_ray.kuberay.cli import main
from llmd_ray.kuberay.crd import CRDRegistry
from llmd_ray.kuberay.render import render_spec_file
from llmd_ray.kuberay.validate import validate_document

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
        print(f"\nkube-apiserver ready in {srv.startup_s:.1f} s")
        api = srv.api_client()
        t0 = time.monotonic()
        names = install_crds(api)  # the shipped ones ($LLMD_RAY_KUBERAY_CRDS overrides)
        print(f"CRDs {names} established in {time.monotonic() - t0:.1f} s")
        client.CoreV1Api(api).create_namespace({"metadata": {"name": NS}})
        yield srv


@pytest.fixture(scope="module")
def kube(apiserver):
    from llmd_ray.kuberay.client import KubeRayClient

    return KubeRayClient(apiserver.api_client())


@pytest.fixture
def manifest(request) -> dict:
    doc = render_spec_file(REPO / "kuberay" / "specs" / "aggregated.yaml", repo_root=REPO)
    doc["metadata"]["name"] = f"t-{request.node.name.replace('_', '-')[5:30].strip('-')}"
    return doc


def write_status(apiserver, name: str, generation: int, ready: bool, app_status: str) -> None:
    """What the KubeRay operator would write."""
    from kubernetes import client

    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    body = {"status": {
        "observedGeneration": generation,
        "numServeEndpoints": 1 if ready else 0,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                        "reason": "NonZeroServeEndpoints" if ready else "Initializing",
                        "message": "", "lastTransitionTime": now, "observedGeneration": generation}],
        "activeServiceStatus": {"rayClusterName": f"{name}-abcde", "applicationStatuses": {"default": {
            "status": app_status,
            "serveDeploymentStatuses": {"LLMServer-h100": {"status": "HEALTHY" if ready else "UPDATING"},
                                        "OpenAIIngress": {"status": "HEALTHY"}}}}},
    }}
    client.CustomObjectsApi(apiserver.api_client()).patch_namespaced_custom_object_status(
        "ray.io", "v1", NS, "rayservices", name, body, _content_type="application/merge-patch+json")


def test_the_shipped_crds_are_established(apiserver):
    from kubernetes import client

    names = {c.metadata.name for c in client.ApiextensionsV1Api(apiserver.api_client()).list_custom_resource_definition().items}
    assert {"rayservices.ray.io", "rayclusters.ray.io"} <= names


def test_rendered_manifests_validate_locally_and_pass_a_server_dry_run(kube, manifest):
    from llmd_ray.kuberay.client import KubeAPIError

    assert [p for p in validate_document(manifest, CRDRegistry.load(), serve_schema=False) if p.severity == "error"] == []
    out = kube.apply(manifest, dry_run=True)
    group = out["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert group["numOfHosts"] == 1  # defaulted by the server, as our validator does
    assert group["rayStartParams"] == {"num-gpus": "1", "metrics-export-port": "8080"}
    assert group["resources"] == {"llmd-variant-h100": "1"}
    assert out["spec"]["serveConfigV2"] == manifest["spec"]["serveConfigV2"]
    with pytest.raises(KubeAPIError) as e:  # dry run: nothing was stored
        kube.get(manifest["metadata"]["name"], NS)
    assert e.value.status == 404


@pytest.mark.parametrize("path", sorted((REPO / "kuberay").glob("*.yaml")), ids=lambda p: p.name)
def test_every_checked_in_manifest_is_accepted_by_the_server(kube, path):
    import yaml

    for doc in yaml.safe_load_all(path.read_text()):
        out = kube.apply(doc, dry_run=True)
        assert out["metadata"]["generation"] == 1
        groups = out["spec"]["rayClusterConfig"]["workerGroupSpecs"]
        assert [g["groupName"] for g in groups] == [g["groupName"] for g in doc["spec"]["rayClusterConfig"]["workerGroupSpecs"]]


def test_server_side_apply_owns_fields_and_bumps_generation_on_change(kube, manifest):
    name = manifest["metadata"]["name"]
    first = kube.apply(manifest)
    assert first["metadata"]["generation"] == 1
    managers = {(m["manager"], m["operation"]) for m in first["metadata"]["managedFields"]}
    assert ("llmd-ray", "Apply") in managers
    assert kube.apply(manifest)["metadata"]["generation"] == 1  # unchanged: a no-op
    changed = copy.deepcopy(manifest)
    changed["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] = 4
    assert kube.apply(changed)["metadata"]["generation"] == 2
    assert kube.get(name, NS)["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] == 4
    kube.delete(name, NS)


def test_the_server_rejects_what_our_validator_rejects(kube, manifest):
    from llmd_ray.kuberay.client import KubeAPIError

    bad = copy.deepcopy(manifest)
    bad["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["rayStartParams"]["num-gpus"] = 1
    local = [str(p) for p in validate_document(bad, CRDRegistry.load(), serve_schema=False)]
    assert local == ["spec.rayClusterConfig.workerGroupSpecs[0].rayStartParams.num-gpus: 1 is not of type 'string'"]
    with pytest.raises(KubeAPIError) as e:
        kube.apply(bad, dry_run=True)
    assert e.value.status == 422
    assert "rayStartParams.num-gpus" in str(e.value) and "string" in str(e.value)


def test_unknown_fields_are_silently_pruned_by_the_server_so_we_reject_them(kube, manifest):
    typo = copy.deepcopy(manifest)
    typo["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplica"] = 2
    out = kube.apply(typo, dry_run=True)
    assert "maxReplica" not in out["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    local = [str(p) for p in validate_document(typo, CRDRegistry.load(), serve_schema=False)]
    assert local == ["spec.rayClusterConfig.workerGroupSpecs[0].maxReplica: unknown field 'maxReplica' (did you mean 'maxReplicas'?)"]


def test_wait_follows_the_watch_until_the_operator_reports_ready(apiserver, kube, manifest):
    name = manifest["metadata"]["name"]
    kube.apply(manifest)
    seen, result, errors = [], [], []

    def waiter():
        try:
            result.append(kube.wait(name, NS, timeout_s=60, on_change=seen.append))
        except Exception as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    def wait_until(pred, what: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not pred():
            assert not errors, errors
            assert time.monotonic() < deadline, f"timed out waiting for {what}: seen {seen}"
            time.sleep(0.05)

    t = threading.Thread(target=waiter)
    t.start()
    wait_until(lambda: seen, "the waiter's first read (the watch starts from its resourceVersion)")
    write_status(apiserver, name, generation=1, ready=False, app_status="DEPLOYING")
    wait_until(lambda: any(s.active and s.active[0].status == "DEPLOYING" for s in seen), "the watch to see DEPLOYING")
    assert t.is_alive()
    write_status(apiserver, name, generation=1, ready=True, app_status="RUNNING")
    t.join(30)
    assert not errors and result, errors
    assert result[0].is_ready and result[0].active[0].status == "RUNNING"
    assert any(s.active and s.active[0].status == "DEPLOYING" for s in seen)  # the watch saw the step in between

    # a new generation is not Ready until the operator has observed it
    changed = copy.deepcopy(manifest)
    changed["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] = 3
    assert kube.apply(changed)["metadata"]["generation"] == 2
    with pytest.raises(TimeoutError):
        kube.wait(name, NS, timeout_s=2)
    write_status(apiserver, name, generation=2, ready=True, app_status="RUNNING")
    assert kube.wait(name, NS, timeout_s=10).observed_generation == 2
    kube.delete(name, NS)


def test_cli_apply_status_wait_delete(apiserver, manifest, tmp_path, capsys):
    import yaml

    name = manifest["metadata"]["name"]
    path = tmp_path / "rs.yaml"
    path.write_text(yaml.safe_dump(manifest))
    common = ["--kubeconfig", str(apiserver.kubeconfig)]
    assert main(["apply", str(path), "--dry-run", *common]) == 0
    assert "accepted (dry run, not persisted)" in capsys.readouterr().out
    assert main(["apply", str(path), *common]) == 0
    assert "applied: generation 1" in capsys.readouterr().out
    write_status(apiserver, name, generation=1, ready=True, app_status="RUNNING")
    assert main(["status", name, "-n", NS, "--json", *common]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["ready"] is True
    assert st["active"]["applications"]["default"]["deployments"]["LLMServer-h100"]["status"] == "HEALTHY"
    assert main(["wait", name, "-n", NS, "--timeout", "10", *common]) == 0
    assert f"RayService {NS}/{name} is Ready" in capsys.readouterr().out
    assert main(["delete", name, "-n", NS, *common]) == 0
    assert main(["status", name, "-n", NS, *common]) == 2
    assert "API server answered 404" in capsys.readouterr().err


def test_cli_shows_the_servers_422_clearly(apiserver, manifest, tmp_path, capsys):
    import yaml

    manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["rayStartParams"]["num-gpus"] = 1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(manifest))
    common = ["--kubeconfig", str(apiserver.kubeconfig)]
    assert main(["apply", str(path), *common]) == 1  # caught locally first
    assert "num-gpus: 1 is not of type 'string'" in capsys.readouterr().err
    assert main(["apply", str(path), "--skip-validation", *common]) == 2
    err = capsys.readouterr().err
    assert "API server answered 422 Invalid" in err and "rayStartParams.num-gpus" in err
