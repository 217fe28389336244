"""PNG plots (matplotlib, Agg backend): CDF, load curves, timeline, A/B ratios."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .metrics import a_is_better  # noqa: E402
from .schema import BenchResult, CompareResult, RequestRecord, Summary, SystemsCompareResult  # noqa: E402

PCTS = ("p50", "p90", "p99")


def ratio_color(key: str, ratio: float) -> str:
    better = a_is_better(key, ratio)
    return "tab:gray" if better is None else ("tab:green" if better else "tab:red")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_ttft_cdf(curves: dict[str, list[float]], path: str | Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, values in curves.items():
        v = np.sort(np.asarray([x for x in values if x is not None], dtype=float))
        if v.size:
            ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", label=f"{label} (n={v.size})")
    ax.set(xlabel="TTFT (ms)", ylabel="fraction of requests", title="TTFT CDF", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, Path(path))


def _x(points: list[tuple[float | None, Summary]]) -> tuple[np.ndarray, str]:
    if all(r is not None for r, _ in points):
        return np.array([r for r, _ in points], dtype=float), "offered load (req/s)"
    return np.array([s.request_throughput for _, s in points]), "achieved throughput (req/s)"


def plot_latency_vs_load(points: list[tuple[float | None, Summary]], path: str | Path) -> Path:
    x, xlabel = _x(points)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, metric in zip(axes, ("ttft_ms", "tpot_ms", "e2e_ms")):
        for p, style in zip(PCTS, ("o-", "s--", "^:")):
            y = [getattr(getattr(s, metric), p) for _, s in points]
            ax.plot(x, [np.nan if v is None else v for v in y], style, label=p)
        ax.set(xlabel=xlabel, ylabel=f"{metric[:-3].upper()} (ms)", title=f"{metric[:-3].upper()} vs load")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, Path(path))


def plot_throughput_vs_load(points: list[tuple[float | None, Summary]], path: str | Path) -> Path:
    x, xlabel = _x(points)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    a1.plot(x, [s.request_throughput for _, s in points], "o-", label="completed")
    if any(s.goodput is not None for _, s in points):
        a1.plot(x, [s.goodput if s.goodput is not None else np.nan for _, s in points], "s--", label="goodput")
    if all(r is not None for r, _ in points):
        a1.plot(x, x, color="gray", lw=0.8, ls=":", label="offered")
    a1.set(xlabel=xlabel, ylabel="requests/s", title="Request throughput vs load")
    a2.plot(x, [s.output_throughput for _, s in points], "o-", label="output tok/s")
    a2.plot(x, [s.total_token_throughput for _, s in points], "s--", label="total tok/s")
    a2.set(xlabel=xlabel, ylabel="tokens/s", title="Token throughput vs load")
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, Path(path))


def client_in_flight(records: list[RequestRecord], t: np.ndarray) -> np.ndarray:
    starts = np.array([r.sent_s for r in records if r.e2e_ms is not None])
    ends = np.array([r.sent_s + r.e2e_ms / 1e3 for r in records if r.e2e_ms is not None])
    if starts.size == 0:
        return np.zeros_like(t)
    return np.searchsorted(np.sort(starts), t, side="right") - np.searchsorted(np.sort(ends), t, side="right")


def plot_timeline(result: BenchResult, records: list[RequestRecord], path: str | Path) -> Path:
    tl = result.server_timeline
    end = max((r.sent_s + (r.e2e_ms or 0) / 1e3 for r in records), default=1.0)
    t = np.linspace(0, end, 400)
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    t = np.unique(np.concatenate([t, [r.sent_s for r in records], [r.sent_s + (r.e2e_ms or 0) / 1e3 for r in records]]))
    a1.step(t, client_in_flight(records, t), where="post", color="gray", lw=1, label="client in flight")
    if tl is not None and tl.t_s:
        nan = lambda xs: [np.nan if v is None else v for v in xs]  # noqa: E731
        poll = {"drawstyle": "steps-post", "marker": ".", "ms": 4}  # samples, held until the next poll
        a1.plot(tl.t_s, nan(tl.running), label="server running (sum)", **poll)
        a1.plot(tl.t_s, nan(tl.waiting), label="server waiting (sum)", **poll)
        a2.plot(tl.t_s, np.array(nan(tl.kv_usage)) * 100, color="k", label="KV usage (mean)", **poll)
        for key, vals in tl.per_replica.get("kv_usage", {}).items():
            if len(tl.per_replica["kv_usage"]) > 1:
                a2.plot(tl.t_s, np.array(nan(vals)) * 100, lw=0.7, alpha=0.6, label=key[:40], drawstyle="steps-post")
        a2.set(ylabel="KV cache usage (%)")
    else:
        ok = [r for r in records if r.ok]
        a2.scatter([r.sent_s for r in ok], [r.ttft_ms for r in ok], s=6, label="TTFT per request")
        a2.set(ylabel="TTFT (ms)")
    poll_s = f", server polled every {np.median(np.diff(tl.t_s)):.1f} s" if tl is not None and len(tl.t_s) > 2 else ""
    a1.set(ylabel="requests", title=f"{result.name}: load timeline{poll_s}")
    a2.set(xlabel="time since start (s)")
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    return _save(fig, Path(path))


def plot_run(result: BenchResult, records: list[RequestRecord], out: Path) -> list[Path]:
    paths = [plot_ttft_cdf({result.name: [r.ttft_ms for r in records if r.ok]}, out / "ttft_cdf.png"),
             plot_timeline(result, records, out / "timeline.png")]
    if len(result.per_stage) > 1:
        pts = [(s.offered_rate, s) for s in result.per_stage]
        paths += [plot_latency_vs_load(pts, out / "latency_vs_load.png"),
                  plot_throughput_vs_load(pts, out / "throughput_vs_load.png")]
    return paths


def plot_compare(cmp: CompareResult, path: str | Path, keys: list[str] | None = None) -> Path:
    keys = keys or [k for k in ("ttft_ms.p50", "ttft_ms.p99", "tpot_ms.p50", "tpot_ms.p99", "itl_ms.p50", "e2e_ms.p50",
                                "e2e_ms.p99", "request_throughput", "output_throughput", "goodput", "cache_hit_rate")
                    if k in cmp.metrics and cmp.metrics[k].ratio is not None]
    r = [cmp.metrics[k] for k in keys]
    y = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(keys) + 1.5))
    mid = np.array([m.median if m.median is not None else m.ratio for m in r])
    err = np.array([[v - (m.min if m.min is not None else v) for m, v in zip(r, mid)],
                    [(m.max if m.max is not None else v) - v for m, v in zip(r, mid)]])
    colors = [ratio_color(k, v) for k, v in zip(keys, mid)]
    ax.barh(y, mid - 1, left=1, xerr=err, color=colors, alpha=0.7, capsize=3)
    ax.axvline(1, color="k", lw=0.8)
    ax.set_yticks(y, keys)
    ax.invert_yaxis()
    invalid = "" if cmp.valid else "INVALID (see compare.json invalid_reasons) - "
    ax.set(xlabel=f"{cmp.label_a} / {cmp.label_b}: median, whiskers min-max over {cmp.phases} round(s)",
           title=f"{invalid}{cmp.name}: {cmp.label_a} vs {cmp.label_b}\ngreen: {cmp.label_a} better, red: worse, gray: within 2%")
    for yi, v in zip(y, mid):
        ax.text(v, yi, f" {v:.3f}", va="center", fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, Path(path))


SYSTEM_PANELS = (("ttft_ms.p50", "TTFT p50 (ms)", 1.0), ("ttft_ms.p99", "TTFT p99 (ms)", 1.0),
                 ("goodput", "goodput (req/s)", 1.0), ("cache_hit_rate", "KV cache hit (%)", 100.0))


def plot_systems(cmp: SystemsCompareResult, path: str | Path, panels=SYSTEM_PANELS) -> Path:
    """One panel per figure: a bar per system (mean over phases), dots per phase, ratio to the baseline on top."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 4.2))
    labels = [s.label for s in cmp.systems]
    x = np.arange(len(labels))
    for ax, (key, title, scale) in zip(np.atleast_1d(axes), panels):
        for xi, s in zip(x, cmp.systems):
            st = s.vs_baseline.get(key)
            vals = [v * scale for v in (st.a if st else []) if v is not None]
            if not vals:
                ax.text(xi, 0, "n/a", ha="center", va="bottom", fontsize=8)
                continue
            base = s.label == cmp.baseline
            ax.bar(xi, np.mean(vals), color="lightgray" if base else "tab:blue", edgecolor="k", lw=0.6,
                   hatch="//" if base else None)
            ax.plot([xi] * len(vals), vals, "k.", ms=5)
            if not base and st.ratio is not None:
                med = st.median if st.median is not None else st.ratio
                color = ratio_color(key, med)
                spread = f"\n{st.min:.2f}-{st.max:.2f}" if len(vals) > 1 else ""
                ax.text(xi, max(vals), f"x{med:.2f}{spread}", ha="center", va="bottom", fontsize=7, color=color)
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="y")
        ax.margins(y=0.18)
    fig.suptitle(f"{'' if cmp.valid else 'INVALID (see invalid_reasons) - '}{cmp.name}: {len(labels)} systems x "
                 f"{cmp.phases} round(s), ratios vs {cmp.baseline} (hatched); dots: phases, text: median ratio and "
                 "min-max over rounds", fontsize=9)
    return _save(fig, Path(path))
