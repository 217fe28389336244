"""A worker pod's preStop hook: drain its Ray node, then wait until Serve has moved off it.

``ray start --block`` (the container's main process under KubeRay) stops every Ray process on SIGTERM, so
without this a pod being deleted (node drain, preemption, the old cluster of an upgrade) kills its engine
replicas and proxy at once. The hook asks the GCS to drain this node with a deadline (``ray drain-node``,
the call the autoscaler v2 makes for idle and preempted nodes): Serve then starts the node's replicas
elsewhere and stops these gracefully (``graceful_shutdown_timeout_s``), and the node's proxy drains. The
hook returns once no Serve replica is left on the node and the proxy has had its minimum draining period,
or at the deadline; Kubernetes sends SIGTERM after it returns.

Run by Kubernetes as ``python -m llmd_ray.kuberay.prestop --deadline-s N`` (render.py writes N as the
pod's terminationGracePeriodSeconds minus a margin). The waiting is pure (``wait_drained``); talking to
Ray is in ``main``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable

from llmd_ray.kuberay.hosts import PROXY_MIN_DRAINING_S

REPLICA_CLASS_PREFIX = "ServeReplica:"


def wait_drained(count: Callable[[], int | None], deadline_s: float, min_wait_s: float,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 poll_s: float = 2.0) -> bool:
    """Poll ``count`` (Serve replicas left on the node; None: unknown) until it is 0 and ``min_wait_s`` has
    passed, or ``deadline_s`` has; True when the node emptied in time."""
    start = clock()
    while True:
        left = count()
        elapsed = clock() - start
        if left == 0 and elapsed >= min_wait_s:
            return True
        if elapsed >= deadline_s:
            return False
        sleep(min(poll_s, max(deadline_s - elapsed, 0.0)))


def _replicas_on_node() -> Callable[[], int | None]:
    import ray
    from ray.util.state import list_actors

    ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    node_id = ray.get_runtime_context().get_node_id()

    def count() -> int | None:
        try:
            actors = list_actors(filters=[("node_id", "=", node_id), ("state", "=", "ALIVE")], limit=10000)
        except Exception:  # noqa: BLE001 - the state API is unreachable: keep waiting until the deadline
            return None
        return sum(1 for a in actors if str(getattr(a, "class_name", "")).startswith(REPLICA_CLASS_PREFIX))

    return count


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m llmd_ray.kuberay.prestop", description=__doc__.split("\n\n")[0])
    p.add_argument("--deadline-s", type=int, required=True, help="Drain deadline and longest wait, seconds.")
    p.add_argument("--min-wait-s", type=float, default=PROXY_MIN_DRAINING_S,
                   help="Wait at least this long (the node's Serve proxy drains).")
    a = p.parse_args(argv)
    drain = ["ray", "drain-node", "--reason", "DRAIN_NODE_REASON_PREEMPTION",
             "--reason-message", "pod terminating (llmd-ray preStop)", "--deadline-remaining-seconds", str(a.deadline_s)]
    res = subprocess.run(drain, check=False)  # refused (already draining, the head node): still wait
    if res.returncode != 0:
        print(f"prestop: ray drain-node exited {res.returncode}; waiting anyway", file=sys.stderr)
    try:
        count = _replicas_on_node()
    except Exception as e:  # noqa: BLE001 - no Ray to ask: give the drain its minimum time
        print(f"prestop: cannot reach Ray ({e}); waiting {a.min_wait_s:g} s", file=sys.stderr)
        time.sleep(min(a.min_wait_s, a.deadline_s))
        return 0
    drained = wait_drained(count, a.deadline_s, min(a.min_wait_s, a.deadline_s))
    print(f"prestop: node {'drained' if drained else 'not drained by the deadline'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
