"""ClusterSpec: one YAML file from which a KubeRay ``RayService`` is rendered.

A spec names the serve config that ``serve run`` uses, the image, where the model
comes from and the head pod. It declares no variants: the worker groups are derived
from the serve config's ``args.variants`` (``llmd_ray.topology.Variant``, the one
model of a variant), after the spec's ``args_overrides`` are merged in. That merge
is how a spec adapts a local serve config to the cluster: GPUs, accelerators,
bounds and each variant's ``pod``::

    name: llama-pd
    namespace: llm
    image: llmd-ray:0.1.0-cuda   # optional: by default what `make image-gpu` builds (`make image`: -cpu)
    serve_config: ../../serve_configs/pd.yaml   # relative to this file
    model: {name: meta-llama/Llama-3.1-8B-Instruct,
            pvc: {claim_name: llama-weights, path: Llama-3.1-8B-Instruct}}
    args_overrides:
      default:
        replica_num_gpus: 1
        variants:   # merged by name into the serve config's variants
          - {name: prefill, accelerator: H100, num_replicas: null, min_replicas: 1, max_replicas: 4,
             engine: {cpu_bind: null}, pod: {node_selector: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}}}
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llmd_ray.errors import ConfigError
from llmd_ray.kuberay.hosts import MIN_TERMINATION_GRACE_S
from llmd_ray.kuberay.upgrade_strategy import UpgradeSpec
from llmd_ray.topology.pod import PodResources, Toleration, quantity

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
RESOURCE_PREFIX = "llmd-variant-"
LABEL_PREFIX = "llmd-ray"
VARIANTS_MOVED = (
    "a ClusterSpec no longer declares variants: declare each variant once in the serve config's "
    "`args.variants` (or, to adapt a local serve config for the cluster, in `args_overrides.<app>.variants`, "
    "merged by name); each variant's worker group is derived from it. Old fields map to Variant fields: "
    "gpus_per_replica -> replica_num_gpus, cpus_per_replica -> replica_num_cpus, min/max_replicas stay, "
    "pod/node_selector/tolerations/replicas_per_pod -> pod: {resources: {cpu, memory}, node_selector, "
    "tolerations, replicas_per_pod}, gpu_resource/shm_size -> the spec's `workers`")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def dns_label(value: str, what: str, max_len: int = 63) -> str:
    if not DNS_LABEL.match(value) or len(value) > max_len:
        raise ValueError(
            f"{what} {value!r} must be a DNS-1123 label: lower-case letters, digits and '-', "
            f"starting and ending with a letter or digit, at most {max_len} characters"
        )
    return value


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
        return quantity(v)


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
    shm_size: str = Field("4Gi", description="Size of the head pod's in-memory /dev/shm (it holds the object store).")
    object_store_memory: str = Field("2Gi", description="Ray object store of the head pod (rayStartParams "
                                     "object-store-memory); must fit in shm_size, and hold kv_tiers.shared_bytes "
                                     "when the shared KV store may land here.")

    @field_validator("shm_size", "object_store_memory")
    @classmethod
    def _q(cls, v: str) -> str:
        return quantity(v)


class WorkersSpec(_Model):
    """What every worker group shares (each group's size, pods and placement come from its variant)."""

    gpu_resource: str = Field("nvidia.com/gpu", description="Extended resource name of the GPUs.")
    shm_size: str = Field("8Gi", description="Size of the in-memory /dev/shm volume of every worker pod: the object "
                          "store, each replica's KV-tier pool, P/D handoff files and NCCL segments (hosts.py).")
    object_store_memory: str = Field("4Gi", description="Ray object store of every worker pod (rayStartParams "
                                     "object-store-memory), inside shm_size: P/D KV payloads and shared-tier blocks.")

    @field_validator("shm_size", "object_store_memory")
    @classmethod
    def _q(cls, v: str) -> str:
        return quantity(v)


class AutoscalerSpec(_Model):
    """KubeRay's in-tree Ray autoscaler (v2) sidecar."""

    idle_timeout_s: int = Field(300, ge=0, description="An idle worker pod is removed after this many seconds.")
    upscaling_mode: Literal["Default", "Aggressive", "Conservative"] = Field(
        "Default", description="How fast the autoscaler adds pods (`Conservative`: rate-limited).")


class ClusterSpec(_Model):
    """Everything a RayService for llmd-ray needs; rendered by ``python -m llmd_ray.kuberay render``."""

    name: str = Field(description="RayService name (DNS-1123 label, at most 40 characters).")
    namespace: str = Field("default", description="Namespace of the RayService.")
    image: str | None = Field(None, description="Container image with llmd-ray, Ray and vLLM installed; None: what "
                              "`make image-gpu` builds (llmd-ray:<version>-cuda) when a variant has GPUs, else what "
                              "`make image` builds (llmd-ray:<version>-cpu); see docker/.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field("IfNotPresent", description="imagePullPolicy of every container.")
    ray_version: str = Field("2.60.0", description="Ray version inside the image (RayCluster rayVersion).")
    serve_config: str = Field(description="The Serve config `serve run` uses, relative to this spec file: serveConfigV2 "
                              "and the worker groups (one per variant in its args) are generated from it.")
    applications: list[str] | None = Field(None, description="Applications of the serve config to deploy; None: all.")
    args_overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per application name: a mapping merged into its `args` (mappings merge, "
        "`null` removes a key, `variants` merge by name, other lists are replaced); how a spec adapts the serve "
        "config for the cluster (GPUs, accelerators, bounds, pods).")
    model: ModelSource | None = Field(None, description="Where the weights come from; None: keep the serve config's `engine.model`.")
    python_hash_seed: str = Field("0", description="PYTHONHASHSEED for every app (KV-event block hashing must agree across processes).")
    head: HeadSpec = Field(default_factory=HeadSpec, description="The Ray head pod.")
    workers: WorkersSpec = Field(default_factory=WorkersSpec, description="What every worker group shares.")
    autoscaler: AutoscalerSpec = Field(default_factory=AutoscalerSpec, description="The in-tree Ray autoscaler (v2).")
    upgrade: UpgradeSpec = Field(default_factory=UpgradeSpec, description="How a new version is rolled out "
                                 "(upgradeStrategy: incremental through a Gateway with gateway_class, else NewCluster).")
    termination_grace_s: int = Field(
        120, ge=MIN_TERMINATION_GRACE_S, description="terminationGracePeriodSeconds of every pod: a worker pod's "
        "preStop drains its Ray node for this long (minus 10 s) so Serve moves its replicas and streams off it.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables of every Ray container.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels on the RayService and its pods.")

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "variants" in data:
            raise ValueError(f"variants: {VARIANTS_MOVED}")
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return dns_label(v, "name", max_len=40)

    @field_validator("namespace")
    @classmethod
    def _ns(cls, v: str) -> str:
        return dns_label(v, "namespace")

    @field_validator("python_hash_seed")
    @classmethod
    def _seed(cls, v: str) -> str:
        if not v.isdigit() or int(v) > 4294967295:
            raise ValueError(f"python_hash_seed {v!r} must be an integer in [0, 4294967295] (as a string)")
        return v


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
