"""Validate RayService/RayCluster documents: the CRD schema, then serveConfigV2.

serveConfigV2 is an opaque string to the CRD, so it gets checks of its own:

1. it parses as YAML;
2. Ray's own ``ray.serve.schema.ServeDeploySchema`` accepts it (needs Ray);
3. each application's ``args`` validate against our pydantic model, for the
   builders we know (``KNOWN_BUILDERS``); other builders are reported as not
   checked, never silently passed, and removed ones (``build_pd_app``) fail;
4. wiring: every variant of an ``llmd_ray:build_app`` application (and every
   ``deployments[]`` entry) requests an ``llmd-variant-*`` resource advertised
   by a worker group whose pods have the GPUs for the replicas they hold and
   enough room for the deployment's most replicas;
5. llmd-ray applications carry PYTHONHASHSEED in ``runtime_env.env_vars``.

Every group's pods get the checks of what a pod needs of its host (pod_checks.py): /dev/shm, the
object store, PYTHONHASHSEED, ports, the termination grace period and the workers' preStop drain.

``spec.upgradeStrategy`` gets KubeRay's own rules (upgrade_strategy.check_upgrade_strategy).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any

import yaml

from llmd_ray.kuberay.crd import CRDRegistry, format_path
from llmd_ray.kuberay.serve_config import PD_MOVED, REMOVED_BUILDERS
from llmd_ray.kuberay.spec import RESOURCE_PREFIX
from llmd_ray.kuberay.upgrade_strategy import check_upgrade_strategy
from llmd_ray.kuberay.pod_checks import check_pods
from llmd_ray.kuberay.wiring import Request, deployment_requests, group_resources

# import_path -> "module:Model" of its args. Only these builders' args are checked.
KNOWN_BUILDERS = {
    "llmd_ray:build_app": "llmd_ray.serving.app:AppArgs",
}
SERVE_PATH = "spec.serveConfigV2"


@dataclass(slots=True, frozen=True)
class Problem:
    path: str
    message: str
    severity: str = "error"  # "error" fails validation; "note" is printed only

    def __str__(self) -> str:
        tag = "" if self.severity == "error" else f"{self.severity}: "
        return f"{self.path}: {tag}{self.message}" if self.path else f"{tag}{self.message}"


def validate_document(doc: Any, registry: CRDRegistry, *, serve_schema: bool = True) -> list[Problem]:
    """All problems of one manifest document (errors and notes)."""
    if not isinstance(doc, dict):
        return [Problem("", f"a manifest document must be a mapping, got {type(doc).__name__}")]
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    schema = registry.get(str(api_version), str(kind))
    if schema is None:
        return [Problem("", f"no CRD schema for apiVersion {api_version!r} kind {kind!r} (known: {', '.join(registry.kinds())})")]
    problems = [Problem(e.path, e.message) for e in schema.validate(doc)]
    if kind == "RayService":
        spec = doc.get("spec") or {}
        if isinstance(spec, dict):  # what the operator's ValidateRayServiceSpec refuses and the schema lets through
            problems += [Problem(path, msg, sev) for path, msg, sev in check_upgrade_strategy(spec)]
        text = spec.get("serveConfigV2")
        if isinstance(text, str):
            groups = ((spec.get("rayClusterConfig") or {}).get("workerGroupSpecs")) or []
            problems += validate_serve_config_text(text, groups if isinstance(groups, list) else [], serve_schema=serve_schema)
        elif text is None:
            problems.append(Problem(SERVE_PATH, "missing: llmd-ray RayServices carry their serve config here"))
        if isinstance(spec, dict):  # what each pod needs of its host (hosts.py)
            problems += [Problem(path, msg) for path, msg in check_pods(spec, _serve_config_or_none(text))]
    return problems


def _serve_config_or_none(text: Any) -> dict[str, Any] | None:
    try:
        cfg = yaml.safe_load(text) if isinstance(text, str) else None
    except yaml.YAMLError:
        return None
    return cfg if isinstance(cfg, dict) else None


def validate_serve_config_text(text: str, worker_groups: list[dict[str, Any]], *, serve_schema: bool = True) -> list[Problem]:
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return [Problem(SERVE_PATH, f"not valid YAML: {e}")]
    if not isinstance(cfg, dict):
        return [Problem(SERVE_PATH, "must be a YAML mapping with `applications`")]
    problems = check_serve_schema(cfg) if serve_schema else []
    apps = cfg.get("applications") if isinstance(cfg.get("applications"), list) else []
    for i, app in enumerate(apps):
        if isinstance(app, dict):
            problems += check_app_args(app, f"{SERVE_PATH}.applications[{i}]", serve_schema=serve_schema)
            problems += check_hash_seed(app, f"{SERVE_PATH}.applications[{i}]")
    problems += check_wiring(apps, worker_groups)
    return problems


def _loc(prefix: str, loc: tuple[Any, ...]) -> str:
    return prefix + ("." if loc and not isinstance(loc[0], int) else "") + format_path(loc) if loc else prefix


def check_serve_schema(cfg: dict[str, Any]) -> list[Problem]:
    """Ray's ServeDeploySchema (imports Ray)."""
    try:
        from ray.serve.schema import ServeDeploySchema
    except ImportError as e:
        return [Problem(SERVE_PATH, f"not checked against ServeDeploySchema: Ray is not importable ({e})", "note")]
    from pydantic import ValidationError

    try:
        ServeDeploySchema.model_validate(cfg)
    except ValidationError as e:
        return [Problem(_loc(SERVE_PATH, tuple(err["loc"])), f"ServeDeploySchema: {err['msg']}") for err in e.errors()]
    return []


def check_app_args(app: dict[str, Any], prefix: str, *, serve_schema: bool = True) -> list[Problem]:
    """Validate `args` with the builder's own pydantic model (imports the builder's module, hence Ray)."""
    import_path = app.get("import_path")
    if import_path in REMOVED_BUILDERS:
        return [Problem(f"{prefix}.import_path", PD_MOVED)]
    target = KNOWN_BUILDERS.get(str(import_path))
    if target is None:
        return [Problem(f"{prefix}.args", f"not checked: no known args model for import_path {import_path!r} "
                        f"(known: {', '.join(KNOWN_BUILDERS)})", "note")]
    if not serve_schema:
        return []
    module, _, name = target.partition(":")
    try:
        model = getattr(importlib.import_module(module), name)
    except Exception as e:  # noqa: BLE001 - a builder module that fails to import is reported, not fatal
        return [Problem(f"{prefix}.args", f"not checked: cannot import {target} ({type(e).__name__}: {e})", "note")]
    from pydantic import ValidationError

    try:
        model.model_validate(app.get("args") or {})
    except ValidationError as e:
        return [Problem(_loc(f"{prefix}.args", tuple(err["loc"])), f"{name}: {err['msg']}") for err in e.errors()]
    return []


def check_hash_seed(app: dict[str, Any], prefix: str) -> list[Problem]:
    if not str(app.get("import_path", "")).startswith("llmd_ray"):
        return []
    env = ((app.get("runtime_env") or {}).get("env_vars")) or {}
    if "PYTHONHASHSEED" not in env:
        return [Problem(f"{prefix}.runtime_env.env_vars.PYTHONHASHSEED",
                        "missing: KV-event block hashes differ between processes without a fixed seed")]
    return []


def _group_gpus(group: dict[str, Any]) -> float:
    params = group.get("rayStartParams") or {}
    if "num-gpus" in params:
        try:
            return float(params["num-gpus"])
        except (TypeError, ValueError):
            return 0.0
    containers = (((group.get("template") or {}).get("spec") or {}).get("containers")) or [{}]
    limits = ((containers[0].get("resources") or {}).get("limits")) or {}
    for k, v in limits.items():
        if str(k).endswith("gpu"):
            try:
                return float(v)
            except (TypeError, ValueError):
                return 0.0
    return 0.0


def check_wiring(apps: list[Any], groups: list[dict[str, Any]]) -> list[Problem]:
    """Each engine deployment's `llmd-variant-*` request lands on a group that can host it."""
    problems: list[Problem] = []
    advertised = [(i, g, group_resources(g)) for i, g in enumerate(groups) if isinstance(g, dict)]
    for ai, app in enumerate(apps):
        if not isinstance(app, dict):
            continue
        for req in deployment_requests(app, f"{SERVE_PATH}.applications[{ai}]"):
            wanted = {k: v for k, v in req.resources.items() if str(k).startswith(RESOURCE_PREFIX)}
            if req.variant and not wanted:
                problems.append(Problem(f"{req.path}.resources", f"deployment {req.deployment!r} requests no "
                                        f"{RESOURCE_PREFIX}* resource, so the Ray autoscaler cannot tell which worker "
                                        "group its replicas need (render the manifest from a ClusterSpec)"))
            for res, per_replica in wanted.items():
                problems += _check_host(req, res, per_replica, advertised)
    return problems


def _check_host(req: Request, res: str, per_replica: Any, advertised: list) -> list[Problem]:
    path = f"{req.path}.resources.{res}"
    hosts = [(i, g, r) for i, g, r in advertised if r.get(res, 0) > 0]
    if not hosts:
        return [Problem(path, "no worker group advertises this Ray resource, so these replicas can never be placed")]
    i, g, r = hosts[0]
    gpath = f"spec.rayClusterConfig.workerGroupSpecs[{i}]"
    name = g.get("groupName", i)
    per_pod = math.floor(r[res] / float(per_replica or 1))
    if per_pod < 1:
        return [Problem(path, f"needs {per_replica} per replica; group {name!r} pods advertise {r[res]}")]
    problems = []
    if req.gpus * per_pod > _group_gpus(g):
        problems.append(Problem(path, f"{per_pod} replica(s) per pod x {req.gpus:g} GPUs exceed the {_group_gpus(g):g} "
                                      f"GPUs of group {name!r} ({gpath})"))
    max_pods = g.get("maxReplicas", 2147483647)
    if req.max_replicas is not None and isinstance(max_pods, int) and req.max_replicas > max_pods * per_pod:
        problems.append(Problem(path, f"deployment scales to {req.max_replicas} replicas but group {name!r} holds at most "
                                      f"{max_pods} pods x {per_pod} = {max_pods * per_pod} ({gpath}.maxReplicas)"))
    return problems
