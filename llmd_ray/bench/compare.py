"""A/B and N-way compares: the same seeded workload against several servers, interleaved.

Phases run A B A B A B ... (`phases` rounds, 3 by default), so drift on the
machine (thermal, background jobs, cache state) hits both sides alike. Every
summary figure is reported as the ratio A/B: the median over rounds of
A_i/B_i with its min-max (mean and std kept too). Each phase records the
host's load and the harness's send lag (llmd_ray.bench.hostload); the
comparison is marked `valid: false` with `invalid_reasons` when they break
the thresholds, and the printed report opens with a banner. A_i and B_i send identical prompts;
pair i+1 uses fresh prompt content (same lengths, same arrival times) so a
server cannot be helped by prefix-cache hits from its previous phase. With
`unique_prompts` every phase gets its own content (use it for A/A runs
against one server). Each side can be a running URL or a server command
(`serve run X.yaml`, a vLLM server) started before and stopped after each
phase, one at a time.

`run_systems` generalises this to N systems (`--system LABEL=url:|serve:|cmd:`):
rounds run A B C ... A B C ..., round i uses salt i for every system (or
N*i+k with unique prompts), and every figure is reported as system/baseline
over the rounds. A phase that fails (server does not start, all requests
fail) is recorded with its error and the run goes on with the others.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .benchmark import RunRequest, run_benchmark
from .config import BenchConfig
from .metrics import flatten
from .hostload import banner, check_validity, load_lines
from .report import write_json
from .schema import (BenchResult, ClientOverhead, CompareResult, PhaseLoad, RatioStat, SystemRuns, SystemsCompareResult,
                     SystemSpec, ValidityThresholds)
from .server import ServerProcess, health_path_for, serve_run_command

HEADLINE = ("ttft_ms.p50", "ttft_ms.p99", "tpot_ms.p50", "itl_ms.p50", "e2e_ms.p50", "e2e_ms.p99",
            "request_throughput", "output_throughput", "goodput", "cache_hit_rate", "success_rate")


@dataclass
class Side:
    label: str
    base_url: str
    command: list[str] | None = None   # start this server for each phase (None: already running)
    env: dict = field(default_factory=dict)
    startup_timeout_s: float = 900.0
    health_path: str = "/v1/models"    # answers 200 once the server is ready


def ratio_stats(a_vals: list[float | None], b_vals: list[float | None]) -> RatioStat:
    pairs = [(a, b) for a, b in zip(a_vals, b_vals) if a is not None and b not in (None, 0)]
    ratios = [a / b for a, b in pairs]
    if not ratios:
        return RatioStat(a=a_vals, b=b_vals)
    return RatioStat(ratio=statistics.fmean(ratios), median=statistics.median(ratios), min=min(ratios), max=max(ratios),
                     std=statistics.stdev(ratios) if len(ratios) > 1 else 0.0, rounds=len(ratios), a=a_vals, b=b_vals)


def interleave(n_systems: int, rounds: int, rotate: bool = False) -> list[tuple[int, int]]:
    """(round, system index) in run order: round-robin, A B A B A B for two systems, A B C A B C ... for three;
    rotate: round i starts at system i mod N (A B C, B C A, C A B), so no system always runs first or last."""
    return [(i, (i + j) % n_systems if rotate else j) for i in range(rounds) for j in range(n_systems)]


def verdict(cmp: CompareResult | SystemsCompareResult) -> None:
    """Set cmp.valid / cmp.invalid_reasons from its phase_loads and thresholds."""
    cmp.invalid_reasons = check_validity(cmp.phase_loads, cmp.thresholds)
    cmp.valid = not cmp.invalid_reasons


def compare_results(results_a: list[BenchResult], results_b: list[BenchResult]) -> dict[str, RatioStat]:
    fa = [flatten(r.summary) for r in results_a]
    fb = [flatten(r.summary) for r in results_b]
    keys = sorted(set().union(*fa, *fb))
    return {k: ratio_stats([f.get(k) for f in fa], [f.get(k) for f in fb]) for k in keys}


async def _phase(cfg: BenchConfig, side: Side, out: Path, salt: int, i: int, progress: bool,
                 overhead: ClientOverhead | None, plots: bool, timing: dict | None = None) -> BenchResult:
    server = None
    if side.command:
        server = ServerProcess(side.command, side.base_url, health_path=side.health_path, env=side.env,
                               log_path=out.with_suffix(".server.log"), startup_timeout_s=side.startup_timeout_s)
        print(f"[compare] starting {side.label}: {' '.join(side.command)}", file=sys.stderr)
        out.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        try:
            await asyncio.to_thread(server.start)
        except BaseException:
            await asyncio.to_thread(server.stop)  # a command that died early may leave children behind
            raise
        if timing is not None:
            timing["startup_s"] = time.monotonic() - t0
    try:
        req = RunRequest(base_url=side.base_url, out_dir=out, salt=salt, label=f"{side.label}#{i}", progress=progress,
                         client_overhead=overhead, plots=plots)
        return await run_benchmark(cfg, req)
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)


def _one_rate(cfg: BenchConfig) -> BenchConfig:
    if cfg.load.rates and len(cfg.load.rates) > 1:
        raise ValueError("compare mode runs one load point: give a single rate")
    if cfg.load.rates:
        cfg = cfg.model_copy(update={"load": cfg.load.model_copy(update={"rate": cfg.load.rates[0], "rates": None})})
    return cfg


async def run_compare(cfg: BenchConfig, a: Side, b: Side, phases: int = 3, out_dir: str | Path = "out/compare",
                      unique_prompts: bool = False, progress: bool = True, overhead: ClientOverhead | None = None,
                      plots: bool = True, thresholds: ValidityThresholds | None = None,
                      rotate: bool = False) -> CompareResult:
    cfg = _one_rate(cfg)
    out = Path(out_dir)
    res: tuple[list[BenchResult], list[BenchResult]] = ([], [])
    loads: list[PhaseLoad] = []
    for i, k in interleave(2, phases, rotate):
        salt = 2 * i + k if unique_prompts else i
        name = f"{'AB'[k]}_phase{i}"
        r = await _phase(cfg, (a, b)[k], out / name, salt, i, progress, overhead, plots)
        res[k].append(r)
        loads.append(PhaseLoad(phase=name, host=r.host_load))
    cmp = CompareResult(name=cfg.name, label_a=a.label, label_b=b.label, phases=phases, rotate=rotate,
                        metrics=compare_results(*res), phase_loads=loads,
                        thresholds=thresholds or ValidityThresholds(),
                        results_a=[f"A_phase{i}/result.json" for i in range(phases)],
                        results_b=[f"B_phase{i}/result.json" for i in range(phases)])
    verdict(cmp)
    write_json(cmp, out / "compare.json")
    if plots:
        _plot(cmp, a, b, phases, out)
    return cmp


def _plot(cmp: CompareResult, a: Side, b: Side, phases: int, out: Path) -> None:
    from . import plots  # noqa: PLC0415
    from .report import load_records  # noqa: PLC0415

    plots.plot_compare(cmp, out / "compare.png")
    curves = {a.label: [], b.label: []}
    for i in range(phases):
        curves[a.label] += [r.ttft_ms for r in load_records(out / f"A_phase{i}") if r.ok]
        curves[b.label] += [r.ttft_ms for r in load_records(out / f"B_phase{i}") if r.ok]
    plots.plot_ttft_cdf(curves, out / "compare_ttft_cdf.png")


def print_compare(cmp: CompareResult, file=None) -> None:
    file = file or sys.stdout
    for line in banner(cmp.valid, cmp.invalid_reasons):
        print(line, file=file)
    print(f"{cmp.name}: {cmp.label_a} / {cmp.label_b} over {cmp.phases} round(s), "
          f"{'A B B A ...' if cmp.rotate else 'A B A B ...'}"
          + ("" if cmp.valid else "  [INVALID]"), file=file)
    print(f"  {'figure':<22} {'A/B med':>8} {'min':>8} {'max':>8} {'mean':>8} {'std':>7}   A | B (mean)", file=file)
    for k in HEADLINE:
        m = cmp.metrics.get(k)
        if m is None or m.ratio is None:
            continue
        am = statistics.fmean([v for v in m.a if v is not None]) if any(v is not None for v in m.a) else None
        bm = statistics.fmean([v for v in m.b if v is not None]) if any(v is not None for v in m.b) else None
        med = m.median if m.median is not None else m.ratio  # compare.json written before medians existed
        print(f"  {k:<22} {med:>8.3f} {m.min:>8.3f} {m.max:>8.3f} {m.ratio:>8.3f} {m.std:>7.3f}   "
              f"{am if am is None else f'{am:.4g}'} | {bm if bm is None else f'{bm:.4g}'}", file=file)
    for line in load_lines(cmp.phase_loads):
        print(line, file=file)



# -- N systems ---------------------------------------------------------------------------------------------
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def parse_system(text: str) -> SystemSpec:
    """'LABEL=url:URL' | 'LABEL=serve:CONFIG.yaml' | 'LABEL=cmd:COMMAND' -> SystemSpec (ValueError says what is wrong)."""
    label, eq, rest = text.partition("=")
    kind, colon, target = rest.partition(":")
    if not eq or not colon or not target.strip():
        raise ValueError(f"{text!r}: use LABEL=url:URL, LABEL=serve:CONFIG.yaml or LABEL=cmd:COMMAND")
    if not _LABEL.match(label):
        raise ValueError(f"{text!r}: label {label!r} must be letters, digits and ._+- (it names result dirs)")
    if kind not in ("url", "serve", "cmd"):
        raise ValueError(f"{text!r}: kind {kind!r} is not one of url, serve, cmd")
    if kind == "url" and not target.startswith(("http://", "https://")):
        raise ValueError(f"{text!r}: a url system needs http(s)://HOST:PORT")
    if kind == "cmd":
        try:
            shlex.split(target)  # unbalanced quotes fail here, not at phase 3
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}") from None
    return SystemSpec(label=label, kind=kind, target=target.strip())


def side_for(spec: SystemSpec, base_url: str, startup_timeout_s: float = 900.0) -> Side:
    """How to reach (and start) a system: url systems at their URL, serve/cmd ones started on base_url."""
    if spec.kind == "url":
        return Side(spec.label, spec.target.rstrip("/"))
    if spec.kind == "serve":
        return Side(spec.label, base_url.rstrip("/"), serve_run_command(spec.target), startup_timeout_s=startup_timeout_s,
                    health_path=health_path_for(spec.target))
    return Side(spec.label, base_url.rstrip("/"), shlex.split(spec.target), startup_timeout_s=startup_timeout_s)


def systems_vs_baseline(runs: dict[str, list[BenchResult | None]], baseline: str) -> dict[str, dict[str, RatioStat]]:
    """label -> figure -> label/baseline over phase pairs (a phase that failed on either side is left out)."""
    flat = {k: [flatten(r.summary) if r is not None else {} for r in v] for k, v in runs.items()}
    keys = sorted(set().union(*(f for v in flat.values() for f in v)))
    base = flat[baseline]
    return {k: {m: ratio_stats([f.get(m) for f in v], [f.get(m) for f in base]) for m in keys} for k, v in flat.items()}


async def run_systems(cfg: BenchConfig, specs: list[SystemSpec], sides: list[Side], baseline: str, phases: int,
                      out_dir: str | Path, unique_prompts: bool = False, progress: bool = True,
                      overhead: ClientOverhead | None = None, plots: bool = True,
                      thresholds: ValidityThresholds | None = None, rotate: bool = False) -> SystemsCompareResult:
    """Round-robin phases over N systems; writes compare_systems.json after every phase (a crash keeps the rest)."""
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels) or baseline not in labels or len(specs) < 2:
        raise ValueError(f"need >= 2 systems with distinct labels and the baseline among them: {labels}, {baseline!r}")
    cfg, out, n = _one_rate(cfg), Path(out_dir), len(specs)
    runs = {s.label: SystemRuns(**s.model_dump(), base_url=side.base_url) for s, side in zip(specs, sides)}
    results: dict[str, list[BenchResult | None]] = {label: [] for label in labels}
    cmp = SystemsCompareResult(name=cfg.name, baseline=baseline, phases=phases, unique_prompts=unique_prompts,
                               systems=list(runs.values()), thresholds=thresholds or ValidityThresholds(),
                               rotate=rotate)
    for i, k in interleave(n, phases, rotate):
        side = sides[k]
        name, timing, run = f"{side.label}_phase{i}", {}, runs[side.label]
        try:
            res = await _phase(cfg, side, out / name, n * i + k if unique_prompts else i, i, progress, overhead,
                               plots, timing)
            err = None
        except Exception as exc:  # noqa: BLE001 - recorded; the other systems still run
            res, err = None, f"{type(exc).__name__}: {exc}"[:4000]
            print(f"[compare] {name} failed: {err}", file=sys.stderr)
        results[side.label].append(res)
        run.results.append(f"{name}/result.json" if res is not None else None)
        run.startup_s.append(timing.get("startup_s"))
        run.errors.append(err)
        cmp.order.append(name)
        cmp.phase_loads.append(PhaseLoad(phase=name, host=res.host_load if res is not None else None))
        verdict(cmp)
        for label, ratios in systems_vs_baseline(results, baseline).items():
            runs[label].vs_baseline = ratios
        cmp.complete = all(e is None for r in runs.values() for e in r.errors) and len(cmp.order) == n * phases
        write_json(cmp, out / "compare_systems.json")
    if plots:
        _plot_systems(cmp, out)
    return cmp


def _plot_systems(cmp: SystemsCompareResult, out: Path) -> None:
    from . import plots  # noqa: PLC0415
    from .report import load_records  # noqa: PLC0415

    plots.plot_systems(cmp, out / "compare_systems.png")
    curves = {s.label: [r.ttft_ms for p in s.results if p for r in load_records(out / p) if r.ok] for s in cmp.systems}
    plots.plot_ttft_cdf(curves, out / "compare_systems_ttft_cdf.png")
