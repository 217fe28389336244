"""Run a command beside a local Ray cluster whose metrics are exported on a known port.

`serve run` started by the harness (`--system LABEL=serve:CONFIG`) starts a Ray of its own, whose
metrics port is random; under this wrapper it joins the cluster started here (``RAY_ADDRESS``), so the
harness can poll the replicas' metrics (``llmd_lora_loads_total``, vLLM's gauges) at a fixed URL
(``--metrics-url http://127.0.0.1:PORT/metrics``). The cluster is shut down when the command ends.

    python bench/lora/with_ray.py --metrics-port 8089 -- python -m llmd_ray.bench run ...
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics-port", type=int, default=8089)
    parser.add_argument("--num-cpus", type=int, default=None, help="Ray CPUs (default: the machine's)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command")
    import ray

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, _metrics_export_port=args.metrics_port,
             _system_config={"metrics_report_interval_ms": 1000})
    try:
        # the harness counts this process's tree (the Ray started here, with the engines) as the benchmark's CPU
        env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
               "LLMD_BENCH_ROOT_PID": str(os.getpid())}
        return subprocess.call(command, env=env)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
