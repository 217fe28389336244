"""Host side of the cluster: run the plan's ``ip`` commands, check the host can, and remove what a prefix owns.

Clean-up finds its targets by name (``<prefix>-*`` namespaces and links) and by namespace (every process whose
network namespace is one of ours), so it also removes what a crashed run left. It never touches a process or a
link outside those: in particular it never runs ``ray stop``, which would stop every Ray on the host.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Network

from llmd_ray.cluster.plan import owned

TOOLS = ("ip", "unshare", "nsenter", "mount")


class ClusterSetupError(RuntimeError):
    """A host command of the cluster's set-up failed; the message names the command and its error output."""


def run(argv: list[str], check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise ClusterSetupError(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def preflight(prefix: str) -> str | None:
    """Why this host cannot run the cluster (not root, a tool missing, namespaces refused), or None."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth pairs, a bridge and mounts)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing {', '.join(missing)} (Debian: apt-get install -y iproute2 util-linux mount)"
    probe = f"{prefix}-probe"
    made = run(["ip", "netns", "add", probe], check=False)
    if made.returncode != 0:
        return f"`ip netns add` refused: {made.stderr.strip()}"
    try:
        inner = run(["ip", "netns", "exec", probe, "unshare", "--mount", "--propagation", "private",
                     "mount", "-t", "tmpfs", "tmpfs", "/mnt"], check=False)
        if inner.returncode != 0:
            return f"`unshare --mount` + tmpfs refused in a network namespace: {inner.stderr.strip()}"
    finally:
        run(["ip", "netns", "del", probe], check=False)
    return None


def subnet_conflict(subnet: IPv4Network, bridge: str) -> str | None:
    """A route of the host (not on our bridge) that overlaps ``subnet``, or None."""
    out = run(["ip", "-o", "-4", "route", "show"], check=False).stdout
    for line in out.splitlines():
        parts = line.split()
        if not parts or parts[0] == "default" or " dev " + bridge + " " in f" {line} ":
            continue
        try:
            net = IPv4Network(parts[0], strict=False)
        except ValueError:
            continue
        if net.overlaps(subnet):
            return line
    return None


def owned_netns(prefix: str) -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.split() and owned(line.split()[0], prefix)]


def owned_links(prefix: str) -> list[str]:
    """Links in the root namespace named ``<prefix>-*`` (the bridge and the veths' host ends)."""
    out = run(["ip", "-o", "link", "show"], check=False).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            name = parts[1].strip().split("@", 1)[0]
            if owned(name, prefix):
                names.append(name)
    return names


def netns_pids(netns: str) -> list[int]:
    out = run(["ip", "netns", "pids", netns], check=False).stdout
    return [int(p) for p in out.split() if p.isdigit() and int(p) != os.getpid()]


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def kill_netns_processes(netns_names: list[str], grace_s: float = 3.0, term: bool = True) -> int:
    """SIGTERM every process in the namespaces, SIGKILL what is left after ``grace_s``; returns how many.

    Some of Ray's processes (``ray start --block``, the GCS, the autoscaler monitor, the runtime-env agent) are
    still there 10 s after a SIGTERM; nothing of a test node needs a graceful exit (its /dev/shm and /tmp go
    with it), so the grace is short. ``term=False``: SIGKILL at once, no process gets to say goodbye (a node
    lost, as a crashed host is: its raylet never tells the GCS it is leaving)."""
    pids = [p for ns in netns_names for p in netns_pids(ns)]
    if not pids:
        return 0
    if term:
        _signal(pids, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if not any(netns_pids(ns) for ns in netns_names):
                return len(pids)
            time.sleep(0.2)
    deadline = time.monotonic() + 10.0  # SIGKILL until empty: a survivor would keep its namespace alive unnamed
    while left := [p for ns in netns_names for p in netns_pids(ns)]:
        if time.monotonic() > deadline:
            raise ClusterSetupError(f"processes {left} survive SIGKILL in {netns_names}")
        _signal(left, signal.SIGKILL)
        time.sleep(0.2)
    return len(pids)


@dataclass(slots=True)
class Removed:
    processes: int = 0
    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    run_dir: str | None = None

    def summary(self) -> str:
        if not (self.processes or self.netns or self.links or self.run_dir):
            return "nothing to remove"
        return (f"stopped {self.processes} processes; removed namespaces {self.netns or '-'}, links "
                f"{self.links or '-'}, run dir {self.run_dir or '-'}")


def teardown(prefix: str, run_dir: str | None, grace_s: float = 3.0) -> Removed:
    """Remove everything named ``<prefix>-*``: processes in our namespaces, the namespaces, links, run dir.

    Idempotent; safe to call when nothing is there.
    """
    removed = Removed()
    spaces = owned_netns(prefix)
    removed.processes = kill_netns_processes(spaces, grace_s)
    for ns in spaces:
        if run(["ip", "netns", "del", ns], check=False).returncode == 0:
            removed.netns.append(ns)
    for link in owned_links(prefix):  # veth host ends die with their peers' namespaces; the bridge stays
        if run(["ip", "link", "del", link], check=False).returncode == 0:
            removed.links.append(link)
    if run_dir and os.path.isdir(run_dir):
        shutil.rmtree(run_dir, ignore_errors=True)
        removed.run_dir = run_dir
    return removed
