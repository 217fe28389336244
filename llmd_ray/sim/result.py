"""What a simulator run returns: its requests, the scale events, the cost and the replica timeline."""

from __future__ import annotations

from dataclasses import dataclass, field

from llmd_ray.sim.replica import SimRequest


@dataclass(slots=True)
class ScaleEvent:
    t: float
    variant: str
    before: int
    after: int


@dataclass
class SimResult:
    requests: list[SimRequest]
    scale_events: list[ScaleEvent]
    cost: float  # $ over the run (replica-seconds x price, from start until removal)
    replica_timeline: list[tuple[float, dict[str, int]]]  # (t, ready replicas per variant)
    sim_seconds: float
    wall_seconds: float = 0.0
    routing_calls: int = 0
    extra: dict = field(default_factory=dict)
