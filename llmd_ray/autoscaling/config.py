"""The autoscaler's configuration: the topology (variants, QoS classes) plus shape buckets and policy knobs.

Pydantic at the boundary (the Serve YAML's ``autoscaling_policy.policy_kwargs``,
a JSON/YAML file, the CLI); everything inside works on slotted dataclasses.

```yaml
applications:
- name: default
  import_path: llmd_ray:build_app
  args:
    variants: [...]        # llmd_ray.topology.Variant, declared once
    qos: {classes: {...}}  # llmd_ray.topology.QoSClass, seconds
  autoscaling_policy:
    policy_function: llmd_ray.autoscaling.policy:VariantAutoscalingPolicy
    policy_kwargs: {interval_s: 10}   # knobs only: the variants and classes come from the app
```
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmd_ray.topology.qos import ClassTarget, QoSConfig
from llmd_ray.topology.variant import Variant


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


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

    variants: list[Variant] = Field(description="The variants to size (at least one): the app's `args.variants`, "
                                    "which the Ray policy reads from the app, never from policy_kwargs.", min_length=1)
    qos: QoSConfig = Field(default_factory=QoSConfig, description="The app's `args.qos`: a request belongs to the "
                           "first class with shape selectors it meets, else to the default class.")
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
        for i, v in enumerate(self.variants):
            if v.profile is None:
                raise ValueError(f"variants.{i}.profile: the variant autoscaler needs a performance profile for '{v.name}'")
        if self.pd_ratio_min and self.pd_ratio_max and self.pd_ratio_min > self.pd_ratio_max:
            raise ValueError("pd_ratio_min > pd_ratio_max")
        return self

    @property
    def classes(self) -> list[ClassTarget]:
        """The classes as the autoscaler plans for them (ms, selectors; the default class last)."""
        return self.qos.targets()
