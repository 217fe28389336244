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
- ``upgradeStrategy``: ``NewClusterWithIncrementalUpgrade`` through the spec's gateway class, else
  ``NewCluster``; the old cluster stays ``rayClusterDeletionDelaySeconds`` (see upgrade_strategy.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llmd_ray.kuberay.groups import WorkerGroup, worker_groups
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


def _pod_spec(containers: list[dict[str, Any]], volumes: list[dict[str, Any]], node_selector: dict[str, str],
              tolerations: list[dict[str, Any]]) -> dict[str, Any]:
    pod: dict[str, Any] = {"containers": containers}
    if node_selector:
        pod["nodeSelector"] = dict(sorted(node_selector.items()))
    if tolerations:
        pod["tolerations"] = tolerations
    if volumes:
        pod["volumes"] = volumes
    return pod


def head_group(spec: ClusterSpec) -> dict[str, Any]:
    volumes, mounts = _model_volumes(spec)  # the ingress tokenizes: it needs the tokenizer files too
    ports = [
        {"name": "gcs-server", "containerPort": 6379},
        {"name": "dashboard", "containerPort": 8265},
        {"name": "client", "containerPort": 10001},
        {"name": "serve", "containerPort": SERVE_PORT},
        {"name": "metrics", "containerPort": METRICS_PORT},
    ]
    head = spec.head
    container = _container(spec, "ray-head", head.resources.cpu, head.resources.memory, {}, ports, mounts)
    return {
        "rayStartParams": {"dashboard-host": "0.0.0.0", "num-gpus": "0", "metrics-export-port": str(METRICS_PORT)},
        "template": {
            "metadata": {"labels": {**_common_labels(spec), f"{LABEL_PREFIX}/role": "head"}},
            "spec": _pod_spec([container], volumes, head.node_selector, [t.manifest() for t in head.tolerations]),
        },
    }


def worker_group(spec: ClusterSpec, g: WorkerGroup) -> dict[str, Any]:
    volumes, mounts = _model_volumes(spec)
    volumes = [*volumes, {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.workers.shm_size}}]
    mounts = [*mounts, {"name": "dshm", "mountPath": "/dev/shm"}]
    gpus = {spec.workers.gpu_resource: str(g.gpus_per_pod)} if g.gpus_per_pod else {}
    ports = [{"name": "serve", "containerPort": SERVE_PORT}, {"name": "metrics", "containerPort": METRICS_PORT}]
    container = _container(spec, "ray-worker", g.cpu, g.memory, gpus, ports, mounts)
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
        "rayStartParams": {"num-gpus": str(g.gpus_per_pod), "metrics-export-port": str(METRICS_PORT)},
        "resources": {g.ray_resource: str(g.replicas_per_pod)},
        "template": {
            "metadata": {"labels": labels},
            "spec": _pod_spec([container], volumes, g.node_selector, [t.manifest() for t in g.tolerations]),
        },
    }


def render_rayservice(spec: ClusterSpec, serve_cfg: dict[str, Any], serve_config_name: str) -> dict[str, Any]:
    """The RayService document (a plain dict) for `spec` and the loaded serve config."""
    serve_v2 = build_serve_config(spec, serve_cfg)
    groups = worker_groups(serve_v2)  # from the variants the app is built from: one model, one source
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
