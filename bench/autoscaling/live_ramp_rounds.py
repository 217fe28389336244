"""The live ramp over several rounds, with its spread (issue 18 items 1 and 5): ``live_ramp.py`` run
``--rounds`` times with the same arguments (each round its own Ray and Serve, the same seeded arrivals),
each started once the host's 1-minute load average, raised by the round before, is back under
``--settle-below``. Writes ``rN/live_ramp.json`` per round and ``rounds.json``: per figure the median and
min-max over rounds, and each target met or missed.

    .venv/bin/python bench/autoscaling/live_ramp_rounds.py --rounds 3 --out bench/results/autoscaling/live_ramp_rounds \\
        -- --low-s 60 --high-s 120 --cool-s 120 --low-rps 1 --high-rps 4

Figures: SLO attainment (TTFT within the class objective, every request of the run), seconds from the load
step to the scale-up decision, to the new replica running, and to the first request the scaled variant
(``--scaled`` deployment) answered; requests lost. Targets (issue 18 item 5): attainment >= 90%, the second
variant serving within 30 s of the load step, nothing lost. A round that starts at or above the core count
marks the set invalid. A benchmark: run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import live_ramp  # noqa: E402
from llmd_ray.bench.hostload import settle  # noqa: E402


def first_served_after(samples: list[dict], deployment: str, t_from: float) -> float | None:
    """Seconds from ``t_from`` to the first sample where ``deployment`` had served a request it had not before."""
    before = max((s["served"].get(deployment, 0) for s in samples if s["t"] <= t_from), default=0)
    for s in samples:
        if s["t"] > t_from and s["served"].get(deployment, 0) > before:
            return round(s["t"] - t_from, 2)
    return None


def figures(result: dict, scaled: str) -> dict:
    s, step = result["summary"], result["phases"]["high_start"]
    return {"slo_attainment": s["ttft_s"]["slo_attainment"],
            "decision_after_load_step_s": s["scale_up_decision_after_load_step_s"],
            "running_after_load_step_s": (None if s["t_scale_up_ready"] is None else round(s["t_scale_up_ready"] - step, 2)),
            "serving_after_load_step_s": first_served_after(result["samples"], scaled, step),
            "requests_lost": s["requests_lost"]}


def spread(xs: list) -> dict:
    ok = [x for x in xs if x is not None]
    return {"median": statistics.median(ok) if ok else None, "min": min(ok, default=None),
            "max": max(ok, default=None), "values": xs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scaled", default="LLMServer-cpu-b", help="the deployment the ramp should bring up")
    ap.add_argument("--settle-below", type=float, default=1.0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("ramp_args", nargs=argparse.REMAINDER, help="after --: live_ramp.py's arguments")
    a = ap.parse_args()
    ramp_args = [x for x in a.ramp_args if x != "--"]
    rows, loads = [], []
    for i in range(1, a.rounds + 1):
        loads.append(settle(a.settle_below, max_wait_s=300)[0])
        out = a.out / f"r{i}"
        live_ramp.main(ramp_args + ["--out", str(out)])
        rows.append(figures(json.loads((out / "live_ramp.json").read_text()), a.scaled))
        print(f"round {i}: {rows[-1]}", flush=True)
    summary = {k: spread([r[k] for r in rows]) for k in rows[0]}
    med = {k: v["median"] for k, v in summary.items()}
    targets = {
        "slo_attainment >= 0.90": med["slo_attainment"] is not None and med["slo_attainment"] >= 0.90,
        "second variant serving <= 30 s after the load step": (med["serving_after_load_step_s"] is not None
                                                             and med["serving_after_load_step_s"] <= 30),
        "no request lost": all(r["requests_lost"] == 0 for r in rows),
    }
    result = {"command": "python bench/autoscaling/live_ramp_rounds.py " + " ".join(sys.argv[1:]),
              "rounds": rows, "summary": summary, "targets_met_on_median": targets,
              "loadavg_1m_at_round_start": loads, "valid": all(x is not None and x < (os.cpu_count() or 1) for x in loads),
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (a.out / "rounds.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({"summary": med, "targets": targets, "valid": result["valid"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
