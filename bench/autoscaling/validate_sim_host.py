"""The simulator WITH the fitted host model against recorded real runs, strictly out of sample.

    nice -n 19 .venv/bin/python bench/autoscaling/validate_sim_host.py [--sim-seeds 3]

Starts no engine. Same ten recorded 2-replica runs as validate_sim.py. For
each held-out case a ``HostProfile`` (llmd_ray.sim.host: engine prefill/ITL,
per-request overhead, contention) is fitted with ``fit_host`` -- the code behind
``python -m llmd_ray.sim calibrate`` -- from calibration runs that never include
that case. Two splits, both fixed before any result was looked at:
  * ``leave-one-workload-out`` (primary): the runs of the *other* workload
    (1,100-token routing prompts vs 1,700-token foundation prompts);
  * ``leave-one-run-out``: every other recorded run (incl. the same workload
    under the other router).
Figures: TTFT p50, TTFT p90, TPOT p50, output tokens/s; a case counts when all
four are within 15%. Writes bench/results/autoscaling/sim_validation_host.json/.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from validate_sim import CASES, OUT, TARGET, load_case  # noqa: E402

from llmd_ray.autoscaling.perf import load_profile  # noqa: E402
from llmd_ray.sim.calibrate import rel_err  # noqa: E402
from llmd_ray.sim.host import fit_host  # noqa: E402
from llmd_ray.sim.validate import simulate_bench  # noqa: E402

FIGS = ("ttft_p50_s", "ttft_p90_s", "tpot_p50_s", "output_tokens_per_s")
SPLITS = ("leave-one-workload-out", "leave-one-run-out")


def calibration_runs(case: dict, cases: list[dict], split: str) -> dict[str, list[dict]]:
    fam = case["bench_config"]["name"]
    keep = [c for c in cases if c["run"] != case["run"]
            and (split == "leave-one-run-out" or c["bench_config"]["name"] != fam)]
    return {c["run"]: c["records"] for c in keep}


def simulate(case: dict, base, host, seeds: int) -> dict:
    prof = host.engine_profile(base)
    runs = [simulate_bench(case["bench_config"], prof, replicas=2, router=case["router"],
                           router_config=case["router_config"], kv_cache_tokens=case["kv_cache_tokens"],
                           host=host, seed=s) for s in range(seeds)]
    out = {k: float(np.median([r[k] for r in runs])) for k in (*FIGS, "cache_hit_rate")}
    out.update({f"{k}_range": [min(r[k] for r in runs), max(r[k] for r in runs)] for k in FIGS})
    return out


def run(profile: str, seeds: int) -> dict:
    base = load_profile(profile)
    cases = [c for c in (load_case(*row, base) for row in CASES) if c is not None]
    rows = []
    for c in cases:
        row = {k: c[k] for k in ("case", "run", "router")}
        row["real"] = {k: c["real"][k] for k in (*FIGS, "cache_hit_rate")}
        row["splits"] = {}
        for split in SPLITS:
            host = fit_host(calibration_runs(c, cases, split), hardware="2-core CPU VM, 2 co-located engines + Serve")
            sim = simulate(c, base, host, seeds)
            err = {k: round(rel_err(sim[k], c["real"][k]), 4) for k in FIGS}
            row["splits"][split] = {"host": host.model_dump(), "sim": sim, "error": err,
                                    "within_target": all(abs(v) <= TARGET for v in err.values())}
            print(f"{c['case']:15} {split:23} " + " ".join(f"{k[:-2]} {c['real'][k]:.4g}/{sim[k]:.4g} {err[k]:+.1%}"
                                                           for k in FIGS) + f"  {'OK' if row['splits'][split]['within_target'] else 'miss'}",
                  flush=True)
        rows.append(row)
    summary = {}
    for split in SPLITS:
        errs = {k: [abs(r["splits"][split]["error"][k]) for r in rows] for k in FIGS}
        summary[split] = {"cases_within_target_all_four": sum(r["splits"][split]["within_target"] for r in rows),
                          "cases": len(rows),
                          **{f"cases_within_target_{k}": sum(e <= TARGET for e in v) for k, v in errs.items()},
                          **{f"median_abs_error_{k}": round(float(np.median(v)), 4) for k, v in errs.items()}}
    return {"simulated": True, "what": "simulator + fitted host model vs recorded real runs, 2 replicas of tiny-llama "
            "(2-core CPU VM)", "base_profile": base.name, "target_rel_error": TARGET, "sim_seeds": seeds,
            "figures": list(FIGS), "splits": {s: d for s, d in zip(SPLITS, (
                "host fitted on the runs of the other workload only", "host fitted on all other runs"))},
            "cases": rows, "summary": summary}


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["cases"]
    fig, axes = plt.subplots(1, 4, figsize=(20, 5))
    x = np.arange(len(rows))
    for ax, k in zip(axes, FIGS):
        for i, s in enumerate(SPLITS):
            ax.bar(x - 0.2 + 0.4 * i, [100 * r["splits"][s]["error"][k] for r in rows], 0.4, label=s)
        ax.axhspan(-100 * TARGET, 100 * TARGET, color="green", alpha=0.15, label="±15%")
        ax.axhline(0, color="black", lw=0.6)
        ax.set_yscale("symlog", linthresh=20)
        ax.set_title(f"{k}: SIMULATED/real - 1 (%, symlog)", fontsize=9)
        ax.set_xticks(x, [r["case"] for r in rows], rotation=35, ha="right", fontsize=7)
    axes[0].legend(fontsize=7)
    n = ", ".join(f"{s}: {res['summary'][s]['cases_within_target_all_four']}/{res['summary'][s]['cases']}" for s in SPLITS)
    fig.suptitle(f"Simulator + fitted host model vs real runs (out of sample). Cases within 15% on all four: {n}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", default="cpu-1core-tiny-llama", help="Base profile (KV, batch limits; engine times are fitted).")
    p.add_argument("--sim-seeds", type=int, default=3)
    p.add_argument("--out", default=str(OUT / "sim_validation_host.json"))
    args = p.parse_args(argv)
    res = run(args.profile, args.sim_seeds)
    out = Path(args.out)
    out.write_text(json.dumps(res, indent=1) + "\n")
    plot(res, out.with_suffix(".png"))
    print(json.dumps(res["summary"], indent=1))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
