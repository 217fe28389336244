"""Start-up of two versions side by side (issue 18 item 4): rounds interleaved, A B A B ..., each a fresh
``serve run`` of the same config through that version's own ``bench/startup/profile.py`` and package
(``PYTHONPATH`` = the version's checkout, so ``serve run`` and every Ray worker import its ``llmd_ray``).

    .venv/bin/python bench/startup/compare.py --base /work/wt/base --new . --rounds 3 \\
        --out bench/results/startup/compare.json

``--base``/``--new``: checkouts (a ``git worktree`` of the older commit). Reports per version the median and
min-max of the replica's process-start -> ready, ``serve run`` -> /health 200 and -> first completion, and the
per-round ratios new/base (round i of new against round i of base, run back to back). Before each round the
host settles: it waits (up to 4 min) for the 1-minute load average, raised by the previous round's own start,
to fall below ``--settle-below``; the load it starts at is recorded, and a round that starts at or above the
core count marks the comparison invalid. A benchmark: run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llmd_ray.bench.hostload import settle

FIGURES = {  # name -> how to read it from one profile.py round
    "replica_ready_s": lambda r: statistics.median(row["replica_total"] for row in r["replicas"]),
    "build_engine_s": lambda r: statistics.median(row["build_engine"] for row in r["replicas"]),
    "import_vllm_s": lambda r: statistics.median(row["import_vllm"] for row in r["replicas"]),
    "warmup_s": lambda r: statistics.median(row["warmup"] for row in r["replicas"]),
    "serve_run_to_health_s": lambda r: r["serve_run_to_running_s"],
    "serve_run_to_first_completion_s": lambda r: r["serve_run_to_first_completion_s"],
}


def one(checkout: Path, config: str, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    subprocess.run([sys.executable, str(checkout / "bench/startup/profile.py"), "--config", config, "--rounds", "1",
                    "--out", str(out)], check=True, cwd=checkout, env=env)
    return json.loads(out.read_text())["rounds"][0]


def spread(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "values": xs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--new", type=Path, required=True)
    ap.add_argument("--config", default="serve_configs/default.yaml", help="relative to each checkout")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--settle-below", type=float, default=1.0, help="1-minute load average to wait for (default 1)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    versions = {"base": a.base.resolve(), "new": a.new.resolve()}
    rounds: dict[str, list[dict]] = {k: [] for k in versions}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.rounds):
            for name, checkout in versions.items():
                load, waited = settle(a.settle_below)
                r = one(checkout, a.config, Path(tmp) / f"{name}-{i}.json")
                r["loadavg_1m_before"], r["settle_wait_s"] = load, waited
                r["host_loaded"] = load >= (os.cpu_count() or 1)
                rounds[name].append(r)
                print(f"round {i} {name}: " + ", ".join(f"{k} {f(r):.1f}" for k, f in FIGURES.items()), flush=True)
    summary = {name: {k: spread([f(r) for r in rs]) for k, f in FIGURES.items()} for name, rs in rounds.items()}
    ratios = {k: spread([f(n) / f(b) for n, b in zip(rounds["new"], rounds["base"])]) for k, f in FIGURES.items()}
    commits = {name: subprocess.run(["git", "-C", str(c), "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True).stdout.strip() for name, c in versions.items()}
    result = {"config": a.config, "commits": commits, "summary": summary, "ratio_new_over_base": ratios,
              "valid": not any(r["host_loaded"] for rs in rounds.values() for r in rs),
              "rounds": rounds, "cpu_count": os.cpu_count(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({"summary": {n: {k: v["median"] for k, v in s.items()} for n, s in summary.items()},
                      "ratio_median": {k: v["median"] for k, v in ratios.items()}, "valid": result["valid"]}, indent=1))


if __name__ == "__main__":
    main()
