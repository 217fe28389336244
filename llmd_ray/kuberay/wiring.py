"""What each engine deployment of a serveConfigV2 application asks Ray for (pure: no Ray import).

For an ``llmd_ray:build_app`` application the engine deployments are its variants
(``LLMServer-<name>``), and what they ask for is what ``build_app`` derives from each
variant: its ``resources``, ``replica_num_gpus`` (else the app's) and its most replicas.
A ``deployments[]`` entry for that deployment replaces its ``ray_actor_options`` and
bounds, as Serve does. Entries of other deployments are read as they are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from llmd_ray.kuberay.groups import APP_BUILDER, APP_DEFAULTS
from llmd_ray.topology.variant import Variant


@dataclass(slots=True)
class Request:
    """One deployment's per-replica request and its most replicas."""

    deployment: str
    path: str  # where its resources are declared (``<path>.resources``)
    resources: dict[str, Any] = field(default_factory=dict)
    gpus: float = 0.0
    max_replicas: int | None = None
    variant: bool = False  # a build_app variant (must be pinned to a worker group)


def _entry_max(entry: dict[str, Any]) -> int | None:
    auto = entry.get("autoscaling_config")
    if isinstance(auto, dict) and isinstance(auto.get("max_replicas"), int):
        return auto["max_replicas"]
    n = entry.get("num_replicas")
    return n if isinstance(n, int) else None


def _gpus(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def deployment_requests(app: dict[str, Any], prefix: str) -> list[Request]:
    """Every engine deployment's request (variants that do not validate are left to the args check)."""
    entries = {e["name"]: (i, e) for i, e in enumerate(app.get("deployments") or [])
               if isinstance(e, dict) and isinstance(e.get("name"), str)}
    out: list[Request] = []
    args = app.get("args") if isinstance(app.get("args"), dict) else {}
    raw_variants = args.get("variants") if app.get("import_path") == APP_BUILDER else None
    for j, raw in enumerate(raw_variants if isinstance(raw_variants, list) else []):
        try:
            v = Variant.model_validate(raw)
        except ValidationError:
            continue
        gpus = v.replica_num_gpus if v.replica_num_gpus is not None else args.get("replica_num_gpus", APP_DEFAULTS["replica_num_gpus"])
        req = Request(v.deployment_name, f"{prefix}.args.variants[{j}]", dict(v.resources), _gpus(gpus), v.max_replicas, True)
        if v.deployment_name in entries:
            di, entry = entries.pop(v.deployment_name)
            opts = entry.get("ray_actor_options")
            if isinstance(opts, dict):  # Serve replaces the code's ray_actor_options with the config's
                req.path = f"{prefix}.deployments[{di}].ray_actor_options"
                req.resources = dict(opts.get("resources") or {})
                req.gpus = _gpus(opts.get("num_gpus"))
            req.max_replicas = _entry_max(entry) if _entry_max(entry) is not None else req.max_replicas
        out.append(req)
    for name, (di, entry) in entries.items():
        opts = entry.get("ray_actor_options") or {}
        if not isinstance(opts, dict):
            continue
        out.append(Request(name, f"{prefix}.deployments[{di}].ray_actor_options", dict(opts.get("resources") or {}),
                           _gpus(opts.get("num_gpus")), _entry_max(entry)))
    return out


def group_resources(group: dict[str, Any]) -> dict[str, float]:
    """Custom Ray resources a worker group advertises per pod (top-level `resources`, else rayStartParams)."""
    top = group.get("resources")
    if isinstance(top, dict) and top:
        raw: dict[str, Any] = top
    else:
        text = ((group.get("rayStartParams") or {}).get("resources")) or ""
        try:
            raw = json.loads(json.loads(text) if text.startswith('"') else text) if text else {}
        except (ValueError, TypeError):
            raw = {}
    out = {}
    for k, v in raw.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out
