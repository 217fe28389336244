"""ClusterSpec: one YAML file from which a KubeRay ``RayService`` is rendered.

A spec names the serve config that ``serve run`` uses (the one source of truth
for the applications), the image, where the model comes from, the head pod and
the *variants*: one role (prefill / decode / aggregated) of one Serve
deployment on one accelerator type. Each variant becomes one KubeRay worker
group that advertises the custom Ray resource ``llmd-variant-<name>``; the
variant's deployment requests one unit per replica, so its replicas land on
that group's pods and the Ray autoscaler knows which group to grow::

    name: llama-agg
    namespace: llm
    image: registry.example.com/llmd-ray:0.1.0-cuda
    serve_config: ../../serve_configs/default.yaml   # relative to this file
    model: {name: meta-llama/Llama-3.1-8B-Instruct,
            pvc: {claim_name: llama-weights, path: Llama-3.1-8B-Instruct}}
    variants:
      - {name: h100, deployment: LLMServer, accelerator: H100, gpus_per_replica: 1,
         min_replicas: 1, max_replicas: 8,
         node_selector: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}}
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llmd_ray.errors import ConfigError

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
QUANTITY = re.compile(r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
RESOURCE_PREFIX = "llmd-variant-"
LABEL_PREFIX = "llmd-ray"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def _dns_label(value: str, what: str, max_len: int = 63) -> str:
    if not DNS_LABEL.match(value) or len(value) > max_len:
        raise ValueError(
            f"{what} {value!r} must be a DNS-1123 label: lower-case letters, digits and '-', "
            f"starting and ending with a letter or digit, at most {max_len} characters"
        )
    return value


def _quantity(value: str) -> str:
    if not QUANTITY.match(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. '4', '500m', '16Gi')")
    return value


class Toleration(_Model):
    """A Kubernetes pod toleration (so GPU pods can land on tainted GPU nodes)."""

    key: str | None = Field(None, description="Taint key; empty with `Exists` tolerates everything.")
    operator: Literal["Equal", "Exists"] = Field("Equal", description="`Equal` (key and value) or `Exists` (key only).")
    value: str | None = Field(None, description="Taint value, with `Equal`.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(None, description="Taint effect; empty: all.")
    toleration_seconds: int | None = Field(None, ge=0, description="`NoExecute` only: how long the pod stays bound.")

    def manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "operator": self.operator, "value": self.value,
                               "effect": self.effect, "tolerationSeconds": self.toleration_seconds}
        return {k: v for k, v in out.items() if v is not None}


class PodResources(_Model):
    """CPU and memory of one pod (requests = limits, so pods are Guaranteed and Ray's CPU count is exact)."""

    cpu: str = Field(description="CPU quantity, e.g. '8'. KubeRay sets Ray's num-cpus from it.")
    memory: str = Field(description="Memory quantity, e.g. '64Gi'.")

    @field_validator("cpu", "memory")
    @classmethod
    def _q(cls, v: str) -> str:
        return _quantity(v)


class PVCModel(_Model):
    """Model weights on a PersistentVolumeClaim, mounted read-only into every pod."""

    claim_name: str = Field(description="Name of the PVC holding the model directory.")
    path: str = Field("", description="Directory of the model inside the claim; empty: the claim's root.")
    mount_path: str = Field("/models", description="Where the claim is mounted in the containers.")

    @field_validator("mount_path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"mount_path {v!r} must be absolute")
        return v.rstrip("/") or "/"


class HubModel(_Model):
    """Model weights downloaded from the Hugging Face hub with a token from a Secret."""

    secret_name: str = Field(description="Secret holding the hub token (exposed as HF_TOKEN).")
    secret_key: str = Field("token", description="Key of the token in the Secret.")
    cache_claim: str | None = Field(None, description="PVC for the hub cache (HF_HOME), shared by pods; None: an emptyDir per pod.")
    cache_size: str = Field("100Gi", description="Size limit of the per-pod emptyDir cache (ignored with cache_claim).")

    @field_validator("cache_size")
    @classmethod
    def _q(cls, v: str) -> str:
        return _quantity(v)


class ModelSource(_Model):
    """The model the engines load, from a PVC or from the hub; every `engine:` block in the app args is pointed at it."""

    name: str = Field(description="Model name clients pass as `model` (served_model_name); with `hub`, also the hub id downloaded.")
    pvc: PVCModel | None = Field(None, description="Load the weights from a PersistentVolumeClaim.")
    hub: HubModel | None = Field(None, description="Download the weights from the hub with a token Secret.")

    @model_validator(mode="after")
    def _one_source(self) -> ModelSource:
        if (self.pvc is None) == (self.hub is None):
            raise ValueError("model: give exactly one of `pvc` or `hub`")
        return self

    @property
    def engine_model(self) -> str:
        """What `engine.model` becomes: the mounted directory, or the hub id."""
        if self.pvc is not None:
            return f"{self.pvc.mount_path.rstrip('/')}/{self.pvc.path.strip('/')}".rstrip("/") or "/"
        return self.name


class HeadSpec(_Model):
    """The Ray head pod: GCS, Serve controller, HTTP proxy and ingress; it schedules no GPU work."""

    resources: PodResources = Field(default_factory=lambda: PodResources(cpu="4", memory="16Gi"),
                                    description="CPU and memory of the head pod.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="nodeSelector of the head pod.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Tolerations of the head pod.")


class AutoscalerSpec(_Model):
    """KubeRay's in-tree Ray autoscaler (v2) sidecar."""

    idle_timeout_s: int = Field(300, ge=0, description="An idle worker pod is removed after this many seconds.")
    upscaling_mode: Literal["Default", "Aggressive", "Conservative"] = Field(
        "Default", description="How fast the autoscaler adds pods (`Conservative`: rate-limited).")


class VariantSpec(_Model):
    """One role of one Serve deployment on one accelerator type: one KubeRay worker group."""

    name: str = Field(description="Variant name: the worker group's name and the `llmd-variant-<name>` Ray resource.")
    application: str = Field("default", description="Serve application (in the serve config) holding the deployment.")
    deployment: str = Field("LLMServer", description="Serve deployment whose replicas this variant hosts.")
    role: Literal["prefill", "decode", "aggregated"] = Field("aggregated", description="What the deployment does (labels and docs).")
    accelerator: str = Field(description="Accelerator type, e.g. H100, L4, cpu (a pod label; placement comes from node_selector).")
    gpus_per_replica: int = Field(1, ge=0, description="GPUs one replica holds (its tensor-parallel degree); 0 for CPU variants.")
    replicas_per_pod: int = Field(1, ge=1, description="Serve replicas one worker pod hosts (the `llmd-variant-<name>` units it advertises).")
    cpus_per_replica: float = Field(1.0, ge=0, description="Ray CPUs each replica reserves.")
    min_replicas: int = Field(1, ge=0, description="Fewest Serve replicas (the group's minReplicas is derived from it).")
    max_replicas: int = Field(ge=1, description="Most Serve replicas (the group's maxReplicas is derived from it).")
    pod: PodResources = Field(default_factory=lambda: PodResources(cpu="8", memory="64Gi"),
                              description="CPU and memory of one worker pod.")
    gpu_resource: str = Field("nvidia.com/gpu", description="Extended resource name of the GPUs.")
    shm_size: str = Field("8Gi", description="Size of the in-memory /dev/shm volume (vLLM and NCCL use shared memory).")
    node_selector: dict[str, str] = Field(default_factory=dict, description="nodeSelector putting the pods on this accelerator's nodes.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Tolerations for the accelerator nodes' taints.")

    @field_validator("shm_size")
    @classmethod
    def _q(cls, v: str) -> str:
        return _quantity(v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        # The group name ends up in pod names (<cluster>-<group>-worker-<hash>).
        return _dns_label(v, "variant name", max_len=40)

    @model_validator(mode="after")
    def _bounds(self) -> VariantSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"variant {self.name!r}: min_replicas {self.min_replicas} > max_replicas {self.max_replicas}")
        if math.ceil(self.cpus_per_replica * self.replicas_per_pod) > _cpu_cores(self.pod.cpu):
            raise ValueError(f"variant {self.name!r}: {self.replicas_per_pod} replicas x {self.cpus_per_replica} CPUs "
                             f"do not fit a pod of {self.pod.cpu} CPUs")
        return self

    @property
    def ray_resource(self) -> str:
        return f"{RESOURCE_PREFIX}{self.name}"

    @property
    def gpus_per_pod(self) -> int:
        return self.gpus_per_replica * self.replicas_per_pod

    @property
    def min_pods(self) -> int:
        return math.ceil(self.min_replicas / self.replicas_per_pod)

    @property
    def max_pods(self) -> int:
        return math.ceil(self.max_replicas / self.replicas_per_pod)


def _cpu_cores(q: str) -> float:
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


class ClusterSpec(_Model):
    """Everything a RayService for llmd-ray needs; rendered by ``python -m llmd_ray.kuberay render``."""

    name: str = Field(description="RayService name (DNS-1123 label, at most 40 characters).")
    namespace: str = Field("default", description="Namespace of the RayService.")
    image: str = Field(description="Container image with llmd-ray, Ray and vLLM installed (see kuberay/Dockerfile).")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field("IfNotPresent", description="imagePullPolicy of every container.")
    ray_version: str = Field("2.60.0", description="Ray version inside the image (RayCluster rayVersion).")
    serve_config: str = Field(description="The Serve config `serve run` uses, relative to this spec file: serveConfigV2 is generated from it.")
    applications: list[str] | None = Field(None, description="Applications of the serve config to deploy; None: all.")
    args_overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per application name: a mapping deep-merged into its `args` (e.g. engine settings for GPUs).")
    model: ModelSource | None = Field(None, description="Where the weights come from; None: keep the serve config's `engine.model`.")
    python_hash_seed: str = Field("0", description="PYTHONHASHSEED for every app (KV-event block hashing must agree across processes).")
    head: HeadSpec = Field(default_factory=HeadSpec, description="The Ray head pod.")
    variants: list[VariantSpec] = Field(min_length=1, description="One worker group per variant.")
    autoscaler: AutoscalerSpec = Field(default_factory=AutoscalerSpec, description="The in-tree Ray autoscaler (v2).")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables of every Ray container.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels on the RayService and its pods.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _dns_label(v, "name", max_len=40)

    @field_validator("namespace")
    @classmethod
    def _ns(cls, v: str) -> str:
        return _dns_label(v, "namespace")

    @field_validator("python_hash_seed")
    @classmethod
    def _seed(cls, v: str) -> str:
        if not v.isdigit() or int(v) > 4294967295:
            raise ValueError(f"python_hash_seed {v!r} must be an integer in [0, 4294967295] (as a string)")
        return v

    @model_validator(mode="after")
    def _unique(self) -> ClusterSpec:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variants: names must be unique, got {names}")
        targets = [(v.application, v.deployment) for v in self.variants]
        for t in set(targets):
            if targets.count(t) > 1:
                raise ValueError(f"variants: deployment {t[1]!r} of application {t[0]!r} is claimed by more than one variant")
        return self


def load_spec(path: str | Path) -> tuple[ClusterSpec, Path]:
    """Load a ClusterSpec YAML; returns the spec and the resolved serve config path."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read the cluster spec: {e}") from e
    return parse_spec(data, base_dir=path.parent, source=str(path))


def parse_spec(data: Any, *, base_dir: Path, source: str = "<spec>") -> tuple[ClusterSpec, Path]:
    from pydantic import ValidationError

    try:
        spec = ClusterSpec.model_validate(data)
    except ValidationError as e:
        lines = [f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in e.errors()]
        raise ConfigError(f"{source}: invalid cluster spec:\n  " + "\n  ".join(lines), param=str(e.errors()[0]["loc"])) from e
    return spec, (base_dir / spec.serve_config).resolve()
