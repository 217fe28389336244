"""The split deciders: prefix threshold and TTFT cost model."""

import pytest
from pydantic import ValidationError

from llmd_ray.pd.decider import DeciderConfig, Estimates, SplitInputs, decide, predict_ttft

BS = 128
BPT = 3072  # KV bytes per token of the tiny model


def inputs(n, cached=0, **kw):
    return SplitInputs(n, BS, cached, kv_bytes_per_token=BPT, **kw)


def test_prefix_decider_threshold():
    cfg = DeciderConfig(policy="prefix", min_uncached_tokens=512)
    d = decide(cfg, inputs(2000))
    assert d.split and d.reason == "uncached_above_threshold" and d.skip_blocks == 0
    d = decide(cfg, inputs(2000, cached=1664))  # 336 uncached
    assert not d.split and d.reason == "uncached_below_threshold"
    d = decide(cfg, inputs(2000, cached=1024))  # 976 uncached: split, skipping the 8 cached blocks
    assert d.split and d.skip_blocks == 8
    assert decide(cfg, inputs(400)).reason == "uncached_below_threshold"


def test_nothing_to_transfer_stays_local_under_every_policy():
    for policy in ("prefix", "cost", "always"):
        d = decide(DeciderConfig(policy=policy, min_uncached_tokens=1), inputs(128))
        assert not d.split and d.reason == "nothing_to_transfer"
    d = decide(DeciderConfig(policy="always"), inputs(2000, cached=1920))  # every transferable block cached
    assert not d.split and d.reason == "nothing_to_transfer"


def test_always_and_never():
    assert decide(DeciderConfig(policy="always"), inputs(300)).split
    assert decide(DeciderConfig(policy="never"), inputs(4000)).reason == "policy_never"


def test_cost_model_prefers_local_when_decode_is_idle_and_prefill_is_busy():
    cfg = DeciderConfig(policy="cost")
    est = Estimates.from_config(cfg)
    d = decide(cfg, inputs(2000, prefill_queue_tokens=8000), est)
    assert not d.split and d.reason == "local_faster" and d.local_ttft_s < d.remote_ttft_s


def test_cost_model_prefers_remote_when_decode_is_backed_up():
    cfg = DeciderConfig(policy="cost")
    d = decide(cfg, inputs(2000, decode_queue_tokens=6000), Estimates.from_config(cfg))
    assert d.split and d.reason == "remote_faster"


def test_cost_model_with_idle_fleet_equal_throughput():
    # Both idle, same throughput: remote saves nothing on compute and pays transfer + overhead + the tail.
    cfg = DeciderConfig(policy="cost")
    local, remote = predict_ttft(inputs(2000), Estimates.from_config(cfg))
    assert remote > local
    # A prefill replica 4x faster (e.g. a bigger one) wins at 2k tokens.
    est = Estimates(prefill_tps=8000, decode_tps=2000, bandwidth=1e9, overhead_s=0.01)
    assert decide(cfg, inputs(2000), est).split


def test_predicted_terms():
    est = Estimates(prefill_tps=1000, decode_tps=1000, bandwidth=1e6, overhead_s=0.5)
    local, remote = predict_ttft(inputs(257, decode_queue_tokens=100, prefill_queue_tokens=43), est)
    assert local == pytest.approx((100 + 257) / 1000)
    moved = 2 * BS
    handoff = (43 + 257) / 1000 + 0.5 + moved * BPT / 1e6
    assert remote == pytest.approx(max(handoff, 100 / 1000) + 1 / 1000)
    # A long decode queue dominates: the handoff overlaps it.
    local, remote = predict_ttft(inputs(257, decode_queue_tokens=5000), est)
    assert remote == pytest.approx(5.0 + 1 / 1000)


def test_estimates_track_measurements():
    est = Estimates(prefill_tps=1000, decode_tps=1000, bandwidth=1e9, overhead_s=0.01, alpha=0.5)
    est.observe_remote_prefill(3000, 1.0)
    assert est.prefill_tps == 2000
    est.observe_local_prefill(500, 1.0)
    assert est.decode_tps == 750
    est.observe_transfer(int(3e9), 1.0, overhead_s=0.03)
    assert est.bandwidth == 2e9 and est.overhead_s == pytest.approx(0.02)
    est.observe_transfer(0, 0.0)  # nothing measured: unchanged
    assert est.bandwidth == 2e9


def test_config_is_validated():
    with pytest.raises(ValidationError):
        DeciderConfig(policy="sometimes")
    with pytest.raises(ValidationError):
        DeciderConfig(min_uncached_tokens=0)
    with pytest.raises(ValidationError):
        DeciderConfig(prefill_tokens_per_s=-1)
