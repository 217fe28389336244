"""Validation of what each pod of a RayService needs of its host (hosts.py explains why; pure, no Ray).

Every group (the head and each worker group), on its Ray container (``containers[0]``, as KubeRay reads it):

- an emptyDir with ``medium: Memory`` and a ``sizeLimit`` mounted at ``/dev/shm``;
- ``rayStartParams.object-store-memory`` set, fitting in that ``/dev/shm`` together with (worker groups)
  each replica's KV-tier pool and the headroom, and holding the shared KV tier's budget (the SharedKVStore
  may land on any pod);
- a memory limit above the ``/dev/shm`` size (its pages count against it);
- ``PYTHONHASHSEED`` in the environment, the same value on every group and in the apps' ``runtime_env``;
- container ports for Serve (``http_options.port``) and Ray's metrics (``metrics-export-port``);
- ``terminationGracePeriodSeconds`` of at least ``hosts.MIN_TERMINATION_GRACE_S``;
- worker groups: a preStop hook that drains the Ray node.

``check_pods`` returns ``(JSON path, message)`` pairs; validate.py turns them into errors.
"""

from __future__ import annotations

from typing import Any

from llmd_ray.kuberay.groups import APP_BUILDER, resource_name
from llmd_ray.kuberay.hosts import (MIN_TERMINATION_GRACE_S, PRESTOP_MODULE, PYTHONHASHSEED, SHM_MOUNT, gib,
                                    quantity_bytes, shared_store_resources, shared_tier_bytes, shm_needed,
                                    tier_shm_bytes)
from llmd_ray.kuberay.serve_config import SERVE_PORT
from llmd_ray.kuberay.spec import RESOURCE_PREFIX
from llmd_ray.kuberay.wiring import group_resources

RC = "spec.rayClusterConfig"
DEFAULT_METRICS_PORT = 8080  # KubeRay's default metrics-export-port
K8S_DEFAULT_GRACE_S = 30


def _dict(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _list(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


class _Context:
    """What the serve config tells every group's check: the apps' seed, the Serve port, the shm of replicas."""

    def __init__(self, serve_cfg: dict[str, Any] | None):
        cfg = _dict(serve_cfg)
        self.serve_port = _dict(cfg.get("http_options")).get("port", SERVE_PORT)
        self.seeds: set[str] = set()
        self.tier_shm: dict[str, int] = {}  # llmd-variant-* resource -> /dev/shm per replica
        self.shared: list[tuple[int, dict[str, Any]]] = []  # (budget, resources placing the store)
        for app in _list(cfg.get("applications")):
            app = _dict(app)
            if not str(app.get("import_path", "")).startswith("llmd_ray"):
                continue
            seed = _dict(_dict(app.get("runtime_env")).get("env_vars")).get(PYTHONHASHSEED)
            if seed is not None:
                self.seeds.add(str(seed))
            args = _dict(app.get("args"))
            if shared_tier_bytes(args):
                self.shared.append((shared_tier_bytes(args), shared_store_resources(args)))
            if app.get("import_path") != APP_BUILDER:
                continue
            per_replica = tier_shm_bytes(args)
            for v in _list(args.get("variants")):
                v = _dict(v)
                if v.get("role", "aggregated") != "aggregated" or not isinstance(v.get("name"), str):
                    continue
                for res in [resource_name(v["name"]), *(k for k in _dict(v.get("resources")) if str(k).startswith(RESOURCE_PREFIX))]:
                    self.tier_shm[res] = per_replica


def check_pods(spec: dict[str, Any], serve_cfg: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Every group's pod needs, as (JSON path, message) pairs."""
    rc = _dict(spec.get("rayClusterConfig"))
    ctx = _Context(serve_cfg)
    groups = [(f"{RC}.headGroupSpec", rc.get("headGroupSpec"), False)]
    groups += [(f"{RC}.workerGroupSpecs[{i}]", g, True) for i, g in enumerate(_list(rc.get("workerGroupSpecs")))]
    problems: list[tuple[str, str]] = []
    seen_seeds: dict[str, str] = {}
    for path, group, worker in groups:
        if isinstance(group, dict):
            problems += _check_group(path, group, worker, ctx, seen_seeds)
    return problems


def _check_group(path: str, g: dict[str, Any], worker: bool, ctx: _Context, seeds: dict[str, str]) -> list[tuple[str, str]]:
    pod = _dict(_dict(g.get("template")).get("spec"))
    containers = _list(pod.get("containers"))
    if not containers or not isinstance(containers[0], dict):
        return []  # the CRD schema reports it
    c, cpath = containers[0], f"{path}.template.spec.containers[0]"
    problems: list[tuple[str, str]] = []
    params = _dict(g.get("rayStartParams"))
    store_path = f"{path}.rayStartParams.object-store-memory"
    store = quantity_bytes(params["object-store-memory"]) if "object-store-memory" in params else None
    if "object-store-memory" not in params:
        problems.append((store_path, "missing: Ray would size the object store at 30% of the pod's memory (capped at "
                                     "max(10 GB, /dev/shm)) and put it in /tmp, on disk, when /dev/shm is smaller"))
    elif store is None:
        problems.append((store_path, f"{params['object-store-memory']!r} is not a number of bytes"))
    shm_path, shm = _shm(path, pod, c, cpath, problems)
    if shm is not None and store is not None:
        replicas = sum(int(n) for r, n in group_resources(g).items() if r in ctx.tier_shm) if worker else 0
        per_replica = max((ctx.tier_shm[r] for r in group_resources(g) if r in ctx.tier_shm), default=0)
        needed = shm_needed(store, replicas, per_replica, engines=worker)
        if needed > shm:
            problems.append((shm_path, f"/dev/shm of {gib(shm)} cannot hold the {gib(store)} object store"
                                       + (" and what the engine replicas keep there" if worker else "")
                                       + f" ({gib(needed)})"))
    memory = quantity_bytes(_dict(_dict(c.get("resources")).get("limits")).get("memory"))
    if shm is not None and memory is not None and shm >= memory:
        problems.append((shm_path, f"/dev/shm of {gib(shm)} takes all of the container's {gib(memory)} memory limit "
                                   "(its pages count against it)"))
    advertised = group_resources(g) if worker else {}
    hosted = [b for b, res in ctx.shared if all(k in advertised for k in res)]  # where the store may land
    if store is not None and hosted and max(hosted) > store:
        problems.append((store_path, f"the object store ({gib(store)}) cannot hold kv_tiers.shared_bytes "
                                     f"({gib(max(hosted))}); the SharedKVStore may be placed on this pod"))
    problems += _check_seed(c, cpath, ctx, seeds)
    problems += _check_ports(c, cpath, ctx.serve_port, params.get("metrics-export-port", DEFAULT_METRICS_PORT))
    grace = pod.get("terminationGracePeriodSeconds")
    if not isinstance(grace, int) or grace < MIN_TERMINATION_GRACE_S:
        shown = f"{grace} s" if isinstance(grace, int) else f"missing (Kubernetes' default {K8S_DEFAULT_GRACE_S} s)"
        problems.append((f"{path}.template.spec.terminationGracePeriodSeconds",
                         f"{shown}: at least {MIN_TERMINATION_GRACE_S} s, for replicas to stop gracefully and the "
                         "node's Serve proxy to drain before the pod is killed"))
    if worker and not _drains(c):
        problems.append((f"{cpath}.lifecycle.preStop", "missing a hook that drains the Ray node (`python -m "
                         f"{PRESTOP_MODULE}`, or `ray drain-node`): at SIGTERM `ray start --block` stops every Ray "
                         "process at once, so the pod's replicas and proxy die with their streams"))
    return problems


def _shm(path: str, pod: dict[str, Any], c: dict[str, Any], cpath: str, problems: list) -> tuple[str, int | None]:
    """The /dev/shm volume's sizeLimit path and bytes (None: a problem was recorded)."""
    mounts = [m for m in _list(c.get("volumeMounts")) if isinstance(m, dict)]
    mount = next((m for m in mounts if str(m.get("mountPath", "")).rstrip("/") == SHM_MOUNT), None)
    if mount is None:
        problems.append((f"{cpath}.volumeMounts", f"no volume mounted at {SHM_MOUNT}: the container runtime's 64 MiB "
                         "holds neither Ray's object store nor the replicas' KV handoff files"))
        return f"{cpath}.volumeMounts", None
    vols = _list(pod.get("volumes"))
    j = next((j for j, v in enumerate(vols) if isinstance(v, dict) and v.get("name") == mount.get("name")), None)
    if j is None:
        problems.append((f"{path}.template.spec.volumes", f"no volume named {mount.get('name')!r} (mounted at {SHM_MOUNT})"))
        return f"{path}.template.spec.volumes", None
    vpath = f"{path}.template.spec.volumes[{j}].emptyDir"
    empty = vols[j].get("emptyDir")
    if not isinstance(empty, dict) or empty.get("medium") != "Memory":
        problems.append((f"{vpath}.medium", f"{SHM_MOUNT} must be an emptyDir with medium Memory (tmpfs)"))
        return f"{vpath}.medium", None
    if "sizeLimit" not in empty:
        problems.append((f"{vpath}.sizeLimit", "missing: the object store is sized against it, and an unbounded "
                         "tmpfs can take the whole pod's memory"))
        return f"{vpath}.sizeLimit", None
    size = quantity_bytes(empty["sizeLimit"])
    if size is None:
        problems.append((f"{vpath}.sizeLimit", f"{empty['sizeLimit']!r} is not a memory quantity"))
    return f"{vpath}.sizeLimit", size


def _check_seed(c: dict[str, Any], cpath: str, ctx: _Context, seen: dict[str, str]) -> list[tuple[str, str]]:
    env = _list(c.get("env"))
    j = next((j for j, e in enumerate(env) if isinstance(e, dict) and e.get("name") == PYTHONHASHSEED), None)
    if j is None:
        return [(f"{cpath}.env", f"missing {PYTHONHASHSEED}: prefix block hashes (vLLM's NONE_HASH) must agree "
                 "across pods")]
    value = str(env[j].get("value"))
    expected = next(iter(sorted(ctx.seeds)), None) or seen.get("value")
    seen.setdefault("value", value)
    if expected is not None and value != expected:
        return [(f"{cpath}.env[{j}].value", f"{PYTHONHASHSEED}={value} differs from {expected} elsewhere: routers "
                 "and engines on different pods would hash prefixes differently")]
    return []


def _check_ports(c: dict[str, Any], cpath: str, serve_port: Any, metrics_port: Any) -> list[tuple[str, str]]:
    declared = {p.get("containerPort") for p in _list(c.get("ports")) if isinstance(p, dict)}
    out = []
    for port, what in ((serve_port, "Serve's HTTP proxy (proxy_location EveryNode)"),
                       (metrics_port, "Ray's metrics (metrics-export-port)")):
        try:
            port = int(port)
        except (TypeError, ValueError):
            continue
        if port not in declared:
            out.append((f"{cpath}.ports", f"no containerPort {port} for {what}"))
    return out


def _drains(c: dict[str, Any]) -> bool:
    command = _dict(_dict(_dict(c.get("lifecycle")).get("preStop")).get("exec")).get("command")
    text = " ".join(str(x) for x in _list(command))
    return PRESTOP_MODULE in text or "drain-node" in text
