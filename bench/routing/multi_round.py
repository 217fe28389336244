"""Routing on the multi-round QA workloads (issue 15 item 5): every router on every workload, at a load fixed
from pow-2's saturated throughput, in interleaved rounds.

Three steps, each writing under ``--out`` (default ``bench/results/routing/multi_round``):

``saturate``: for each workload, pow-2 (``serve_pow2_pressure.yaml``) under overload, one run: ``--sessions``
sessions (default 192) arriving at ``--rate`` sessions/s (default 8), so ~190 users keep asking (3 s think
time: ~60 req/s offered, far above what 2 engines serve); its request throughput (completed / run time) is
pow-2's saturated throughput on that workload -> ``saturation.json``. (With the workloads' own 48 sessions
the think time caps the offered load: the hot-spot workload reached 14 req/s with 7 in flight, not saturated.)

``compare --load 1.2``: for each workload, sessions arrive at ``load x saturated req/s / turns per session``
(sessions/s), fixed before any router is run; the harness's N-systems compare (``--system``, interleaved
rounds, each phase its own ``serve run``, validity checked) -> ``load_1.2/<workload>/compare_systems.json``.

``hits``: cached fraction of prompt tokens on first turns (the shared system prompt) and later turns (the
session's history too), per router -> ``hits_by_turn.md`` / ``.json``: where hits are won or lost.

``table``: workload x router x figure (median and min-max over rounds, and the ratio to pow-2) and each
target of the issue marked met or missed -> ``table.md`` and ``table.json``.

    .venv/bin/python bench/routing/multi_round.py saturate
    .venv/bin/python bench/routing/multi_round.py compare --load 1.2 --phases 3
    .venv/bin/python bench/routing/multi_round.py table

Systems (``--systems``): ``pow2`` (Ray Serve's power-of-two router, the baseline), ``llmd-default``
(``build_app``'s default profile), ``llmd-predicted`` (the predicted-latency picker), ``llmd-hold`` (the
default with ``releaseWhen: faster``), ``llmd-strict`` (that with ``warmFraction: 1.0`` and a 1 s release
margin), ``ray-serve-llm`` (Ray
Serve LLM's PrefixCacheAffinityRouter, ``bench/routing/peers/ray_serve_llm.py``, needs the ``peers`` extra).
Flags the script does not know go to the harness.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PY = sys.executable
WORKLOADS = {"multi_round_qa": HERE / "multi_round_qa.yaml", "hotspot": HERE / "multi_round_qa_hotspot.yaml",
             "prefix_mix": HERE / "multi_round_qa_prefix_mix.yaml"}
SYSTEMS = {"pow2": f"serve:{HERE / 'serve_pow2_pressure.yaml'}",
           "llmd-default": f"serve:{HERE / 'serve_llmd_default_pressure.yaml'}",
           "llmd-predicted": f"serve:{HERE / 'serve_llmd_predicted_pressure.yaml'}",
           "llmd-hold": f"serve:{HERE / 'serve_llmd_hold_pressure.yaml'}",
           "llmd-strict": f"serve:{HERE / 'serve_llmd_strict_pressure.yaml'}",
           "ray-serve-llm": f"cmd:{PY} {HERE / 'peers' / 'ray_serve_llm.py'}"}  # 128 KV blocks, its own
FIGURES = ("ttft_ms.p50", "ttft_ms.p90", "ttft_ms.p99", "goodput", "cache_hit_rate", "tpot_ms.p50",
           "request_throughput", "failed")


def harness(args: list[str]) -> None:
    cmd = [PY, "-m", "llmd_ray.bench", "run", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def saturate(ns, extra: list[str]) -> None:
    out = {}
    path = ns.out / "saturation.json"
    if path.exists():
        out = json.loads(path.read_text())
    for name in ns.workloads:
        run_dir = ns.out / "saturation" / name
        if not (run_dir / "result.json").exists():  # a workload already measured is kept (delete its dir to redo)
            harness([str(WORKLOADS[name]), "--rate", str(ns.rate), "--num-sessions", str(ns.sessions), "--serve-config", str(HERE / "serve_pow2_pressure.yaml"),
                     "--base-url", "http://127.0.0.1:8000", "--out", str(run_dir), *extra])
        result = json.loads((run_dir / "result.json").read_text())
        s = result["summary"]
        out[name] = {"offered_sessions_per_s": ns.rate, "sessions": ns.sessions, "max_in_flight": s.get("max_in_flight"), "request_throughput": s["request_throughput"],
                     "completed": s["completed"], "failed": s["failed"], "duration_s": s["duration_s"],
                     "ttft_ms_p50": get(s, "ttft_ms.p50"),
                     "host_load": result.get("host_load")}
        path.write_text(json.dumps(out, indent=1, default=str))
        print(f"{name}: pow-2 saturated at {s['request_throughput']:.3f} req/s", flush=True)


def session_rate(workload: Path, saturated_rps: float, load: float) -> float:
    spec = yaml.safe_load(workload.read_text())
    return load * saturated_rps / int(spec["workload"]["turns_per_session"])


def compare(ns, extra: list[str]) -> None:
    sat = json.loads((ns.out / "saturation.json").read_text())
    for name in ns.workloads:
        rate = session_rate(WORKLOADS[name], sat[name]["request_throughput"], ns.load)
        systems = [a for s in ns.systems for a in ("--system", f"{s}={SYSTEMS[s]}")]
        harness([str(WORKLOADS[name]), "--rate", f"{rate:.4f}", *systems, "--baseline", "pow2",
                 "--phases", str(ns.phases), "--base-url", "http://127.0.0.1:8000",
                 "--out", str(ns.out / f"load_{ns.load:g}" / name), *extra])


def summarize(values: list[float | None]) -> dict | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "rounds": vals}


def phase_summary(run_dir: Path, rel: str) -> dict:
    return json.loads((run_dir / rel).read_text())["summary"]


def get(summary: dict, figure: str) -> float | None:
    node = summary
    for part in figure.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, (int, float)) else None


def table(ns, extra: list[str]) -> None:
    rows, verdicts = [], []
    for load_dir in sorted(ns.out.glob("load_*")):
        load = load_dir.name.removeprefix("load_")
        for name in WORKLOADS:
            path = load_dir / name / "compare_systems.json"
            if not path.exists():
                continue
            comp = json.loads(path.read_text())
            for system in comp["systems"]:
                sums = [phase_summary(load_dir / name, r) for r in system["results"] if r]
                row = {"load": load, "workload": name, "system": system["label"], "valid": comp["valid"],
                       "invalid_reasons": comp.get("invalid_reasons"), "errors": system.get("errors"),
                       "abs": {f: summarize([get(s, f) for s in sums]) for f in FIGURES},
                       "vs_pow2": {f: system["vs_baseline"].get(f) for f in FIGURES}}
                rows.append(row)
    peer = {(r["load"], r["workload"]): r for r in rows if r["system"] == "ray-serve-llm"}
    for r in rows:
        if r["system"] == "pow2":
            continue
        t, g = r["vs_pow2"].get("ttft_ms.p50") or {}, r["vs_pow2"].get("goodput") or {}
        v = {"load": r["load"], "workload": r["workload"], "system": r["system"],
             "ttft_p50_ratio": t.get("median"), "ttft_p50_le_0.5": _le(t.get("median"), 0.5),
             "goodput_ratio": g.get("median"), "goodput_ge_1.5": _ge(g.get("median"), 1.5),
             "not_worse": _le(t.get("median"), 1.0) and _ge(g.get("median"), 1.0)}
        other = peer.get((r["load"], r["workload"]))
        if other is not None and other is not r:  # TTFT p50 over Ray Serve LLM's, round by round (interleaved)
            mine, theirs = (r["abs"]["ttft_ms.p50"] or {}).get("rounds", []), (other["abs"]["ttft_ms.p50"] or {}).get("rounds", [])
            ratio = summarize([a / b for a, b in zip(mine, theirs) if b])
            v["vs_ray_serve_llm"] = ratio
            v["le_0.8_ray_serve_llm"] = _le(ratio and ratio["median"], 0.8)
        verdicts.append(v)
    (ns.out / "table.json").write_text(json.dumps({"rows": rows, "verdicts": verdicts}, indent=1, default=str))
    (ns.out / "table.md").write_text(markdown(rows, verdicts))
    print(markdown(rows, verdicts))


def hits(ns, extra: list[str]) -> None:
    """Where the cache hits are won or lost: cached fraction of prompt tokens on first turns (only the shared
    system prompt can hit) and on later turns (the session's own history too), per system, median over rounds."""
    out, lines = [], ["| load | workload | router | first turns: cached % | later turns: cached % |", "|---|---|---|---|---|"]
    for load_dir in sorted(ns.out.glob("load_*")):
        for name in WORKLOADS:
            path = load_dir / name / "compare_systems.json"
            if not path.exists():
                continue
            for system in json.loads(path.read_text())["systems"]:
                first, later = [], []
                for rel in (r for r in system["results"] if r):
                    by_turn = {True: [0, 0], False: [0, 0]}
                    with open(load_dir / name / Path(rel).parent / "requests.jsonl") as f:
                        for line in f:
                            r = json.loads(line)
                            if r.get("ok"):
                                acc = by_turn[r.get("turn", 0) == 0]
                                acc[0] += r.get("cached_tokens") or 0
                                acc[1] += r.get("input_tokens") or 0
                    first.append(by_turn[True][0] / max(1, by_turn[True][1]))
                    later.append(by_turn[False][0] / max(1, by_turn[False][1]))
                row = {"load": load_dir.name.removeprefix("load_"), "workload": name, "system": system["label"],
                       "first_turn_cached": summarize(first), "later_turns_cached": summarize(later)}
                out.append(row)
                lines.append(f"| {row['load']}x | {name} | {row['system']} | {_fmt(row['first_turn_cached'], 100, 1)} "
                             f"| {_fmt(row['later_turns_cached'], 100, 1)} |")
    (ns.out / "hits_by_turn.json").write_text(json.dumps(out, indent=1))
    (ns.out / "hits_by_turn.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _le(v, bound):
    return None if v is None else v <= bound


def _ge(v, bound):
    return None if v is None else v >= bound


def _fmt(stat: dict | None, scale: float = 1.0, digits: int = 0) -> str:
    if not stat:
        return "-"
    m, lo, hi = (stat[k] * scale for k in ("median", "min", "max"))
    return f"{m:,.{digits}f} ({lo:,.{digits}f}-{hi:,.{digits}f})"


def markdown(rows: list[dict], verdicts: list[dict]) -> str:
    head = ("| load | workload | router | TTFT p50 ms | vs pow2 | TTFT p99 ms | goodput req/s | vs pow2 | KV hit % "
            "| TPOT p50 ms | failed | valid |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        a, v = r["abs"], r["vs_pow2"]
        lines.append(f"| {r['load']}x | {r['workload']} | {r['system']} | {_fmt(a['ttft_ms.p50'])} | "
                     f"{_fmt(v.get('ttft_ms.p50'), digits=2)} | {_fmt(a['ttft_ms.p99'])} | "
                     f"{_fmt(a['goodput'], digits=2)} | {_fmt(v.get('goodput'), digits=2)} | "
                     f"{_fmt(a['cache_hit_rate'], 100, 1)} | {_fmt(a['tpot_ms.p50'])} | "
                     f"{_fmt(a['failed'])} | {'yes' if r['valid'] else 'NO'} |")
    out = head + "\n".join(lines) + ("\n\n| load | workload | router | TTFT p50 <= 0.5x | goodput >= 1.5x | not worse "
                                    "| TTFT p50 <= 0.8x Ray Serve LLM |\n")
    out += "|---|---|---|---|---|---|---|\n"
    word = {True: "met", False: "MISSED", None: "-"}
    for v in verdicts:
        out += (f"| {v['load']}x | {v['workload']} | {v['system']} | {word[v['ttft_p50_le_0.5']]} "
                f"({_num(v['ttft_p50_ratio'])}) | {word[v['goodput_ge_1.5']]} ({_num(v['goodput_ratio'])}) | "
                f"{word[v['not_worse']]} | {word[v.get('le_0.8_ray_serve_llm')]} "
                f"({_fmt(v.get('vs_ray_serve_llm'), digits=2)}) |\n")
    return out


def _num(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=("saturate", "compare", "table", "hits"))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "routing" / "multi_round")
    p.add_argument("--workloads", type=lambda s: s.split(","), default=list(WORKLOADS))
    p.add_argument("--systems", type=lambda s: s.split(","), default=["pow2", "llmd-default", "llmd-predicted"])
    p.add_argument("--rate", type=float, default=8.0, help="saturate: offered sessions/s (an overload)")
    p.add_argument("--sessions", type=int, default=192, help="saturate: sessions in the overload run")
    p.add_argument("--load", type=float, default=1.2, help="compare: x pow-2's saturated request throughput")
    p.add_argument("--phases", type=int, default=3)
    ns, extra = p.parse_known_args(argv)
    ns.out = ns.out if ns.out.is_absolute() else ROOT / ns.out
    {"saturate": saturate, "compare": compare, "table": table, "hits": hits}[ns.step](ns, extra)


if __name__ == "__main__":
    main()
