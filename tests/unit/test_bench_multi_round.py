"""bench/routing/multi_round.py's pure parts: the session rate fixed from pow-2's saturation, and the verdicts."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("multi_round", ROOT / "bench" / "routing" / "multi_round.py")
mr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mr)


def test_session_rate_is_load_times_saturated_requests_over_turns():
    # 5 turns per session: 1.2 x 7.5 req/s = 9 req/s = 1.8 sessions/s
    assert abs(mr.session_rate(mr.WORKLOADS["multi_round_qa"], 7.5, 1.2) - 1.8) < 1e-9


def test_summarize_skips_missing_rounds_and_keeps_them_listed():
    assert mr.summarize([3.0, None, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "rounds": [3.0, 1.0, 2.0]}
    assert mr.summarize([None]) is None


def _phase(out: Path, label: str, i: int, ttft: float, goodput: float) -> str:
    d = out / "load_1.2" / "hotspot" / f"{label}_phase{i}"
    d.mkdir(parents=True)
    summary = {"ttft_ms": {"p50": ttft, "p90": ttft, "p99": ttft}, "goodput": goodput, "cache_hit_rate": 0.5,
               "tpot_ms": {"p50": 20.0}, "request_throughput": 1.0, "failed": 0}
    (d / "result.json").write_text(json.dumps({"summary": summary}))
    return f"{label}_phase{i}/result.json"


def test_table_marks_each_target_from_the_median_ratio(tmp_path):
    def ratio(vals):
        return {"median": sorted(vals)[1], "min": min(vals), "max": max(vals)}

    systems = [
        {"label": "pow2", "results": [_phase(tmp_path, "pow2", i, 1000.0, 1.0) for i in range(3)],
         "vs_baseline": {"ttft_ms.p50": ratio([1, 1, 1]), "goodput": ratio([1, 1, 1])}},
        {"label": "llmd", "results": [_phase(tmp_path, "llmd", i, 400.0, 1.6) for i in range(3)],
         "vs_baseline": {"ttft_ms.p50": ratio([0.3, 0.4, 0.6]), "goodput": ratio([1.4, 1.6, 1.7])}},
        {"label": "worse", "results": [_phase(tmp_path, "worse", i, 1100.0, 0.9) for i in range(3)],
         "vs_baseline": {"ttft_ms.p50": ratio([1.0, 1.1, 1.2]), "goodput": ratio([0.8, 0.9, 1.0])}},
        {"label": "ray-serve-llm", "results": [_phase(tmp_path, "ray-serve-llm", i, 500.0 + i * 100, 1.2)
                                               for i in range(3)],
         "vs_baseline": {"ttft_ms.p50": ratio([0.5, 0.6, 0.7]), "goodput": ratio([1.2, 1.2, 1.2])}},
    ]
    (tmp_path / "load_1.2" / "hotspot" / "compare_systems.json").write_text(
        json.dumps({"valid": True, "systems": systems}))
    mr.table(SimpleNamespace(out=tmp_path), [])
    verdicts = {v["system"]: v for v in json.loads((tmp_path / "table.json").read_text())["verdicts"]}
    assert set(verdicts) == {"llmd", "worse", "ray-serve-llm"}  # the baseline is not judged against itself
    # against Ray Serve LLM round by round: 400 / (500, 600, 700)
    assert abs(verdicts["llmd"]["vs_ray_serve_llm"]["median"] - 400 / 600) < 1e-9
    assert verdicts["llmd"]["le_0.8_ray_serve_llm"] and not verdicts["worse"]["le_0.8_ray_serve_llm"]
    assert "vs_ray_serve_llm" not in verdicts["ray-serve-llm"]
    assert verdicts["llmd"]["ttft_p50_le_0.5"] and verdicts["llmd"]["goodput_ge_1.5"] and verdicts["llmd"]["not_worse"]
    assert not verdicts["worse"]["ttft_p50_le_0.5"] and not verdicts["worse"]["not_worse"]
    md = (tmp_path / "table.md").read_text()
    assert "| 1.2x | hotspot | llmd | 400 (400-400) | 0.40 (0.30-0.60) |" in md and "MISSED (1.10)" in md


def test_hits_split_first_turns_from_later_ones(tmp_path):
    rel = _phase(tmp_path, "llmd", 0, 400.0, 1.6)
    rows = [{"ok": True, "turn": 0, "cached_tokens": 100, "input_tokens": 400},
            {"ok": True, "turn": 1, "cached_tokens": 450, "input_tokens": 500},
            {"ok": False, "turn": 1, "cached_tokens": 0, "input_tokens": 500},  # failed: not counted
            {"ok": True, "turn": 2, "cached_tokens": None, "input_tokens": 500}]
    (tmp_path / "load_1.2" / "hotspot" / "llmd_phase0" / "requests.jsonl").write_text(
        "\n".join(json.dumps(r) for r in rows))
    (tmp_path / "load_1.2" / "hotspot" / "compare_systems.json").write_text(
        json.dumps({"valid": True, "systems": [{"label": "llmd", "results": [rel]}]}))
    mr.hits(SimpleNamespace(out=tmp_path), [])
    [row] = json.loads((tmp_path / "hits_by_turn.json").read_text())
    assert row["first_turn_cached"]["median"] == 0.25 and row["later_turns_cached"]["median"] == 0.45
