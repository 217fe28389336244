"""The autoscaler's configuration: variants, QoS classes, shape buckets, policy knobs.

Pydantic at the boundary (the Serve YAML's ``autoscaling_policy.policy_kwargs``,
a JSON/YAML file, the CLI); everything inside works on slotted dataclasses.

```yaml
applications:
- name: default
  import_path: llmd_ray:build_app
  autoscaling_policy:
    policy_function: llmd_ray.autoscaling.policy:VariantAutoscalingPolicy
    policy_kwargs:
      variants:
      - {name: h100-agg, deployment: LLMServerH100, role: aggregated, accelerator: H100,
         cost_per_hour: 4.0, profile: h100-llama-3.1-8b, max_replicas: 16}
      classes:
      - {name: interactive, ttft_ms: 500, itl_ms: 50}
```
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Role = Literal["prefill", "decode", "aggregated"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class VariantSpec(_Model):
    """One way of serving the model: a role on one accelerator type, with a price."""

    name: str = Field(description="Unique variant name (used in metrics and explanations).")
    deployment: str | None = Field(None, description="Serve deployment this variant scales; default: `name`.")
    role: Role = Field("aggregated", description="prefill | decode | aggregated (prefill and decode on one replica).")
    accelerator: str = Field(description="Accelerator type, e.g. H100, L4, cpu.")
    accelerators_per_replica: int = Field(1, ge=1, description="Accelerators one replica holds (tensor parallel degree).")
    cost_per_hour: float = Field(ge=0, description="Price of one replica per hour.")
    profile: str = Field(description="Profile name (a file in llmd_ray/autoscaling/profiles/) or a path to a profile JSON.")
    min_replicas: int = Field(0, ge=0, description="Lower bound on replicas.")
    max_replicas: int = Field(64, ge=0, description="Upper bound on replicas.")
    pd_group: str = Field("default", description="Prefill and decode variants of one group can hand KV to each other.")
    kv_transfer_ms: float = Field(0.0, ge=0, description="Decode variants: P->D KV hand-off time added to TTFT.")
    engine: dict = Field(default_factory=dict, description="The variant's EngineConfig (informational for the policy).")

    @model_validator(mode="after")
    def _check(self) -> VariantSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"variant {self.name!r}: min_replicas {self.min_replicas} > max_replicas {self.max_replicas}")
        return self

    @property
    def deployment_name(self) -> str:
        return self.deployment or self.name


class QoSClass(_Model):
    """A class of service: latency targets and which request shapes belong to it."""

    name: str = Field(description="Class name, e.g. interactive, batch.")
    ttft_ms: float = Field(gt=0, description="Time-to-first-token target (queueing + prefill + hand-off).")
    itl_ms: float = Field(gt=0, description="Inter-token latency target (decode step time).")
    max_input_tokens: int | None = Field(None, ge=1, description="Shape selector: requests with at most this many prompt tokens.")
    max_output_tokens: int | None = Field(None, ge=1, description="Shape selector: requests asking for at most this many tokens.")


class ShapeGrid(_Model):
    """Request-shape buckets: a grid over prompt and output lengths (upper edges, tokens)."""

    input_edges: list[int] = Field([256, 1024, 4096, 16384, 131072], description="Upper edges of the prompt-length buckets.")
    output_edges: list[int] = Field([64, 256, 1024, 8192], description="Upper edges of the output-length buckets.")

    @model_validator(mode="after")
    def _check(self) -> ShapeGrid:
        for f in ("input_edges", "output_edges"):
            e = getattr(self, f)
            if not e or any(b <= a for a, b in zip(e, e[1:])):
                raise ValueError(f"{f}: must be a non-empty, strictly increasing list")
        return self


class Budget(_Model):
    """Limited mode: how many accelerators of each type the cluster has."""

    accelerators: dict[str, int] = Field(default_factory=dict, description="Accelerator type -> units available.")


class AutoscalerConfig(_Model):
    """Everything the variant autoscaler needs (Serve `policy_kwargs`)."""

    variants: list[VariantSpec] = Field(description="The variants to size (at least one).", min_length=1)
    classes: list[QoSClass] = Field(
        default_factory=lambda: [QoSClass(name="default", ttft_ms=2000, itl_ms=100)],
        description="QoS classes; a request belongs to the first class whose selectors it meets (the last is the catch-all).")
    shapes: ShapeGrid = Field(default_factory=ShapeGrid, description="Request-shape buckets.")
    budget: Budget | None = Field(None, description="Optional accelerator budget (limited mode).")
    utilization_cap: float = Field(0.85, gt=0, le=1, description="Queueing headroom: plan replicas to at most this load.")
    pd_ratio_min: float | None = Field(None, gt=0, description="Optional lower bound on prefill:decode replicas per P/D group.")
    pd_ratio_max: float | None = Field(None, gt=0, description="Optional upper bound on prefill:decode replicas per P/D group.")
    switch_cost: float = Field(0.1, ge=0, description="Objective penalty per replica added or removed, as a fraction "
                               "of its hourly price: near-equal mixes do not flip the fleet back and forth.")
    interval_s: float = Field(10.0, gt=0, description="Seconds between optimizer solves (decisions are cached between).")
    ewma_half_life_s: float = Field(30.0, gt=0, description="Half-life of the demand EWMA.")
    forecast_horizon_s: float = Field(60.0, ge=0, description="Look-ahead of the trend forecast (about a replica's start time).")
    trend_half_life_s: float = Field(120.0, gt=0, description="Half-life of the trend (Holt) smoothing.")
    cold_start_s: float = Field(30.0, ge=0, description="Ignore a new replica's load and latency samples for this long.")
    downscale_stable_s: float = Field(60.0, ge=0, description="A lower count must be wanted this long before scaling down.")
    downscale_margin: float = Field(0.15, ge=0, description="Scale down only if the smaller fleet serves demand x (1 + margin).")
    upscale_cooldown_s: float = Field(0.0, ge=0, description="Minimum seconds between two scale-ups of one variant.")
    min_demand_rps: float = Field(0.0, ge=0, description="Plan for at least this much traffic (keeps a warm floor).")
    default_hit_rate: float = Field(0.0, ge=0, lt=1, description="Cache hit rate assumed before any is observed.")
    saturated_waiting_per_replica: float = Field(
        8.0, gt=0, description="Observed guard: if a variant's mature replicas queue more than this on average, "
        "add one replica and never scale it down, whatever the profile predicts.")
    solve_in_background: bool = Field(True, description="Ray policy: solve in a worker thread, keeping the controller loop fast.")
    export_metrics: bool = Field(True, description="Export wva_* Prometheus gauges from the Serve controller.")

    @model_validator(mode="after")
    def _check(self) -> AutoscalerConfig:
        names = [v.name for v in self.variants]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"variants: duplicate names {sorted(dup)}")
        deps = [v.deployment_name for v in self.variants]
        if len(set(deps)) != len(deps):
            raise ValueError("variants: two variants scale the same deployment")
        if not self.classes:
            raise ValueError("classes: at least one class is needed")
        if self.pd_ratio_min and self.pd_ratio_max and self.pd_ratio_min > self.pd_ratio_max:
            raise ValueError("pd_ratio_min > pd_ratio_max")
        return self
