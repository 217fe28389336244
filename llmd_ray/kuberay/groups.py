"""Worker groups derived from the app's variants (``llmd_ray.topology.Variant``, the one model).

Each variant in an ``llmd_ray:build_app`` application's ``args.variants`` becomes one KubeRay
worker group, named after the variant, that advertises the custom Ray resource
``llmd-variant-<name>`` (one unit per replica a pod holds). Its bounds are the variant's
replica bounds divided by ``pod.replicas_per_pod`` (rounded up), its GPUs per replica
``replica_num_gpus`` (else the app's), its pods ``variant.pod`` (else a default from the
replica's CPUs and GPUs). Pure: no Ray import.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from llmd_ray.errors import ConfigError
from llmd_ray.kuberay.hosts import tier_shm_bytes
from llmd_ray.kuberay.spec import RESOURCE_PREFIX
from llmd_ray.topology.pod import PodSpec, Toleration
from llmd_ray.topology.variant import Variant

APP_BUILDER = "llmd_ray:build_app"
# AppArgs' own defaults for what a variant may leave to the app (a component test checks they agree).
APP_DEFAULTS = {"replica_num_cpus": 1.0, "replica_num_gpus": 0.0}
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# Default pod size when a variant gives no pod resources: the replicas' CPUs plus one for the raylet and the
# node's Serve proxy; memory per pod CPU and per GPU (weights pass through host memory on load).
DEFAULT_MEMORY_GIB_PER_CPU = 4
DEFAULT_MEMORY_GIB_PER_GPU = 16


@dataclass(slots=True)
class WorkerGroup:
    """One variant's worker group, as the renderer writes it."""

    name: str
    application: str
    deployment: str
    role: str
    accelerator: str
    cpus_per_replica: float
    gpus_per_replica: float
    replicas_per_pod: int
    min_replicas: int
    max_replicas: int
    initial_replicas: int
    cpu: str
    memory: str
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[Toleration] = field(default_factory=list)
    shm_per_replica: int = 0  # /dev/shm one replica's KV tiers take (hosts.tier_shm_bytes)
    default_sized: bool = False  # no pod.resources: the renderer adds the /dev/shm volume to the memory

    @property
    def ray_resource(self) -> str:
        return resource_name(self.name)

    @property
    def gpus_per_pod(self) -> int:
        return round(self.gpus_per_replica * self.replicas_per_pod)

    @property
    def min_pods(self) -> int:
        return math.ceil(self.min_replicas / self.replicas_per_pod)

    @property
    def max_pods(self) -> int:
        return math.ceil(self.max_replicas / self.replicas_per_pod)

    @property
    def initial_pods(self) -> int:
        return math.ceil(self.initial_replicas / self.replicas_per_pod)


def resource_name(variant: str) -> str:
    """The custom Ray resource that pins a variant's replicas to its worker group."""
    return f"{RESOURCE_PREFIX}{variant}"


def parse_variants(app_name: str, args: dict[str, Any]) -> list[Variant]:
    """The application's variants, or ConfigError naming the field."""
    out = []
    for i, raw in enumerate(args.get("variants") or []):
        try:
            out.append(Variant.model_validate(raw))
        except ValidationError as e:
            err = e.errors(include_url=False)[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"application {app_name!r}: args.variants.{i}{'.' + loc if loc else ''}: {err['msg']}",
                              param="args.variants") from None
    return out


def cpu_cores(q: str) -> float:
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def default_pod(cpus: float, gpus: int) -> tuple[str, str]:
    """(cpu, memory) of a pod for `cpus` replica CPUs and `gpus` GPUs when the variant gives none."""
    cpu = math.ceil(cpus) + 1
    return str(cpu), f"{DEFAULT_MEMORY_GIB_PER_CPU * cpu + DEFAULT_MEMORY_GIB_PER_GPU * gpus}Gi"


def group_for(app_name: str, args: dict[str, Any], v: Variant) -> WorkerGroup:
    """The worker group of variant `v` of an application with `args` (ConfigError if it cannot hold it)."""
    where = f"application {app_name!r}, variant {v.name!r}"
    cpus = v.replica_num_cpus if v.replica_num_cpus is not None else args.get("replica_num_cpus", APP_DEFAULTS["replica_num_cpus"])
    gpus = v.replica_num_gpus if v.replica_num_gpus is not None else args.get("replica_num_gpus", APP_DEFAULTS["replica_num_gpus"])
    pod = v.pod or PodSpec()
    per_pod = pod.replicas_per_pod
    if abs(gpus * per_pod - round(gpus * per_pod)) > 1e-9:
        raise ConfigError(f"{where}: {per_pod} replica(s) per pod x {gpus:g} GPUs is not a whole number of GPUs",
                          param="variants.replica_num_gpus")
    if gpus:
        tp = v.engine.get("tensor_parallel_size", (args.get("engine") or {}).get("tensor_parallel_size", 1))
        if gpus >= 1 and tp != gpus:
            raise ConfigError(f"{where}: {gpus:g} GPUs per replica but engine.tensor_parallel_size is {tp}; set the "
                              f"variant's engine.tensor_parallel_size (or the app's) to {gpus:g}", param="variants.engine")
        if gpus >= 1 and v.accelerators_per_replica != gpus:
            raise ConfigError(f"{where}: {gpus:g} GPUs per replica but accelerators_per_replica is "
                              f"{v.accelerators_per_replica} (what the autoscaler's budget counts); set it to {gpus:g}",
                              param="variants.accelerators_per_replica")
    if pod.resources is not None:
        cpu, memory = pod.resources.cpu, pod.resources.memory
        if math.ceil(cpus * per_pod) > cpu_cores(cpu):
            raise ConfigError(f"{where}: {per_pod} replica(s) x {cpus:g} CPUs do not fit a pod of {cpu} CPUs",
                              param="variants.pod.resources.cpu")
    else:
        cpu, memory = default_pod(cpus * per_pod, round(gpus * per_pod))
    if not LABEL_VALUE.match(v.accelerator) or len(v.accelerator) > 63:
        raise ConfigError(f"{where}: accelerator {v.accelerator!r} is not a Kubernetes label value (letters, digits, "
                          "'-', '_', '.', at most 63)", param="variants.accelerator")
    assert v.min_replicas is not None and v.max_replicas is not None  # normalised by Variant
    initial = v.initial_replicas if v.initial_replicas is not None else v.min_replicas
    return WorkerGroup(
        name=v.name, application=app_name, deployment=v.deployment_name, role=v.role, accelerator=v.accelerator,
        cpus_per_replica=float(cpus), gpus_per_replica=float(gpus), replicas_per_pod=per_pod,
        min_replicas=v.min_replicas, max_replicas=v.max_replicas, initial_replicas=initial, cpu=cpu, memory=memory,
        node_selector=dict(pod.node_selector), tolerations=list(pod.tolerations),
        shm_per_replica=tier_shm_bytes(args) if v.role == "aggregated" else 0, default_sized=pod.resources is None)


def worker_groups(serve_cfg: dict[str, Any]) -> list[WorkerGroup]:
    """One worker group per variant of every ``llmd_ray:build_app`` application of a (rendered) serve config."""
    groups: list[WorkerGroup] = []
    seen: dict[str, str] = {}
    for app in serve_cfg.get("applications") or []:
        if app.get("import_path") != APP_BUILDER:
            continue
        name = app.get("name", "default")
        args = app.get("args") or {}
        for v in parse_variants(name, args):
            if v.name in seen:
                raise ConfigError(f"variant {v.name!r} is in applications {seen[v.name]!r} and {name!r}: a worker group "
                                  "and its Ray resource are named after the variant, so names must be unique across "
                                  "the deployed applications", param="variants.name")
            seen[v.name] = name
            groups.append(group_for(name, args, v))
    return groups
