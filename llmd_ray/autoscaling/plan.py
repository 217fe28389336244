"""What the optimizer answers: a ``Plan`` (replica counts, cost, routes, why) over its ``Route``s."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Route:
    name: str
    kind: str  # aggregated | pd
    variants: tuple[int, ...]  # (agg,) or (prefill, decode)


@dataclass(slots=True)
class Plan:
    """The optimizer's answer."""

    counts: dict[str, int]
    cost_per_hour: float
    status: str  # optimal | best_effort | infeasible_bounds | no_demand
    message: str
    unserved_rps: float = 0.0
    routes: dict[str, float] = field(default_factory=dict)  # route -> req/s assigned
    utilization: dict[str, float] = field(default_factory=dict)  # variant -> planned load / replicas
    binding: dict[str, str] = field(default_factory=dict)  # variant -> what holds its count
    alternatives: dict[str, float | None] = field(default_factory=dict)  # alternative -> cost (None: cannot serve)
    solve_ms: float = 0.0

    def explain(self) -> str:
        lines = [f"{self.status}: ${self.cost_per_hour:.2f}/h  {self.message}"]
        for v, n in self.counts.items():
            lines.append(f"  {v}: {n} replicas, planned load {self.utilization.get(v, 0):.0%}, {self.binding.get(v, '')}")
        for r, x in self.routes.items():
            if x > 1e-9:
                lines.append(f"  route {r}: {x:.2f} req/s")
        for alt, c in self.alternatives.items():
            lines.append(f"  alternative {alt}: " + ("cannot serve the demand" if c is None else f"${c:.2f}/h"))
        return "\n".join(lines)
