from llmd_ray.engine.stats import StatsRecorder


def test_recorder_accumulates_counters_and_replaces_gauges():
    r = StatsRecorder(block_size=128, num_blocks=100)
    r.record_scheduler(num_waiting=3, num_running=2, kv_cache_usage=0.5, prefix_queries=256, prefix_hits=128, now=1.0)
    r.record_scheduler(num_waiting=0, num_running=1, kv_cache_usage=1.7, prefix_queries=256, prefix_hits=256, now=2.0)
    r.record_iteration(prompt_tokens=512, generation_tokens=4, preemptions=1, finish_reasons=["stop", "abort", "length"])
    s = r.snapshot()
    assert (s.num_waiting, s.num_running) == (0, 1)
    assert s.kv_cache_usage == 1.0  # clamped
    assert (s.prefix_cache_queries, s.prefix_cache_hits) == (512, 384)
    assert s.prefix_cache_hit_rate == 0.75
    assert (s.finished_requests, s.aborted_requests, s.preemptions) == (3, 1, 1)
    r.record_abort()
    assert r.snapshot().aborted_requests == 2
    assert (s.block_size, s.num_blocks, s.updated_at) == (128, 100, 2.0)
    d = s.as_dict()
    assert d["prefix_cache_hit_rate"] == 0.75 and d["num_blocks"] == 100


def test_snapshot_is_a_copy():
    r = StatsRecorder()
    snap = r.snapshot()
    r.record_scheduler(num_waiting=5, num_running=0, kv_cache_usage=0.1, prefix_queries=0, prefix_hits=0)
    assert snap.num_waiting == 0 and r.snapshot().num_waiting == 5
    assert r.snapshot().prefix_cache_hit_rate == 0.0


def test_connector_stats_are_summed_per_series_and_flattened_per_connector():
    from llmd_ray.engine.stats import connector_sums

    r = StatsRecorder()
    r.record_connector(None)  # a step without a transfer
    r.record_connector({"bytes_transferred": [100, 50], "num_failed_transfers": [], "transfer_duration": [0.5]})
    r.record_connector({"bytes_transferred": [25], "num_failed_transfers": [1], "note": "text", "mixed": [1, "x"]})
    s = r.snapshot()
    assert s.kv_connector == {"bytes_transferred": 175, "num_failed_transfers": 1, "transfer_duration": 0.5}
    r.record_connector({"bytes_transferred": [1]})
    assert s.kv_connector["bytes_transferred"] == 175  # the snapshot is a copy
    nested = {"ShmConnector": {"loaded_blocks": [3, 4]}, "TieredConnector": {"hits": 2, "on": True}}
    assert connector_sums(nested) == {"ShmConnector.loaded_blocks": 7, "TieredConnector.hits": 2,
                                      "TieredConnector.on": 1.0}
    assert r.snapshot().as_dict()["kv_connector"]["bytes_transferred"] == 176
