"""Render a ClusterSpec into a ``ray.io/v1`` RayService manifest.

- The head group schedules no GPU work (``num-gpus: "0"``); it hosts the GCS,
  the Serve controller, the HTTP proxy and the ingress.
- One worker group per variant of the serve config's ``args.variants`` (after
  the spec's ``args_overrides``; see groups.py): its nodeSelector, tolerations,
  GPU limits and min/max pods, and the custom Ray resource
  ``llmd-variant-<name>`` declared on the group (``workerGroupSpecs[].resources``, which KubeRay passes to
  ``ray start --resources`` and the Ray autoscaler reads). The KubeRay
  autoscaler does not infer accelerator types from node selectors, so without
  it the autoscaler could not tell which group a pending replica needs.
- ``enableInTreeAutoscaling`` with autoscaler v2: pending Serve replicas become
  pods of the right group.
- ``serveConfigV2`` from the serve config (see serve_config.py).
- ``rayStartParams`` values are strings, as the CRD requires.
- What every pod needs of its host (hosts.py): an in-memory ``/dev/shm`` sized for its object store
  (``object-store-memory``, set explicitly) and its replicas' shm files, ``PYTHONHASHSEED``, the Serve and
  metrics ports, ``terminationGracePeriodSeconds`` and, on workers, a preStop hook that drains the Ray node.
- ``upgradeStrategy``: ``NewClusterWithIncrementalUpgrade`` through the spec's gateway class, else
  ``NewCluster``; the old cluster stays ``rayClusterDeletionDelaySeconds`` (see upgrade_strategy.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llmd_ray.errors import ConfigError
from llmd_ray.kuberay.groups import WorkerGroup, worker_groups
from llmd_ray.kuberay.hosts import (SHM_MOUNT, SHM_VOLUME, check_fits, gib, prestop_command, quantity_bytes,
                                    shared_store_resources, shared_tier_bytes, shm_needed)
from llmd_ray.kuberay.image import default_image
from llmd_ray.kuberay.serve_config import SERVE_PORT, build_serve_config, dump_serve_config, load_serve_config
from llmd_ray.kuberay.spec import LABEL_PREFIX, ClusterSpec, load_spec
from llmd_ray.kuberay.upgrade_strategy import render_upgrade_strategy

API_VERSION = "ray.io/v1"
METRICS_PORT = 8080
MODEL_VOLUME = "model"
HF_CACHE_VOLUME = "hf-cache"
HF_HOME = "/cache/huggingface"


def _common_labels(spec: ClusterSpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": "llmd-ray", "app.kubernetes.io/instance": spec.name, **spec.labels}


def _env(spec: ClusterSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": "PYTHONHASHSEED", "value": spec.python_hash_seed}]
    if spec.model is not None and spec.model.hub is not None:
        hub = spec.model.hub
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": hub.secret_name, "key": hub.secret_key}}})
        env.append({"name": "HF_HOME", "value": HF_HOME})
    env.extend({"name": k, "value": v} for k, v in sorted(spec.env.items()))
    return env


def _model_volumes(spec: ClusterSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and mounts that bring the model (and, for the hub, its cache) into a pod."""
    if spec.model is None:
        return [], []
    if spec.model.pvc is not None:
        pvc = spec.model.pvc
        return ([{"name": MODEL_VOLUME, "persistentVolumeClaim": {"claimName": pvc.claim_name, "readOnly": True}}],
                [{"name": MODEL_VOLUME, "mountPath": pvc.mount_path, "readOnly": True}])
    hub = spec.model.hub
    assert hub is not None
    vol = ({"name": HF_CACHE_VOLUME, "persistentVolumeClaim": {"claimName": hub.cache_claim}} if hub.cache_claim
           else {"name": HF_CACHE_VOLUME, "emptyDir": {"sizeLimit": hub.cache_size}})
    return [vol], [{"name": HF_CACHE_VOLUME, "mountPath": HF_HOME}]


def _container(spec: ClusterSpec, name: str, cpu: str, memory: str, extra_limits: dict[str, str],
               ports: list[dict[str, Any]], mounts: list[dict[str, Any]]) -> dict[str, Any]:
    res = {"cpu": cpu, "memory": memory, **extra_limits}
    c: dict[str, Any] = {
        "name": name,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "env": _env(spec),
        "ports": ports,
        "resources": {"limits": dict(res), "requests": dict(res)},
    }
    if mounts:
        c["volumeMounts"] = mounts
    return c


def _shm(volumes: list[dict[str, Any]], mounts: list[dict[str, Any]], size: str) -> tuple[list, list]:
    """An in-memory /dev/shm of `size` (a runtime's default is 64 MiB; Ray's object store lives there)."""
    return ([*volumes, {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": size}}],
            [*mounts, {"name": SHM_VOLUME, "mountPath": SHM_MOUNT}])


def _pod_spec(spec: ClusterSpec, containers: list[dict[str, Any]], volumes: list[dict[str, Any]],
              node_selector: dict[str, str], tolerations: list[dict[str, Any]]) -> dict[str, Any]:
    pod: dict[str, Any] = {"containers": containers, "terminationGracePeriodSeconds": spec.termination_grace_s}
    if node_selector:
        pod["nodeSelector"] = dict(sorted(node_selector.items()))
    if tolerations:
        pod["tolerations"] = tolerations
    if volumes:
        pod["volumes"] = volumes
    return pod


def head_group(spec: ClusterSpec) -> dict[str, Any]:
    volumes, mounts = _model_volumes(spec)  # the ingress tokenizes: it needs the tokenizer files too
    head = spec.head
    check_fits("head", head.shm_size, head.object_store_memory, head.resources.memory,
               shm_needed(quantity_bytes(head.object_store_memory) or 0), "head.shm_size")
    volumes, mounts = _shm(volumes, mounts, head.shm_size)
    ports = [
        {"name": "gcs-server", "containerPort": 6379},
        {"name": "dashboard", "containerPort": 8265},
        {"name": "client", "containerPort": 10001},
        {"name": "serve", "containerPort": SERVE_PORT},
        {"name": "metrics", "containerPort": METRICS_PORT},
    ]
    container = _container(spec, "ray-head", head.resources.cpu, head.resources.memory, {}, ports, mounts)
    return {
        "rayStartParams": {"dashboard-host": "0.0.0.0", "num-gpus": "0", "metrics-export-port": str(METRICS_PORT),
                           "object-store-memory": str(quantity_bytes(head.object_store_memory))},
        "template": {
            "metadata": {"labels": {**_common_labels(spec), f"{LABEL_PREFIX}/role": "head"}},
            "spec": _pod_spec(spec, [container], volumes, head.node_selector, [t.manifest() for t in head.tolerations]),
        },
    }


def worker_group(spec: ClusterSpec, g: WorkerGroup) -> dict[str, Any]:
    w = spec.workers
    store = quantity_bytes(w.object_store_memory) or 0
    memory = g.memory
    if g.default_sized:  # the default size is for the processes: /dev/shm's pages come on top
        memory = f"{-(-((quantity_bytes(g.memory) or 0) + (quantity_bytes(w.shm_size) or 0)) // (1 << 30))}Gi"
    check_fits(f"variant {g.name!r}", w.shm_size, w.object_store_memory, memory,
               shm_needed(store, g.replicas_per_pod, g.shm_per_replica, engines=True), "workers.shm_size")
    volumes, mounts = _shm(*_model_volumes(spec), w.shm_size)
    gpus = {w.gpu_resource: str(g.gpus_per_pod)} if g.gpus_per_pod else {}
    ports = [{"name": "serve", "containerPort": SERVE_PORT}, {"name": "metrics", "containerPort": METRICS_PORT}]
    container = _container(spec, "ray-worker", g.cpu, memory, gpus, ports, mounts)
    container["lifecycle"] = {"preStop": {"exec": {"command": prestop_command(spec.termination_grace_s)}}}
    labels = {
        **_common_labels(spec),
        f"{LABEL_PREFIX}/variant": g.name,
        f"{LABEL_PREFIX}/role": g.role,
        f"{LABEL_PREFIX}/accelerator": g.accelerator,
    }
    return {
        "groupName": g.name,
        "replicas": g.initial_pods,
        "minReplicas": g.min_pods,
        "maxReplicas": g.max_pods,
        "rayStartParams": {"num-gpus": str(g.gpus_per_pod), "metrics-export-port": str(METRICS_PORT),
                           "object-store-memory": str(store)},
        "resources": {g.ray_resource: str(g.replicas_per_pod)},
        "template": {
            "metadata": {"labels": labels},
            "spec": _pod_spec(spec, [container], volumes, g.node_selector, [t.manifest() for t in g.tolerations]),
        },
    }


def render_rayservice(spec: ClusterSpec, serve_cfg: dict[str, Any], serve_config_name: str) -> dict[str, Any]:
    """The RayService document (a plain dict) for `spec` and the loaded serve config."""
    serve_v2 = build_serve_config(spec, serve_cfg)
    groups = worker_groups(serve_v2)  # from the variants the app is built from: one model, one source
    _check_shared_tier(spec, serve_v2)
    if spec.image is None:  # what `make image-gpu` / `make image` build
        spec = spec.model_copy(update={"image": default_image(gpu=any(x.gpus_per_pod for x in groups))})
    return {
        "apiVersion": API_VERSION,
        "kind": "RayService",
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": {**_common_labels(spec), "app.kubernetes.io/managed-by": "llmd-ray"},
            "annotations": {f"{LABEL_PREFIX}/serve-config": serve_config_name},
        },
        "spec": {
            "upgradeStrategy": render_upgrade_strategy(spec.upgrade),
            "rayClusterDeletionDelaySeconds": spec.upgrade.cluster_deletion_delay_s,
            "serveConfigV2": dump_serve_config(serve_v2),
            "rayClusterConfig": {
                "rayVersion": spec.ray_version,
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": {
                    "version": "v2",
                    "upscalingMode": spec.autoscaler.upscaling_mode,
                    "idleTimeoutSeconds": spec.autoscaler.idle_timeout_s,
                    "resources": {"limits": {"cpu": "500m", "memory": "512Mi"},
                                  "requests": {"cpu": "500m", "memory": "512Mi"}},
                },
                "headGroupSpec": head_group(spec),
                "workerGroupSpecs": [worker_group(spec, g) for g in groups],
            },
        },
    }


def _check_shared_tier(spec: ClusterSpec, serve_v2: dict[str, Any]) -> None:
    """Every pod the SharedKVStore may land on (any, without ``shared_store_resources``) holds its budget."""
    head, workers = quantity_bytes(spec.head.object_store_memory) or 0, quantity_bytes(spec.workers.object_store_memory) or 0
    for app in serve_v2.get("applications") or []:
        args = app.get("args") or {}
        need = shared_tier_bytes(args)
        smallest = workers if shared_store_resources(args) else min(head, workers)  # the head advertises none
        if need > smallest:
            raise ConfigError(f"application {app.get('name', 'default')!r}: kv_tiers.shared_bytes ({gib(need)}) exceeds "
                              f"the object store of a pod the SharedKVStore may land on ({gib(smallest)}); raise "
                              "head.object_store_memory / workers.object_store_memory (and shm_size)",
                              param="head.object_store_memory")


def render_spec_file(spec_path: str | Path, repo_root: str | Path | None = None, *,
                     gateway_class: str | None = None, image: str | None = None) -> dict[str, Any]:
    """Load a ClusterSpec file and its serve config, and render the RayService.

    `gateway_class` overrides the spec's ``upgrade.gateway_class`` (incremental upgrades through that GatewayClass).
    """
    spec, serve_path = load_spec(spec_path)
    if image:  # --image: the image the pods run
        spec = spec.model_copy(update={"image": image})
    if gateway_class:
        spec = spec.model_copy(update={"upgrade": spec.upgrade.model_copy(update={"gateway_class": gateway_class})})
    name = str(serve_path)
    if repo_root is not None:
        try:
            name = str(serve_path.relative_to(Path(repo_root).resolve()))
        except ValueError:
            pass
    return render_rayservice(spec, load_serve_config(serve_path), name)


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str)


def dump_manifest(doc: dict[str, Any], header: str = "") -> str:
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)
    lines = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return lines + body
