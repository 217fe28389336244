"""Follow a RayService rollout from its status (pure: each object the watch delivers in, lines and a verdict out).

Field names are the KubeRay v1.7 CRD's (``status`` of ``rayservices.ray.io``): ``observedGeneration``,
``conditions`` (``Ready``, ``UpgradeInProgress``, ``RollbackInProgress``), ``serviceStatus`` (deprecated,
``Running`` = Ready), ``numServeEndpoints``, and ``activeServiceStatus``/``pendingServiceStatus`` with
``rayClusterName``, ``applicationStatuses`` and, for ``NewClusterWithIncrementalUpgrade``,
``targetCapacity`` (the Serve ``target_capacity`` of that cluster) and ``trafficRoutedPercent`` (its weight
on the HTTPRoute).

The rollout is done when the operator has observed the patched generation, the cluster that was active
before is no longer (the pending one was promoted; for an in-place change: the same cluster), no cluster is
pending, ``Ready`` is True and every application is RUNNING. It has failed when the operator refuses the
spec (``Ready`` reason ``ValidationFailed``, ``InitializingTimeout``), starts a rollback
(``RollbackInProgress``: the spec changed again mid-upgrade), an application of the new version is
``DEPLOY_FAILED``, or someone else changes the spec (a newer generation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmd_ray.kuberay.upgrade import BLOCKED, IN_PLACE, INCREMENTAL_PATH, NOTHING

DONE, FAILED = "done", "failed"
FAILED_REASONS = ("ValidationFailed", "InitializingTimeout")


@dataclass(slots=True, frozen=True)
class Side:
    """One of activeServiceStatus / pendingServiceStatus."""

    cluster: str = ""
    apps: tuple[tuple[str, str, str], ...] = ()  # (name, status, message)
    deployments: tuple[tuple[str, str], ...] = ()  # ("app/deployment", status) not HEALTHY
    target_capacity: int | None = None
    traffic_percent: int | None = None

    @classmethod
    def parse(cls, s: dict[str, Any] | None) -> Side:
        s = s or {}
        apps = s.get("applicationStatuses") or {}
        return cls(
            cluster=str(s.get("rayClusterName") or ""),
            apps=tuple((n, str(a.get("status", "")), str(a.get("message", ""))) for n, a in sorted(apps.items())),
            deployments=tuple((f"{n}/{d}", str(ds.get("status", ""))) for n, a in sorted(apps.items())
                              for d, ds in sorted((a.get("serveDeploymentStatuses") or {}).items())
                              if ds.get("status") != "HEALTHY"),
            target_capacity=s.get("targetCapacity"),
            traffic_percent=s.get("trafficRoutedPercent"),
        )

    @property
    def running(self) -> bool:
        return bool(self.apps) and all(st == "RUNNING" for _, st, _ in self.apps)

    def summary(self) -> str:
        parts = [self.cluster or "-"]
        if self.apps:
            parts.append(", ".join(f"{n} {st}" for n, st, _ in self.apps))
        if self.deployments:
            parts.append("(" + ", ".join(f"{d} {st}" for d, st in self.deployments) + ")")
        if self.traffic_percent is not None or self.target_capacity is not None:
            t = "-" if self.traffic_percent is None else f"{self.traffic_percent}%"
            c = "-" if self.target_capacity is None else f"{self.target_capacity}%"
            parts.append(f"traffic {t}, capacity {c}")
        return " ".join(parts)


@dataclass(slots=True, frozen=True)
class Observation:
    """What the upgrade command reads of one RayService object."""

    generation: int | None
    observed_generation: int | None
    conditions: dict[str, tuple[str, str, str, str]]  # type -> (status, reason, message, lastTransitionTime)
    endpoints: int
    active: Side
    pending: Side

    @classmethod
    def parse(cls, obj: dict[str, Any]) -> Observation:
        st = obj.get("status") or {}
        conds = {str(c.get("type")): (str(c.get("status", "")), str(c.get("reason", "")), str(c.get("message", "")),
                                      str(c.get("lastTransitionTime", "")))
                 for c in st.get("conditions") or [] if isinstance(c, dict)}
        if "Ready" not in conds and st.get("serviceStatus"):  # an operator older than v1.3 writes only this
            conds["Ready"] = ("True" if st["serviceStatus"] == "Running" else "False", "", "", "")
        return cls(generation=(obj.get("metadata") or {}).get("generation"), observed_generation=st.get("observedGeneration"),
                   conditions=conds, endpoints=int(st.get("numServeEndpoints") or 0),
                   active=Side.parse(st.get("activeServiceStatus")), pending=Side.parse(st.get("pendingServiceStatus")))

    def condition(self, kind: str) -> str:
        return self.conditions.get(kind, ("Unknown",))[0]

    @property
    def ready(self) -> bool:
        return self.condition("Ready") == "True"

    def summary(self) -> str:
        ready = self.conditions.get("Ready")
        head = f"Ready={ready[0]}" + (f" ({ready[1]})" if ready and ready[1] else "") if ready else "Ready=Unknown"
        if self.condition("UpgradeInProgress") == "True":
            head += ", UpgradeInProgress"
        if self.condition("RollbackInProgress") == "True":
            head += ", RollbackInProgress"
        line = f"{head}; {self.endpoints} serve endpoint(s); active {self.active.summary()}"
        if self.pending.cluster:
            line += f"; pending {self.pending.summary()}"
        return line


@dataclass(slots=True)
class Rollout:
    """Reads successive RayService objects after the patch; `step` returns the lines to print and a verdict."""

    generation: int  # metadata.generation the patch produced
    path: str  # upgrade.plan_upgrade's path
    old_cluster: str  # the active RayCluster before the patch
    before: dict[str, tuple[str, str, str, str]] = field(default_factory=dict)  # conditions before the patch
    deletion_delay_s: int = 60
    verdict: str = ""  # "", DONE or FAILED
    reason: str = ""
    _last: str = ""
    _seen_pending: str = ""
    _observed: bool = False

    def step(self, obj: dict[str, Any]) -> list[str]:
        o = Observation.parse(obj)
        lines: list[str] = []
        if self.path in (NOTHING, BLOCKED):
            return self._finish(lines, DONE if self.path == NOTHING else FAILED, "nothing to roll out")
        if o.generation is not None and o.generation > self.generation:
            return self._finish(lines, FAILED, f"the spec changed again (generation {o.generation} > "
                                f"{self.generation}): someone else is changing this RayService")
        ready = o.conditions.get("Ready")
        if ready and ready[1] in FAILED_REASONS and ready != self.before.get("Ready"):
            return self._finish(lines, FAILED, f"the operator refused the new spec: Ready=False ({ready[1]}): {ready[2]}")
        if not self._observed and (o.observed_generation or 0) >= self.generation:
            self._observed = True
            lines.append(f"the operator observed generation {self.generation}")
        if o.pending.cluster and o.pending.cluster != self._seen_pending:
            self._seen_pending = o.pending.cluster
            lines.append(f"new RayCluster {o.pending.cluster} is starting next to {o.active.cluster or '-'} "
                         "(it serves nothing until its applications are RUNNING)")
        summary = o.summary()
        if summary != self._last:
            self._last = summary
            lines.append(summary)
        if o.condition("RollbackInProgress") == "True":
            r = o.conditions["RollbackInProgress"]
            return self._finish(lines, FAILED, f"KubeRay is rolling back to {o.active.cluster} ({r[1]}: {r[2]})")
        new_side = self._new_version(o)
        failed = [(n, m) for n, st, m in new_side.apps if st == "DEPLOY_FAILED"] if new_side else []
        if self._observed and failed:
            n, m = failed[0]
            return self._finish(lines, FAILED, f"application {n} of the new version is DEPLOY_FAILED on "
                                f"{new_side.cluster}: {m or '(no message)'}")
        if self._observed and self._complete(o):
            how = ("updated in place" if o.active.cluster == self.old_cluster
                   else f"{o.active.cluster} is now active; the old cluster {self.old_cluster or '-'} is deleted "
                        f"{self.deletion_delay_s} s after the switch")
            return self._finish(lines, DONE, how)
        return lines

    def _new_version(self, o: Observation) -> Side | None:
        """The side running the new version: the pending cluster, the promoted one, or (in place) the active."""
        if self.path == IN_PLACE:
            return o.active
        if o.pending.cluster:
            return o.pending
        return o.active if o.active.cluster and o.active.cluster != self.old_cluster else None

    def _complete(self, o: Observation) -> bool:
        if o.pending.cluster or not o.ready or not o.active.running:
            return False
        if o.condition("UpgradeInProgress") == "True":
            return False
        if self.path == IN_PLACE:
            return True
        if self.path == INCREMENTAL_PATH and o.active.traffic_percent not in (None, 100):
            return False
        return bool(o.active.cluster) and o.active.cluster != self.old_cluster

    def waiting_for(self) -> str:
        """What has not happened yet (for a timeout message)."""
        if not self._observed:
            return f"the operator to observe generation {self.generation}"
        if self.path == IN_PLACE:
            return "the applications to be RUNNING and the service Ready"
        if not self._seen_pending:
            return "a new RayCluster (none was started: is the KubeRay operator running?)"
        return f"the new RayCluster {self._seen_pending} to become active and Ready"

    def _finish(self, lines: list[str], verdict: str, reason: str) -> list[str]:
        self.verdict, self.reason = verdict, reason
        return lines
