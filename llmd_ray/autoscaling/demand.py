"""The demand model: arrival rate per request-shape bucket, cache hits, QoS classes.

Replicas count what they serve with a ``DemandRecorder`` (cumulative
counters, reported through ``record_autoscaling_stats``); the policy turns
the counters of every replica into rates with a ``DemandEstimator``:

* rate per bucket = sum over replicas of delta(count) / delta(t), per replica
  (a replica started since the last update counts from zero at its start, so a
  growing fleet does not hide its new replicas' traffic; a restarted replica's
  counters start a new baseline, never a negative rate);
* smoothed by an EWMA and forecast ``horizon`` ahead with Holt's linear trend (the plan's demand is
  never below the current level: what is removed now is gone before the forecast time);
* the cache hit rate per bucket comes only from replicas older than
  ``cold_start_s``: a new replica's cold cache would inflate prefill demand;
* prefill demand is the **uncached** prompt tokens: input x (1 - hit rate).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from llmd_ray.autoscaling.config import ShapeGrid
from llmd_ray.topology.qos import ClassTarget

PREFIX = "llmd_dm_"  # metric keys: llmd_dm_<bucket>_{n,in,out,cached}
FIELDS = ("n", "in", "out", "cached")


@dataclass(slots=True)
class DemandItem:
    """Demand of one (class, shape) bucket, in requests/s."""

    key: str
    cls: str
    input_tokens: float
    output_tokens: float
    hit_rate: float
    rate: float

    @property
    def uncached_tokens(self) -> float:
        return self.input_tokens * (1.0 - self.hit_rate)


class ShapeBuckets:
    """Maps (prompt, output) lengths to a bucket key like ``i1024_o256`` (upper edges)."""

    def __init__(self, grid: ShapeGrid | None = None):
        g = grid or ShapeGrid()
        self.input_edges = list(g.input_edges)
        self.output_edges = list(g.output_edges)

    def key(self, prompt_tokens: int, max_tokens: int) -> str:
        i = min(bisect.bisect_left(self.input_edges, prompt_tokens), len(self.input_edges) - 1)
        o = min(bisect.bisect_left(self.output_edges, max_tokens), len(self.output_edges) - 1)
        return f"i{self.input_edges[i]}_o{self.output_edges[o]}"


def classify(classes: Sequence[ClassTarget], input_tokens: float, output_tokens: float) -> ClassTarget:
    """The first class whose shape selectors the request meets; the last class catches the rest."""
    for c in classes:
        if (c.max_input_tokens is None or input_tokens <= c.max_input_tokens) and (
            c.max_output_tokens is None or output_tokens <= c.max_output_tokens
        ):
            return c
    return classes[-1]


class DemandRecorder:
    """Per-replica cumulative counters per shape bucket (cheap: a dict update per request)."""

    def __init__(self, grid: ShapeGrid | None = None):
        self.buckets = ShapeBuckets(grid)
        self.counts: dict[str, list[float]] = {}

    def on_arrival(self, prompt_tokens: int, max_tokens: int) -> str:
        key = self.buckets.key(prompt_tokens, max_tokens)
        c = self.counts.get(key)
        if c is None:
            c = self.counts[key] = [0.0, 0.0, 0.0, 0.0]
        c[0] += 1
        c[1] += prompt_tokens
        c[2] += max_tokens
        return key

    def on_cached(self, key: str, cached_tokens: int) -> None:
        self.counts[key][3] += cached_tokens

    def metrics(self) -> dict[str, float]:
        return {f"{PREFIX}{k}_{f}": v for k, c in self.counts.items() for f, v in zip(FIELDS, c)}


def parse_metrics(metrics: Mapping[str, float]) -> dict[str, list[float]]:
    """The inverse of ``DemandRecorder.metrics``: bucket -> [n, in, out, cached]."""
    out: dict[str, list[float]] = {}
    for name, v in metrics.items():
        if not name.startswith(PREFIX):
            continue
        key, _, f = name[len(PREFIX):].rpartition("_")
        if f in FIELDS:
            out.setdefault(key, [0.0, 0.0, 0.0, 0.0])[FIELDS.index(f)] = float(v)
    return out


@dataclass(slots=True)
class _Smoothed:
    level: float = 0.0
    trend: float = 0.0
    sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0, 0.0])  # n, in, out, cached, in(mature)


class DemandEstimator:
    """Rates from cumulative per-replica counters, smoothed and forecast."""

    def __init__(self, classes: Sequence[ClassTarget], *, half_life_s: float = 30.0, trend_half_life_s: float = 120.0,
                 horizon_s: float = 60.0, cold_start_s: float = 30.0, default_hit_rate: float = 0.0):
        self.classes = list(classes)
        self.half_life_s, self.trend_half_life_s = half_life_s, trend_half_life_s
        self.horizon_s, self.cold_start_s, self.default_hit_rate = horizon_s, cold_start_s, default_hit_rate
        self._last: dict[str, tuple[float, dict[str, list[float]]]] = {}
        self._state: dict[str, _Smoothed] = {}
        self._t: float | None = None
        self.ready = False  # True once a rate could be computed (a replica seen twice)

    def update(self, now: float, replicas: Mapping[str, tuple[float, float, Mapping[str, float]]]) -> list[DemandItem]:
        """``replicas``: id -> (sample time, replica start time, metrics). Returns the forecast demand."""
        inst: dict[str, list[float]] = {}
        for rid, (t, born, metrics) in replicas.items():
            cur = parse_metrics(metrics)
            prev = self._last.get(rid)
            self._last[rid] = (t, cur)
            if prev is None and self._t is not None and born >= self._t and born < t:
                prev = (born, {})  # started since the last update: its counters began at zero when it did
            if prev is None or t <= prev[0]:
                continue
            dt = t - prev[0]
            self.ready = True
            mature = now - born >= self.cold_start_s
            for key, c in cur.items():
                p = prev[1].get(key, [0.0] * 4)
                if c[0] < p[0]:  # counters went back: a restarted replica, new baseline
                    continue
                acc = inst.setdefault(key, [0.0] * 5)
                d = [(a - b) / dt for a, b in zip(c, p)]
                acc[0] += d[0]
                acc[1] += d[1]
                acc[2] += d[2]
                if mature:
                    acc[3] += d[3]
                    acc[4] += d[1]
        for rid in [r for r in self._last if r not in replicas]:
            del self._last[rid]
        dt = 0.0 if self._t is None else max(0.0, now - self._t)
        self._t = now
        a = 1.0 - 0.5 ** (dt / self.half_life_s) if dt else 0.0
        b = 1.0 - 0.5 ** (dt / self.trend_half_life_s) if dt else 0.0
        for key in set(self._state) | set(inst):
            x = inst.get(key, [0.0] * 5)
            s = self._state.get(key)
            if s is None:  # a bucket's first rate: start from it, with no trend
                self._state[key] = _Smoothed(x[0], 0.0, list(x))
                continue
            prev_level = s.level
            s.level = a * x[0] + (1 - a) * (s.level + s.trend * dt)
            s.level = max(0.0, s.level)
            if dt:
                s.trend = b * (s.level - prev_level) / dt + (1 - b) * s.trend
            s.sums = [a * xi + (1 - a) * si for xi, si in zip(x, s.sums)]
        return self.forecast()

    def forecast(self, horizon_s: float | None = None, hold_level: bool = True) -> list[DemandItem]:
        """Per bucket the rate ``horizon_s`` ahead; with ``hold_level`` (the plan's demand) never below the
        current level: a fleet sized now serves from now until the horizon (a replica removed is gone at once),
        so on a falling trend it must still hold today's rate."""
        h = self.horizon_s if horizon_s is None else horizon_s
        items = []
        for key in sorted(self._state):
            s = self._state[key]
            rate = max(0.0, s.level + max(s.trend, -s.level / max(h, 1e-9)) * h) if h else s.level
            if hold_level:
                rate = max(rate, s.level)
            n, tin, tout, cached, tin_m = s.sums
            if rate <= 1e-9 or n <= 1e-12:
                continue
            inp, out = tin / n, tout / n
            hit = min(max(cached / tin_m, 0.0), 0.999) if tin_m > 1e-9 else self.default_hit_rate
            cls = classify(self.classes, inp, out).name
            items.append(DemandItem(key, cls, inp, out, hit, rate))
        return items

    def total_rate(self) -> float:
        return sum(s.level for s in self._state.values())


def scale_demand(items: Sequence[DemandItem], factor: float) -> list[DemandItem]:
    return [DemandItem(d.key, d.cls, d.input_tokens, d.output_tokens, d.hit_rate, d.rate * factor) for d in items]


def demand_from_shapes(shapes: Sequence[tuple[str, float, float, float, float]]) -> list[DemandItem]:
    """Build demand directly: (class, input, output, hit_rate, rate) tuples (tests, notebooks, offline planning)."""
    return [DemandItem(f"{c}:{i:g}x{o:g}#{k}", c, float(i), float(o), float(h), float(r))
            for k, (c, i, o, h, r) in enumerate(shapes) if r > 0 and not math.isnan(r)]
