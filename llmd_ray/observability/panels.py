"""The dashboards' panels: title, PromQL targets (expr, legend), unit. Grafana template variables
(``$datasource``, ``$Cluster``, ``$SessionName``, ``$model``, ``$__rate_interval``) follow Ray's own
dashboards: every query is filtered by ``ray_io_cluster`` (set by the PodMonitor's relabeling in
Kubernetes, absent elsewhere, which ``=~".*"`` matches) and Ray's ``SessionName``."""

from __future__ import annotations

from dataclasses import dataclass

F = 'ray_io_cluster=~"$Cluster",SessionName=~"$SessionName"'
FM = F + ',model_name=~"$model"'
R = "[$__rate_interval]"


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    targets: tuple[tuple[str, str], ...]  # (expr, legendFormat)
    unit: str = "short"
    description: str = ""


def rate(metric: str, by: str, filt: str = FM, extra: str = "") -> str:
    sel = filt + ("," + extra if extra else "")
    return f"sum by ({by}) (rate({metric}{{{sel}}}{R}))"


def quantiles(metric: str, by: str = "", filt: str = FM, qs=(0.5, 0.9, 0.99)) -> tuple[tuple[str, str], ...]:
    grp = f"le,{by}" if by else "le"
    lg = "{{" + by + "}} " if by else ""
    return tuple((f"histogram_quantile({q}, sum by ({grp}) (rate({metric}_bucket{{{filt}}}{R})))", f"{lg}p{int(q * 100)}")
                 for q in qs)


def ratio(num: str, den: str, by: str, filt: str = FM, num_extra: str = "") -> str:
    return f"{rate(num, by, filt, num_extra)} / {rate(den, by, filt)}"


V = "ray_vllm_"
OVERVIEW = [
    Panel("Request rate", ((rate("ray_serve_num_http_requests_total", "application", F), "{{application}}"),), "reqps"),
    Panel("Responses by status code", ((rate("ray_serve_num_http_requests_total", "status_code", F), "{{status_code}}"),),
          "reqps", "Errors are the non-2xx codes (400 refused, 429 shed or rate-limited, 503 overloaded, 500)."),
    Panel("Time to first token", quantiles(V + "time_to_first_token_seconds"), "s"),
    Panel("Inter-token latency", quantiles(V + "inter_token_latency_seconds"), "s"),
    Panel("End-to-end latency", quantiles(V + "e2e_request_latency_seconds"), "s"),
    Panel("Finished requests by reason", ((rate(V + "request_success_total", "finished_reason"), "{{finished_reason}}"),), "reqps"),
    Panel("Token throughput", ((f"sum(rate({V}prompt_tokens_total{{{FM}}}{R}))", "prompt"),
                               (f"sum(rate({V}generation_tokens_total{{{FM}}}{R}))", "generation")), "short"),
    Panel("Engine queues per replica", ((f"sum by (replica) ({V}num_requests_waiting{{{FM}}})", "waiting {{replica}}"),
                                        (f"sum by (replica) ({V}num_requests_running{{{FM}}})", "running {{replica}}")), "short"),
    Panel("KV cache usage per replica", ((f"max by (replica) ({V}kv_cache_usage_perc{{{FM}}})", "{{replica}}"),), "percentunit"),
    Panel("Preemptions", ((rate(V + "num_preemptions_total", "replica"), "{{replica}}"),), "short"),
    Panel("Stream migrations by outcome", ((rate("ray_llmd_stream_migrations_total", "outcome", F), "{{outcome}}"),), "short",
          "Streams whose engine replica died mid-stream: migrated to another replica, refused, exhausted, failed."),
    Panel("Stream migration gap", quantiles("ray_llmd_stream_migration_seconds", filt=F, qs=(0.5, 0.99)), "s"),
]

RT = "ray_llmd_router_"
ROUTING = [
    Panel("Prefix cache hit rate per replica",
          ((ratio(V + "prefix_cache_hits_total", V + "prefix_cache_queries_total", "replica"), "{{replica}}"),), "percentunit",
          "Prompt tokens found in vLLM's prefix cache / looked up, per engine replica."),
    Panel("Routing decisions by outcome", ((rate(RT + "decisions_total", "outcome", F), "{{outcome}}"),), "short"),
    Panel("Routing fallbacks by reason", ((rate(RT + "fallbacks_total", "reason", F), "any replica: {{reason}}"),
                                          (rate(RT + "precise_fallbacks_total", "reason", F), "approximate index: {{reason}}")), "short"),
    Panel("Routing decision latency", quantiles(RT + "decision_latency_seconds", filt=F, qs=(0.5, 0.99)), "s"),
    Panel("Predicted cache hit of the chosen replica", quantiles(RT + "predicted_hit_ratio", filt=F, qs=(0.5, 0.9)), "percentunit"),
    Panel("Prefix index size", ((f"sum by (index) ({RT}index_blocks{{{F}}})", "{{index}}"),), "short"),
    Panel("Precise index staleness", ((f"max({RT}kv_index_staleness_seconds{{{F}}})", "staleness"),), "s",
          "Age of the routers' copy of the KV-event index; above the scorer's limit routing uses the approximate index."),
    Panel("KV-index syncs by result", ((rate(RT + "kv_index_syncs_total", "result", F), "{{result}}"),), "short"),
    Panel("Decisions shared between routers", ((rate(RT + "shared_decisions_total", "kind", F), "{{kind}}"),
                                               (rate(RT + "shared_syncs_total", "result", F), "sync {{result}}")), "short",
          "With several ingress replicas: decisions each router published, and the others' merged into its index."),
    Panel("LoRA adapter loads per replica", ((rate("ray_llmd_lora_loads_total", "replica"), "{{replica}}"),), "short",
          "Adapters loaded into an engine's max_loras slots (vLLM's LRU); adapter-aware routing keeps this low."),
]

PDM, T = "ray_llmd_pd_", "ray_llmd_kv_tier_"
PD_TIERS = [
    Panel("P/D split decisions", ((rate(PDM + "decisions_total", "split,reason"), "split={{split}} {{reason}}"),), "short"),
    Panel("P/D fallbacks to local prefill", ((rate(PDM + "fallbacks_total", "reason"), "{{reason}}"),), "short"),
    Panel("P/D KV handoff throughput", ((rate(PDM + "handoff_bytes_total", "transport"), "{{transport}}"),), "Bps"),
    Panel("P/D handoff and remote prefill time", quantiles(PDM + "handoff_seconds", qs=(0.5, 0.99)) +
          tuple((e, "remote prefill " + lg) for e, lg in quantiles(PDM + "remote_prefill_seconds", qs=(0.5, 0.99))), "s"),
    Panel("KV tier block hits and misses", ((rate(T + "hit_blocks_total", "tier"), "hit {{tier}}"),
                                            (rate(T + "miss_blocks_total", "tier"), "miss")), "short"),
    Panel("KV tier bytes moved", ((rate(T + "loaded_bytes_total", "tier"), "loaded {{tier}}"),
                                  (rate(T + "saved_bytes_total", "tier"), "saved"),
                                  (rate(T + "shared_fetched_bytes_total", "tier"), "shared fetched"),
                                  (rate(T + "shared_uploaded_bytes_total", "tier"), "shared uploaded")), "Bps"),
    Panel("KV tier occupancy and budget", ((f"sum by (tier) ({T}occupancy_bytes{{{FM}}})", "held {{tier}}"),
                                           (f"sum by (tier) ({T}budget_bytes{{{FM}}})", "budget {{tier}}")), "bytes"),
    Panel("KV tier evictions", ((rate(T + "evictions_total", "tier"), "{{tier}}"),), "short"),
    Panel("KV tier load time per block", ((f"max({T}load_seconds_per_block{{{FM}}})", "per block"),), "s"),
]

Q = "ray_llmd_qos_"
QOS = [
    Panel("Queued and admitted per class", ((rate(Q + "requests_queued_total", "qos_class"), "queued {{qos_class}}"),
                                            (rate(Q + "requests_admitted_total", "qos_class"), "admitted {{qos_class}}")), "reqps"),
    Panel("Shed and refused per class", ((rate(Q + "requests_rejected_total", "qos_class,reason"), "{{qos_class}} {{reason}}"),), "reqps"),
    Panel("Queue depth per class", ((f"sum by (qos_class) ({Q}queue_depth{{{FM}}})", "{{qos_class}}"),), "short"),
    Panel("Queue wait per class (p90)", quantiles(Q + "queue_wait_seconds", "qos_class", qs=(0.9,)), "s"),
    Panel("TTFT per class (p90)", quantiles(Q + "ttft_seconds", "qos_class", qs=(0.9,)), "s"),
    Panel("ITL per class (p90)", quantiles(Q + "itl_seconds", "qos_class", qs=(0.9,)), "s"),
    Panel("End-to-end latency per class (p90)", quantiles(Q + "e2e_seconds", "qos_class", qs=(0.9,)), "s"),
    Panel("SLO attainment per class", ((ratio(Q + "objective_total", Q + "objective_total", "qos_class,objective", num_extra='met="true"'),
                                        "{{qos_class}} {{objective}}"),), "percentunit",
          "Fraction of requests that met the class's TTFT / ITL objective."),
    Panel("Flow control", ((f"sum(ray_llmd_flow_inflight{{{FM}}})", "in flight"),
                           (f"max(ray_llmd_flow_saturated{{{FM}}})", "saturated")), "short"),
]

W = "ray_wva_"
AUTOSCALING = [
    Panel("Desired vs running replicas per variant", ((f"max by (variant_name) ({W}desired_replicas{{{F}}})", "desired {{variant_name}}"),
                                                      (f"max by (variant_name) ({W}current_replicas{{{F}}})", "running {{variant_name}}")), "short"),
    Panel("Desired / running ratio", ((f"max by (variant_name) ({W}desired_ratio{{{F}}})", "{{variant_name}}"),), "short",
          "What an HPA or KEDA scaler reads (1: at the desired size)."),
    Panel("Cost per hour", ((f"sum by (application) ({W}cost_per_hour{{{F}}})", "plan {{application}}"),
                            (f"sum by (variant_name) ({W}cost_per_hour{{{F}}})", "{{variant_name}}")), "currencyUSD"),
    Panel("SLO attainment", ((ratio(Q + "objective_total", Q + "objective_total", "objective", num_extra='met="true"'), "{{objective}}"),),
          "percentunit"),
]

DASHBOARDS: dict[str, tuple[str, list[Panel]]] = {
    "overview": ("llmd-ray: serving overview", OVERVIEW),
    "routing": ("llmd-ray: routing", ROUTING),
    "pd_tiers": ("llmd-ray: P/D and KV tiers", PD_TIERS),
    "qos": ("llmd-ray: QoS classes", QOS),
    "autoscaling": ("llmd-ray: variant autoscaling", AUTOSCALING),
}
