"""Prometheus scraping: vLLM names, Ray's prefixed re-exports, per-replica series."""


from llmd_ray.bench.fake_server import FakeServer
from llmd_ray.bench.server_metrics import MetricsPoller, match, parse_prometheus, wanted

RAY_TEXT = """# HELP ray_vllm:num_requests_waiting waiting
# TYPE ray_vllm:num_requests_waiting gauge
ray_vllm:num_requests_waiting{ReplicaId="r1",WorkerId="w1",model_name="tiny-llama"} 2.0
ray_vllm:num_requests_waiting{ReplicaId="r2",WorkerId="w2",model_name="tiny-llama"} 3.0
ray_vllm_num_requests_running{ReplicaId="r1",model_name="tiny-llama"} 4
ray_vllm_num_requests_running{ReplicaId="r2",model_name="tiny-llama"} 1
ray_vllm:kv_cache_usage_perc{ReplicaId="r1"} 0.5
ray_vllm:kv_cache_usage_perc{ReplicaId="r2"} 0.25
ray_vllm:prefix_cache_queries_total{ReplicaId="r1"} 1000
ray_vllm:prefix_cache_hits_total{ReplicaId="r1"} 400
ray_vllm:prefix_cache_hits_created{ReplicaId="r1"} 1.7e9
vllm:num_requests_waiting_by_reason{reason="capacity"} 9
other_metric{a="b"} 1e3
"""


def test_parse_and_match():
    samples = parse_prometheus(RAY_TEXT)
    assert ("other_metric", {"a": "b"}, 1000.0) in samples
    assert match("ray_vllm:num_requests_waiting", ("vllm:num_requests_waiting",))
    assert match("ray_vllm_num_requests_waiting", ("vllm:num_requests_waiting",))
    assert not match("vllm:num_requests_waiting_by_reason", ("vllm:num_requests_waiting",))


def test_timeline_aggregates_and_keeps_replicas():
    p = MetricsPoller("http://unused", 1.0)
    p.add(0.0, parse_prometheus(RAY_TEXT))
    p.add(1.0, parse_prometheus(RAY_TEXT.replace("} 400", "} 700").replace("} 1000", "} 1500")))
    tl = p.timeline
    assert tl.waiting == [5.0, 5.0] and tl.running == [5.0, 5.0] and tl.kv_usage == [0.375, 0.375]
    assert set(tl.per_replica["waiting"]) == {"ReplicaId=r1,WorkerId=w1,model_name=tiny-llama",
                                              "ReplicaId=r2,WorkerId=w2,model_name=tiny-llama"}
    assert p._counters[-1] == {"prefix_hits": 700.0, "prefix_queries": 1500.0}


def test_missing_metric_gives_none():
    p = MetricsPoller("http://unused", 1.0)
    p.add(0.0, parse_prometheus("foo 1\n"))
    assert p.timeline.waiting == [None] and p.timeline.kv_usage == [None]


async def test_poll_live_endpoint():
    async with FakeServer() as srv:
        p = MetricsPoller(srv.url + "/metrics", interval_s=0.05)
        p.start()
        import asyncio

        await asyncio.sleep(0.3)
        tl = await p.stop()
    assert len(tl.t_s) >= 3 and tl.errors == 0 and tl.running[0] == 0.0
    assert tl.t_s == sorted(tl.t_s)


async def test_unreachable_endpoint_counts_errors():
    p = MetricsPoller("http://127.0.0.1:9/metrics", 1.0)
    await p.poll_once()
    tl = await p.stop()
    assert tl.errors == 2 and tl.t_s == [] and tl.prefix_cache_hit_rate is None


def test_wanted_filter_keeps_the_timeline_metrics_and_skips_the_rest():
    noise = "".join(f'ray_serve_deployment_processing_latency_ms_bucket{{le="{i}",replica="r{i}"}} 3\n'
                    for i in range(20000))
    everything = parse_prometheus(RAY_TEXT)
    kept = parse_prometheus(noise + RAY_TEXT, wanted)
    assert kept and all(s in everything for s in kept)
    p, q = MetricsPoller("http://x"), MetricsPoller("http://x")
    p.add(0.0, everything)
    q.add(0.0, kept)
    assert p.timeline.per_replica == q.timeline.per_replica and p._counters == q._counters
    assert not wanted("ray_serve_deployment_processing_latency_ms_bucket")
    assert wanted("ray_vllm:num_requests_waiting") and wanted("vllm:prefix_cache_hits")
