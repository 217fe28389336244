"""Engine metrics are exported through Ray's metrics port under vLLM's names,
labelled by deployment and replica."""

from __future__ import annotations

import re
import time

import httpx

from tests.integration.conftest import METRICS_PORT


def test_vllm_metrics_on_ray_metrics_port(openai_client):
    for _ in range(3):
        openai_client.completions.create(model="tiny-llama", prompt="metrics please", max_tokens=4,
                                         extra_body={"ignore_eos": True})
    wanted = ["ray_vllm_num_requests_running", "ray_vllm_num_requests_waiting", "ray_vllm_kv_cache_usage_perc",
              "ray_vllm_prefix_cache_queries", "ray_vllm_time_to_first_token_seconds_bucket",
              "ray_vllm_inter_token_latency_seconds_bucket", "ray_vllm_e2e_request_latency_seconds_bucket"]
    deadline = time.monotonic() + 60
    text = ""
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).text
        if all(w in text for w in wanted):
            break
        time.sleep(2)
    missing = [w for w in wanted if w not in text]
    assert not missing, missing
    # The shared cluster may hold other tests' apps (e.g. LLMServer-<variant> deployments): find this app's.
    series = [dict(re.findall(r'(\w+)="([^"]*)"', ln)) for ln in text.splitlines()
              if ln.startswith("ray_vllm_num_requests_running{")]
    ours = [labels for labels in series if labels.get("deployment") == "LLMServer"]
    assert ours, series
    assert all(labels["replica"] and labels["model_name"] == "tiny-llama" for labels in ours), ours
