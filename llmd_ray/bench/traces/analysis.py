"""Reading decision traces (``llmd_ray.routing.trace``) and the tables the plots and the summary are made of.

Pure: JSON in, lists and dicts out (no matplotlib). Times are seconds since the first record of all files.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NO_FILTER = "no_affinity_filter"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(slots=True)
class Traces:
    """Every line of every file, by kind; decisions carry ``replica`` (where Ray really sent them)."""

    headers: list[dict] = field(default_factory=list)
    decisions: list[dict] = field(default_factory=list)
    loads: list[dict] = field(default_factory=list)
    dropped: int = 0
    t0: float = 0.0


def trace_files(paths: Iterable[str | Path]) -> list[Path]:
    """The files named, and the ``decisions-*.jsonl`` files under the directories named."""
    out: list[Path] = []
    for p in map(Path, paths):
        out += sorted(p.rglob("decisions-*.jsonl")) if p.is_dir() else [p]
    return out


def read(paths: Iterable[str | Path]) -> Traces:
    tr, routed = Traces(), {}
    for path in trace_files(paths):
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash mid-write
                continue
            kind = rec.get("kind")
            if kind == "decision":
                tr.decisions.append(rec)
            elif kind == "load":
                rec["router"] = str(path)  # the engines' counters are diffed per router's samples
                tr.loads.append(rec)
            elif kind == "routed":
                routed[rec["request_id"]] = rec["replica"]
            elif kind == "header":
                tr.headers.append(rec)
            elif kind == "dropped":
                tr.dropped += rec.get("n", 0)
    for d in tr.decisions:
        d["replica"] = routed.get(d["request_id"], d.get("chosen"))
    tr.decisions.sort(key=lambda d: d["t"])
    tr.loads.sort(key=lambda r: r["t"])
    times = [d["t"] for d in tr.decisions] + [r["t"] for r in tr.loads]
    tr.t0 = min(times) if times else 0.0
    return tr


def verdict(d: dict) -> str:
    return d.get("verdict") or NO_FILTER


def bin_width(tr: Traces, bins: int = 30) -> float:
    """Seconds per time bin: the span over ``bins``, at least 1 s."""
    times = [d["t"] for d in tr.decisions] + [r["t"] for r in tr.loads]
    span = (max(times) - min(times)) if times else 0.0
    return max(1.0, span / bins)


def _bin(t: float, t0: float, width: float) -> int:
    return int((t - t0) // width)


# ------------------------------------------------------------------------------------------- load
def load_series(tr: Traces) -> dict[str, dict[str, list[float]]]:
    """Per replica: ``t``, ``waiting``, ``running``, ``kv``, ``in_flight`` over time (load lines; without them
    the candidates' stats as each decision saw them)."""
    out: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    rows = ((r["t"], r["replicas"]) for r in tr.loads) if tr.loads else ((d["t"], d["candidates"]) for d in tr.decisions)
    for t, reps in rows:
        for c in reps:
            s = out[c["id"]]
            s["t"].append(t - tr.t0)
            for k in ("waiting", "running", "kv", "in_flight"):
                s[k].append(c.get(k) or 0)
    return {k: dict(v) for k, v in out.items()}


# -------------------------------------------------------------------------------------- verdicts
def verdict_shares(tr: Traces, width: float) -> tuple[list[float], dict[str, list[float]]]:
    """Bin start times and, per verdict, its share of the bin's decisions."""
    counts: dict[int, Counter] = defaultdict(Counter)
    for d in tr.decisions:
        counts[_bin(d["t"], tr.t0, width)][verdict(d)] += 1
    if not counts:
        return [], {}
    bins = list(range(max(counts) + 1))
    names = sorted({v for c in counts.values() for v in c})
    shares = {v: [counts[b][v] / max(1, sum(counts[b].values())) for b in bins] for v in names}
    return [b * width for b in bins], shares


def best_hit_missed(d: dict) -> bool:
    """The replica used predicted fewer hit tokens than the best candidate: cache gain given up."""
    hits = {c["id"]: c.get("hit_tokens", 0) for c in d["candidates"]}
    return bool(hits) and hits.get(d["replica"], 0) < max(hits.values())


# -------------------------------------------------------------------------------- prefix groups
def group_spread(tr: Traces) -> dict[str, list[tuple[float, int]]]:
    """Per prefix group (first block hash): (time, replicas it was sent to so far), at each of its decisions."""
    seen: dict[str, set] = defaultdict(set)
    out: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for d in tr.decisions:
        g = d.get("group")
        if g is None or d.get("replica") is None:
            continue
        seen[g].add(d["replica"])
        out[g].append((d["t"] - tr.t0, len(seen[g])))
    return dict(out)


def spread_by_bin(tr: Traces, width: float, min_decisions: int = 2) -> tuple[list[float], list[float], list[float]]:
    """Per bin, over groups with ``min_decisions`` or more decisions in it: the mean replicas a group went to,
    and the share of such groups sent to more than one (scattered)."""
    per: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for d in tr.decisions:
        if d.get("group") is not None and d.get("replica") is not None:
            per[_bin(d["t"], tr.t0, width)][d["group"]].append(d["replica"])
    starts, means, scattered = [], [], []
    for b in sorted(per):
        spreads = [len(set(r)) for r in per[b].values() if len(r) >= min_decisions]
        if spreads:
            starts.append(b * width)
            means.append(sum(spreads) / len(spreads))
            scattered.append(sum(s > 1 for s in spreads) / len(spreads))
    return starts, means, scattered


# ------------------------------------------------------------------------------------- sessions
def session_replica(d: dict) -> str | None:
    """The session's replica: the candidate a session-affinity scorer scored (None: no history)."""
    for c in d["candidates"]:
        if any(s > 0 for n, s in (c.get("scores") or {}).items() if "session" in n):
            return c["id"]
    return None


def queue(c: dict) -> int:
    """A candidate's queue: the reported waiting count, or the router's in-flight beyond the running batch."""
    return max(c.get("waiting", 0), c.get("in_flight", 0) - c.get("running", 0), 0)


def session_busy(d: dict) -> bool:
    """The request went to its session's replica although that one had the longest queue (strictly)."""
    home = session_replica(d)
    if home is None or d.get("replica") != home or len(d["candidates"]) < 2:
        return False
    queues = {c["id"]: queue(c) for c in d["candidates"]}
    mine = queues.pop(home)
    return mine > max(queues.values())


# ------------------------------------------------------------------------------------------- hits
def hit_rates(tr: Traces, width: float) -> tuple[list[float], list[float | None], list[float | None]]:
    """Per bin, fleet-wide: the predicted hit rate of the decisions (hit tokens on the replica used / prompt tokens)
    and the engines' realised prefix-cache hit rate (their cumulative hits/queries counters' growth)."""
    pred: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for d in tr.decisions:
        hit = next((c.get("hit_tokens", 0) for c in d["candidates"] if c["id"] == d.get("replica")), 0)
        p = pred[_bin(d["t"], tr.t0, width)]
        p[0] += hit
        p[1] += d.get("tokens", 0)
    real: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
    last: dict[tuple, tuple[float, float]] = {}
    for r in tr.loads:
        for c in r["replicas"]:
            key = (c["id"], r.get("router"))
            h, q = float(c.get("hits") or 0), float(c.get("queries") or 0)
            if key in last:
                dh, dq = h - last[key][0], q - last[key][1]
                if dh >= 0 and dq > 0:  # a restarted engine's counters start again: skip that step
                    b = real[_bin(r["t"], tr.t0, width)]
                    b[0] += dh
                    b[1] += dq
            last[key] = (h, q)
    bins = sorted(set(pred) | set(real))
    return ([b * width for b in bins], [pred[b][0] / pred[b][1] if pred[b][1] else None for b in bins],
            [real[b][0] / real[b][1] if real[b][1] else None for b in bins])


# ----------------------------------------------------------------------------- harness results
def join_key(request_id: str) -> str:
    """What a server's request id and the client's share: the first UUID in it (else the id itself)."""
    m = _UUID.search(request_id)
    return m.group(0) if m else request_id


def read_requests(path: str | Path) -> list[dict]:
    """A harness run's per-request records (``requests.jsonl``, or a directory holding one)."""
    p = Path(path)
    if p.is_dir():
        p = next(iter(sorted(p.rglob("requests.jsonl"))), p / "requests.jsonl")
    return [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]


def join(tr: Traces, requests: Sequence[dict]) -> list[tuple[dict, dict]]:
    """(decision, request record) pairs with the same request id (the last decision of each request)."""
    by_key = {join_key(r["request_id"]): r for r in requests if r.get("request_id")}
    last = {join_key(d["request_id"]): d for d in tr.decisions}
    return [(d, by_key[k]) for k, d in last.items() if k in by_key]


def hit_pairs(pairs: Sequence[tuple[dict, dict]]) -> list[tuple[int, int]]:
    """(predicted hit tokens on the replica used, cached tokens the server reported) per joined request."""
    out = []
    for d, r in pairs:
        if r.get("cached_tokens") is not None:
            hit = next((c.get("hit_tokens", 0) for c in d["candidates"] if c["id"] == d.get("replica")), 0)
            out.append((hit, r["cached_tokens"]))
    return out


def pct(xs: Sequence[float], p: float) -> float | None:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else None


def ttft_by(pairs: Sequence[tuple[dict, dict]], key) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[float]] = defaultdict(list)
    for d, r in pairs:
        if r.get("ttft_ms") is not None:
            groups[str(key(d))].append(r["ttft_ms"])
    return {k: {"n": len(v), "p50_ms": pct(v, 50), "p90_ms": pct(v, 90)} for k, v in sorted(groups.items())}


# ------------------------------------------------------------------------------------- summary
def summary(tr: Traces, pairs: Sequence[tuple[dict, dict]] = ()) -> dict[str, Any]:
    n = len(tr.decisions)
    spreads = [s[-1][1] for s in group_spread(tr).values() if len(s) >= 2]
    sess = [d for d in tr.decisions if session_replica(d) is not None]
    busy = [d for d in sess if session_busy(d)]
    missed = Counter(verdict(d) for d in tr.decisions if best_hit_missed(d))
    out = {
        "routers": len(tr.headers), "decisions": n, "load_samples": len(tr.loads), "dropped": tr.dropped,
        "span_s": round(max((d["t"] for d in tr.decisions), default=tr.t0) - tr.t0, 3),
        "verdicts": dict(Counter(verdict(d) for d in tr.decisions).most_common()),
        "rerouted_by_ray": sum(d.get("replica") != d.get("chosen") for d in tr.decisions),
        "best_hit_missed": {"n": sum(missed.values()), "share": round(sum(missed.values()) / n, 4) if n else None,
                            "by_verdict": dict(missed.most_common())},
        "prefix_groups": {"groups": len(group_spread(tr)), "with_2_or_more": len(spreads),
                          "pinned": sum(s == 1 for s in spreads), "scattered": sum(s > 1 for s in spreads),
                          "max_replicas": max(spreads, default=0)},
        "session_affinity": {"decisions_with_history": len(sess), "held_on_busiest": len(busy),
                             "share": round(len(busy) / len(sess), 4) if sess else None},
    }
    if pairs:
        out["joined_requests"] = len(pairs)
        out["ttft_by_verdict"] = ttft_by(pairs, verdict)
        out["ttft_by_best_hit_missed"] = ttft_by(pairs, best_hit_missed)
        out["ttft_by_session_held_on_busiest"] = ttft_by(pairs, session_busy)
    return out


def finite(xs: Iterable[float | None]) -> list[float]:
    return [x if x is not None and math.isfinite(x) else math.nan for x in xs]
