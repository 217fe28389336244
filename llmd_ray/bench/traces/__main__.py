"""``python -m llmd_ray.bench.traces <dir-or-files>... --out DIR [--requests requests.jsonl] [--bin-s S]``.

Reads the routers' decision traces (every ``decisions-*.jsonl`` under the directories given), optionally joins a
harness run's per-request results by request id, writes ``summary.json`` and the PNGs into ``--out`` and prints
the summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import analysis as A


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m llmd_ray.bench.traces", description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="trace files, or directories holding decisions-*.jsonl")
    ap.add_argument("--out", required=True, help="directory for summary.json and the plots")
    ap.add_argument("--requests", default=None,
                    help="a harness run's requests.jsonl (or its directory): TTFT and cached tokens by request id")
    ap.add_argument("--bin-s", type=float, default=None, help="time bin width (default: the span / 30, >= 1 s)")
    args = ap.parse_args(argv)
    tr = A.read(args.paths)
    if not tr.decisions and not tr.loads:
        print(f"no decision or load records in {', '.join(args.paths)}", file=sys.stderr)
        return 1
    pairs = A.join(tr, A.read_requests(args.requests)) if args.requests else []
    if args.requests and not pairs:
        print("warning: no request of the harness run matched a traced decision by id", file=sys.stderr)
    from .plots import plot_all  # matplotlib only when plotting

    out = Path(args.out)
    plots = plot_all(tr, out, pairs, args.bin_s)
    summary = A.summary(tr, pairs)
    summary["plots"] = [p.name for p in plots]
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
