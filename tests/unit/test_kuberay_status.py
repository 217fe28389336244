"""RayService status parsing and API-error formatting (no cluster needed)."""

from __future__ import annotations

import json

import pytest

from llmd_ray.kuberay.client import KubeAPIError, KubeRayClient, api_error
from llmd_ray.kuberay.status import format_status, parse_status, status_dict


def rayservice(generation=2, observed=2, ready="True", apps=None, pending=None) -> dict:
    status = {
        "observedGeneration": observed,
        "numServeEndpoints": 3,
        "conditions": [{"type": "Ready", "status": ready, "reason": "NonZeroServeEndpoints", "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "activeServiceStatus": {"rayClusterName": "llama-abcde", "applicationStatuses": apps if apps is not None else {
            "default": {"status": "RUNNING", "serveDeploymentStatuses": {
                "LLMServer-h100": {"status": "HEALTHY"}, "OpenAIIngress": {"status": "HEALTHY"}}}}},
    }
    if pending is not None:
        status["pendingServiceStatus"] = pending
    return {"metadata": {"name": "llama", "namespace": "llm", "generation": generation}, "status": status}


def test_ready_service_with_its_apps_and_deployments():
    s = parse_status(rayservice())
    assert s.is_ready and s.ready is True and s.num_serve_endpoints == 3
    assert [(a.name, a.status) for a in s.active] == [("default", "RUNNING")]
    assert [(d.name, d.status) for d in s.active[0].deployments] == [("LLMServer-h100", "HEALTHY"), ("OpenAIIngress", "HEALTHY")]
    text = format_status(s)
    assert "RayService llm/llama: Ready=True (NonZeroServeEndpoints)" in text
    assert "active cluster llama-abcde:" in text and "LLMServer-h100: HEALTHY" in text
    assert status_dict(s)["active"]["applications"]["default"]["deployments"]["LLMServer-h100"]["status"] == "HEALTHY"


def test_ready_for_an_older_generation_is_not_ready():
    s = parse_status(rayservice(generation=3, observed=2))
    assert s.ready is True and not s.is_ready
    assert "stale: observedGeneration 2 < generation 3" in format_status(s)


def test_not_ready_and_pending_upgrade_are_reported():
    pending = {"rayClusterName": "llama-fghij", "applicationStatuses": {
        "default": {"status": "DEPLOY_FAILED", "message": "bad args",
                    "serveDeploymentStatuses": {"LLMServer-h100": {"status": "UNHEALTHY", "message": "oom"}}}}}
    s = parse_status(rayservice(ready="False", pending=pending))
    assert not s.is_ready
    assert [a.name for a in s.failed_apps] == ["default"]
    text = format_status(s)
    assert "pending cluster llama-fghij:" in text and "app default: DEPLOY_FAILED - bad args" in text
    assert "LLMServer-h100: UNHEALTHY - oom" in text


def test_no_status_yet():
    s = parse_status({"metadata": {"name": "x", "namespace": "d", "generation": 1}})
    assert s.ready is None and not s.is_ready
    assert "Ready=Unknown" in format_status(s)


def test_older_operators_without_conditions_use_service_status():
    obj = {"metadata": {"name": "x", "generation": 1}, "status": {"observedGeneration": 1, "serviceStatus": "Running"}}
    assert parse_status(obj).is_ready


def test_a_422_is_shown_with_each_field_cause():
    from kubernetes.client.exceptions import ApiException

    exc = ApiException(status=422, reason="Unprocessable Entity")
    exc.body = json.dumps({
        "kind": "Status", "status": "Failure", "reason": "Invalid",
        "message": 'RayService.ray.io "x" is invalid: spec.rayClusterConfig.workerGroupSpecs.rayStartParams.num-gpus: '
                   'Invalid value: "integer": must be of type string',
        "details": {"causes": [{"reason": "FieldValueTypeInvalid", "field": "spec.rayClusterConfig.workerGroupSpecs.rayStartParams.num-gpus",
                                "message": 'Invalid value: "integer": must be of type string'}]},
    })
    err = api_error(exc, "apply RayService llm/x")
    assert err.status == 422 and err.reason == "Invalid"
    lines = str(err).splitlines()
    assert lines[0].startswith("apply RayService llm/x: API server answered 422 Invalid: RayService.ray.io \"x\" is invalid")
    assert lines[1] == ("  spec.rayClusterConfig.workerGroupSpecs.rayStartParams.num-gpus: "
                        'Invalid value: "integer": must be of type string (FieldValueTypeInvalid)')


def test_missing_crds_get_a_hint():
    from kubernetes.client.exceptions import ApiException

    exc = ApiException(status=404, reason="Not Found")
    exc.body = json.dumps({"reason": "NotFound", "message": "the server could not find the requested resource"})
    assert "are the KubeRay CRDs installed?" in str(api_error(exc, "apply"))


def test_unreachable_server_is_said_plainly():
    err = api_error(ConnectionRefusedError(111, "Connection refused"), "status RayService d/x")
    assert str(err).startswith("status RayService d/x: cannot reach the API server:")


@pytest.mark.parametrize("doc, needle", [
    ({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}}, "only ray.io RayService/RayCluster"),
    ({"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {}}, "no metadata.name"),
])
def test_apply_refuses_what_it_cannot_apply(doc, needle):
    with pytest.raises(KubeAPIError, match=needle):
        KubeRayClient._target(doc, None)


def test_apply_targets_the_manifest_namespace_unless_overridden():
    doc = {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": "x", "namespace": "llm"}}
    assert KubeRayClient._target(doc, None) == ("v1", "rayservices", "llm", "x")
    assert KubeRayClient._target(doc, "other") == ("v1", "rayservices", "other", "x")


def test_render_and_schema_validation_import_neither_ray_nor_vllm():
    import subprocess
    import sys
    from pathlib import Path

    # In a fresh interpreter: other test tiers in the same session import Ray.
    code = ("import sys; from llmd_ray.kuberay.cli import main; "
            "rc = main(['validate', '--schema-only', 'kuberay/specs/aggregated.yaml']); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('ray', 'vllm', 'torch')]; "
            "assert rc == 0 and not bad, (rc, bad[:5])")
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], check=True, capture_output=True)
