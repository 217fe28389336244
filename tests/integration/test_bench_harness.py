"""A short harness run against the real app writes a valid result file."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import METRICS_PORT


def test_short_shared_prefix_run_against_the_app(app, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "llmd_ray.bench", "run", "--workload", "shared_prefix", "--num-groups", "2",
           "--prompts-per-group", "3", "--system-prompt-len", "300", "--question-len", "40", "--output-len", "8",
           "--rate", "4", "--base-url", app, "--out", str(out), "--no-progress", "--no-measure-overhead",
           "--metrics-url", f"http://127.0.0.1:{METRICS_PORT}/metrics", "--slo-ttft-ms", "5000",
           "--slo-tpot-ms", "500"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    s = result["summary"]
    assert s["completed"] == 6 and s["failed"] == 0
    for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        assert set(s[key]) >= {"mean", "p50", "p90", "p99"} and s[key]["p50"] > 0
    assert s["request_throughput"] > 0 and s["output_throughput"] > 0
    # Each group's later prompts reuse its 2 full 128-token prefix blocks (on the prefix-aware router).
    assert 0 < s["cache_hit_rate"] < 1
    assert list(out.glob("*.png")), "plots were written"
