"""A SHORT live scale-up and scale-down of the two-variant app (serve_configs/variants.yaml) on real engines.

Runs ``bench/autoscaling/live_ramp.py`` in a subprocess (its own Ray cluster, Serve on its own port): 5 s at
1 req/s, then 4 req/s until the second variant (cpu-b) has served a request (at least 15 s, at most 120 s:
its cold start is an engine start, about 60 s here under this load), then 30 s back at 1 req/s; prompts of
1,000 tokens. By the cpu-1core profile one replica serves up to about 2 req/s of that shape within the 3 s
TTFT objective and 3 req/s or more need two, so the VariantAutoscalingPolicy must start cpu-b (0 -> 1) for
the high phase, cpu-b must take traffic, and the policy must release it after; the ingress must lose no
request meanwhile. (At 500-token prompts one replica covers 5 req/s by the profile: cpu-b was then asked for
only while cpu-a's queue was long, and released as soon as it came up.) How fast it scales is a bench
figure (live_ramp.json), not asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CPU_B = "LLMServer-cpu-b"


@pytest.mark.own_cluster
@pytest.mark.timeout(420)
def test_live_ramp_scales_cpu_b_up_and_down_and_loses_nothing(tmp_path):
    cmd = [sys.executable, str(ROOT / "bench" / "autoscaling" / "live_ramp.py"), "--port", "18735",
           "--low-s", "5", "--high-s", "15", "--high-until-served", CPU_B, "--high-max-s", "120",
           "--cool-s", "30", "--low-rps", "1", "--high-rps", "4",
           "--prompt-tokens", "1000", "--max-tokens", "16", "--drain-s", "60", "--tail-s", "20",
           "--ready-timeout-s", "240",
           "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400,
                          env={**os.environ, "PYTHONHASHSEED": "0"})
    out = tmp_path / "live_ramp.json"
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    s, phases = result["summary"], result["phases"]
    assert s["requests"] > 100
    assert s["requests_lost"] == 0, s["error_examples"]
    assert s["baseline"] == {"target": 1, "running": 1}  # cpu-a only before the ramp
    assert s["t_scale_up_decision"] is not None, "cpu-b was never asked for"
    # cpu-b started and took traffic while the load was high (the high phase waits for it, 100 s at most).
    b = s["per_deployment"][CPU_B]
    assert phases["high_until_served"]["t_served"] is not None, f"cpu-b served nothing in 120 s at 4 req/s: {b}"
    assert b["t_scale_up_ready"] is not None and b["t_first_served"] <= phases["high_end"] + 1.0, b
    assert b["served"] >= 1 and s["per_deployment"]["LLMServer-cpu-a"]["served"] >= 1
    assert sum(d["served"] for d in s["per_deployment"].values()) == s["completed"]  # every answer's replica known
    assert s["t_scale_down"] is not None, "cpu-b was not released after the ramp"
    assert result["samples"][-1]["replicas"][CPU_B]["target"] == 0
    assert (tmp_path / "live_ramp.png").stat().st_size > 10_000
    assert proc.returncode == 0
