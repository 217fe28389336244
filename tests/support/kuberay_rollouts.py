"""RayService status objects as the KubeRay v1.7 operator writes them during a rollout.

Field names and shapes are those of the CRD's ``status`` schema (``rayservices.ray.io`` v1: conditions with
type/status/reason/message/lastTransitionTime, ``activeServiceStatus``/``pendingServiceStatus`` with
``rayClusterName``, ``applicationStatuses``, ``targetCapacity``, ``trafficRoutedPercent``), and the values
follow the operator's reconcile (``rayservice_controller.go``: ``calculateStatus``/``calculateConditions``):
a pending cluster is named in the same reconcile that sets ``UpgradeInProgress=True
(BothActivePendingClustersExist)``; promotion copies the pending status into the active one and clears
the pending one in the reconcile that switches the Service, and sets ``UpgradeInProgress=False
(NoPendingCluster)``. Used by the pure unit tests and, written through the status subresource in the
operator's place, by the integration test against a real API server.
"""

from __future__ import annotations

from typing import Any

NAME, NS = "llama", "llm"
OLD, NEW = "llama-x8k2p", "llama-q7m4d"
T0 = "2026-12-03T19:00:00Z"


def cond(kind: str, status: str, reason: str, message: str = "", at: str = T0, generation: int = 1) -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason, "message": message or reason,
            "lastTransitionTime": at, "observedGeneration": generation}


def apps(status: str = "RUNNING", deployment: str = "HEALTHY", message: str = "") -> dict[str, Any]:
    app: dict[str, Any] = {"status": status, "serveDeploymentStatuses": {
        "LLMServer-h100": {"status": deployment}, "OpenAIIngress": {"status": "HEALTHY"}}}
    if message:
        app["message"] = message
    return {"default": app}


def side(cluster: str, app_status: str | None = "RUNNING", deployment: str = "HEALTHY", message: str = "",
         capacity: int | None = None, traffic: int | None = None) -> dict[str, Any]:
    s: dict[str, Any] = {"rayClusterName": cluster}
    if app_status is not None:
        s["applicationStatuses"] = apps(app_status, deployment, message)
    if capacity is not None:
        s["targetCapacity"] = capacity
    if traffic is not None:
        s["trafficRoutedPercent"] = traffic
    return s


def status(observed: int, active: dict[str, Any], pending: dict[str, Any] | None = None, *, ready: bool = True,
           ready_reason: str = "", ready_message: str = "", rollback: bool = False, endpoints: int = 2) -> dict[str, Any]:
    """A whole ``status`` the operator would write."""
    upgrading = bool(pending and pending.get("rayClusterName"))
    conditions = [
        cond("Ready", "True" if ready else "False",
             ready_reason or ("NonZeroServeEndpoints" if ready else "ZeroServeEndpoints"), ready_message,
             generation=observed),
        cond("UpgradeInProgress", "True" if upgrading else "False",
             "BothActivePendingClustersExist" if upgrading else "NoPendingCluster", generation=observed),
    ]
    if rollback:
        conditions.append(cond("RollbackInProgress", "True", "DesiredClusterSpecChanged",
                               "Goal state changed mid-upgrade, rolling back to original cluster.", generation=observed))
    out = {"observedGeneration": observed, "numServeEndpoints": endpoints if ready else 0,
           "serviceStatus": "Running" if ready else "", "conditions": conditions, "activeServiceStatus": active}
    if pending is not None:
        out["pendingServiceStatus"] = pending
    return out


def rayservice(generation: int, st: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "ray.io/v1", "kind": "RayService",
            "metadata": {"name": NAME, "namespace": NS, "generation": generation, "resourceVersion": "1"}, "status": st}


BEFORE = status(1, side(OLD))  # running generation 1, before the patch

# NewCluster: the patched generation 2 is observed, a pending cluster starts, its apps deploy, then promotion.
NEW_CLUSTER = [
    status(1, side(OLD)),  # the patch landed; the operator has not reconciled it yet
    status(2, side(OLD), side(NEW, app_status=None)),
    status(2, side(OLD), side(NEW, "DEPLOYING", "UPDATING")),
    status(2, side(NEW), {}),  # pending RUNNING -> the Service switched, pending promoted in the same reconcile
]

# NewClusterWithIncrementalUpgrade, maxSurgePercent 50, stepSizePercent 25.
INCREMENTAL = [
    status(2, side(OLD, capacity=100, traffic=100), side(NEW, app_status=None, capacity=0)),
    status(2, side(OLD, capacity=100, traffic=100), side(NEW, "DEPLOYING", "UPDATING", capacity=50, traffic=0)),
    status(2, side(OLD, capacity=100, traffic=75), side(NEW, capacity=50, traffic=25)),
    status(2, side(OLD, capacity=100, traffic=50), side(NEW, capacity=50, traffic=50)),
    status(2, side(OLD, capacity=50, traffic=50), side(NEW, capacity=100, traffic=50)),
    status(2, side(OLD, capacity=50, traffic=25), side(NEW, capacity=100, traffic=75)),
    status(2, side(OLD, capacity=0, traffic=0), side(NEW, capacity=100, traffic=100)),
    status(2, side(NEW, capacity=100, traffic=100), {}),  # promoted
]

# serveConfigV2 only: the running cluster redeploys its applications.
IN_PLACE = [
    status(1, side(OLD)),
    status(2, side(OLD, "DEPLOYING", "UPDATING")),
    status(2, side(OLD)),
]

# The new version's application fails on the pending cluster (the old one keeps serving).
DEPLOY_FAILED = [
    status(2, side(OLD), side(NEW, "DEPLOYING", "UPDATING")),
    status(2, side(OLD), side(NEW, "DEPLOY_FAILED", "UNHEALTHY", message="ImportError: no module named 'llmd_ray'")),
]

# The operator refuses the patched spec (it does not bump observedGeneration then).
VALIDATION_FAILED = [
    status(1, side(OLD), ready=False, ready_reason="ValidationFailed",
           ready_message="The RayService spec is invalid: Ray Autoscaler is required for NewClusterWithIncrementalUpgrade"),
]

# The spec changed again mid-upgrade: KubeRay rolls back to the active cluster.
ROLLBACK = [
    status(2, side(OLD, capacity=100, traffic=75), side(NEW, capacity=50, traffic=25)),
    status(2, side(OLD, capacity=100, traffic=75), side(NEW, capacity=50, traffic=25), rollback=True),
]
