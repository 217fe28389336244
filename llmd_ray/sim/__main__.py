"""``python -m llmd_ray.sim calibrate --runs DIR [DIR ...] --out host.json``: fit a host model from recorded runs.

Each DIR is a benchmark run directory (``result.json`` + ``requests.jsonl``,
as ``python -m llmd_ray.bench`` writes them) recorded on the hardware to model,
with the replicas sharing one host. Prints and writes the ``HostProfile``
(``llmd_ray.sim.host``): the engine fit, the per-request overhead and the
contention coefficients. Starts no engine.
"""

from __future__ import annotations

import argparse
import sys

from llmd_ray.sim.host import fit_host, load_run_records


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m llmd_ray.sim", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("calibrate", help="Fit a host profile (overhead, contention, engine) from recorded runs.")
    c.add_argument("--runs", nargs="+", required=True, help="Recorded benchmark run directories.")
    c.add_argument("--out", required=True, help="Where to write the host profile JSON.")
    c.add_argument("--hardware", default="", help="Free-text description of the machine the runs were recorded on.")
    args = p.parse_args(argv)
    host = fit_host({d: load_run_records(d) for d in args.runs}, hardware=args.hardware)
    host.save(args.out)
    print(host.model_dump_json(indent=1))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
