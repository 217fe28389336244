"""Variants of the aggregated app, and which variant serves each request.

A *variant* is one way of serving the app's model: its own ``LLMServer``
deployment (``LLMServer-<name>``) with engine overrides (batch size, cores),
its own replica bounds and its own hardware. The variant autoscaler
(``llmd_ray.autoscaling.policy``) sizes the variants; the ingress spreads
requests over them with :func:`choose_variant`::

    args:
      engine: {model: tiny-llama, max_model_len: 4096}
      variants:
      - {name: cpu-a, accelerator: cpu-core0, engine: {max_num_seqs: 16, cpu_bind: "0"},
         autoscaling: {min_replicas: 1, max_replicas: 1}}
      - {name: cpu-b, accelerator: cpu-core1, engine: {max_num_seqs: 32, cpu_bind: "1"},
         autoscaling: {min_replicas: 0, max_replicas: 1}}

This module imports neither Ray nor vLLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llmd_ray.engine.config import EngineConfig

DEPLOYMENT_PREFIX = "LLMServer-"
# What the ingress tokenizes and checks against: every variant must serve the same thing.
SHARED_ENGINE_FIELDS = ("model", "served_model_name", "tokenizer", "max_model_len")
NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"


def deployment_name(variant: str) -> str:
    """The Serve deployment of a variant (what ``policy_kwargs.variants[].deployment`` names)."""
    return f"{DEPLOYMENT_PREFIX}{variant}"


class VariantAutoscalingArgs(BaseModel):
    """Replica bounds of a variant; Serve only lets an autoscaling policy scale deployments that have them."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(default=1, ge=0, description="Fewest replicas (0 lets the variant scale to zero).")
    max_replicas: int = Field(default=1, ge=1, description="Most replicas.")
    initial_replicas: int | None = Field(
        default=None, ge=0, description="Replicas at deploy time; None: min_replicas.")
    upscale_delay_s: float = Field(
        default=0.0, ge=0, description="Serve's up-scale delay. 0 leaves hysteresis to the app-level "
        "VariantAutoscalingPolicy; use Serve's default (30) with Serve's own per-deployment policy.")
    downscale_delay_s: float = Field(
        default=0.0, ge=0, description="Serve's down-scale delay. 0 leaves hysteresis to the app-level "
        "VariantAutoscalingPolicy; use Serve's default (600) with Serve's own per-deployment policy.")
    metrics_interval_s: float = Field(
        default=2.0, gt=0, description="How often replicas push their autoscaling stats to the controller "
        "(Serve's default of 10 s delays every scale-up by up to that much).")
    target_ongoing_requests: float | None = Field(
        default=None, gt=0,
        description="Serve's per-deployment policy only: in-flight requests per replica to aim for.")

    @model_validator(mode="after")
    def _check(self) -> VariantAutoscalingArgs:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas: {self.min_replicas} > max_replicas {self.max_replicas}")
        if self.initial_replicas is not None and not self.min_replicas <= self.initial_replicas <= self.max_replicas:
            raise ValueError(f"initial_replicas: {self.initial_replicas} is outside "
                             f"[{self.min_replicas}, {self.max_replicas}]")
        return self

    def serve_config(self) -> dict[str, Any]:
        """Serve's ``autoscaling_config`` for the deployment."""
        return self.model_dump(exclude_none=True)


class VariantArgs(BaseModel):
    """One variant: an LLMServer deployment of its own, with engine overrides and replica bounds."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="Variant name (lower-case letters, digits, '-'); "
                      "its deployment is `LLMServer-<name>`.")
    accelerator: str = Field(default="cpu", min_length=1, description="Hardware label, e.g. cpu-core0, L4, H100 "
                             "(shown in dispatch status; the autoscaler's variant names the same type).")
    engine: dict[str, Any] = Field(default_factory=dict, description="EngineConfig fields merged over the app's "
                                   "`engine` (e.g. max_num_seqs, cpu_bind); the model and its context stay shared.")
    num_replicas: int = Field(default=1, ge=1, description="Fixed replica count (when `autoscaling` is unset; "
                              "zero needs `autoscaling` with min_replicas 0).")
    autoscaling: VariantAutoscalingArgs | None = Field(
        default=None, description="Replica bounds for an autoscaling policy; overrides num_replicas.")
    replica_num_cpus: float | None = Field(default=None, ge=0, description="Ray CPUs per replica; None: the app's.")
    replica_num_gpus: float | None = Field(default=None, ge=0, description="Ray GPUs per replica; None: the app's.")
    resources: dict[str, float] = Field(default_factory=dict, description="Custom Ray resources per replica, "
                                        "e.g. a KubeRay worker group's resource that pins the variant to its nodes.")
    max_ongoing_requests: int | None = Field(default=None, ge=1, description="In-flight requests per replica; "
                                             "None: the app's.")

    @model_validator(mode="after")
    def _check(self) -> VariantArgs:
        if self.autoscaling is not None and "num_replicas" in self.model_fields_set:
            raise ValueError("num_replicas: set num_replicas or autoscaling, not both")
        shared = sorted(set(self.engine) & set(SHARED_ENGINE_FIELDS))
        if shared:
            raise ValueError(f"engine.{shared[0]}: every variant serves the app's model; set it in the app's `engine`")
        return self

    def engine_config(self, base: EngineConfig) -> EngineConfig:
        """The variant's engine: its overrides over the app's engine (raises ValidationError)."""
        return EngineConfig.model_validate({**base.model_dump(), **self.engine})


def resolve_variants(base: EngineConfig, variants: Sequence[VariantArgs]) -> list[EngineConfig]:
    """Each variant's EngineConfig; errors name the field as ``variants.<i>.engine.<field>``."""
    names = [v.name for v in variants]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"variants: duplicate names {dup}")
    out = []
    for i, v in enumerate(variants):
        try:
            out.append(v.engine_config(base))
        except ValidationError as e:
            err = e.errors(include_url=False)[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise ValueError(f"variants.{i}.engine.{loc}: {err['msg']}") from None
    return out


# ------------------------------------------------------------------ choice


@dataclass(slots=True)
class VariantLoad:
    """What the ingress knows of a variant when it picks one."""

    name: str
    running: int | None  # running replicas; None: not known yet
    outstanding: int  # this ingress's requests sent to the variant and not finished


def choose_variant(loads: Sequence[VariantLoad]) -> int:
    """Index of the variant for the next request.

    The variant whose running replicas would each carry the fewest of this
    ingress's outstanding requests with this one added (``(outstanding + 1) /
    running``); variants with no running replica are skipped. Ties go to the
    earlier variant (list variants cheapest first). While no count is known
    yet, an unknown count is taken as one replica. When no variant has a
    running replica, the first one gets it: its handle holds the request
    until a replica is up (and Serve starts one for a deployment at zero).
    """
    if not loads:
        raise ValueError("no variants")
    known = [i for i, v in enumerate(loads) if v.running]
    pool = known or [i for i, v in enumerate(loads) if v.running is None]
    if not pool:
        return 0
    return min(pool, key=lambda i: ((loads[i].outstanding + 1) / (loads[i].running or 1), i))


def stranded(loads: Sequence[VariantLoad], index: int) -> bool:
    """A request waiting on variant ``index`` should go elsewhere: it has no running replica and another has."""
    return loads[index].running == 0 and any(v.running for j, v in enumerate(loads) if j != index)
