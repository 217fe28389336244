"""The metrics llmd-ray exports, as Prometheus sees them through Ray's metrics agent.

Names are the exported ones: Ray prefixes ``ray_``; a Ray ``Counter`` is exported with ``_total``;
a histogram as ``<name>_bucket``/``_sum``/``_count``. ``labels`` are the metric's own labels; every
series also carries Ray's (``SessionName``, ``NodeAddress``, ``WorkerId``, ``Version``, ...), and a
``ray.serve.metrics`` metric (``serve``) also ``application``, ``deployment`` and ``replica``.
``app`` says which topology produces it (the Prometheus test serves both at once): ``pd`` (P/D
variants under the variant autoscaler, QoS classes with flow control), ``tiers`` (an aggregated
variant with KV tiers and the precise prefix index), ``any``; ``migration`` only when an engine replica
dies mid-stream (tests/integration/test_stream_migration.py kills one; the Prometheus test does not).
"""

from __future__ import annotations

from dataclasses import dataclass

SERVE_LABELS = ("application", "deployment", "replica")


@dataclass(frozen=True, slots=True)
class Metric:
    name: str  # exported name (histograms: the base name)
    kind: str  # counter | gauge | histogram
    labels: tuple[str, ...]  # own labels (not Ray's standard ones)
    meaning: str
    source: str  # the module that registers it ("ray.serve" for Serve's own)
    app: str = "any"  # pd | tiers | any
    serve: bool = False  # a ray.serve.metrics metric: application/deployment/replica labels too

    @property
    def all_labels(self) -> tuple[str, ...]:
        return self.labels + (SERVE_LABELS if self.serve else ())

    @property
    def series(self) -> str:
        """A series name that exists once the metric has a sample."""
        return f"{self.name}_count" if self.kind == "histogram" else self.name


def _m(name, kind, labels, meaning, source, app="any", serve=False) -> Metric:
    return Metric(name, kind, tuple(labels), meaning, source, app, serve)


_ENGINE = "llmd_ray/serving/metrics.py"
_M = ("model_name",)
VLLM = [
    _m("ray_vllm_num_requests_waiting", "gauge", _M, "vllm:num_requests_waiting: requests waiting to be scheduled", _ENGINE, serve=True),
    _m("ray_vllm_num_requests_running", "gauge", _M, "vllm:num_requests_running: requests in the running batch", _ENGINE, serve=True),
    _m("ray_vllm_kv_cache_usage_perc", "gauge", _M, "vllm:kv_cache_usage_perc: KV cache blocks in use (0-1)", _ENGINE, serve=True),
    _m("ray_vllm_prefix_cache_queries_total", "counter", _M, "vllm:prefix_cache_queries: prompt tokens looked up in the prefix cache", _ENGINE, serve=True),
    _m("ray_vllm_prefix_cache_hits_total", "counter", _M, "vllm:prefix_cache_hits: prompt tokens found in the prefix cache", _ENGINE, serve=True),
    _m("ray_vllm_prompt_tokens_total", "counter", _M, "vllm:prompt_tokens: prefill tokens processed", _ENGINE, serve=True),
    _m("ray_vllm_generation_tokens_total", "counter", _M, "vllm:generation_tokens: tokens generated", _ENGINE, serve=True),
    _m("ray_vllm_num_preemptions_total", "counter", _M, "vllm:num_preemptions: requests preempted", _ENGINE, serve=True),
    _m("ray_vllm_request_success_total", "counter", _M + ("finished_reason",), "vllm:request_success: finished requests", _ENGINE, serve=True),
    _m("ray_vllm_time_to_first_token_seconds", "histogram", _M, "vllm:time_to_first_token_seconds: TTFT in the engine", _ENGINE, serve=True),
    _m("ray_vllm_inter_token_latency_seconds", "histogram", _M, "vllm:inter_token_latency_seconds: inter-token latency", _ENGINE, serve=True),
    _m("ray_vllm_e2e_request_latency_seconds", "histogram", _M, "vllm:e2e_request_latency_seconds: engine request latency", _ENGINE, serve=True),
    _m("ray_llmd_lora_loads_total", "counter", _M, "LoRA adapters loaded into one of the engine's max_loras slots (0 without LoRA)", _ENGINE, serve=True),
]

_SERVE = "ray.serve (proxy)"
RAY_SERVE = [
    _m("ray_serve_num_http_requests_total", "counter", ("route", "method", "application", "status_code"),
       "HTTP requests through Serve's proxy, by status code", _SERVE),
]

_MIG = "llmd_ray/frontdoor/migrating.py"
MIGRATION = [
    _m("ray_llmd_stream_migrations_total", "counter", ("deployment", "outcome"), "streams whose replica died mid-stream, by outcome (migrated, refused, exhausted, failed)", _MIG, "migration"),
    _m("ray_llmd_stream_migration_seconds", "histogram", ("deployment",), "gap a migration added: the replica's failure to the new replica's first output", _MIG, "migration"),
]

_ROUTER = "llmd_ray/observability/router_metrics.py"
ROUTER = [
    _m("ray_llmd_router_decisions_total", "counter", ("outcome",), "routing decisions by the affinity filter's outcome (warm, cold, released, imbalanced, no_affinity_filter)", _ROUTER),
    _m("ray_llmd_router_fallbacks_total", "counter", ("reason",), "decisions that fell back to any replica (no_tokens, none_eligible)", _ROUTER),
    _m("ray_llmd_router_decision_latency_seconds", "histogram", (), "choose_replicas latency", _ROUTER),
    _m("ray_llmd_router_predicted_hit_ratio", "histogram", (), "predicted cached fraction of the prompt on the chosen replica", _ROUTER),
    _m("ray_llmd_router_index_blocks", "gauge", ("index",), "blocks in the router's prefix index (approximate) and its copy of the KV-event index (precise)", _ROUTER),
    _m("ray_llmd_router_kv_index_syncs_total", "counter", ("result",), "syncs with the KVIndex deployment (ok, error, timeout)", _ROUTER, app="tiers"),
    _m("ray_llmd_router_kv_index_staleness_seconds", "gauge", (), "age of the router's copy of the KV-event index", _ROUTER, app="tiers"),
    _m("ray_llmd_router_shared_decisions_total", "counter", ("kind",), "decisions shared between routers (one per ingress replica): published, merged, unknown_endpoint, skipped, dropped", _ROUTER),
    _m("ray_llmd_router_shared_syncs_total", "counter", ("result",), "exchanges with the RoutingState deployment (ok, error, timeout)", _ROUTER),
    _m("ray_llmd_router_precise_fallbacks_total", "counter", ("reason",), "decisions routed on the approximate index (precise index missing, stale, error)", _ROUTER, app="tiers"),
]

_QOS = "llmd_ray/serving/qos_metrics.py"
_Q = ("model_name", "qos_class")
QOS = [
    _m("ray_llmd_qos_requests_queued_total", "counter", _Q, "requests that entered the flow-control queue", _QOS, serve=True),
    _m("ray_llmd_qos_requests_admitted_total", "counter", _Q, "requests released to the engines", _QOS, serve=True),
    _m("ray_llmd_qos_requests_rejected_total", "counter", _Q + ("reason",), "requests shed or refused (saturated, queue_timeout, queue_full, rate_limited)", _QOS, serve=True),
    _m("ray_llmd_qos_queue_depth", "gauge", _Q, "requests waiting at the ingress", _QOS, serve=True),
    _m("ray_llmd_qos_queue_wait_seconds", "histogram", _Q, "wait for admission", _QOS, serve=True),
    _m("ray_llmd_qos_ttft_seconds", "histogram", _Q, "time to first token from arrival at the ingress (streams)", _QOS, serve=True),
    _m("ray_llmd_qos_itl_seconds", "histogram", _Q, "mean inter-token latency per request (streams)", _QOS, serve=True),
    _m("ray_llmd_qos_e2e_seconds", "histogram", _Q, "end-to-end latency from arrival", _QOS, serve=True),
    _m("ray_llmd_qos_objective_total", "counter", _Q + ("objective", "met"), "requests against the class's TTFT/ITL objective (SLO attainment)", _QOS, serve=True),
    _m("ray_llmd_flow_inflight", "gauge", ("model_name",), "requests released and not finished", _QOS, serve=True),
    _m("ray_llmd_flow_saturated", "gauge", ("model_name",), "1 when no replica has headroom", _QOS, serve=True),
]

_PD = "llmd_ray/pd/metrics.py"
_P = ("model_name", "policy", "transport")
PD = [
    _m("ray_llmd_pd_decisions_total", "counter", _P + ("split", "reason"), "split decisions by outcome and reason", _PD, "pd", True),
    _m("ray_llmd_pd_fallbacks_total", "counter", _P + ("reason",), "remote prefills that failed; decode prefilled locally", _PD, "pd", True),
    _m("ray_llmd_pd_handoff_bytes_total", "counter", _P, "KV bytes handed from prefill to decode", _PD, "pd", True),
    _m("ray_llmd_pd_handoff_seconds", "histogram", _P, "KV handoff time", _PD, "pd", True),
    _m("ray_llmd_pd_remote_prefill_seconds", "histogram", _P, "remote prefill round trip, handoff included", _PD, "pd", True),
]

_TIERS = "llmd_ray/tiers/metrics.py"
_T = ("model_name", "tier")
TIERS = [
    _m("ray_llmd_kv_tier_hit_blocks_total", "counter", _T, "blocks past the engine's prefix hit loaded from a tier", _TIERS, "tiers"),
    _m("ray_llmd_kv_tier_miss_blocks_total", "counter", _T, "blocks past the engine's prefix hit no tier held", _TIERS, "tiers"),
    _m("ray_llmd_kv_tier_loaded_bytes_total", "counter", _T, "KV bytes loaded from a tier", _TIERS, "tiers"),
    _m("ray_llmd_kv_tier_saved_bytes_total", "counter", _T, "KV bytes saved to the local tier", _TIERS, "tiers"),
    _m("ray_llmd_kv_tier_shared_fetched_bytes_total", "counter", _T, "KV bytes fetched from the shared tier", _TIERS, "tiers"),
    _m("ray_llmd_kv_tier_shared_uploaded_bytes_total", "counter", _T, "KV bytes uploaded to the shared tier", _TIERS, "tiers"),
    _m("ray_llmd_kv_tier_evictions_total", "counter", _T, "blocks evicted from a tier", _TIERS, "tiers"),
    _m("ray_llmd_kv_tier_occupancy_bytes", "gauge", _T, "bytes a tier holds", _TIERS, "tiers"),
    _m("ray_llmd_kv_tier_budget_bytes", "gauge", _T, "byte budget of a tier", _TIERS, "tiers"),
    _m("ray_llmd_kv_tier_load_seconds_per_block", "gauge", _T, "mean time to load one block from the tiers", _TIERS, "tiers"),
]

_WVA = "llmd_ray/autoscaling/policy.py"
_W = ("variant_name", "accelerator_type", "application")
AUTOSCALER = [
    _m("ray_wva_desired_replicas", "gauge", _W, "replicas the variant autoscaler wants per variant", _WVA, "pd"),
    _m("ray_wva_current_replicas", "gauge", _W, "running replicas per variant", _WVA, "pd"),
    _m("ray_wva_desired_ratio", "gauge", _W, "desired / running replicas (what an HPA or KEDA reads)", _WVA, "pd"),
    _m("ray_wva_cost_per_hour", "gauge", _W, "hourly price of the variant's desired replicas (summed: the plan's cost)", _WVA, "pd"),
]

GROUPS: dict[str, list[Metric]] = {
    "vLLM engines": VLLM, "Ray Serve": RAY_SERVE, "Stream migration": MIGRATION, "Router": ROUTER, "QoS and flow control": QOS,
    "P/D": PD, "KV tiers": TIERS, "Variant autoscaler": AUTOSCALER,
}
CATALOG: list[Metric] = [m for ms in GROUPS.values() for m in ms]
BY_NAME: dict[str, Metric] = {m.name: m for m in CATALOG}
assert len(BY_NAME) == len(CATALOG), "duplicate metric in the catalog"
