"""bench/autoscaling/live_ramp_rounds.py's pure parts: when the scaled variant first served, and a round's figures."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "autoscaling"))
_spec = importlib.util.spec_from_file_location("live_ramp_rounds", ROOT / "bench" / "autoscaling" / "live_ramp_rounds.py")
rounds = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rounds)

SAMPLES = [{"t": 59.0, "served": {"a": 5}}, {"t": 61.0, "served": {"a": 6}}, {"t": 80.5, "served": {"a": 9, "b": 1}}]


def test_first_served_after_the_step():
    assert rounds.first_served_after(SAMPLES, "b", 60.0) == 20.5
    assert rounds.first_served_after(SAMPLES, "a", 60.0) == 1.0  # counts new requests, not those before the step
    assert rounds.first_served_after(SAMPLES, "c", 60.0) is None  # never served: no figure, not 0


def test_figures_of_a_round():
    result = {"phases": {"high_start": 60.0}, "samples": SAMPLES,
              "summary": {"ttft_s": {"slo_attainment": 0.93}, "scale_up_decision_after_load_step_s": 4.2,
                          "t_scale_up_ready": 78.0, "requests_lost": 0}}
    assert rounds.figures(result, "b") == {"slo_attainment": 0.93, "decision_after_load_step_s": 4.2,
                                           "running_after_load_step_s": 18.0, "serving_after_load_step_s": 20.5,
                                           "requests_lost": 0}
