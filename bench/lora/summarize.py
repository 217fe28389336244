"""LoRA benchmark figures per system and phase: adapter loads per replica, TTFT p50.

    python bench/lora/summarize.py OUT_DIR     # the --out of `python -m llmd_ray.bench run ... --system ...`

Loads come from the replicas' ``llmd_lora_loads_total`` counters (``server_timeline.per_replica
.lora_loads``, one series per replica): each series' last value minus its value at the baseline sample
(taken before the first request, after the harness's warm-up, which names no adapter; absent: 0).
Needs ``--metrics-url`` (bench/lora/README.md). A replica whose count did not change is not listed (it
cannot be told apart from an earlier phase's replica that is still exported).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def phase_figures(result: dict) -> dict:
    timeline = result.get("server_timeline") or {}
    series = (timeline.get("per_replica") or {}).get("lora_loads") or {}
    loads = {}
    for labels, values in series.items():
        seen = [v for v in values if v is not None]
        if values and values[0] is not None and seen[-1] == values[0]:
            continue  # a replica of an earlier phase, still exported: this phase's counters start absent
        if seen:
            replica = next((p.split("=", 1)[1] for p in labels.split(",") if p.startswith(("ReplicaId=", "replica="))),
                           labels)
            loads[replica] = seen[-1] - (values[0] or 0)
    return {"ttft_p50_ms": result["summary"]["ttft_ms"]["p50"], "loads": loads, "total_loads": sum(loads.values())}


def main(out: str) -> int:
    root = Path(out)
    compare = json.loads((root / "compare_systems.json").read_text())
    print(f"{'system':<10} {'phase':>5} {'TTFT p50 ms':>12} {'loads':>6}  per replica")
    for system in compare["systems"]:
        for i, rel in enumerate(system["results"]):
            if rel is None:
                print(f"{system['label']:<10} {i:>5}  failed: {system['errors'][i]}")
                continue
            f = phase_figures(json.loads((root / rel).read_text()))
            per = ", ".join(f"{r[-8:]}: {n:.0f}" for r, n in sorted(f["loads"].items()))
            print(f"{system['label']:<10} {i:>5} {f['ttft_p50_ms']:>12.0f} {f['total_loads']:>6.0f}  {per or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
