"""How a RayService rolls out a new version: ``spec.upgradeStrategy`` (KubeRay v1.7).

KubeRay v1.7 knows three ``upgradeStrategy.type`` values (``RayServiceUpgradeType`` in
``ray-operator/apis/ray/v1/rayservice_types.go``); the CRD schema does not enumerate them, the
operator's ``ValidateRayServiceSpec`` (``controllers/ray/utils/validation.go``) does:

- ``NewCluster``: a change to ``rayClusterConfig`` starts a second (pending) RayCluster; when its
  Serve applications are RUNNING the Serve Service's selector switches to it at once, and the old
  cluster is deleted ``rayClusterDeletionDelaySeconds`` later. Twice the pods for the duration.
- ``NewClusterWithIncrementalUpgrade``: the same pending cluster, but KubeRay fronts both with a
  Gateway (``gatewayClassName``) and an HTTPRoute, raises the new cluster's Serve ``target_capacity``
  by ``maxSurgePercent``, moves ``stepSizePercent`` of the traffic every ``intervalSeconds`` up to that
  capacity, then lowers the old cluster's capacity by the same amount, until the new one has 100 %.
  Needs the in-tree autoscaler (the capacity is Serve replicas, the pods follow) and a Gateway API
  implementation; at most ``maxSurgePercent`` extra capacity at any time.
- ``None``: a cluster change is not rolled out at all.

``render_upgrade_strategy`` picks the incremental mode when a gateway class is given, else ``NewCluster``;
``check_upgrade_strategy`` mirrors what the operator rejects (it would mark the RayService
``Ready=False, reason ValidationFailed`` and do nothing else).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

NEW_CLUSTER = "NewCluster"
INCREMENTAL = "NewClusterWithIncrementalUpgrade"
NONE = "None"
UPGRADE_TYPES = (INCREMENTAL, NEW_CLUSTER, NONE)  # the order of KubeRay's own error message
DEFAULT_DELETION_DELAY_S = 60  # KubeRay's RayClusterDeletionDelayDuration when the field is unset
PATH = "spec.upgradeStrategy"


class UpgradeSpec(BaseModel):
    """How a new version is rolled out (``spec.upgradeStrategy`` and ``rayClusterDeletionDelaySeconds``)."""

    model_config = ConfigDict(extra="forbid")

    gateway_class: str | None = Field(
        None, description="GatewayClass of the cluster's Gateway API implementation (e.g. `istio`, `eg`); given: "
        "`NewClusterWithIncrementalUpgrade` (traffic moves to the new cluster step by step through a Gateway "
        "KubeRay creates); None: `NewCluster` (the whole Service switches once the new cluster is ready).")
    step_size_percent: int = Field(10, ge=1, le=100, description="Incremental mode: traffic moved to the new "
                                   "cluster per interval (at most max_surge_percent).")
    interval_s: int = Field(30, ge=1, description="Incremental mode: seconds between two traffic steps.")
    max_surge_percent: int = Field(25, ge=1, le=100, description="Incremental mode: Serve target_capacity the new "
                                   "cluster gains (and the old one then loses) per round; the extra capacity held "
                                   "during the upgrade.")
    cluster_deletion_delay_s: int = Field(600, ge=0, description="Seconds the old RayCluster is kept after the "
                                          "switch (rayClusterDeletionDelaySeconds), so streams it is still serving "
                                          "can finish; KubeRay's default is 60.")

    @model_validator(mode="after")
    def _step_within_surge(self) -> UpgradeSpec:
        if self.step_size_percent > self.max_surge_percent:
            raise ValueError(f"step_size_percent {self.step_size_percent} must be <= max_surge_percent "
                             f"{self.max_surge_percent} (KubeRay refuses it)")
        return self

    @property
    def type(self) -> str:
        return INCREMENTAL if self.gateway_class else NEW_CLUSTER


def render_upgrade_strategy(up: UpgradeSpec) -> dict[str, Any]:
    """``spec.upgradeStrategy`` for `up`."""
    if not up.gateway_class:
        return {"type": NEW_CLUSTER}
    return {"type": INCREMENTAL, "clusterUpgradeOptions": {
        "gatewayClassName": up.gateway_class,
        "stepSizePercent": up.step_size_percent,
        "intervalSeconds": up.interval_s,
        "maxSurgePercent": up.max_surge_percent,
    }}


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def check_upgrade_strategy(spec: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(path, message, severity) for what KubeRay v1.7's ValidateRayServiceSpec refuses (errors) and what it
    silently ignores (notes). Types and required fields are the CRD schema's job; these are the rules it lacks."""
    out: list[tuple[str, str, str]] = []
    strategy = spec.get("upgradeStrategy")
    if not isinstance(strategy, dict):
        return out
    kind = strategy.get("type")
    if kind is not None and kind not in UPGRADE_TYPES:
        out.append((f"{PATH}.type", f"{kind!r} is not an upgrade type KubeRay v1.7 knows (valid: "
                    f"{', '.join(UPGRADE_TYPES)}); the operator marks the RayService ValidationFailed", "error"))
        return out
    opts = strategy.get("clusterUpgradeOptions")
    if kind != INCREMENTAL:
        if opts is not None:
            out.append((f"{PATH}.clusterUpgradeOptions", f"ignored: only {INCREMENTAL} reads them "
                        f"(type is {kind or 'unset'})", "note"))
        return out
    where = f"{PATH}.clusterUpgradeOptions"
    if not (spec.get("rayClusterConfig") or {}).get("enableInTreeAutoscaling"):
        out.append(("spec.rayClusterConfig.enableInTreeAutoscaling", f"{INCREMENTAL} needs the Ray autoscaler "
                    "(enableInTreeAutoscaling: true): capacity moves as Serve target_capacity and the pods follow "
                    "it", "error"))
    if not isinstance(opts, dict):
        out.append((where, f"required for {INCREMENTAL} (gatewayClassName, stepSizePercent, intervalSeconds)", "error"))
        return out
    surge = _int(opts.get("maxSurgePercent", 100))
    step = _int(opts.get("stepSizePercent"))
    interval = _int(opts.get("intervalSeconds"))
    if surge is not None and not 0 <= surge <= 100:
        out.append((f"{where}.maxSurgePercent", f"{surge} must be between 0 and 100", "error"))
    if step is not None and not 0 <= step <= 100:
        out.append((f"{where}.stepSizePercent", f"{step} must be between 0 and 100", "error"))
    elif step is not None and surge is not None and step > surge:
        out.append((f"{where}.stepSizePercent", f"{step} must be <= maxSurgePercent ({surge})", "error"))
    if interval is not None and interval <= 0:
        out.append((f"{where}.intervalSeconds", f"{interval} must be greater than 0", "error"))
    if opts.get("gatewayClassName") == "":
        out.append((f"{where}.gatewayClassName", f"must name a GatewayClass for {INCREMENTAL}", "error"))
    if step == 0 or surge == 0:
        out.append((where, "a step or surge of 0 % never moves traffic: the upgrade would never finish", "error"))
    return out


def describe_strategy(spec: dict[str, Any]) -> str:
    """One line for people: the strategy a RayService spec carries and what it means for a rollout."""
    strategy = spec.get("upgradeStrategy") or {}
    kind = strategy.get("type")
    delay = spec.get("rayClusterDeletionDelaySeconds", DEFAULT_DELETION_DELAY_S)
    if kind == INCREMENTAL:
        o = strategy.get("clusterUpgradeOptions") or {}
        return (f"{INCREMENTAL} through GatewayClass {o.get('gatewayClassName')!r}: +{o.get('maxSurgePercent', 100)} % "
                f"capacity per round, {o.get('stepSizePercent')} % of the traffic every {o.get('intervalSeconds')} s; "
                f"the old cluster is deleted {delay} s after the switch")
    if kind == NONE:
        return "None: KubeRay does not roll out rayClusterConfig changes (serveConfigV2 changes still apply in place)"
    label = kind or "unset (KubeRay's default, NewCluster unless the operator runs with ENABLE_ZERO_DOWNTIME=false)"
    return f"{label}: the Service switches to the new cluster once it is ready; the old one is deleted {delay} s later"
