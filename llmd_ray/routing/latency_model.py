"""Online per-replica latency models for predicted-latency routing (pure; no Ray, no locks).

After llm-d's / the Gateway API Inference Extension's latency predictor: TTFT and
TPOT of a request on a replica are predicted from what the router sees when it
routes (learned, not copied: there the predictor is a sidecar training trees or
Bayesian ridge; here each replica has two recursive-least-squares linear models,
cheap enough to update inline).

Features (``features``), in this order::

    1, uncached prompt kilotokens (prompt minus predicted prefix hit), waiting requests,
    running requests, KV-cache usage [0, 1]

``LatencyPrior`` gives the starting weights from the engine's profile (prefill
tokens/s, decode step time), so a fresh replica predicts sensibly before its
first observation. ``RLSModel.update`` is O(features^2) and never allocates
more than a few small lists: it runs on the router's event loop, no await.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

N_FEATURES = 5
FEATURE_NAMES = ("intercept", "uncached_ktokens", "waiting", "running", "kv_usage")
# relative error (predicted - observed) / observed, bucket upper bounds; the last bucket is open
ERROR_BUCKETS = (-0.5, -0.25, -0.1, 0.0, 0.1, 0.25, 0.5, 1.0)
MIN_PREDICTION_S = 1e-4


def features(uncached_tokens: float, waiting: float, running: float, kv_usage: float) -> list[float]:
    """The feature vector of one (request, replica) pair."""
    return [1.0, max(0.0, uncached_tokens) / 1000.0, max(0.0, waiting), max(0.0, running),
            min(max(kv_usage, 0.0), 1.0)]


@dataclass(slots=True, frozen=True)
class LatencyPrior:
    """Starting weights from the engine's profile (seconds)."""

    prefill_tokens_per_s: float
    decode_step_s: float
    waiting_request_s: float  # TTFT added by each request queued ahead
    decode_step_per_running_s: float  # TPOT added by each running request (batch growth)

    def ttft_weights(self) -> list[float]:
        d = self.decode_step_s
        return [d, 1000.0 / self.prefill_tokens_per_s, self.waiting_request_s, self.decode_step_per_running_s, 0.0]

    def tpot_weights(self) -> list[float]:
        return [self.decode_step_s, 0.0, 0.0, self.decode_step_per_running_s, 0.0]


@dataclass(slots=True)
class RLSModel:
    """Recursive least squares with forgetting: y ~ w . x.

    ``P`` starts at ``prior_variance * I`` (how far data may pull the prior); its
    trace is capped at its starting value so a long run of identical inputs
    (no excitation) cannot wind it up under forgetting.
    """

    w: list[float]
    forgetting: float = 0.995
    prior_variance: float = 1.0
    P: list[list[float]] = field(default_factory=list)
    updates: int = 0
    _max_trace: float = 0.0

    def __post_init__(self) -> None:
        n = len(self.w)
        if not self.P:
            self.P = [[self.prior_variance if i == j else 0.0 for j in range(n)] for i in range(n)]
        self._max_trace = sum(self.P[i][i] for i in range(n))

    def predict(self, x: Sequence[float]) -> float:
        w = self.w
        return w[0] * x[0] + w[1] * x[1] + w[2] * x[2] + w[3] * x[3] + w[4] * x[4] if len(w) == 5 else \
            sum(a * b for a, b in zip(w, x))

    def update(self, x: Sequence[float], y: float) -> None:
        """One observation; O(n^2)."""
        if not math.isfinite(y):
            return
        P, n, lam = self.P, len(self.w), self.forgetting
        px = [sum(P[i][j] * x[j] for j in range(n)) for i in range(n)]
        denom = lam + sum(x[i] * px[i] for i in range(n))
        if denom <= 0.0 or not math.isfinite(denom):
            return
        k = [v / denom for v in px]
        err = y - self.predict(x)
        self.w = [wi + ki * err for wi, ki in zip(self.w, k)]
        # P <- (P - k (P x)^T) / lam   (P symmetric, so x^T P = (P x)^T)
        inv = 1.0 / lam
        for i in range(n):
            row, ki = P[i], k[i]
            for j in range(n):
                row[j] = (row[j] - ki * px[j]) * inv
        trace = sum(P[i][i] for i in range(n))
        if trace > self._max_trace:
            s = self._max_trace / trace
            for row in P:
                for j in range(n):
                    row[j] *= s
        self.updates += 1


@dataclass(slots=True)
class ErrorHistogram:
    """Counts of relative errors (predicted - observed) / observed in ``ERROR_BUCKETS``."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(ERROR_BUCKETS) + 1))
    abs_sum: float = 0.0
    n: int = 0

    def add(self, predicted: float, observed: float) -> float | None:
        if observed <= 0.0:
            return None
        rel = (predicted - observed) / observed
        i = 0
        while i < len(ERROR_BUCKETS) and rel > ERROR_BUCKETS[i]:
            i += 1
        self.counts[i] += 1
        self.abs_sum += abs(rel)
        self.n += 1
        return rel

    @property
    def mean_abs(self) -> float | None:
        return self.abs_sum / self.n if self.n else None


@dataclass(slots=True)
class ReplicaLatencyModel:
    """One replica's TTFT and TPOT models."""

    ttft: RLSModel
    tpot: RLSModel

    @classmethod
    def from_prior(cls, prior: LatencyPrior, forgetting: float, prior_variance: float) -> ReplicaLatencyModel:
        return cls(RLSModel(prior.ttft_weights(), forgetting, prior_variance),
                   RLSModel(prior.tpot_weights(), forgetting, prior_variance))

    def predict_ttft(self, x: Sequence[float]) -> float:
        return max(MIN_PREDICTION_S, self.ttft.predict(x))

    def predict_tpot(self, x: Sequence[float]) -> float:
        return max(MIN_PREDICTION_S, self.tpot.predict(x))

    def coefficients(self) -> dict[str, dict[str, float]]:
        return {"ttft": dict(zip(FEATURE_NAMES, self.ttft.w)), "tpot": dict(zip(FEATURE_NAMES, self.tpot.w))}
