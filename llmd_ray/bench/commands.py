"""What each CLI subcommand does: single run, rate sweep, A/B compare, overhead, report."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
from pathlib import Path

from llmd_ray.workloads.arrivals import offered_rates, schedule
from llmd_ray.workloads.jobs import build_jobs
from llmd_ray.workloads.spec import default_count

from .benchmark import RunRequest, prompt_builder, run_benchmark
from .compare import Side, print_compare, run_compare
from .config import BenchConfig
from .flags import config_from_args, thresholds_from_args
from .overhead import format_overhead, measure_overhead
from .report import load_result, print_summary, sweep_table, write_json
from .schema import BenchResult
from .server import ServerProcess, health_path_for, serve_run_command


def run_async(coro):
    """Run on uvloop when installed (about a third less client CPU per request than asyncio's loop)."""
    try:
        import uvloop  # noqa: PLC0415

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    except ImportError:
        return asyncio.run(coro)


def dispatch(args) -> int:
    if args.command == "schema":
        print(json.dumps(BenchResult.model_json_schema(), indent=2))
        return 0
    if args.command == "overhead":
        o = run_async(measure_overhead())
        print(format_overhead(o))
        if args.out:
            write_json(o, args.out)
        return 0
    if args.command == "report":
        return report(args.results, args.out)
    return run(args)


def dry_run(cfg: BenchConfig) -> int:
    builder = prompt_builder(cfg)
    for rate in offered_rates(cfg.load):
        arrivals = schedule(cfg.load, default_count(cfg.workload), cfg.seed, rate=rate)
        jobs = build_jobs(cfg.workload, len(arrivals), builder, cfg.seed)
        turns = [t for j in jobs for t in j.turns]
        ins = [t.expected_input_tokens or builder.count(t.user_content or "") for t in turns]
        print(f"rate {rate:g}: {len(jobs)} jobs, {len(turns)} requests over {arrivals[-1].t if arrivals else 0:.1f} s; "
              f"input tokens min/mean/max {min(ins)}/{sum(ins) / len(ins):.1f}/{max(ins)}; "
              f"output {sum(t.max_tokens for t in turns)} tokens total")
        print(f"  first prompt: {(turns[0].prompt or turns[0].user_content)[:120]!r}")
    return 0


def _server_cmd(args) -> list[str] | None:
    if args.serve_config:
        return serve_run_command(args.serve_config)
    return shlex.split(args.server_cmd) if args.server_cmd else None


def run(args) -> int:
    cfg = config_from_args(args)
    if args.dry_run:
        return dry_run(cfg)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    overhead = None
    if args.measure_overhead:
        try:
            overhead = run_async(measure_overhead(n=100, tokens=32, concurrency=32))
            print(format_overhead(overhead), file=sys.stderr)
        except (RuntimeError, TimeoutError, OSError) as exc:
            print(f"warning: could not measure client overhead: {exc}", file=sys.stderr)
    compare = args.vs or args.config_a or args.config_b or args.cmd_a or args.cmd_b
    if compare:
        cmd_a = serve_run_command(args.config_a) if args.config_a else (shlex.split(args.cmd_a) if args.cmd_a else None)
        cmd_b = serve_run_command(args.config_b) if args.config_b else (shlex.split(args.cmd_b) if args.cmd_b else None)
        health = lambda config: health_path_for(config) if config else "/v1/models"  # noqa: E731
        a = Side(args.label_a, args.base_url, cmd_a, startup_timeout_s=args.startup_timeout,
                 health_path=health(args.config_a))
        b = Side(args.label_b, args.vs or args.base_url, cmd_b, startup_timeout_s=args.startup_timeout,
                 health_path=health(args.config_b))
        if not cmd_a and not cmd_b and a.base_url == b.base_url and not args.unique_prompts:
            print("note: A and B are the same URL; pass --unique-prompts so B does not hit A's prefix cache",
                  file=sys.stderr)
        if args.phases < 1:
            raise ValueError("--phases must be >= 1")
        cmp = run_async(run_compare(cfg, a, b, args.phases, out, unique_prompts=args.unique_prompts,
                                    progress=args.progress, overhead=overhead, plots=args.plots,
                                    thresholds=thresholds_from_args(args), rotate=args.rotate))
        print_compare(cmp)
        print(f"wrote {out / 'compare.json'}")
        return 0
    server = None
    cmd = _server_cmd(args)
    if cmd:
        health = health_path_for(args.serve_config) if args.serve_config else "/v1/models"
        server = ServerProcess(cmd, args.base_url, health_path=health, log_path=out / "server.log",
                               startup_timeout_s=args.startup_timeout)
        print(f"starting server: {shlex.join(cmd)}", file=sys.stderr)
        server.start()
    try:
        return sweep(cfg, args, out, overhead)
    finally:
        if server is not None:
            server.stop()


def sweep(cfg: BenchConfig, args, out: Path, overhead) -> int:
    rates = offered_rates(cfg.load)
    if len(rates) == 1:
        res = run_async(run_benchmark(cfg, RunRequest(args.base_url, out, progress=args.progress,
                                                      client_overhead=overhead, plots=args.plots)))
        print_summary(res)
        print(f"wrote {out / 'result.json'}")
        return 0 if res.summary.completed else 1
    points = []
    for k, rate in enumerate(rates):
        sub = out / f"rate_{rate:g}"
        res = run_async(run_benchmark(cfg, RunRequest(args.base_url, sub, rate=rate, salt=k, label=f"{cfg.name}@{rate:g}",
                                                      progress=args.progress, client_overhead=overhead,
                                                      plots=args.plots)))
        print_summary(res)
        points.append((rate, res, sub))
    _write_sweep(points, out, args.plots)
    sweep_table([(r, res.summary) for r, res, _ in points])
    print(f"wrote {out / 'sweep.json'}")
    return 0


def _write_sweep(points, out: Path, plots: bool) -> None:
    index = [{"rate": r, "result": os.path.relpath(sub / "result.json", out), "summary": res.summary.model_dump()}
             for r, res, sub in points]
    write_json({"schema_version": points[0][1].schema_version, "points": index}, out / "sweep.json")
    if plots:
        from . import plots as P  # noqa: PLC0415
        from .report import load_records  # noqa: PLC0415

        pts = [(r, res.summary) for r, res, _ in points]
        P.plot_latency_vs_load(pts, out / "latency_vs_load.png")
        P.plot_throughput_vs_load(pts, out / "throughput_vs_load.png")
        P.plot_ttft_cdf({f"{r:g} req/s": [x.ttft_ms for x in load_records(sub) if x.ok] for r, _, sub in points},
                        out / "ttft_cdf.png")


def report(paths: list[str], out: str | None) -> int:
    results = [(p, load_result(p)) for p in paths]
    for _, res in results:
        print_summary(res)
    if len(results) > 1:
        sweep_table([(res.summary.offered_rate or 0.0, res.summary) for _, res in results])
    if out:
        pts = [(res.summary.offered_rate, res, Path(p) if Path(p).is_dir() else Path(p).parent) for p, res in results]
        if not all(r for r, _, _ in pts):
            print("error: --out needs results with an offered rate (fixed-rate runs)", file=sys.stderr)
            return 2
        _write_sweep(sorted(pts, key=lambda x: x[0]), Path(out), True)
        print(f"wrote {Path(out) / 'sweep.json'} and load plots")
    return 0
