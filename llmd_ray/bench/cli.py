"""Command line: `python -m llmd_ray.bench {run,overhead,report,schema}`.

`run --system LABEL=url:URL|serve:CONFIG|cmd:COMMAND` (repeated) compares N
systems round-robin against `--baseline`; `--vs`/`--config-a/-b`/`--cmd-a/-b`
is the two-system form.

`run` takes an optional workload YAML; any flag given overrides the file
(flags are named like `vllm bench serve` where it has one). The merged dict
is validated once by BenchConfig, so errors name the field either way.
"""

from __future__ import annotations

import argparse
import math
import sys

from llmd_ray.workloads.spec import WORKLOAD_TYPES

from .config import ConfigError
from .flags import config_from_args, thresholds_from_args


def parse_rates(text: str) -> list[float]:
    """'2' -> [2.0]; '1,2,4' -> a sweep; 'inf' -> everything at t=0."""
    try:
        rates = [math.inf if x.strip().lower() == "inf" else float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad rate list {text!r}: use e.g. 2 or 1,2,4 or inf") from None
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError(f"rates must be positive: {text!r}")
    return rates


def parse_stages(text: str) -> list[dict]:
    """'1x30,2x30,4x60' -> rate 1 for 30 s, then 2 for 30 s, then 4 for 60 s."""
    out = []
    for part in text.split(","):
        try:
            rate, dur = part.lower().split("x")
            out.append({"rate": float(rate), "duration_s": float(dur)})
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad stage {part!r}: use RATExSECONDS, e.g. 2x30") from None
    return out


def system_arg(text: str):
    """argparse type for --system: the parsed SystemSpec, or an error naming what is wrong."""
    from .compare import parse_system  # noqa: PLC0415

    try:
        return parse_system(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llmd_ray.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a benchmark (sweep, or A/B compare with --vs / --config-a/--config-b)")
    r.add_argument("config", nargs="?", help="workload YAML (see bench/configs/)")
    r.add_argument("--base-url", default="http://127.0.0.1:8000", help="OpenAI-compatible server (A in compare mode)")
    r.add_argument("--out", required=True, help="output dir")
    g = r.add_argument_group("workload")
    g.add_argument("--workload", choices=WORKLOAD_TYPES)
    g.add_argument("--name")
    g.add_argument("--model")
    g.add_argument("--tokenizer", help="local tokenizer/model dir (default: tiny model dir for tiny-llama)")
    g.add_argument("--seed", type=int)
    g.add_argument("--num-requests", "--num-prompts", dest="num_requests", type=int)
    g.add_argument("--input-len", type=int)
    g.add_argument("--output-len", type=int)
    g.add_argument("--length-distribution", choices=("fixed", "uniform", "normal", "lognormal"))
    g.add_argument("--range-ratio", type=float, help="uniform lengths in [L(1-r), L(1+r)] (implies uniform)")
    g.add_argument("--std-ratio", type=float, help="normal/lognormal std as a fraction of the mean")
    g.add_argument("--num-groups", type=int)
    g.add_argument("--prompts-per-group", type=int)
    g.add_argument("--system-prompt-len", type=int)
    g.add_argument("--question-len", type=int)
    g.add_argument("--group-popularity", choices=("uniform", "zipf"))
    g.add_argument("--zipf-exponent", type=float)
    g.add_argument("--num-sessions", type=int)
    g.add_argument("--turns", dest="turns_per_session", type=int)
    g.add_argument("--think-time", dest="think_time_s", type=float)
    g.add_argument("--ignore-eos", action=argparse.BooleanOptionalAction, default=None, help="default: on")
    g.add_argument("--temperature", type=float)
    ld = r.add_argument_group("load")
    ld.add_argument("--rate", "--request-rate", dest="rate", type=parse_rates, help="req/s; 1,2,4 = sweep; inf")
    ld.add_argument("--process", choices=("constant", "poisson", "gamma"))
    ld.add_argument("--burstiness", type=float, help="gamma shape (implies --process gamma unless 1)")
    ld.add_argument("--max-concurrency", type=int)
    ld.add_argument("--stages", type=parse_stages, help="ramp: RATExSECONDS,... e.g. 1x30,2x30,4x30")
    ld.add_argument("--duration", dest="duration_s", type=float, help="run for this long at --rate")
    m = r.add_argument_group("measurement")
    m.add_argument("--slo-ttft-ms", type=float)
    m.add_argument("--slo-tpot-ms", type=float)
    m.add_argument("--cost-per-hour", type=float, help="$ per replica-hour")
    m.add_argument("--replicas", type=int)
    m.add_argument("--metrics-url", help="Prometheus text endpoint to poll (e.g. http://127.0.0.1:8100/metrics)")
    m.add_argument("--metrics-interval", dest="metrics_interval_s", type=float)
    m.add_argument("--timeout", dest="timeout_s", type=float)
    m.add_argument("--warmup", dest="warmup_requests", type=int)
    m.add_argument("--measure-overhead", action=argparse.BooleanOptionalAction, default=True,
                   help="measure the client's own overhead first (a few seconds; default on)")
    m.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    m.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True)
    m.add_argument("--dry-run", action="store_true", help="build prompts and schedule, print them, send nothing")
    s = r.add_argument_group("servers and compare")
    s.add_argument("--server-cmd", help="start this server command before the run and stop it after")
    s.add_argument("--serve-config", help="shorthand: --server-cmd 'serve run CONFIG'")
    s.add_argument("--vs", help="compare: base URL of B (A is --base-url)")
    s.add_argument("--config-a", help="compare: serve config started for each A phase")
    s.add_argument("--config-b", help="compare: serve config started for each B phase")
    s.add_argument("--cmd-a", help="compare: any server command for A")
    s.add_argument("--cmd-b", help="compare: any server command for B")
    s.add_argument("--label-a", default="A")
    s.add_argument("--label-b", default="B")
    s.add_argument("--system", action="append", type=system_arg, metavar="LABEL=KIND:TARGET",
                   help="N-way compare, repeat per system: LABEL=url:URL (running), LABEL=serve:CONFIG.yaml or "
                        "LABEL=cmd:COMMAND (started for each phase on --base-url); phases run A B C ... A B C ...")
    s.add_argument("--baseline", help="--system label every ratio is taken against (default: the first)")
    s.add_argument("--phases", type=int, default=3,
                   help="rounds, run A B A B A B ... (A B C A B C ...); ratios are medians over rounds (default 3)")
    s.add_argument("--rotate", action="store_true",
                   help="rotate the order every round (A B, B A, ...; A B C, B C A, C A B) so no system always runs first")
    v = r.add_argument_group("compare validity (a comparison breaking one is marked invalid; see bench/README.md)")
    v.add_argument("--max-foreign-cores", type=float, default=0.3,
                   help="a phase during which processes outside the benchmark (harness + systems it started) kept "
                        "more than this many cores busy (default 0.3)")
    v.add_argument("--max-load-per-core", type=float, default=1.0,
                   help="fallback without /proc: a phase's 1-min load average above this x cores (default 1.0)")
    v.add_argument("--load-ratio", type=float, default=1.5, help="phases' load max/min above this ... (default 1.5)")
    v.add_argument("--load-abs", type=float, default=0.5, help="... and max - min above this (default 0.5)")
    v.add_argument("--max-send-lag-ms", type=float, default=50.0,
                   help="a phase's harness send lag p99 above this, ms (default 50)")
    s.add_argument("--unique-prompts", action="store_true", help="fresh prompt content every phase (A/A tests)")
    s.add_argument("--startup-timeout", type=float, default=900.0)
    o = sub.add_parser("overhead", help="measure the client's overhead against a local fake SSE server")
    o.add_argument("--out", help="write the ClientOverhead JSON here")
    rp = sub.add_parser("report", help="print summaries of result dirs; with --out, load plots across them")
    rp.add_argument("results", nargs="+")
    rp.add_argument("--out")
    sub.add_parser("schema", help="print the JSON schema of result.json")
    return p


def run_systems_cmd(a: argparse.Namespace) -> int:
    """`run --system ...`: N systems round-robin; exit 1 when any phase failed (the rest is still written)."""
    from pathlib import Path  # noqa: PLC0415

    from . import commands  # noqa: PLC0415
    from .compare import run_systems, side_for  # noqa: PLC0415
    from .overhead import format_overhead, measure_overhead  # noqa: PLC0415
    from .report import print_systems  # noqa: PLC0415

    other = [f for f, v in (("--vs", a.vs), ("--config-a", a.config_a), ("--config-b", a.config_b), ("--cmd-a", a.cmd_a),
                            ("--cmd-b", a.cmd_b), ("--server-cmd", a.server_cmd), ("--serve-config", a.serve_config)) if v]
    if other:
        raise ValueError(f"--system cannot be combined with {', '.join(other)}: give every system as --system")
    labels = [s.label for s in a.system]
    baseline = a.baseline or labels[0]
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise ValueError(f"--system: give at least two systems with distinct labels (got {labels})")
    if baseline not in labels:
        raise ValueError(f"--baseline {baseline!r} is not a --system label ({', '.join(labels)})")
    if a.phases < 1:
        raise ValueError("--phases must be >= 1")
    cfg = config_from_args(a)
    if a.dry_run:
        return commands.dry_run(cfg)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    overhead = None
    if a.measure_overhead:
        try:
            overhead = commands.run_async(measure_overhead(n=100, tokens=32, concurrency=32))
            print(format_overhead(overhead), file=sys.stderr)
        except (RuntimeError, TimeoutError, OSError) as exc:
            print(f"warning: could not measure client overhead: {exc}", file=sys.stderr)
    urls = [s.target.rstrip("/") for s in a.system if s.kind == "url"]
    if len(set(urls)) < len(urls) and not a.unique_prompts:
        print("note: two url systems share a URL; pass --unique-prompts so one does not hit the other's prefix cache",
              file=sys.stderr)
    sides = [side_for(s, a.base_url, a.startup_timeout) for s in a.system]
    cmp = commands.run_async(run_systems(cfg, a.system, sides, baseline, a.phases, out, unique_prompts=a.unique_prompts,
                                         progress=a.progress, overhead=overhead, plots=a.plots,
                                         thresholds=thresholds_from_args(a), rotate=a.rotate))
    print_systems(cmp)
    print(f"wrote {out / 'compare_systems.json'}")
    return 0 if cmp.complete else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from . import commands  # noqa: PLC0415 - keeps `--help` fast

    try:
        if args.command == "run" and args.system:
            return run_systems_cmd(args)
        return commands.dispatch(args)
    except (ConfigError, ConnectionError, FileNotFoundError, ValueError, RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
