"""What ``python -m llmd_ray.kuberay upgrade`` patches, and how it reads the rollout (pure: dicts in and out).

:func:`plan_upgrade` turns the live RayService and the new version (an image and/or a new manifest)
into a JSON Patch (RFC 6902) of ``spec``: each changed field is ``test``-ed against the value the plan
was made from and then replaced, so a concurrent change to the same field fails the patch (422) instead
of being overwritten, while the operator's status writes do not get in the way. It also says which path
KubeRay will take, by the operator's own rule (``isClusterSpecHashEqual``): a ``rayClusterConfig`` change
other than replicas, min/max replicas, workersToDelete, tolerations and scheduling gates (or worker groups
appended at the end) needs a new RayCluster; anything else is applied to the running cluster in place.

:class:`Rollout` (upgrade_follow.py) then reads each status the watch delivers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from llmd_ray.kuberay.upgrade_strategy import INCREMENTAL, NEW_CLUSTER, NONE

RAY_CONTAINER = 0  # KubeRay's RayContainerIndex: the Ray container is a pod template's first container

# Paths of the rollout KubeRay takes for a change.
NOTHING = "nothing"  # the live spec already is the new version
IN_PLACE = "in-place"  # serveConfigV2 (or a muted cluster field) changes on the running cluster
NEW = "new-cluster"  # NewCluster: a pending cluster, then one switch
INCREMENTAL_PATH = "incremental"  # NewClusterWithIncrementalUpgrade: capacity and traffic move step by step
BLOCKED = "blocked"  # a cluster change under upgradeStrategy None: KubeRay would never roll it out


@dataclass(slots=True)
class UpgradePlan:
    ops: list[dict[str, Any]]  # the JSON Patch
    path: str  # one of the paths above
    strategy: str  # upgradeStrategy.type of the new spec ("" when unset)
    changes: list[str] = field(default_factory=list)  # for people: what changes
    old_cluster: str = ""  # the active RayCluster when the plan was made


def pointer(parts: list[str | int]) -> str:
    """RFC 6901 JSON pointer."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def json_patch(old: Any, new: Any, parts: list[str | int]) -> list[dict[str, Any]]:
    """Ops turning `old` into `new`: mappings key by key, lists of the same length item by item (a container's
    image is one op), anything else replaced whole; every replaced or removed value is `test`-ed first."""
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [op for i, (o, n) in enumerate(zip(old, new)) for op in json_patch(o, n, [*parts, i])]
    if isinstance(old, dict) and isinstance(new, dict):
        ops: list[dict[str, Any]] = []
        for k in old:
            if k not in new:
                ops += [{"op": "test", "path": pointer([*parts, k]), "value": old[k]},
                        {"op": "remove", "path": pointer([*parts, k])}]
        for k in new:
            if k not in old:
                ops.append({"op": "add", "path": pointer([*parts, k]), "value": new[k]})
            else:
                ops += json_patch(old[k], new[k], [*parts, k])
        return ops
    if old == new:
        return []
    return [{"op": "test", "path": pointer(parts), "value": old}, {"op": "replace", "path": pointer(parts), "value": new}]


def _templates(cluster: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = [("head", ((cluster.get("headGroupSpec") or {}).get("template") or {}).get("spec") or {})]
    for g in cluster.get("workerGroupSpecs") or []:
        out.append((f"group {g.get('groupName', '?')}", (g.get("template") or {}).get("spec") or {}))
    return out


def images(spec: dict[str, Any]) -> dict[str, str]:
    """The Ray container's image per pod template ("head", "group <name>")."""
    out = {}
    for label, pod in _templates(spec.get("rayClusterConfig") or {}):
        containers = pod.get("containers") or []
        if len(containers) > RAY_CONTAINER:
            out[label] = containers[RAY_CONTAINER].get("image", "")
    return out


def set_image(spec: dict[str, Any], image: str) -> None:
    """Point every pod template's Ray container at `image` (in place)."""
    for _, pod in _templates(spec.get("rayClusterConfig") or {}):
        containers = pod.get("containers") or []
        if len(containers) > RAY_CONTAINER:
            containers[RAY_CONTAINER]["image"] = image


def cluster_hash_view(cluster: dict[str, Any], groups: int | None = None) -> dict[str, Any]:
    """rayClusterConfig without the fields KubeRay's GenerateHashWithoutReplicasAndWorkersToDelete mutes
    (and without `suspend`); with `groups`, only the first `groups` worker groups (its partial comparison)."""
    c = copy.deepcopy(cluster)
    c.pop("suspend", None)
    c.pop("upgradeStrategy", None)
    for _, pod in _templates(c):
        pod.pop("tolerations", None)
        pod.pop("schedulingGates", None)
    gs = c.get("workerGroupSpecs") or []
    for g in gs:
        for k in ("replicas", "minReplicas", "maxReplicas"):
            g.pop(k, None)
        (g.get("scaleStrategy") or {}).pop("workersToDelete", None)
        if g.get("scaleStrategy") == {}:
            g.pop("scaleStrategy")
    if groups is not None and "workerGroupSpecs" in c:
        c["workerGroupSpecs"] = gs[:groups]
    return c


def needs_new_cluster(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether KubeRay prepares a new RayCluster for this rayClusterConfig change (isClusterSpecHashEqual)."""
    if cluster_hash_view(old) == cluster_hash_view(new):
        return False
    n_old = len(old.get("workerGroupSpecs") or [])
    if len(new.get("workerGroupSpecs") or []) >= n_old and cluster_hash_view(old) == cluster_hash_view(new, n_old):
        return False  # only groups appended at the end: the running cluster is updated
    return True


def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    old_img, new_img = images(old), images(new)
    for label in sorted(set(old_img) | set(new_img)):
        if old_img.get(label) != new_img.get(label):
            out.append(f"image of {label}: {old_img.get(label) or '-'} -> {new_img.get(label) or '-'}")
    if old.get("serveConfigV2") != new.get("serveConfigV2"):
        out.append("serveConfigV2 (the Serve applications) changes")
    oc = copy.deepcopy(old.get("rayClusterConfig") or {})
    nc = copy.deepcopy(new.get("rayClusterConfig") or {})
    set_image({"rayClusterConfig": oc}, "")
    set_image({"rayClusterConfig": nc}, "")
    if oc != nc:
        out.append("rayClusterConfig changes beyond the image")
    rest = sorted(k for k in set(old) | set(new) if k not in ("serveConfigV2", "rayClusterConfig") and old.get(k) != new.get(k))
    out += [f"spec.{k} changes" for k in rest]
    return out


def plan_upgrade(live: dict[str, Any], *, image: str | None = None, manifest: dict[str, Any] | None = None) -> UpgradePlan:
    """The patch and rollout path that take the live RayService to the new version.

    `manifest`: the new RayService (its whole ``spec`` becomes the live one, with server defaults applied
    by the caller so that defaulted fields do not read as changes); `image`: the Ray containers' image
    (applied on top of `manifest` when both are given).
    """
    old = live.get("spec") or {}
    new = copy.deepcopy(manifest["spec"] if manifest is not None else old)
    if image:
        set_image(new, image)
    ops = json_patch(old, new, ["spec"])
    strategy = str((new.get("upgradeStrategy") or {}).get("type") or "")
    old_cluster = str(((live.get("status") or {}).get("activeServiceStatus") or {}).get("rayClusterName") or "")
    changes = _changes(old, new)
    if not ops:
        path = NOTHING
    elif needs_new_cluster(old.get("rayClusterConfig") or {}, new.get("rayClusterConfig") or {}):
        path = {INCREMENTAL: INCREMENTAL_PATH, NONE: BLOCKED}.get(strategy, NEW)
    else:
        path = IN_PLACE
    return UpgradePlan(ops=ops, path=path, strategy=strategy or NEW_CLUSTER, changes=changes, old_cluster=old_cluster)


def explain_path(plan: UpgradePlan) -> str:
    """What KubeRay will do with the patch, for people."""
    return {
        NOTHING: "nothing to change: the RayService already runs this version",
        IN_PLACE: "the running cluster is updated in place (Serve redeploys the applications; no new RayCluster)",
        NEW: "KubeRay starts a new RayCluster, and switches the Serve Service to it once its applications are RUNNING",
        INCREMENTAL_PATH: "KubeRay starts a new RayCluster and moves capacity and traffic to it step by step "
                          "through the Gateway",
        BLOCKED: "upgradeStrategy is None: KubeRay would not roll out this RayCluster change (set NewCluster or "
                 "NewClusterWithIncrementalUpgrade, or delete and re-create the RayService)",
    }[plan.path]
