"""Engine metrics exported through Ray's metrics port, under vLLM's names.

Ray metric names may not contain ``:`` any more, so, exactly as vLLM's own
``RayPrometheusStatLogger`` does, ``vllm:num_requests_waiting`` is registered
as ``vllm_num_requests_waiting`` and Ray exports it as
``ray_vllm_num_requests_waiting``. ``ray.serve.metrics`` labels every series
with ``application``, ``deployment`` and ``replica``; we add ``model_name``.
"""

from __future__ import annotations

from typing import Any

from llmd_ray.observability.keep import keep
from llmd_ray.observability.zero import declare

# vLLM's name -> (kind, description, buckets)
_LATENCY_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0]
_ITL_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5]
METRICS: dict[str, tuple[str, str, list[float] | None]] = {
    "vllm:num_requests_waiting": ("gauge", "Requests waiting to be scheduled.", None),
    "vllm:num_requests_running": ("gauge", "Requests in the running batch.", None),
    "vllm:kv_cache_usage_perc": ("gauge", "Fraction of KV cache blocks in use (0-1).", None),
    "vllm:prefix_cache_queries": ("counter", "Prompt tokens looked up in the prefix cache.", None),
    "vllm:prefix_cache_hits": ("counter", "Prompt tokens found in the prefix cache.", None),
    "vllm:prompt_tokens": ("counter", "Prefill tokens processed.", None),
    "vllm:generation_tokens": ("counter", "Tokens generated.", None),
    "vllm:num_preemptions": ("counter", "Requests preempted.", None),
    "vllm:request_success": ("counter", "Finished requests, by finished_reason.", None),
    "vllm:time_to_first_token_seconds": ("histogram", "Time to first token.", _LATENCY_BUCKETS),
    "vllm:inter_token_latency_seconds": ("histogram", "Inter-token latency.", _ITL_BUCKETS),
    "vllm:e2e_request_latency_seconds": ("histogram", "End-to-end request latency.", _LATENCY_BUCKETS),
}


def ray_name(vllm_name: str) -> str:
    """The name registered with Ray (``:`` is not allowed)."""
    return vllm_name.replace(":", "_")


class EngineMetrics:
    """Ray Serve metrics fed from each engine step."""

    def __init__(self, model_name: str, max_loras: int | None = None):
        from ray.serve import metrics

        from llmd_ray.engine.stats import LoraSlots

        self._m: dict[str, Any] = {}
        # LoRA adapter loads (engines with enable_lora; 0 without): vLLM's slot LRU replayed over each step's
        # running adapters
        self._lora = LoraSlots(max_loras) if max_loras else None
        self._lora_loads = metrics.Counter(
            "llmd_lora_loads", description="LoRA adapters loaded into one of the engine's max_loras slots.",
            tag_keys=("model_name",))
        self._lora_loads.set_default_tags({"model_name": model_name})
        declare(self._lora_loads, [{}])  # exported at 0 from the start
        for name, (kind, desc, buckets) in METRICS.items():
            tags = ("model_name", "finished_reason") if name == "vllm:request_success" else ("model_name",)
            if kind == "gauge":
                m = metrics.Gauge(ray_name(name), description=desc, tag_keys=tags)
            elif kind == "counter":
                m = metrics.Counter(ray_name(name), description=desc, tag_keys=tags)
            else:
                m = metrics.Histogram(ray_name(name), description=desc, boundaries=buckets, tag_keys=tags)
            m.set_default_tags({"model_name": model_name})
            self._m[name] = m
            if kind == "counter" and name != "vllm:request_success":
                declare(m, [{}])  # exported at 0 from the start (a preemption may never happen)

    def observe(self, scheduler_stats: Any, iteration_stats: Any) -> None:
        """A StepObserver for :class:`llmd_ray.engine.Engine`."""
        m = self._m
        if self._lora is not None and scheduler_stats is not None:
            loads = self._lora.step(scheduler_stats.running_lora_adapters)
            if loads:
                self._lora_loads.inc(loads)
        if scheduler_stats is not None:
            keep(m["vllm:num_requests_waiting"], scheduler_stats.num_waiting_reqs)
            keep(m["vllm:num_requests_running"], scheduler_stats.num_running_reqs)
            keep(m["vllm:kv_cache_usage_perc"], scheduler_stats.kv_cache_usage)
            pc = scheduler_stats.prefix_cache_stats
            if pc is not None and pc.queries:
                m["vllm:prefix_cache_queries"].inc(pc.queries)
                if pc.hits:
                    m["vllm:prefix_cache_hits"].inc(pc.hits)
        if iteration_stats is None:
            return
        if iteration_stats.num_prompt_tokens:
            m["vllm:prompt_tokens"].inc(iteration_stats.num_prompt_tokens)
        if iteration_stats.num_generation_tokens:
            m["vllm:generation_tokens"].inc(iteration_stats.num_generation_tokens)
        if iteration_stats.num_preempted_reqs:
            m["vllm:num_preemptions"].inc(iteration_stats.num_preempted_reqs)
        for ttft in iteration_stats.time_to_first_tokens_iter:
            m["vllm:time_to_first_token_seconds"].observe(ttft)
        for itl in iteration_stats.inter_token_latencies_iter:
            m["vllm:inter_token_latency_seconds"].observe(itl)
        for fin in iteration_stats.finished_requests:
            m["vllm:e2e_request_latency_seconds"].observe(fin.e2e_latency)
            m["vllm:request_success"].inc(1, tags={"finished_reason": str(fin.finish_reason)})
