"""Measurement discipline of compares: interleaving, median ratios, host load records, validity verdicts."""

import asyncio
import os
import json
import threading

import pytest

from llmd_ray.bench.cli import main
from llmd_ray.bench.compare import interleave, print_compare, ratio_stats
from llmd_ray.bench.fake_server import FakeOptions, FakeServer
from llmd_ray.bench.hostload import HostProbe, banner, check_validity, phase_load
from llmd_ray.bench.schema import CompareResult, HostLoad, PhaseLoad, ValidityThresholds
from llmd_ray.bench.testing import cached_test_tokenizer


def test_interleave_order():
    assert interleave(2, 3) == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]  # A B A B A B
    assert interleave(3, 2) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]  # A B C A B C
    assert interleave(2, 0) == []
    assert interleave(2, 3, rotate=True) == [(0, 0), (0, 1), (1, 1), (1, 0), (2, 0), (2, 1)]  # A B B A A B
    assert interleave(3, 3, rotate=True) == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (1, 0),
                                             (2, 2), (2, 0), (2, 1)]  # A B C, B C A, C A B


def test_median_ratio_with_min_max():
    r = ratio_stats([1.0, 2.0, 10.0], [1.0, 1.0, 1.0])
    assert r.median == 2.0 and r.min == 1.0 and r.max == 10.0 and r.rounds == 3
    assert r.ratio == pytest.approx(13 / 3)  # the mean, kept beside the median
    even = ratio_stats([1.0, 3.0, None, 8.0, 5.0], [1.0, 1.0, 1.0, 2.0, 0.0])  # None and /0 rounds are left out
    assert even.median == 3.0 and even.rounds == 3 and (even.min, even.max) == (1.0, 4.0)
    assert ratio_stats([1.0, 3.0], [1.0, 1.0]).median == 2.0  # an even count: the mean of the middle two
    assert ratio_stats([None], [1.0]).median is None and ratio_stats([None], [1.0]).rounds == 0


def _h(before, after, cores=2, lag_p99=1.0):
    return HostLoad(cpu_count=cores, loadavg_1m_before=before, loadavg_1m_after=after, wall_s=10.0,
                    harness_cpu_cores=0.1, send_lag_p50_ms=0.5, send_lag_p99_ms=lag_p99, send_lag_max_ms=lag_p99)


def _phases(*hosts):
    return [PhaseLoad(phase=f"{'AB'[i % 2]}_phase{i // 2}", host=h) for i, h in enumerate(hosts)]


TH = ValidityThresholds()


@pytest.mark.parametrize("phases, expect", [
    (_phases(_h(0.5, 0.7), _h(0.6, 0.6), _h(0.5, 0.8), _h(0.7, 0.6)), []),
    (_phases(_h(0.05, 0.1), _h(0.2, 0.3)), []),  # 4x apart, but only +0.18: an idle machine's noise
    (_phases(_h(1.9, 2.5), _h(1.9, 2.0)), ["A_phase0: load average 2.20 above 2"]),
    (_phases(_h(0.5, 0.5), _h(1.2, 1.4)), ["phases ran under different load: B_phase0 1.30 vs A_phase0 0.50"]),
    (_phases(_h(1.0, 1.2), _h(1.3, 1.5)), []),  # +0.3 and 1.27x: within both limits
    (_phases(_h(0.0, 0.0), _h(0.6, 0.6)), ["phases ran under different load: B_phase0 0.60 vs A_phase0 0.00 (inf x"]),
    (_phases(_h(0.5, 0.5), _h(0.5, 0.5, lag_p99=80.0)), ["B_phase0: harness send lag p99 80 ms above 50 ms"]),
    (_phases(_h(3.0, 3.0, cores=4), _h(0.5, 0.5, cores=4)),
     ["phases ran under different load: A_phase0 3.00 vs B_phase0 0.50"]),  # 3 < 4 cores, but 6x apart
    (_phases(None, _h(0.5, 0.5), _h(None, None)), []),  # failed phases and missing figures are skipped
])
def test_validity_rules(phases, expect):
    reasons = check_validity(phases, TH)
    assert len(reasons) == len(expect), reasons
    for got, want in zip(reasons, expect):
        assert got.startswith(want), (got, want)


def test_thresholds_are_options():
    phases = _phases(_h(1.9, 2.5), _h(1.9, 2.0, lag_p99=60.0))
    assert len(check_validity(phases, TH)) == 2
    assert check_validity(phases, ValidityThresholds(max_load_per_core=1.5, max_send_lag_p99_ms=100.0)) == []
    assert phase_load(_h(1.0, 2.0)) == 1.5 and phase_load(_h(None, 2.0)) == 2.0 and phase_load(_h(None, None)) is None


def test_probe_records_load_and_send_lag():
    h = HostProbe.start().finish([float(x) for x in range(101)])
    assert h.cpu_count >= 1 and h.wall_s > 0 and h.harness_cpu_cores >= 0
    assert (h.send_lag_p50_ms, h.send_lag_p99_ms, h.send_lag_max_ms) == (50.0, 99.0, 100.0)
    assert h.host_busy_fraction is None or 0.0 <= h.host_busy_fraction <= 1.0
    assert HostProbe.start().finish([]).send_lag_p99_ms is None


def test_single_run_warns_when_the_host_was_oversubscribed():
    from llmd_ray.bench.benchmark import _warnings
    from llmd_ray.bench.config import BenchConfig
    from llmd_ray.bench.metrics import summarize
    from llmd_ray.bench.schema import BenchResult

    def warned(host):
        res = BenchResult(name="x", run_id="r", started_at="t", base_url="u", model="m", config={}, environment={},
                          summary=summarize([], duration_s=1.0), host_load=host)
        return [w for w in _warnings(BenchConfig(), res, []) if "host load average" in w]

    assert warned(_h(2.5, 3.5)) and "3.00 above its 2 cores" in warned(_h(2.5, 3.5))[0]
    assert warned(_h(1.5, 1.9)) == [] and warned(None) == []
    # with the benchmark's own CPU measured, the load is the system under test's: not called invalid
    own = _h(2.5, 3.5).model_copy(update={"benchmark_cpu_cores": 1.9, "foreign_busy_cores": 0.03})
    [w] = warned(own)
    assert "CPU-bound (1.90 cores in the benchmark's processes, 0.03 outside them" in w and "marked invalid" not in w


def test_invalid_compare_prints_a_banner(capsys):
    cmp = CompareResult(name="n", label_a="x", label_b="y", phases=1, metrics={"ttft_ms.p50": ratio_stats([2.0], [1.0])},
                        results_a=[], results_b=[], valid=False, invalid_reasons=["A_phase0: load average 3.00 above 2"],
                        phase_loads=_phases(_h(3.0, 3.0), None))
    print_compare(cmp)
    out = capsys.readouterr().out
    assert out.startswith("!!!") and "INVALID COMPARISON" in out and "load average 3.00 above 2" in out
    assert "[INVALID]" in out and "load A_phase0" in out and "3.00 -> 3.00 on 2 cores" in out
    assert banner(True, []) == []


@pytest.fixture(scope="module")
def tok():
    return cached_test_tokenizer("metaspace")


@pytest.fixture(scope="module")
def fake_url(tok):
    """A fake SSE server on a loop in a thread of this process (no interpreter start-up)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    srv = asyncio.run_coroutine_threadsafe(FakeServer(FakeOptions(tokenizer=tok, ttft_ms=5, itl_ms=1)).start(),
                                           loop).result(60)
    try:
        yield srv.url
    finally:
        asyncio.run_coroutine_threadsafe(srv.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def _run(tok, url, out, *extra):
    return main(["run", "--input-len", "16", "--output-len", "2", "--num-prompts", "3", "--rate", "inf",
                 "--base-url", url, "--vs", url, "--unique-prompts", "--no-plots", "--tokenizer", tok,
                 "--out", str(out), "--no-progress", "--no-measure-overhead", *extra])


def test_compare_json_carries_rounds_loads_and_verdict(tok, fake_url, tmp_path, capsys):
    assert _run(tok, fake_url, tmp_path, "--max-load-per-core", "1000", "--load-ratio", "1000") == 0
    cmp = json.loads((tmp_path / "compare.json").read_text())
    assert cmp["phases"] == 3  # the default
    names = [p["phase"] for p in cmp["phase_loads"]]
    assert names == ["A_phase0", "B_phase0", "A_phase1", "B_phase1", "A_phase2", "B_phase2"]
    starts = [json.loads((tmp_path / n / "result.json").read_text())["started_at"] for n in names]
    assert starts == sorted(starts)  # they really ran interleaved, in that order
    host = json.loads((tmp_path / "A_phase1/result.json").read_text())["host_load"]
    assert host["cpu_count"] >= 1 and host["send_lag_p99_ms"] >= 0 and "loadavg_1m_before" in host
    assert cmp["phase_loads"][2]["host"] == host
    m = cmp["metrics"]["ttft_ms.p50"]
    assert m["rounds"] == 3 and m["min"] <= m["median"] <= m["max"]
    assert cmp["thresholds"]["max_load_per_core"] == 1000 and cmp["thresholds"]["max_send_lag_p99_ms"] == 50
    # valid unless this machine's harness really lagged > 50 ms; the verdict and its reasons must agree
    assert cmp["valid"] == (not cmp["invalid_reasons"])
    assert ("INVALID COMPARISON" in capsys.readouterr().out) == (not cmp["valid"])


def test_compare_breaking_a_threshold_is_invalid(tok, fake_url, tmp_path, capsys):
    assert _run(tok, fake_url, tmp_path, "--phases", "2", "--rotate", "--max-send-lag-ms", "-1") == 0  # any lag
    cmp = json.loads((tmp_path / "compare.json").read_text())
    assert [p["phase"] for p in cmp["phase_loads"]] == ["A_phase0", "B_phase0", "B_phase1", "A_phase1"]
    assert cmp["valid"] is False and cmp["rotate"] is True
    assert any("harness send lag p99" in r for r in cmp["invalid_reasons"])
    out = capsys.readouterr().out
    assert "INVALID COMPARISON" in out and "[INVALID]" in out


def _f(foreign, before=4.0, after=4.5, lag_p99=1.0):
    """A phase on a busy 2-core host (the systems under test alone push the load average above 2)."""
    return HostLoad(cpu_count=2, loadavg_1m_before=before, loadavg_1m_after=after, wall_s=10.0, harness_cpu_cores=0.1,
                    benchmark_cpu_cores=1.8, foreign_busy_cores=foreign, send_lag_p50_ms=0.5, send_lag_p99_ms=lag_p99,
                    send_lag_max_ms=lag_p99)


@pytest.mark.parametrize("phases, expect", [
    (_phases(_f(0.05), _f(0.1, before=2.5, after=2.6)), []),  # load averages above 2 and apart: the systems' own
    (_phases(_f(0.05), _f(0.8)), ["B_phase0: processes outside the benchmark kept 0.80 cores busy"]),
    (_phases(_f(0.0), _f(0.0, lag_p99=90.0)), ["B_phase0: harness send lag p99 90 ms above 50 ms"]),
    (_phases(_f(0.0), _h(3.0, 3.0)), ["B_phase0: load average 3.00 above 2"]),  # no /proc figure: the fallback
])
def test_foreign_load_rules(phases, expect):
    reasons = check_validity(phases, TH)
    assert len(reasons) == len(expect), reasons
    for got, want in zip(reasons, expect):
        assert got.startswith(want), (got, want)


def test_tree_cpu_counts_children_but_not_strangers(tmp_path):
    import subprocess
    import sys

    # The scenario runs in a fresh process of its own: this pytest process may still have children burning CPU
    # (a Ray cluster an earlier test started), which its tree rightly counts and which made this test flaky.
    done = tmp_path / "done"
    burn = tmp_path / "burn.py"
    burn.write_text(f"import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6:\n    pass\n"
                    f"open({str(done)!r}, 'w').close()\n")
    scenario = tmp_path / "scenario.py"
    scenario.write_text(f"""
import json, os, subprocess, sys, time
from llmd_ray.bench.proctree import tree_cpu_seconds
me = os.getpid()
t0 = tree_cpu_seconds(me)
subprocess.run([sys.executable, {str(burn)!r}], check=True)  # a child, reaped: counted through cutime
t1 = tree_cpu_seconds(me)
os.unlink({str(done)!r})
# a stranger: started in the background by a shell that exits, so it is re-parented away from this process
subprocess.run(["sh", "-c", sys.executable + " " + {str(burn)!r} + " >/dev/null 2>&1 &"], check=True)
t2 = tree_cpu_seconds(me)
deadline = time.monotonic() + 20
while not os.path.exists({str(done)!r}) and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps({{"child": t1 - t0, "stranger": tree_cpu_seconds(me) - t2, "finished": os.path.exists({str(done)!r})}}))
""")
    env = {k: v for k, v in os.environ.items() if k != "LLMD_BENCH_ROOT_PID"}
    out = subprocess.run([sys.executable, str(scenario)], check=True, capture_output=True, text=True, env=env,
                         timeout=60)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["finished"], "the stranger never finished"
    assert got["child"] >= 0.5  # the reaped child's 0.6 s are ours
    assert got["stranger"] < 0.3  # its 0.6 s are not ours


def test_client_priority_is_raised_and_restored():
    from llmd_ray.bench.proctree import client_priority

    before = os.getpriority(os.PRIO_PROCESS, 0)
    with client_priority(5) as p:
        if p.raised:
            assert os.getpriority(os.PRIO_PROCESS, 0) == before - 5
    assert os.getpriority(os.PRIO_PROCESS, 0) == before


def test_client_priority_raises_and_restores_the_autogroup(tmp_path):
    # where the kernel groups by session, a thread's niceness counts only inside its group: the group is raised too
    from llmd_ray.bench.proctree import autogroup_nice, client_priority

    group = tmp_path / "autogroup"
    group.write_text("/autogroup-383 nice 0\n")
    assert autogroup_nice(group) == 0
    writes = []
    with client_priority(10, autogroup=group) as p:
        assert p.autogroup_raised and group.read_text() == "-10"
        writes.append(group.read_text())
    assert group.read_text() == "0" and writes == ["-10"]
    assert autogroup_nice(tmp_path / "absent") is None  # no autogroups: nothing to raise
    with client_priority(10, autogroup=tmp_path / "absent") as p:
        assert not p.autogroup_raised
