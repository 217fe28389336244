"""What each pod needs of its host on KubeRay, where every pod is a host of its own (pure: no Ray import).

On KubeRay each pod has its own IP, its own ``/dev/shm`` and its own ``/tmp``; the ingress, the engines,
the KV index and the shared KV store land on different pods. The renderer (render.py) writes these needs
into every group and the validator (pod_checks.py) refuses a manifest that lacks them, both from here:

- ``/dev/shm``: a container runtime gives a pod 64 MiB of it. Ray puts its object store there only when it
  fits (``ray._private.services.determine_plasma_store_config``), else in ``/tmp`` (disk, slow) or it refuses
  to start; llmd-ray's replicas trade KV with their EngineCore process through files there (the P/D handoff,
  ``llmd_ray.pd.shm``; the KV tiers' memory pools, ``llmd_ray.tiers.feature``). So every group mounts an
  in-memory emptyDir with a ``sizeLimit`` at ``/dev/shm`` that holds the object store (set explicitly with
  ``object-store-memory``: Ray's default, 30 % of the pod's memory capped at max(10 GB, /dev/shm), does not
  follow the volume) plus, on engine pods, each replica's tier pool and ``SHM_HEADROOM_BYTES``. Its pages
  count against the container's memory limit, so the limit must exceed it.
- the node IP: Ray's node IP is the pod IP (KubeRay starts Ray with ``--node-ip-address=$MY_POD_IP``);
  NIXL's side channel and the engines' KV-event ZMQ sockets announce it. Their ports are picked free at
  replica start (like Ray's own worker ports), so they cannot be declared; pods of one RayCluster must reach
  each other on any TCP port (a NetworkPolicy must allow it).
- ``PYTHONHASHSEED``: vLLM's ``NONE_HASH`` (the first block hash) is derived from it, so routers on one pod
  and engines on others compute the same prefix hashes only if every pod has the same value.
- termination: ``ray start --block`` stops every Ray process at SIGTERM, so a worker pod drains its Ray node
  first (``prestop.py``): Serve starts its replicas elsewhere, stops them gracefully, the node's proxy
  drains, and streams on a stopped replica migrate (``frontdoor/migrating.py``).
"""

from __future__ import annotations

import re
from typing import Any

from llmd_ray.errors import ConfigError

SHM_VOLUME = "dshm"
SHM_MOUNT = "/dev/shm"
GiB = 1 << 30
# Per engine pod, on top of the object store and the tier pools: the P/D handoff files of the requests in
# flight (object_store transport; one prompt's KV each) and NCCL/UCX shared-memory segments.
SHM_HEADROOM_BYTES = GiB
# An engine replica gets 20 s to finish its streams (graceful_shutdown_timeout_s, serving/app.py), a draining
# node's Serve proxy at least 30 s (RAY_SERVE_PROXY_MIN_DRAINING_PERIOD_S); plus 10 s for the drain itself.
ENGINE_GRACEFUL_SHUTDOWN_S = 20
PROXY_MIN_DRAINING_S = 30
MIN_TERMINATION_GRACE_S = ENGINE_GRACEFUL_SHUTDOWN_S + PROXY_MIN_DRAINING_S + 10
# What the pre-stop hook leaves of the grace period for Ray to exit after the drain.
PRESTOP_MARGIN_S = 10
PRESTOP_MODULE = "llmd_ray.kuberay.prestop"
PYTHONHASHSEED = "PYTHONHASHSEED"

_SUFFIX = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
           "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60, "m": 1e-3}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|[mkMGTPE])?$")


def quantity_bytes(value: Any) -> int | None:
    """Bytes of a Kubernetes memory quantity ("8Gi", "500M", 1024), None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    m = _QUANTITY.match(str(value).strip())
    if m is None:
        return None
    return int(float(m.group(1)) * _SUFFIX[m.group(2) or ""])


def _tiers(args: dict[str, Any]):
    """The app's ``kv_tiers`` as a ``KVTiersConfig``; None when absent or invalid (the args check reports it)."""
    raw = args.get("kv_tiers")
    if not isinstance(raw, dict):
        return None
    from llmd_ray.tiers.config import KVTiersConfig

    try:
        return KVTiersConfig.model_validate(raw)
    except ValueError:
        return None


def tier_shm_bytes(args: dict[str, Any]) -> int:
    """/dev/shm one aggregated replica's KV tiers take (their host-memory pool); 0 without ``kv_tiers``."""
    tiers = _tiers(args)
    if tiers is None:
        return 0
    if tiers.shm_root is not None and not tiers.shm_root.startswith(SHM_MOUNT):
        return 0  # pools elsewhere: not in /dev/shm
    return tiers.memory_bytes


def shared_tier_bytes(args: dict[str, Any]) -> int:
    """The shared KV tier's object-store budget (``kv_tiers.shared_bytes``); 0 when the tier is off."""
    tiers = _tiers(args)
    return tiers.shared_bytes if tiers is not None and tiers.shared else 0


def shared_store_resources(args: dict[str, Any]) -> dict[str, Any]:
    """Custom Ray resources placing the SharedKVStore (``kv_tiers.shared_store_resources``); empty: any pod."""
    res = (args.get("kv_tiers") or {}).get("shared_store_resources") if isinstance(args.get("kv_tiers"), dict) else None
    return dict(res) if isinstance(res, dict) else {}


def shm_needed(object_store: int, replicas: int = 0, per_replica: int = 0, engines: bool = False) -> int:
    """/dev/shm a pod needs: its object store, plus on engine pods each replica's pool and the headroom."""
    return object_store + replicas * per_replica + (SHM_HEADROOM_BYTES if engines else 0)


def check_fits(where: str, shm: str, object_store: str, memory: str, needed: int, param: str) -> None:
    """ConfigError unless /dev/shm holds ``needed`` bytes and the pod's memory exceeds /dev/shm."""
    shm_b, store_b, mem_b = quantity_bytes(shm), quantity_bytes(object_store), quantity_bytes(memory)
    if shm_b is None or store_b is None or mem_b is None:
        raise ConfigError(f"{where}: /dev/shm {shm!r}, object store {object_store!r} and memory {memory!r} must be "
                          "memory quantities", param=param)
    if needed > shm_b:
        raise ConfigError(f"{where}: /dev/shm of {shm} ({gib(shm_b)}) cannot hold the {object_store} object store "
                          f"and what the replicas keep there ({gib(needed)} in all); raise shm_size or lower "
                          "object_store_memory", param=param)
    if shm_b >= mem_b:
        raise ConfigError(f"{where}: /dev/shm of {shm} would take all of the pod's {memory} of memory (its pages "
                          "count against the container's limit); give the pod more memory", param=param)


def prestop_command(grace_s: int) -> list[str]:
    """The worker pods' preStop hook: drain this Ray node and wait until Serve has moved off it."""
    return ["python", "-m", PRESTOP_MODULE, "--deadline-s", str(max(grace_s - PRESTOP_MARGIN_S, 1))]


def gib(n: int) -> str:
    return f"{n / GiB:.3g} GiB"
