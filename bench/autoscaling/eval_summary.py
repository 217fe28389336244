"""Helpers of ``evaluate.py``: WVA-style policy specs, per-run scoring, spread over seeds, the tuning choice."""

from __future__ import annotations

import math
import statistics

WVA_DEFAULT = {"kv": 0.8, "q": 5.0, "int": 15.0, "wait": 1, "skv": 0.5, "sq": 1.0, "stable": 60.0}
WVA_KEYS = {"kv": "kv_threshold", "q": "queue_threshold", "int": "interval_s", "wait": "wait_for_starting",
            "skv": "spare_kv", "sq": "spare_queue", "stable": "stable_s"}
# The grid tried for ``wva_saturation_tuned`` (run on the first seed; cheapest point reaching the SLO wins).
WVA_GRID = [f"wva:kv={kv},q={q},int={i},wait=0,skv={kv / 2:g},sq=0.1,stable=120"
            for kv in (0.4, 0.6) for q in (0.5, 2) for i in (5, 15)]
WVA_GRID.append("wva:kv=0.3,q=0.25,int=2,wait=0,skv=0.15,sq=0.1,stable=120")  # the most eager point
STARTUP_WINDOW_S = 150.0  # first start-up (120 s) + one 30 s bin: no scaler can add capacity before it


def wva_kwargs(spec: str) -> dict:
    """``wva:kv=0.4,q=0.5,int=5,wait=0`` -> SaturationPolicy kwargs (unnamed keys keep WVA's defaults)."""
    params = dict(WVA_DEFAULT)
    body = spec.split(":", 1)[1] if ":" in spec else ""
    for part in filter(None, body.split(",")):
        k, _, v = part.partition("=")
        if k not in WVA_KEYS:
            raise ValueError(f"{spec}: unknown key {k!r} (known: {', '.join(WVA_KEYS)})")
        params[k] = float(v)
    out = {WVA_KEYS[k]: v for k, v in params.items()}
    out["wait_for_starting"] = bool(out["wait_for_starting"])
    return out


def score(requests, classes: dict, duration: float, startup_window_s: float = STARTUP_WINDOW_S) -> tuple[dict, list]:
    """Per class SLO attainment (arrivals before ``duration - 300``), also after the start-up window;
    and interactive misses per 30 s bin: [bin start, requests, missed]."""
    per_class: dict = {}
    bins: dict[int, list[int]] = {}
    for cname, c in classes.items():
        n = good = n_late = good_late = 0
        for r in requests:
            if r.cls != cname or r.arrival >= duration - 300:
                continue
            ok = False
            if r.finished is not None and math.isfinite(r.finished) and r.first_token is not None:
                ttft = r.first_token - r.arrival
                tpot = (r.finished - r.first_token) / max(1, r.output_tokens - 1)
                ok = ttft * 1000 <= c.ttft_ms and tpot * 1000 <= c.itl_ms
            n += 1
            good += ok
            if r.arrival >= startup_window_s:
                n_late += 1
                good_late += ok
            if cname == "interactive":
                b = bins.setdefault(int(r.arrival // 30) * 30, [0, 0])
                b[0] += 1
                b[1] += not ok
        per_class[cname] = {"requests": n, "slo_attainment": good / n if n else None,
                            "slo_after_startup_window": good_late / n_late if n_late else None}
    return per_class, [[t, *v] for t, v in sorted(bins.items())]


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def summarize(results: dict) -> dict:
    """Per policy over its seeds: median and min-max of cost, interactive/batch SLO; ours vs tuned WVA per seed."""
    out: dict = {}
    for name, by_seed in results.items():
        runs = list(by_seed.values())
        out[name] = {
            "seeds": [int(s) for s in by_seed],
            "cost_usd": spread([r["cost_usd"] for r in runs]),
            "interactive_slo": spread([r["per_class"]["interactive"]["slo_attainment"] for r in runs]),
            "interactive_slo_after_startup_window": spread(
                [r["per_class"]["interactive"]["slo_after_startup_window"] for r in runs]),
            "batch_slo": spread([r["per_class"]["batch"]["slo_attainment"] for r in runs]),
            "scale_actions": spread([r["scale_actions"] for r in runs]),
        }
    for base in ("wva_saturation_tuned", "wva_saturation", "ray_default"):
        if "ours" in results and base in results:
            common = sorted(set(results["ours"]) & set(results[base]), key=int)
            ratios = {s: results["ours"][s]["cost_usd"] / results[base][s]["cost_usd"] for s in common}
            if ratios:
                out[f"ours_cost_vs_{base}"] = {"per_seed": ratios, **spread(list(ratios.values()))}
    return out


def choose_tuned(grid: list[dict], target: float) -> dict:
    """The cheapest grid point whose interactive SLO reaches ``target``; else the one with the highest SLO."""
    met = [g for g in grid if g["interactive_slo"] >= target]
    if met:
        return {**min(met, key=lambda g: g["cost_usd"]), "reached_target": True}
    return {**max(grid, key=lambda g: (g["interactive_slo"], -g["cost_usd"])), "reached_target": False}
