"""Read a RayService's status: the ``Ready`` condition, and application and
deployment statuses from ``activeServiceStatus`` / ``pendingServiceStatus``.

Pure (dicts in, slotted dataclasses out), so the client, the CLI and tests share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class DeploymentStatus:
    name: str
    status: str
    message: str = ""


@dataclass(slots=True)
class AppStatus:
    name: str
    status: str
    message: str = ""
    deployments: list[DeploymentStatus] = field(default_factory=list)


@dataclass(slots=True)
class ServiceStatus:
    name: str
    namespace: str
    generation: int | None
    observed_generation: int | None
    ready: bool | None  # the Ready condition; None: not reported yet
    ready_reason: str = ""
    ready_message: str = ""
    service_status: str = ""  # the older `serviceStatus` field (e.g. "Running")
    num_serve_endpoints: int = 0
    active_cluster: str = ""
    pending_cluster: str = ""
    active: list[AppStatus] = field(default_factory=list)
    pending: list[AppStatus] = field(default_factory=list)
    upgrading: bool = False

    @property
    def current(self) -> bool:
        """The operator has seen the latest spec (observedGeneration >= generation)."""
        if self.generation is None or self.observed_generation is None:
            return self.observed_generation is not None or self.generation is None
        return self.observed_generation >= self.generation

    @property
    def is_ready(self) -> bool:
        ready = self.ready if self.ready is not None else self.service_status == "Running"
        return bool(ready) and self.current

    @property
    def failed_apps(self) -> list[AppStatus]:
        return [a for a in self.active + self.pending if a.status in ("DEPLOY_FAILED", "UNHEALTHY")]


def _apps(section: dict[str, Any] | None) -> list[AppStatus]:
    out = []
    for name, app in sorted(((section or {}).get("applicationStatuses") or {}).items()):
        deps = [DeploymentStatus(d, s.get("status", ""), s.get("message", ""))
                for d, s in sorted((app.get("serveDeploymentStatuses") or {}).items())]
        out.append(AppStatus(name, app.get("status", ""), app.get("message", ""), deps))
    return out


def parse_status(obj: dict[str, Any]) -> ServiceStatus:
    """A RayService object (as the API returns it) -> ServiceStatus."""
    meta = obj.get("metadata") or {}
    st = obj.get("status") or {}
    conds = {c.get("type"): c for c in st.get("conditions") or [] if isinstance(c, dict)}
    ready = conds.get("Ready")
    upgrade = conds.get("UpgradeInProgress")
    active, pending = st.get("activeServiceStatus") or {}, st.get("pendingServiceStatus") or {}
    return ServiceStatus(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        generation=meta.get("generation"),
        observed_generation=st.get("observedGeneration"),
        ready=None if ready is None else ready.get("status") == "True",
        ready_reason=(ready or {}).get("reason", ""),
        ready_message=(ready or {}).get("message", ""),
        service_status=st.get("serviceStatus", ""),
        num_serve_endpoints=st.get("numServeEndpoints") or 0,
        active_cluster=active.get("rayClusterName", ""),
        pending_cluster=pending.get("rayClusterName", ""),
        active=_apps(active),
        pending=_apps(pending),
        upgrading=(upgrade or {}).get("status") == "True",
    )


def format_status(s: ServiceStatus) -> str:
    ready = {True: "True", False: "False", None: "Unknown"}[s.ready]
    lines = [f"RayService {s.namespace}/{s.name}: Ready={ready}"
             + (f" ({s.ready_reason}{': ' + s.ready_message if s.ready_message else ''})" if s.ready_reason else "")
             + ("" if s.current else f" [stale: observedGeneration {s.observed_generation} < generation {s.generation}]"),
             f"  serve endpoints: {s.num_serve_endpoints}" + (f", serviceStatus: {s.service_status}" if s.service_status else "")
             + (", upgrade in progress" if s.upgrading else "")]
    for label, cluster, apps in (("active", s.active_cluster, s.active), ("pending", s.pending_cluster, s.pending)):
        if not cluster and not apps:
            continue
        lines.append(f"  {label} cluster {cluster or '-'}:")
        for a in apps:
            lines.append(f"    app {a.name}: {a.status}" + (f" - {a.message}" if a.message else ""))
            for d in a.deployments:
                lines.append(f"      {d.name}: {d.status}" + (f" - {d.message}" if d.message else ""))
    return "\n".join(lines)


def status_dict(s: ServiceStatus) -> dict[str, Any]:
    def apps(xs: list[AppStatus]) -> dict[str, Any]:
        return {a.name: {"status": a.status, "message": a.message,
                         "deployments": {d.name: {"status": d.status, "message": d.message} for d in a.deployments}}
                for a in xs}

    return {"name": s.name, "namespace": s.namespace, "ready": s.is_ready, "readyCondition": s.ready,
            "reason": s.ready_reason, "message": s.ready_message, "generation": s.generation,
            "observedGeneration": s.observed_generation, "numServeEndpoints": s.num_serve_endpoints,
            "active": {"rayClusterName": s.active_cluster, "applications": apps(s.active)},
            "pending": {"rayClusterName": s.pending_cluster, "applications": apps(s.pending)}}
