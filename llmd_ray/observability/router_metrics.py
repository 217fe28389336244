"""The router's metrics (``ray.util.metrics``, exported as ``ray_llmd_router_*``; see ``catalog.py``). Here rather
than in llmd_ray/routing, which stays free of Ray but for router.py. Rare outcomes are exported at 0 from the start."""

from __future__ import annotations

from llmd_ray.observability.keep import keep
from llmd_ray.observability.zero import declare

FALLBACK_REASONS = ("no_tokens", "none_eligible")
PRECISE_FALLBACK_REASONS = ("missing", "stale", "recovering", "error")
SYNC_RESULTS = ("ok", "error", "timeout")
SHARED_KINDS = ("published", "merged", "unknown_endpoint", "skipped", "dropped")


class RouterMetrics:
    def __init__(self, precise: bool = False, shared: bool = False):
        from ray.util import metrics

        self.decisions = metrics.Counter(
            "llmd_router_decisions", description="Routing decisions by affinity outcome.", tag_keys=("outcome",)
        )
        self.fallbacks = metrics.Counter(
            "llmd_router_fallbacks", description="Decisions that fell back (no token ids, nothing eligible).",
            tag_keys=("reason",),
        )
        self.latency = metrics.Histogram(
            "llmd_router_decision_latency_seconds", description="choose_replicas latency.",
            boundaries=[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05],
        )
        self.kv_index_syncs = metrics.Counter(
            "llmd_router_kv_index_syncs", description="Syncs with the KV-index actor by result (ok, error, timeout).",
            tag_keys=("result",),
        )
        self.kv_index_staleness = metrics.Gauge(
            "llmd_router_kv_index_staleness_seconds",
            description="Age of the router's copy of the KV-index; above the scorer's limit it routes on the approximate index.",
        )
        self.precise_fallbacks = metrics.Counter(
            "llmd_router_precise_fallbacks",
            description="Decisions where the precise index was missing/stale/broken and the approximate index was used.",
            tag_keys=("reason",),
        )
        self.predicted_hit = metrics.Histogram(
            "llmd_router_predicted_hit_ratio", description="Predicted cached fraction of the prompt on the chosen replica.",
            boundaries=[0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99],
        )
        self.index_blocks = metrics.Gauge(
            "llmd_router_index_blocks", description="Blocks in the router's prefix index (approximate: per replica, "
            "summed) and in its copy of the KV-event index (precise: distinct blocks).", tag_keys=("index",),
        )
        self.shared_decisions = metrics.Counter(
            "llmd_router_shared_decisions", description="Routing decisions shared with the other routers (one per "
            "ingress replica): published, merged into this router's index, unknown_endpoint (not live here: skipped), "
            "skipped (the shared log had more than one sync returns), dropped (this router's outbox overflowed).",
            tag_keys=("kind",),
        )
        self.shared_syncs = metrics.Counter(
            "llmd_router_shared_syncs", description="Exchanges with the RoutingState deployment by result (ok, error, timeout).",
            tag_keys=("result",),
        )
        declare(self.fallbacks, [{"reason": r} for r in FALLBACK_REASONS])
        if shared:
            declare(self.shared_decisions, [{"kind": k} for k in SHARED_KINDS])
            declare(self.shared_syncs, [{"result": r} for r in SYNC_RESULTS])
        if precise:
            declare(self.precise_fallbacks, [{"reason": r} for r in PRECISE_FALLBACK_REASONS])
            declare(self.kv_index_syncs, [{"result": r} for r in SYNC_RESULTS])

    def index_sizes(self, prefix_index, mirror) -> None:
        if prefix_index is not None:
            keep(self.index_blocks, sum(prefix_index.num_blocks(e) for e in prefix_index.endpoints()), {"index": "approximate"})
        if mirror is not None:
            keep(self.index_blocks, len(mirror.blocks), {"index": "precise"})
