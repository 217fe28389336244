"""The host model: fitting overhead and contention from client records, the step slowdown, the CLI."""

import json

import pytest

from llmd_ray.autoscaling.perf import Profile
from llmd_ray.sim.__main__ import main as sim_main
from llmd_ray.sim.host import HostProfile, HostState, attach, contention_samples, fit_host, load_run_records
from llmd_ray.sim.calibrate import IsolatedFit
from llmd_ray.sim.replica import SimReplica, SimRequest
from llmd_ray.sim.validate import simulate_bench

PROF = Profile("p", "m", "X", "measured", itl_alpha_ms=20.0, itl_beta_ms=0.0, itl_gamma_ms=0.0,
               prefill_delta_ms=20.0, prefill_epsilon_ms=400.0, max_num_seqs=8, max_num_batched_tokens=2048,
               kv_cache_tokens=16384, block_size=16)
OVH, ITL, SLOPE, C_DEC, C_PRE = 80.0, 15.0, 0.4, 0.5, 0.2  # ms, ms, ms/token, per other request


def rec(sent, ttft, tpot, n_in, out=33, cached=0):
    return {"ok": True, "sent_s": sent, "ttft_ms": ttft, "tpot_ms": tpot, "e2e_ms": ttft + tpot * (out - 1),
            "input_tokens": n_in, "cached_tokens": cached, "output_tokens": out}


def synthetic_run():
    """Isolated requests of two lengths, then pairs sent together (each other's only company throughout)."""
    rows = [rec(10.0 * i, OVH + ITL + SLOPE * n, ITL, n) for i, n in enumerate([1000, 200, 1000, 200])]
    for k in range(5):  # identical pairs: each sees exactly 1 other request in flight for its whole life
        t = 100.0 + 10.0 * k
        ttft = OVH + (ITL + SLOPE * 1000) * (1 + C_PRE)
        rows += [rec(t, ttft, ITL * (1 + C_DEC), 1000), rec(t, ttft, ITL * (1 + C_DEC), 1000)]
    return rows


def test_fit_host_recovers_overhead_and_contention():
    host = fit_host({"a": synthetic_run()}, hardware="test")
    assert host.overhead_ms == pytest.approx(OVH, rel=1e-6)
    assert host.itl_ms == pytest.approx(ITL)
    assert host.prefill_ms_per_1k == pytest.approx(1000 * SLOPE, rel=1e-6)
    assert host.decode_contention == pytest.approx(C_DEC, rel=1e-6)
    assert host.prefill_contention == pytest.approx(C_PRE, rel=1e-6)
    assert host.isolated_requests == 4 and host.overlapped_requests == 10 and host.runs == ["a"]


def test_contention_is_zero_when_overlap_costs_nothing_and_never_negative():
    fit = IsolatedFit(4, OVH + ITL, 1000 * SLOPE, ITL, 1000.0)
    rows = [rec(0.0, OVH + ITL + SLOPE * 1000, ITL, 1000), rec(0.0, OVH + ITL + SLOPE * 1000, ITL, 1000)]
    dec, pre = contention_samples(rows, fit, OVH)
    assert dec == pytest.approx([0.0, 0.0]) and pre == pytest.approx([0.0, 0.0])
    fast = synthetic_run()[:4] + [rec(200.0, OVH, ITL / 2, 1000), rec(200.0, OVH, ITL / 2, 1000)]
    host = fit_host({"a": fast})
    assert host.decode_contention == 0.0 and host.prefill_contention == 0.0  # clipped at 0


def test_fit_host_needs_two_isolated_lengths():
    with pytest.raises(ValueError):
        fit_host({"a": [rec(0.0, 500.0, ITL, 1000)]})


def test_step_factor_counts_other_requests_on_the_host():
    a, b = (SimReplica(n, "v", "aggregated", PROF, 0.0, 0.0) for n in ("a", "b"))
    state = HostState(decode_contention=0.5, prefill_contention=0.2)
    state.replicas = [a, b]
    a.in_flight, b.in_flight = 2, 1
    assert state.step_factor(a, prefill=False) == pytest.approx(1 + 0.5 * 2)
    assert state.step_factor(a, prefill=True) == pytest.approx(1 + 0.2 * 2)
    a.in_flight, b.in_flight = 1, 0
    assert state.step_factor(a, prefill=False) == 1.0  # alone on the host


def test_replica_step_is_slowed_by_busy_neighbour():
    host = HostProfile(overhead_ms=0.0, decode_contention=1.0, prefill_contention=0.5, itl_ms=20.0,
                       prefill_intercept_ms=20.0, prefill_ms_per_1k=400.0, isolated_requests=0, overlapped_requests=0)
    a, b = (SimReplica(n, "v", "aggregated", PROF, 0.0, 0.0) for n in ("a", "b"))
    attach([a, b], host)
    a.enqueue(SimRequest(0, 0.0, 1000, 4, hashes=()))
    alone = a.start_step(0.0)[0]
    b.in_flight = 1  # one request on the other engine
    assert a.start_step(0.0)[0] == pytest.approx(alone * 1.5)


def test_simulate_bench_with_host_adds_overhead_and_slowdown():
    cfg = {"workload": {"type": "random", "num_requests": 20, "input_len": {"mean": 256}, "output_len": {"mean": 16}},
           "load": {"rate": 4.0}}
    plain = simulate_bench(cfg, PROF, replicas=2, ttft_overhead_s=0.1)  # a fixed delay, no contention
    idle = HostProfile(overhead_ms=100.0, decode_contention=0.0, prefill_contention=0.0, itl_ms=20.0,
                       prefill_intercept_ms=120.0, prefill_ms_per_1k=400.0, isolated_requests=0, overlapped_requests=0)
    busy = idle.model_copy(update={"decode_contention": 0.5, "prefill_contention": 0.5})
    with_idle, with_busy = simulate_bench(cfg, PROF, replicas=2, host=idle), simulate_bench(cfg, PROF, replicas=2, host=busy)
    assert with_idle["ttft_p50_s"] == pytest.approx(plain["ttft_p50_s"], rel=1e-9)
    assert with_busy["tpot_p50_s"] > with_idle["tpot_p50_s"]


def test_engine_profile_and_roundtrip(tmp_path):
    host = fit_host({"a": synthetic_run()})
    p = host.engine_profile(PROF)
    assert p.itl_alpha_ms == pytest.approx(ITL) and p.itl_beta_ms == 0.0 and p.prefill_epsilon_ms == pytest.approx(400.0)
    host.save(tmp_path / "h.json")
    assert HostProfile.load(tmp_path / "h.json") == host


def test_calibrate_cli_writes_a_host_profile(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "requests.jsonl").write_text("\n".join(json.dumps(r) for r in synthetic_run()) + "\n")
    assert load_run_records(run)[0]["input_tokens"] == 1000
    out = tmp_path / "host.json"
    assert sim_main(["calibrate", "--runs", str(run), "--out", str(out), "--hardware", "test"]) == 0
    host = HostProfile.load(out)
    assert host.decode_contention == pytest.approx(C_DEC, rel=1e-6) and host.hardware == "test"
