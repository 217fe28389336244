"""``python -m llmd_ray.kuberay upgrade``: patch a live RayService to a new version and follow the rollout.

The patch and the reading of each status are pure (upgrade.py, upgrade_follow.py); this module talks to
the API server with the official `kubernetes` client: a JSON Patch on the RayService, then a watch on it
(re-opened until the deadline) whose every object goes to :class:`~.upgrade_follow.Rollout`.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable
from typing import Any

from llmd_ray.kuberay.client import GROUP, KubeAPIError, KubeRayClient, api_error
from llmd_ray.kuberay.upgrade import BLOCKED, NOTHING, explain_path, plan_upgrade
from llmd_ray.kuberay.upgrade_follow import DONE, Observation, Rollout
from llmd_ray.kuberay.upgrade_strategy import DEFAULT_DELETION_DELAY_S, describe_strategy


def patch(kube: KubeRayClient, name: str, namespace: str, ops: list[dict[str, Any]], *, dry_run: bool = False) -> dict[str, Any]:
    """Apply a JSON Patch (RFC 6902) to a RayService; a failed `test` op comes back as a 422 KubeAPIError."""
    kwargs: dict[str, Any] = {"_content_type": "application/json-patch+json"}
    if dry_run:
        kwargs["dry_run"] = "All"
    return kube._call(f"patch RayService {namespace}/{name}" + (" (dry run)" if dry_run else ""),
                      kube.custom.patch_namespaced_custom_object, GROUP, "v1", namespace, "rayservices", name, ops, **kwargs)


def follow(kube: KubeRayClient, name: str, namespace: str, timeout_s: float, on_object: Callable[[dict[str, Any]], bool]) -> bool:
    """Feed the RayService, then every change a watch delivers, to `on_object` until it returns True
    (returns True) or the deadline passes (returns False). A dropped or expired watch is re-opened after a read."""
    from kubernetes import watch
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    deadline = time.monotonic() + timeout_s
    while True:
        obj = kube.get(name, namespace)
        if on_object(obj):
            return True
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        w = watch.Watch()
        try:
            for event in w.stream(kube.custom.list_namespaced_custom_object, GROUP, "v1", namespace, "rayservices",
                                  field_selector=f"metadata.name={name}", resource_version=rv,
                                  timeout_seconds=max(1, int(min(left, 300))), _request_timeout=min(left, 300) + 10):
                if event["type"] == "ERROR":  # e.g. 410 Gone: re-read and watch again
                    break
                if event["type"] == "DELETED":
                    raise KubeAPIError(f"RayService {namespace}/{name} was deleted during the upgrade")
                if on_object(event["object"]):
                    return True
                if time.monotonic() >= deadline:
                    return False
        except ApiException as e:
            if e.status not in (410, 500, 503, 504):
                raise api_error(e, f"watch RayService {namespace}/{name}") from e
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        except (HTTPError, OSError, ValueError) as e:  # a dropped connection: re-open
            print(f"  (watch interrupted: {e}; re-reading)", file=sys.stderr)
        finally:
            w.stop()


def _new_manifest(a: argparse.Namespace, name: str) -> dict[str, Any] | None:
    """The RayService of --manifest (a ClusterSpec is rendered), validated, with the CRD's defaults applied."""
    if not a.manifest:
        return None
    from llmd_ray.errors import ConfigError
    from llmd_ray.kuberay.documents import load_documents
    from llmd_ray.kuberay.crd import CRDRegistry, apply_defaults
    from llmd_ray.kuberay.validate import validate_document

    docs = [(label, d) for label, d in load_documents(a.manifest) if isinstance(d, dict) and d.get("kind") == "RayService"]
    named = [(label, d) for label, d in docs if (d.get("metadata") or {}).get("name") == name]
    if len(named) != 1 and len(docs) != 1:
        raise ConfigError(f"{a.manifest}: expected one RayService (or one named {name!r}), found {len(docs)}")
    label, doc = (named or docs)[0]
    registry = CRDRegistry.load(a.crds)
    if not a.skip_validation:
        errors = [p for p in validate_document(doc, registry) if p.severity == "error"]
        if errors:
            raise ConfigError(f"{label}: not valid, nothing patched:\n  " + "\n  ".join(str(p) for p in errors))
    schema = registry.get(str(doc.get("apiVersion")), "RayService")
    return apply_defaults(copy.deepcopy(doc), schema.openapi) if schema else doc


def cmd_upgrade(a: argparse.Namespace) -> int:
    from llmd_ray.errors import ConfigError

    if not a.image and not a.manifest:
        raise ConfigError("upgrade needs the new version: --image and/or --manifest")
    manifest = _new_manifest(a, a.name)
    ns = a.namespace or ((manifest or {}).get("metadata") or {}).get("namespace") or "default"
    kube = KubeRayClient(kubeconfig=a.kubeconfig, context=a.context)
    live = kube.get(a.name, ns)
    plan = plan_upgrade(live, image=a.image, manifest=manifest)
    new_spec = manifest["spec"] if manifest else live.get("spec") or {}
    print(f"RayService {ns}/{a.name}: generation {live['metadata'].get('generation')}, active cluster "
          f"{plan.old_cluster or '-'}")
    print(f"  now: {Observation.parse(live).summary()}")
    for c in plan.changes:
        print(f"  change: {c}")
    print(f"  upgradeStrategy: {describe_strategy(new_spec)}")
    print(f"  rollout: {explain_path(plan)}")
    if plan.path == NOTHING:
        return 0
    if plan.path == BLOCKED:
        print("not patched: the new version would never be rolled out", file=sys.stderr)
        return 1
    if not a.skip_validation and not manifest:  # --image alone: the live upgradeStrategy must be one KubeRay takes
        from llmd_ray.kuberay.upgrade_strategy import check_upgrade_strategy

        errors = [f"{p}: {m}" for p, m, sev in check_upgrade_strategy(new_spec) if sev == "error"]
        if errors:
            raise ConfigError("the live spec's upgradeStrategy is refused by KubeRay:\n  " + "\n  ".join(errors))
    out = patch(kube, a.name, ns, plan.ops, dry_run=a.dry_run)
    generation = int((out.get("metadata") or {}).get("generation") or 0)
    if a.dry_run:
        print(f"  accepted (dry run, not persisted): {len(plan.ops)} patch operations")
        return 0
    print(f"  patched: generation {generation}; following the rollout (timeout {a.timeout:g} s)", flush=True)
    delay = int(new_spec.get("rayClusterDeletionDelaySeconds", DEFAULT_DELETION_DELAY_S))
    rollout = Rollout(generation=generation, path=plan.path, old_cluster=plan.old_cluster,
                      before=Observation.parse(live).conditions, deletion_delay_s=delay)
    t0 = time.monotonic()

    def on_object(obj: dict[str, Any]) -> bool:
        for line in rollout.step(obj):
            print(f"[{time.monotonic() - t0:6.0f} s] {line}", flush=True)
        return bool(rollout.verdict)

    if not follow(kube, a.name, ns, a.timeout, on_object):
        print(f"timed out after {a.timeout:g} s waiting for {rollout.waiting_for()}", file=sys.stderr)
        return 1
    if rollout.verdict == DONE:
        print(f"upgraded: {rollout.reason}")
        return 0
    print(f"upgrade failed: {rollout.reason}", file=sys.stderr)
    return 1


def add_parser(sub: Any, cluster_args: Callable[[argparse.ArgumentParser], None]) -> None:
    u = sub.add_parser("upgrade", help="patch a RayService to a new image and/or manifest and follow the rollout")
    u.add_argument("name", help="RayService name")
    u.add_argument("--image", help="the new image of every Ray container (head and worker groups)")
    u.add_argument("--manifest", help="the new version: a RayService manifest or ClusterSpec file (its spec replaces "
                                      "the live one; --image applies on top)")
    u.add_argument("--timeout", type=float, default=3600.0, help="seconds to follow the rollout (default 3600)")
    u.add_argument("--dry-run", action="store_true", help="server-side dry run of the patch; follow nothing")
    u.add_argument("--skip-validation", action="store_true", help="skip local validation of --manifest")
    u.add_argument("--crds", help="directory of CRD YAML files for local validation (default: as for validate)")
    cluster_args(u)
    u.set_defaults(fn=cmd_upgrade)
