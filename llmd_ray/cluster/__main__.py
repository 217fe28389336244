"""``python -m llmd_ray.cluster up|status|exec|kill|restart|down`` (see llmd_ray/cluster/__init__.py).

    python -m llmd_ray.cluster up --workers 2        # prints the addresses as JSON, returns; the nodes keep running
    python -m llmd_ray.cluster exec head -- python my_driver.py   # a Ray driver on the head node
    python -m llmd_ray.cluster kill w1               # lose worker w1 (SIGKILL of all its processes at once)
    python -m llmd_ray.cluster restart w1            # w1 back, once the GCS has marked it dead
    python -m llmd_ray.cluster down                  # idempotent; also removes a crashed run's leftovers
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml
from pydantic import ValidationError

from llmd_ray.cluster.cluster import Cluster, ClusterUnavailable
from llmd_ray.cluster.config import ClusterConfig
from llmd_ray.cluster.netns import ClusterSetupError, teardown


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llmd_ray.cluster", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="create the network and start the nodes")
    up.add_argument("--config", type=Path, help="a YAML/JSON ClusterConfig; flags override it")
    up.add_argument("--prefix")
    up.add_argument("--subnet")
    up.add_argument("--workers", type=int)
    up.add_argument("--head-num-cpus", type=int)
    up.add_argument("--worker-num-cpus", type=int)
    up.add_argument("--no-dashboard", action="store_true")
    up.add_argument("--node-cores", action="append", metavar="NODE=CORES",
                    help="run a node on these cores only, as a host of its own (e.g. w1=0 w2=1,2); repeatable")
    for name in ("status", "down"):
        s = sub.add_parser(name, help="show the running cluster" if name == "status" else "remove everything")
        s.add_argument("--prefix", default="llmdr")
        s.add_argument("--run-dir")
    for name, what in (("kill", "lose a worker node: SIGKILL every process of it at once"),
                       ("restart", "start a killed worker node again (once the GCS marked it dead)")):
        s = sub.add_parser(name, help=what)
        s.add_argument("--prefix", default="llmdr")
        s.add_argument("--run-dir")
        s.add_argument("node")
    ex = sub.add_parser("exec", help="run a command on a node (its network and mount namespaces)")
    ex.add_argument("--prefix", default="llmdr")
    ex.add_argument("--run-dir")
    ex.add_argument("node")
    ex.add_argument("argv", nargs=argparse.REMAINDER)
    return p


def _config(args: argparse.Namespace) -> ClusterConfig:
    raw = yaml.safe_load(args.config.read_text()) if args.config else {}
    flags = {"prefix": args.prefix, "subnet": args.subnet, "workers": args.workers,
             "head_num_cpus": args.head_num_cpus, "worker_num_cpus": args.worker_num_cpus}
    raw.update({k: v for k, v in flags.items() if v is not None})
    if args.no_dashboard:
        raw["dashboard"] = False
    for spec in args.node_cores or ():
        node, sep, cores = spec.partition("=")
        try:
            raw.setdefault("node_cores", {})[node] = [int(c) for c in cores.split(",")] if sep else []
        except ValueError:
            raise SystemExit(f"--node-cores {spec!r}: want NODE=CORE[,CORE...], e.g. w1=0") from None
    return ClusterConfig.model_validate(raw)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "up":
            cluster = Cluster(_config(args)).up()
            print(json.dumps(cluster.describe(), indent=2))
        elif args.cmd == "down":
            ClusterConfig(prefix=args.prefix)  # a valid prefix: everything named `<prefix>-*` is removed
            run_dir = args.run_dir or f"/tmp/{args.prefix}"
            print(teardown(args.prefix, run_dir).summary())
        elif args.cmd == "status":
            cluster = Cluster.attach(args.prefix, args.run_dir)
            print(json.dumps({**cluster.describe(), "alive": cluster.node_ids()}, indent=2))
        elif args.cmd == "kill":
            print(f"killed {Cluster.attach(args.prefix, args.run_dir).kill_node(args.node)} processes of {args.node}")
        elif args.cmd == "restart":
            print(f"{args.node} back as Ray node {Cluster.attach(args.prefix, args.run_dir).restart_node(args.node)}")
        else:
            argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            if not argv:
                raise ClusterSetupError("exec: give a command after the node, e.g. `exec head -- ray status`")
            return Cluster.attach(args.prefix, args.run_dir).exec(args.node, argv).returncode
    except (ClusterUnavailable, ClusterSetupError, ValidationError, TimeoutError, KeyError, ValueError) as e:
        print("\n".join([f"error: {e}", *getattr(e, "__notes__", [])]), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
