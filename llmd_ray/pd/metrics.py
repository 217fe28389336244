"""P/D metrics: split decisions with their reasons, fallbacks, handoff bytes and time.

Exported through Ray's metrics port (``ray_llmd_pd_*``); the same counts are
kept in-process so ``LLMServer.pd_stats()`` (decode role) can report them without a
metrics scrape.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from llmd_ray.observability.zero import declare

FALLBACK_REASONS = ("timeout", "kv_lost", "prefill_died", "prefill_unavailable", "import_failed", "prefill_error")
_SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]


class PDMetrics:
    def __init__(self, model_name: str, policy: str, transport: str):
        from ray.serve import metrics

        self.tags = {"model_name": model_name, "policy": policy, "transport": transport}
        keys = tuple(self.tags)
        self._decisions = metrics.Counter(
            "llmd_pd_decisions", description="Split decisions by outcome and reason.", tag_keys=(*keys, "split", "reason")
        )
        self._fallbacks = metrics.Counter(
            "llmd_pd_fallbacks", description="Remote prefills that failed; decode prefilled locally.", tag_keys=(*keys, "reason")
        )
        self._bytes = metrics.Counter("llmd_pd_handoff_bytes", description="KV bytes handed over.", tag_keys=keys)
        self._handoff = metrics.Histogram(
            "llmd_pd_handoff_seconds", description="KV handoff time (export read, object store, import write).",
            boundaries=_SECONDS, tag_keys=keys,
        )
        self._remote = metrics.Histogram(
            "llmd_pd_remote_prefill_seconds", description="Remote prefill round trip, handoff included.",
            boundaries=_SECONDS, tag_keys=keys,
        )
        declare(self._fallbacks, [{**self.tags, "reason": r} for r in FALLBACK_REASONS])  # at 0 from the start
        self.counts: Counter[str] = Counter()
        self.handoff_bytes = 0
        self.handoff_seconds = 0.0

    def decision(self, split: bool, reason: str) -> None:
        self._decisions.inc(tags={**self.tags, "split": str(split).lower(), "reason": reason})
        self.counts[f"decision.{'split' if split else 'local'}.{reason}"] += 1

    def fallback(self, reason: str) -> None:
        self._fallbacks.inc(tags={**self.tags, "reason": reason})
        self.counts[f"fallback.{reason}"] += 1

    def handoff(self, nbytes: int, seconds: float, round_trip_s: float) -> None:
        self._bytes.inc(nbytes, tags=self.tags)
        self._handoff.observe(seconds, tags=self.tags)
        self._remote.observe(round_trip_s, tags=self.tags)
        self.counts["handoffs"] += 1
        self.handoff_bytes += nbytes
        self.handoff_seconds += seconds

    def snapshot(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "handoff_bytes": self.handoff_bytes, "handoff_seconds": self.handoff_seconds}
