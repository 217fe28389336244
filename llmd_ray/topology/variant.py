"""``Variant``: one way of serving the app's model, declared once in the app's ``args.variants``.

A variant is a role (aggregated, prefill or decode) on one kind of hardware with engine overrides,
replica bounds, a price and a performance profile. Everything else is derived from it:

* the app (``llmd_ray.serving.app.build_app``): one engine deployment ``LLMServer-<name>`` per variant;
  prefill and decode variants of one ``pd_group`` make a P/D pair;
* the variant autoscaler (``llmd_ray.autoscaling``): the variants and the app's QoS classes ride in each
  deployment's ``autoscaling_config`` and the application-level policy reads them from there;
* the KubeRay RayService (``llmd_ray.kuberay``): one worker group per variant, sized by its bounds and ``pod``.

::

    args:
      engine: {model: tiny-llama, max_model_len: 4096}
      variants:
      - {name: cpu-a, accelerator: cpu-1core, engine: {cpu_bind: "0"}, min_replicas: 1, max_replicas: 1,
         cost_per_hour: 0.05, profile: cpu-1core-tiny-llama}
      - {name: cpu-b, accelerator: cpu-1core, engine: {cpu_bind: "1"}, min_replicas: 0, max_replicas: 1,
         cost_per_hour: 0.06, profile: cpu-1core-tiny-llama}

This module imports neither Ray nor vLLM.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmd_ray.topology.pod import PodSpec

Role = Literal["aggregated", "prefill", "decode"]
DEPLOYMENT_PREFIX = "LLMServer-"
DEFAULT_POLICY = "ray.serve.autoscaling_policy:default_autoscaling_policy"  # Serve's own per-deployment policy
NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"
# What the ingress tokenizes and checks against: every variant must serve the same thing.
SHARED_ENGINE_FIELDS = ("model", "served_model_name", "tokenizer", "max_model_len")
# Keys of earlier configs, and what to write instead.
_MOVED = {
    "autoscaling": "write min_replicas / max_replicas / initial_replicas on the variant itself and Serve's "
                   "timings under `serve_autoscaling`",
    "deployment": "the deployment is always `LLMServer-<name>`; drop `deployment`",
}


def reject_moved_keys(data: Any, moved: dict[str, str], what: str) -> Any:
    """A ``mode="before"`` check: a key of an earlier config fails saying what to write instead."""
    if isinstance(data, dict):
        for key, instead in moved.items():
            if key in data:
                raise ValueError(f"{key}: no longer {what}: {instead}")
    return data


def deployment_name(variant: str) -> str:
    """The Serve deployment of a variant."""
    return f"{DEPLOYMENT_PREFIX}{variant}"


class ServeAutoscaling(BaseModel):
    """Serve's per-deployment autoscaling timings for an autoscaled variant."""

    model_config = ConfigDict(extra="forbid")

    upscale_delay_s: float = Field(default=0.0, ge=0, description="Serve's up-scale delay. 0 leaves hysteresis to "
                                   "the app-level VariantAutoscalingPolicy; use Serve's default (30) with Serve's own policy.")
    downscale_delay_s: float = Field(default=0.0, ge=0, description="Serve's down-scale delay (Serve's default: 600).")
    metrics_interval_s: float = Field(default=2.0, gt=0, description="How often replicas push their autoscaling "
                                      "stats to the controller (Serve's default of 10 s delays every scale-up).")
    target_ongoing_requests: float | None = Field(
        default=None, gt=0, description="Serve's per-deployment policy only: in-flight requests per replica to aim for.")


class Variant(BaseModel):
    """One variant: a role on one accelerator type, its engine overrides, replica bounds, price and pods."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str = Field(pattern=NAME_PATTERN, description="Variant name (lower-case letters, digits, '-'); its "
                      "deployment is `LLMServer-<name>`, its KubeRay worker group `<name>`.")
    role: Role = Field(default="aggregated", description="aggregated (prefill and decode on one replica), prefill "
                       "or decode (P/D: a decode variant prefills remotely on its group's prefill variant).")
    pd_group: str = Field(default="default", min_length=1, description="Prefill and decode variants of one group "
                          "hand KV to each other.")
    accelerator: str = Field(default="cpu", min_length=1, description="Accelerator type, e.g. cpu-1core, L4, H100.")
    accelerators_per_replica: int = Field(default=1, ge=1, description="Accelerators one replica holds "
                                          "(tensor-parallel degree); what a budget counts.")
    engine: dict[str, Any] = Field(default_factory=dict, description="EngineConfig fields merged over the app's "
                                   "`engine` (e.g. max_num_seqs, cpu_bind); the model and its context stay shared.")
    num_replicas: int | None = Field(default=None, ge=1, description="A fixed replica count (not autoscaled). "
                                     "Unset with no bounds either: 1.")
    min_replicas: int | None = Field(default=None, ge=0, description="Autoscaled: fewest replicas (0 lets the "
                                     "variant scale to zero); default 0 when max_replicas is set.")
    max_replicas: int | None = Field(default=None, ge=1, description="Autoscaled: most replicas; default "
                                     "max(min_replicas, 1) when min_replicas is set.")
    initial_replicas: int | None = Field(default=None, ge=0, description="Autoscaled: replicas at deploy time; "
                                         "None: min_replicas.")
    serve_autoscaling: ServeAutoscaling = Field(default_factory=ServeAutoscaling,
                                                description="Serve's timings for an autoscaled variant.")
    cost_per_hour: float = Field(default=0.0, ge=0, description="Price of one replica per hour (the autoscaler's "
                                 "objective).")
    profile: str | None = Field(default=None, description="Performance profile (a file in "
                                "llmd_ray/autoscaling/profiles/ or a JSON path); needed when the variant autoscaler sizes it.")
    kv_transfer_ms: float = Field(default=0.0, ge=0, description="Decode variants: P->D KV hand-off time the "
                                  "autoscaler adds to TTFT.")
    replica_num_cpus: float | None = Field(default=None, ge=0, description="Ray CPUs per replica; None: the app's.")
    replica_num_gpus: float | None = Field(default=None, ge=0, description="Ray GPUs per replica; None: the app's.")
    resources: dict[str, float] = Field(default_factory=dict, description="Custom Ray resources per replica "
                                        "(KubeRay adds `llmd-variant-<name>` to pin the variant to its worker group).")
    max_ongoing_requests: int | None = Field(default=None, ge=1, description="In-flight requests per replica; "
                                             "None: the app's.")
    pod: PodSpec | None = Field(default=None, description="KubeRay: the worker pods of this variant (cpu, memory, "
                                "node selector, tolerations); None: derived from the replica's CPUs and GPUs.")

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        return reject_moved_keys(data, _MOVED, "a variant field")

    @model_validator(mode="after")
    def _check(self) -> Variant:
        bounded = self.min_replicas is not None or self.max_replicas is not None
        if self.num_replicas is not None and self.min_replicas == self.max_replicas == self.num_replicas:
            bounded = False  # the normalised form of a fixed count (what model_dump gives back)
        if self.num_replicas is not None and (bounded or self.initial_replicas is not None):
            raise ValueError("num_replicas: set a fixed num_replicas or min_replicas/max_replicas, not both")
        if bounded:
            lo = self.min_replicas if self.min_replicas is not None else 0
            hi = self.max_replicas if self.max_replicas is not None else max(lo, 1)
            if lo > hi:
                raise ValueError(f"min_replicas: {lo} > max_replicas {hi}")
            if self.initial_replicas is not None and not lo <= self.initial_replicas <= hi:
                raise ValueError(f"initial_replicas: {self.initial_replicas} is outside [{lo}, {hi}]")
            self.min_replicas, self.max_replicas = lo, hi
        else:
            n = self.num_replicas or 1
            self.num_replicas, self.min_replicas, self.max_replicas = n, n, n
        shared = sorted(set(self.engine) & set(SHARED_ENGINE_FIELDS))
        if shared:
            raise ValueError(f"engine.{shared[0]}: every variant serves the app's model; set it in the app's `engine`")
        return self

    @property
    def autoscaled(self) -> bool:
        """Has bounds (Serve gives it an autoscaling_config) rather than a fixed count."""
        return self.num_replicas is None

    @property
    def deployment_name(self) -> str:
        return deployment_name(self.name)

    def serve_autoscaling_config(self, policy_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
        """Serve's ``autoscaling_config``: the bounds, the timings and, under Serve's default per-deployment
        policy (which ignores them), ``policy_kwargs`` for the app-level variant policy to read."""
        cfg: dict[str, Any] = {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                               **self.serve_autoscaling.model_dump(exclude_none=True)}
        if self.initial_replicas is not None:
            cfg["initial_replicas"] = self.initial_replicas
        if policy_kwargs is not None:
            cfg["policy"] = {"policy_function": DEFAULT_POLICY, "policy_kwargs": policy_kwargs}
        return cfg
