"""The decision-trace plots (PNG, matplotlib Agg), one function per figure; each returns its path (None: no data)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from . import analysis as A  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _short(rid: str) -> str:
    return rid[-8:]


def plot_load(tr: A.Traces, path: Path) -> Path | None:
    series = A.load_series(tr)
    if not series:
        return None
    fig, axes = plt.subplots(3, 1, figsize=(9, 7.5), sharex=True)
    for rid, s in sorted(series.items()):
        for ax, key in zip(axes, ("waiting", "running", "kv")):
            ax.plot(s["t"], s[key], lw=1, label=_short(rid))
    for ax, label in zip(axes, ("waiting (queue)", "running (batch)", "KV cache usage")):
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_title("per-replica load " + ("(load samples)" if tr.loads else "(as the decisions saw it)"))
    axes[0].legend(fontsize=7, ncol=4)
    axes[-1].set_xlabel("time (s)")
    return _save(fig, path)


def plot_verdicts(tr: A.Traces, width: float, path: Path) -> Path | None:
    starts, shares = A.verdict_shares(tr, width)
    if not starts:
        return None
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.stackplot(starts, *shares.values(), labels=list(shares), step="post", alpha=0.85)
    missed = [0.0] * len(starts)
    counts = [0] * len(starts)
    for d in tr.decisions:
        b = int((d["t"] - tr.t0) // width)
        counts[b] += 1
        missed[b] += A.best_hit_missed(d)
    ax.plot(starts, [m / c if c else 0 for m, c in zip(missed, counts)], "k--", drawstyle="steps-post",
            label="best predicted hit not used")
    ax.set(xlabel=f"time (s, {width:g} s bins)", ylabel="share of decisions", ylim=(0, 1),
           title="affinity verdicts over time")
    ax.legend(fontsize=8, loc="upper right")
    return _save(fig, path)


def plot_groups(tr: A.Traces, width: float, path: Path, top: int = 12) -> Path | None:
    spread = A.group_spread(tr)
    if not spread:
        return None
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 7))
    hot = sorted(spread, key=lambda g: -len(spread[g]))[:top]
    for g in hot:
        pts = spread[g]
        ax1.step([t for t, _ in pts], [n for _, n in pts], where="post", lw=1.2, label=f"{g[:8]} ({len(pts)} req)")
    ax1.set(xlabel="time (s)", ylabel="replicas sent to (so far)",
            title=f"the {len(hot)} hottest prefix groups: pinned (1) or scattered")
    ax1.legend(fontsize=7, ncol=3)
    ax1.grid(alpha=0.3)
    window = 3 * width  # wider than the other plots' bins: a group needs 2+ requests in one
    starts, means, scattered = A.spread_by_bin(tr, window)
    ax2.step(starts, means, where="post", label="mean replicas per group (groups with 2+ requests in the bin)")
    ax2.set(xlabel=f"time (s, {window:g} s bins)", ylabel="replicas per group")
    if not starts:
        ax2.text(0.5, 0.5, "no group had 2+ requests in one bin", ha="center", transform=ax2.transAxes)
    ax2.grid(alpha=0.3)
    twin = ax2.twinx()
    twin.step(starts, scattered, where="post", color="tab:red", label="share of groups scattered")
    twin.set(ylabel="share scattered", ylim=(0, 1.02))
    ax2.legend(loc="upper left", fontsize=8)
    twin.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def plot_sessions(tr: A.Traces, width: float, path: Path) -> Path | None:
    sess = [d for d in tr.decisions if A.session_replica(d) is not None]
    if not sess:
        return None
    bins: dict[int, list[int]] = {}
    for d in sess:
        b = bins.setdefault(int((d["t"] - tr.t0) // width), [0, 0])
        b[0] += A.session_busy(d)
        b[1] += 1
    keys = sorted(bins)
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.bar([k * width for k in keys], [bins[k][0] / bins[k][1] for k in keys], width=width * 0.9, align="edge")
    ax.set(xlabel=f"time (s, {width:g} s bins)", ylabel="share", ylim=(0, 1),
           title="session affinity held on the busiest replica (share of decisions with session history)")
    return _save(fig, path)


def plot_hits(tr: A.Traces, width: float, pairs: Sequence[tuple[dict, dict]], path: Path) -> Path | None:
    starts, pred, real = A.hit_rates(tr, width)
    joined = A.hit_pairs(pairs)
    if not starts and not joined:
        return None
    fig, axes = plt.subplots(1, 2 if joined else 1, figsize=(12 if joined else 9, 4), squeeze=False)
    ax = axes[0][0]
    ax.step(starts, A.finite(pred), where="post", label="predicted (router)")
    ax.step(starts, A.finite(real), where="post", label="realised (engines' prefix cache)")
    ax.set(xlabel=f"time (s, {width:g} s bins)", ylabel="hit rate (tokens)", ylim=(0, 1.02),
           title="predicted vs realised prefix hit rate")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if joined:
        ax = axes[0][1]
        xs, ys = zip(*joined)
        ax.scatter(xs, ys, s=8, alpha=0.5)
        top = max(max(xs), max(ys), 1)
        ax.plot([0, top], [0, top], "k:", lw=1)
        ax.set(xlabel="predicted hit tokens", ylabel="cached tokens (server)", title=f"per request (n={len(xs)})")
    return _save(fig, path)


def plot_ttft(pairs: Sequence[tuple[dict, dict]], path: Path) -> Path | None:
    groups: dict[str, list[float]] = {}
    for d, r in pairs:
        if r.get("ttft_ms") is not None:
            groups.setdefault(A.verdict(d), []).append(r["ttft_ms"])
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    names = sorted(groups)
    ax.boxplot([groups[n] for n in names], showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), [f"{n}\n(n={len(groups[n])})" for n in names])
    ax.set(ylabel="TTFT (ms)", title="TTFT by the decision's affinity verdict")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def plot_all(tr: A.Traces, out: Path, pairs: Sequence[tuple[dict, dict]] = (), width: float | None = None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    width = width or A.bin_width(tr)
    made = [plot_load(tr, out / "load.png"), plot_verdicts(tr, width, out / "verdicts.png"),
            plot_groups(tr, width, out / "prefix_groups.png"), plot_sessions(tr, width, out / "sessions.png"),
            plot_hits(tr, width, pairs, out / "hits.png"), plot_ttft(pairs, out / "ttft_by_verdict.png")]
    return [p for p in made if p is not None]
