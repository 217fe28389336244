"""N-way compare (`run --system ...`) against fake SSE servers: order, salting, ratios, failures, outputs."""

import asyncio
import json
import sys
import threading

import pytest

from llmd_ray.bench.cli import main
from llmd_ray.bench.compare import parse_system, side_for, systems_vs_baseline
from llmd_ray.bench.fake_server import FakeOptions, FakeServer
from llmd_ray.bench.metrics import summarize
from llmd_ray.bench.overhead import free_port
from llmd_ray.bench.report import print_systems
from llmd_ray.bench.schema import BenchResult, RequestRecord, SystemsCompareResult
from llmd_ray.bench.testing import cached_test_tokenizer

FAKE = f"{sys.executable} -m llmd_ray.bench.fake_server"


@pytest.fixture(scope="module")
def tok():
    return cached_test_tokenizer("metaspace")


@pytest.fixture(scope="module")
def servers(tok):
    """Three running fake servers with TTFT 20, 150 and 400 ms, each with its own simulated prefix cache.

    In this process, on a loop in a thread of their own: no interpreter start-ups (minutes on a busy machine)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    srvs = []
    try:
        for t in (20, 150, 400):
            srv = FakeServer(FakeOptions(tokenizer=tok, ttft_ms=t, itl_ms=1))
            srvs.append(asyncio.run_coroutine_threadsafe(srv.start(), loop).result(60))
        yield srvs
    finally:
        for s in srvs:
            asyncio.run_coroutine_threadsafe(s.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def common(tok, out):
    return ["--tokenizer", tok, "--out", str(out), "--no-progress", "--no-measure-overhead"]


def test_parse_system_kinds_and_errors():
    assert parse_system("a=url:http://h:1/").model_dump() == {"label": "a", "kind": "url", "target": "http://h:1/"}
    assert parse_system("llmd-approx=serve:bench/x.yaml").kind == "serve"
    spec = parse_system("vr=cmd:bash peers/vllm_router.sh --x 'a b'")
    side = side_for(spec, "http://127.0.0.1:8000/")
    assert side.command == ["bash", "peers/vllm_router.sh", "--x", "a b"] and side.base_url == "http://127.0.0.1:8000"
    assert side_for(parse_system("a=url:http://h:1/"), "http://x:2").base_url == "http://h:1"
    for bad, why in (("nolabel", "LABEL=url"), ("a=ftp:x", "kind 'ftp'"), ("a b=url:http://h", "label 'a b'"),
                     ("a=url:h:1", "needs http"), ("a=cmd:", "LABEL=url"), ("a=cmd:echo 'x", "No closing quotation")):
        with pytest.raises(ValueError, match=why):
            parse_system(bad)


def _res(ttft):
    rec = RequestRecord(id=0, job=0, api="completions", scheduled_s=0, sent_s=0, ok=True, status_code=200,
                        ttft_ms=ttft, e2e_ms=ttft + 9, tpot_ms=1, itl_ms=[1] * 9, input_tokens=5, output_tokens=10,
                        max_tokens=10, chunks=10, usage_reported=True)
    return BenchResult(name="x", run_id="r", started_at="t", base_url="u", model="m", config={}, environment={},
                       summary=summarize([rec], duration_s=1.0))


def test_ratios_vs_baseline_skip_failed_phases():
    r = systems_vs_baseline({"base": [_res(100), _res(200), None], "x": [_res(50), None, _res(10)],
                             "y": [_res(300), _res(200), _res(1)]}, "base")
    assert r["base"]["ttft_ms.p50"].ratio == 1.0
    assert r["x"]["ttft_ms.p50"].ratio == 0.5 and r["x"]["ttft_ms.p50"].a == [50, None, 10]  # only pair 0 counts
    y = r["y"]["ttft_ms.p50"]
    assert y.ratio == pytest.approx(2.0) and y.min == 1.0 and y.max == 3.0


def test_three_running_systems_round_robin(tok, servers, tmp_path, capsys):
    fast, mid, slow = (s.url for s in servers)
    rc = main(["run", "--input-len", "300", "--output-len", "3", "--num-prompts", "4", "--rate", "inf",
               "--max-concurrency", "1", "--system", f"fast=url:{fast}", "--system", f"mid=url:{mid}",
               "--system", f"slow=url:{slow}", "--baseline", "mid", "--phases", "2", *common(tok, tmp_path)])
    assert rc == 0
    cmp = SystemsCompareResult.model_validate_json((tmp_path / "compare_systems.json").read_text())
    assert cmp.complete and cmp.baseline == "mid"
    assert cmp.order == ["fast_phase0", "mid_phase0", "slow_phase0", "fast_phase1", "mid_phase1", "slow_phase1"]
    results = {n: json.loads((tmp_path / n / "result.json").read_text()) for n in cmp.order}
    starts = [results[n]["started_at"] for n in cmp.order]
    assert starts == sorted(starts)  # they really ran in that order
    assert [results[n]["config"]["prompt_salt"] for n in cmp.order] == [0, 0, 0, 1, 1, 1]  # round i: salt i
    # each server sees each prompt once: round 1's fresh text cannot hit round 0's cache
    assert all(results[n]["summary"]["cache_hit_rate"] == 0 for n in cmp.order)
    by = {s.label: s for s in cmp.systems}
    assert by["mid"].vs_baseline["ttft_ms.p50"].ratio == 1.0
    assert by["fast"].vs_baseline["ttft_ms.p50"].ratio < 0.7 < 1.3 < by["slow"].vs_baseline["ttft_ms.p50"].ratio
    assert len(by["slow"].vs_baseline["ttft_ms.p50"].a) == 2 and by["slow"].startup_s == [None, None]
    assert by["fast"].results == ["fast_phase0/result.json", "fast_phase1/result.json"]
    for name in ("compare_systems.png", "compare_systems_ttft_cdf.png"):
        assert (tmp_path / name).stat().st_size > 1000, name
    out = capsys.readouterr().out
    assert "ratio vs mid" in out and "fast" in out and "slow" in out


def test_unique_prompts_salts_every_phase(tok, servers, tmp_path):
    url = servers[0].url
    assert main(["run", "--input-len", "300", "--output-len", "2", "--num-prompts", "3", "--rate", "inf",
                 "--system", f"a=url:{url}", "--system", f"b=url:{url}", "--phases", "2", "--unique-prompts",
                 "--no-plots", *common(tok, tmp_path)]) == 0
    cmp = json.loads((tmp_path / "compare_systems.json").read_text())
    salts = [json.loads((tmp_path / n / "result.json").read_text())["config"]["prompt_salt"] for n in cmp["order"]]
    assert salts == [0, 1, 2, 3] and cmp["baseline"] == "a"  # baseline defaults to the first system


def test_started_systems_and_a_failing_one(tok, tmp_path, capsys):
    port = free_port()
    rc = main(["run", "--input-len", "8", "--output-len", "2", "--num-prompts", "3", "--rate", "inf",
               "--base-url", f"http://127.0.0.1:{port}", "--startup-timeout", "300", "--no-plots",
               "--system", f"slow=cmd:{FAKE} --port {port} --ttft-ms 250",
               "--system", f"broken=cmd:{sys.executable} -c 'import sys; print(\"no model\"); sys.exit(3)'",
               "--system", f"fast=cmd:{FAKE} --port {port} --ttft-ms 5", "--baseline", "slow", "--phases", "1",
               *common(tok, tmp_path)])
    assert rc == 1  # a phase failed: the run says so, but everything else was measured and written
    cmp = SystemsCompareResult.model_validate_json((tmp_path / "compare_systems.json").read_text())
    by = {s.label: s for s in cmp.systems}
    assert not cmp.complete and by["broken"].results == [None]
    assert "exited with code 3" in by["broken"].errors[0] and "no model" in by["broken"].errors[0]
    assert by["broken"].vs_baseline["ttft_ms.p50"].ratio is None
    assert by["fast"].errors == [None] and 0 < by["fast"].startup_s[0] < 300
    assert by["fast"].vs_baseline["ttft_ms.p50"].ratio < 0.7  # 5 vs 250 ms, plus a busy machine's noise
    assert (tmp_path / "fast_phase0.server.log").exists() and (tmp_path / "slow_phase0/result.json").exists()
    assert "error: broken phase 0" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--system", "a=url:http://127.0.0.1:9", "--system", "a=url:http://127.0.0.1:10"], "distinct labels"),
    (["--system", "a=url:http://127.0.0.1:9"], "at least two"),
    (["--system", "a=url:http://127.0.0.1:9", "--system", "b=url:http://127.0.0.1:10", "--baseline", "c"],
     "--baseline 'c' is not"),
    (["--system", "a=url:http://127.0.0.1:9", "--system", "b=url:http://127.0.0.1:10", "--vs", "http://x:1"],
     "cannot be combined with --vs"),
])
def test_bad_system_flags_are_clear_errors(tmp_path, capsys, extra, message):
    assert main(["run", "--out", str(tmp_path), "--no-measure-overhead", *extra]) == 2
    assert message in capsys.readouterr().err


def test_bad_system_spec_is_an_argparse_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["run", "--out", str(tmp_path), "--system", "a=gopher:x"])
    assert "argument --system" in capsys.readouterr().err


def test_print_systems_handles_missing_figures(capsys):
    cmp = SystemsCompareResult(name="n", baseline="a", phases=1, systems=[
        {"label": "a", "kind": "url", "target": "http://h:1", "base_url": "http://h:1", "errors": [None]},
        {"label": "b", "kind": "cmd", "target": "x", "base_url": "http://h:1", "errors": ["RuntimeError: boom"]}])
    print_systems(cmp)
    out = capsys.readouterr().out
    assert "error: b phase 0: RuntimeError: boom" in out and "ttft_ms.p50" in out
