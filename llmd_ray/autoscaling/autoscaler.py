"""The variant autoscaler's decision step, free of Ray: demand -> MILP -> hysteresis.

``VariantAutoscaler.step`` is what the Ray Serve policy (``policy.py``) and
the simulator (``llmd_ray.sim``) both call, so the simulator exercises the
exact code that runs in the Serve controller.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from llmd_ray.autoscaling.config import AutoscalerConfig
from llmd_ray.autoscaling.demand import DemandEstimator, DemandItem, scale_demand
from llmd_ray.autoscaling.hysteresis import Hysteresis
from llmd_ray.autoscaling.optimizer import Optimizer, Plan
from llmd_ray.autoscaling.perf import Profile, load_profile
from llmd_ray.autoscaling.startup import StartupTracker

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class ReplicaSample:
    """One replica's latest ``record_autoscaling_stats`` as the policy sees it."""

    variant: str
    sample_time: float
    started_at: float  # when the policy first saw the replica
    metrics: Mapping[str, float]


@dataclass(slots=True)
class Decision:
    at: float
    counts: dict[str, int]
    desired: dict[str, int]  # the optimizer's counts before hysteresis
    status: str
    reason: str
    demand: list[DemandItem] = field(default_factory=list)
    plan: Plan | None = None
    held: dict[str, str] = field(default_factory=dict)  # variant -> why it did not move to desired


class VariantAutoscaler:
    def __init__(self, config: AutoscalerConfig, profiles: Mapping[str, Profile] | None = None):
        self.config = config
        names = {v.profile for v in config.variants}
        self.profiles = {n: (profiles[n] if profiles and n in profiles else load_profile(n)) for n in names}
        self.optimizer = Optimizer(config, self.profiles)
        self.estimator = DemandEstimator(
            config.classes, half_life_s=config.ewma_half_life_s, trend_half_life_s=config.trend_half_life_s,
            horizon_s=config.forecast_horizon_s, cold_start_s=config.cold_start_s,
            default_hit_rate=config.default_hit_rate)
        self.hysteresis = Hysteresis(config.downscale_stable_s, config.upscale_cooldown_s)
        self.startup = StartupTracker({v.name: self.profiles[v.profile].startup_s
                                       for v in config.variants if v.max_replicas > 0})
        self.last: Decision | None = None
        self._last_solve: float | None = None

    def due(self, now: float) -> bool:
        return self._last_solve is None or now - self._last_solve >= self.config.interval_s

    def step(self, now: float, current: Mapping[str, int], replicas: Mapping[str, ReplicaSample],
             force: bool = False) -> Decision:
        """Decide replica counts per variant. Between solves (``interval_s``) the last decision stands."""
        if not force and not self.due(now) and self.last is not None:
            return self.last
        self._last_solve = now
        cfg = self.config
        current = {v.name: int(current.get(v.name, v.min_replicas)) for v in cfg.variants}
        ready: dict[str, dict[str, float]] = {v.name: {} for v in cfg.variants}
        for rid, r in replicas.items():
            if r.variant in ready:
                ready[r.variant][rid] = r.started_at
        self.startup.observe(ready)
        n_ready = {v: len(ids) for v, ids in ready.items()}
        # Replicas asked for now serve from now + start-up until the next decision's arrive: plan on that forecast.
        self.estimator.horizon_s = self.horizon_s()
        # P/D: the decode replicas see every request (they orchestrate), prefill replicas only the split ones:
        # the demand is counted on decode, once.
        roles = {v.name: v.role for v in cfg.variants}
        demand = self.estimator.update(now, {rid: (r.sample_time, r.started_at, r.metrics)
                                             for rid, r in replicas.items() if roles.get(r.variant) != "prefill"})
        if not self.estimator.ready:  # no rates yet: solve again at the next call, not an interval later
            self._last_solve = None
            self.last = Decision(now, current, dict(current), "warming_up", "no rates yet: holding current counts")
            return self.last
        if cfg.min_demand_rps and sum(d.rate for d in demand) < cfg.min_demand_rps and demand:
            demand = scale_demand(demand, cfg.min_demand_rps / sum(d.rate for d in demand))
        plan = self.optimizer.solve(demand, explain=False, current=current)
        if plan.status == "infeasible_bounds":
            self.last = Decision(now, current, dict(current), plan.status, plan.message, demand, plan)
            return self.last
        desired = dict(plan.counts)
        saturated = self._saturated(now, replicas)
        for v in saturated:  # the profile is optimistic for this variant: trust the queue, one more than is
            desired[v] = max(desired[v], n_ready[v] + 1)  # serving (replicas starting are capacity on its way)
        margin = scale_demand(demand, 1.0 + cfg.downscale_margin)

        def safe(trial: dict[str, int]) -> bool:
            if any(trial[v] < current[v] for v in saturated):
                return False
            return self.optimizer.serves(margin, trial)

        counts = self.hysteresis.apply(now, current, desired, safe)
        for v in cfg.variants:
            counts[v.name] = min(max(counts[v.name], v.min_replicas), v.max_replicas)
        reason = plan.message + (f"; queues building on {', '.join(saturated)}" if saturated else "")
        self.startup.requested(now, current, counts, n_ready)
        self.last = Decision(now, counts, desired, plan.status, reason, demand, plan, dict(self.hysteresis.blocked))
        if counts != current:
            logger.info("variant autoscaler: %s -> %s (%s)", current, counts, reason)
        return self.last

    def horizon_s(self) -> float:
        """Forecast look-ahead: the configured horizon, at least the longest start-up plus one interval."""
        return max(self.config.forecast_horizon_s, self.startup.longest_s() + self.config.interval_s)

    def _saturated(self, now: float, replicas: Mapping[str, ReplicaSample]) -> list[str]:
        waiting: dict[str, list[float]] = {}
        for r in replicas.values():
            if now - r.started_at < self.config.cold_start_s:  # cold-start samples never drive decisions
                continue
            waiting.setdefault(r.variant, []).append(float(r.metrics.get("num_waiting", 0.0)))
        limit = self.config.saturated_waiting_per_replica
        return sorted(v for v, w in waiting.items() if w and sum(w) / len(w) > limit)

    def explain(self) -> str:
        """The last decision with the cost of each alternative (extra solves: call off the hot path)."""
        d = self.last
        if d is None:
            return "no decision yet"
        if d.plan is None:
            return f"{d.status}: {d.reason}"
        d.plan.alternatives = self.optimizer.alternatives(d.demand) if d.demand else {}
        held = "".join(f"\n  held {v}: {why}" for v, why in d.held.items())
        return d.plan.explain() + f"\n  applied: {d.counts}" + held
