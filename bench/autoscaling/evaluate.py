"""Variant autoscaling evaluation, IN THE SIMULATOR: Ray's default vs WVA-style saturation vs ours.

    .venv/bin/python bench/autoscaling/evaluate.py --duration 1200 --peak 200 --seeds 0 1 2 \
        --policies ours wva_saturation wva_saturation_tuned --tune [--out bench/results/autoscaling]

``--tune`` runs the WVA-style scaler over ``eval_summary.WVA_GRID`` on the first seed and
``wva_saturation_tuned`` is the cheapest grid point whose interactive SLO reaches ours on that seed
(capped at 99%); it then runs on every seed like the other policies.

Trace: a compressed "day" (diurnal sine ramp of request rate) built with the
benchmark harness's workload generators, with a shift in request shape:
interactive chat (shared system prompts) dominates the first half; long-
context RAG and long-output reasoning (batch class) grow in the second.
Variants: Llama-3.1-8B on H100 and L4 (estimated profiles, see
llmd_ray/autoscaling/profiles), aggregated and P/D (H100 prefill -> H100 or L4
decode). Every policy sees the same trace, the same routing (the real
Scheduler) and the same front split; only the replica counts differ.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from llmd_ray.autoscaling.config import AutoscalerConfig
from llmd_ray.autoscaling.perf import load_profile
from llmd_ray.sim.fleet import Simulator
from llmd_ray.sim.policies import RayQueueLengthPolicy, SaturationPolicy, VariantPolicy
from llmd_ray.sim.scenarios import CONFIG, INITIAL, trace

sys.path.insert(0, str(Path(__file__).parent))
from eval_summary import WVA_GRID, choose_tuned, score, summarize, wva_kwargs  # noqa: E402


def make_policy(name: str, cfg: AutoscalerConfig, profiles: dict):
    if name == "ours":
        return VariantPolicy(cfg, profiles)
    if name == "wva_saturation" or name.startswith("wva:"):  # WVA's defaults, or a point of the tuning grid
        return SaturationPolicy(cfg, **wva_kwargs(name))
    if name == "ray_default":
        return RayQueueLengthPolicy(cfg, {"h100-agg": 64, "l4-agg": 16, "h100-prefill": 8, "h100-decode": 64,
                                          "l4-decode": 16})
    raise ValueError(name)


def run_policy(name: str, duration: float, jobs, seed: int = 0, spec: str | None = None) -> dict:
    """One simulated day; ``spec`` is the WVA grid point a ``wva_saturation_tuned`` run uses."""
    cfg = AutoscalerConfig.model_validate(CONFIG)
    profiles = {p: load_profile(p) for p in {v.profile for v in cfg.variants}}
    policy = make_policy(spec or name, cfg, profiles)
    tick = 0.5 if name == "ray_default" else 1.0
    sim = Simulator(cfg, profiles, initial=INITIAL, seed=seed, policy=policy, tick_s=tick, block_size=16)
    t0 = time.perf_counter()
    res = sim.run(jobs, until=duration)
    wall = time.perf_counter() - t0
    per_class, bins = score(res.requests, {c.name: c for c in cfg.classes}, duration)
    scored = [v for v in per_class.values() if v["requests"]]
    return {
        "policy": name, "spec": spec or name, "seed": seed, "cost_usd": round(res.cost, 3), "per_class": per_class,
        "slo_attainment_all": sum(v["slo_attainment"] * v["requests"] for v in scored)
        / max(1, sum(v["requests"] for v in scored)),
        "interactive_misses_per_30s": bins,
        "scale_actions": len(res.scale_events), "replica_timeline": res.replica_timeline[::10],
        "scale_events": [(e.t, e.variant, e.before, e.after) for e in res.scale_events],
        "wall_s": round(wall, 1), "requests": len(res.requests),
    }


def plot(results: dict, jobs, duration: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(len(names) + 1, 1, figsize=(10, 2.6 * (len(names) + 1)), sharex=True)
    arr = np.array([j.arrival_s for j in jobs])
    shapes = np.array([j.turns[0].max_tokens > 512 or (j.turns[0].prompt.tokens > 2048) for j in jobs])
    bins = np.arange(0, duration + 30, 30)
    axes[0].hist([arr[~shapes], arr[shapes]], bins=bins, stacked=True, weights=[np.full((~shapes).sum(), 1 / 30),
                 np.full(shapes.sum(), 1 / 30)], label=["interactive", "batch"])
    axes[0].set_ylabel("req/s")
    axes[0].legend(loc="upper right")
    axes[0].set_title("SIMULATED: offered load (diurnal ramp with a shift in request shape)")
    for ax, name in zip(axes[1:], names):
        r = results[name]
        tl = r["replica_timeline"]
        ts = [t for t, _ in tl]
        for v in tl[0][1]:
            ax.step(ts, [c[v] for _, c in tl], where="post", label=v)
        att = ", ".join(f"{k} {v['slo_attainment']:.1%}" for k, v in r["per_class"].items() if v["slo_attainment"] is not None)
        ax.set_title(f"{name}: ${r['cost_usd']:.2f}, SLO {att}, {r['scale_actions']} scale actions", fontsize=9)
        ax.set_ylabel("ready replicas")
        ax.legend(loc="upper right", fontsize=7)
    axes[-1].set_xlabel("simulated time (s)")
    fig.tight_layout()
    fig.savefig(out / "replicas_vs_load.png", dpi=110)
    fig2, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(names))
    ax.bar(x, [results[n]["cost_usd"] for n in names])
    ax.set_xticks(x, names)
    ax.set_ylabel("$ over the trace (simulated)")
    for i, n in enumerate(names):
        ax.text(i, results[n]["cost_usd"], f"SLO {results[n]['slo_attainment_all']:.1%}", ha="center", va="bottom")
    ax.set_title("SIMULATED cost and overall SLO attainment")
    fig2.tight_layout()
    fig2.savefig(out / "cost_slo.png", dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=1200.0)
    ap.add_argument("--peak", type=float, default=40.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="trace (and simulator) seeds")
    ap.add_argument("--policies", nargs="+", default=["ray_default", "wva_saturation", "ours"],
                    help="ours, wva_saturation, wva_saturation_tuned (needs --tune or merged tuning), ray_default, "
                    "or a WVA grid point like wva:kv=0.4,q=0.5,int=5,wait=0")
    ap.add_argument("--tune", action="store_true", help="run the WVA tuning grid on the first seed")
    ap.add_argument("--out", default="bench/results/autoscaling")
    ap.add_argument("--merge-from", nargs="*", default=[],
                    help="evaluation.json files of earlier runs (same duration/peak) whose results are reused")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    tuning: dict = {}
    for path in a.merge_from:
        prev = json.loads(Path(path).read_text())
        if (prev["duration_s"], prev["peak_rps"]) != (a.duration, a.peak) or "wva_tuning" not in prev:
            raise SystemExit(f"{path}: a different trace (duration/peak) or the old single-seed format")
        for name, by_seed in prev["results"].items():
            results.setdefault(name, {}).update(by_seed)
        tuning = prev["wva_tuning"] or tuning
    traces = {s: trace(a.duration, a.peak, s) for s in a.seeds}

    def run(name: str, seed: int, spec: str | None = None) -> dict:
        key = str(seed)
        if key not in results.get(name, {}):
            r = run_policy(name, a.duration, traces[seed], seed, spec)
            results.setdefault(name, {})[key] = r
            pc = {k: round(v["slo_attainment"], 4) for k, v in r["per_class"].items()}
            print(f"{name} [{r['spec']}] seed {seed}: ${r['cost_usd']:.2f}, SLO {pc}, actions "
                  f"{r['scale_actions']}, wall {r['wall_s']}s", flush=True)
        return results[name][key]

    first = a.seeds[0]
    if a.tune:
        ours = run("ours", first)["per_class"]["interactive"]["slo_attainment"]
        target = min(0.99, ours)
        grid = []
        for spec in WVA_GRID:
            r = run_policy(spec, a.duration, traces[first], first, spec)
            grid.append({"spec": spec, "cost_usd": r["cost_usd"],
                         "interactive_slo": r["per_class"]["interactive"]["slo_attainment"],
                         "batch_slo": r["per_class"]["batch"]["slo_attainment"], "scale_actions": r["scale_actions"]})
            print(f"  grid {spec}: ${r['cost_usd']:.2f}, interactive {grid[-1]['interactive_slo']:.4f}", flush=True)
        tuning = {"seed": first, "target_interactive_slo": target, "grid": grid, "chosen": choose_tuned(grid, target)}
    for seed in a.seeds:
        for name in a.policies:
            if name == "wva_saturation_tuned":
                if not tuning:
                    raise SystemExit("wva_saturation_tuned needs --tune (or a merged evaluation.json with a tuning)")
                run(name, seed, tuning["chosen"]["spec"])
            else:
                run(name, seed)
    summary = {"simulated": True, "duration_s": a.duration, "peak_rps": a.peak, "seeds": a.seeds,
               "requests": {str(s): len(j) for s, j in traces.items()}, "config": CONFIG, "initial": INITIAL,
               "command": " ".join(sys.argv), "wva_tuning": tuning, "spread": summarize(results), "results": results}
    (out / "evaluation.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot({n: r[str(first)] for n, r in results.items() if str(first) in r}, traces[first], a.duration, out)
    print(json.dumps({k: v for k, v in summary["spread"].items() if k.startswith("ours_")}))


if __name__ == "__main__":
    main()
