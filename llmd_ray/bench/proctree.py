"""CPU time of a process tree, from /proc (Linux): the benchmark's own share of the host.

A compare starts its systems under test as children of the harness process
(``serve run`` and the Ray processes it starts, ``cmd:`` peers and theirs), so
"this process and its descendants" is the benchmark: harness plus servers.
Whatever else keeps the host's CPUs busy is foreign load, which is what makes
a comparison untrustworthy. Each process counts its own user+system time and
what it collected from children it reaped (cutime, cstime), so a process that
exits between two samples is still counted through its parent.
"""

from __future__ import annotations

import os
from pathlib import Path


def _stat_fields(pid: str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:  # gone, or not Linux
        return None
    return raw[raw.rfind(")") + 2:].split()  # after "pid (comm) ", which may hold spaces; field 3 (state) first


ROOT_ENV = "LLMD_BENCH_ROOT_PID"


def tree_cpu_seconds(root: int | None = None) -> float | None:
    """CPU seconds used so far by ``root`` and every live descendant, plus what they reaped from exited
    children. None where /proc is unavailable. ``root`` defaults to ``$LLMD_BENCH_ROOT_PID`` (set by a wrapper
    that starts the systems' cluster and then the harness, e.g. bench/lora/with_ray.py), else this process."""
    if root is None:
        root = int(os.environ.get(ROOT_ENV) or os.getpid())
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for p in pids:
        f = _stat_fields(p)
        if f is None or len(f) < 15:
            continue
        parent[int(p)] = int(f[1])  # ppid
        ticks[int(p)] = sum(int(x) for x in f[11:15])  # utime stime cutime cstime
    if root not in ticks:
        return None
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += ticks.get(pid, 0)
        todo.extend(children.get(pid, ()))
    return total / os.sysconf("SC_CLK_TCK")


AUTOGROUP = Path("/proc/self/autogroup")


def autogroup_nice(path: Path = AUTOGROUP) -> int | None:
    """The niceness of this process's autogroup (``/autogroup-383 nice 0``), None without autogroups."""
    try:
        return int(path.read_text().split("nice")[1])
    except (OSError, IndexError, ValueError):
        return None


class client_priority:
    """Raise the load generator's scheduling priority (nice ``-n``) for a load phase, then restore it.

    The load generator shares the host's cores with the systems under test; at a lower niceness its sends are
    not queued behind the engines, so the arrival process is the one scheduled. Two knobs, both needed on
    Linux: the calling thread's niceness (the event loop; processes started before keep theirs), and, where
    the kernel groups processes by session (``kernel.sched_autogroup_enabled``), the niceness of this
    process's autogroup, without which a thread's niceness counts only against its own session's threads: the
    engines, started in sessions of their own, kept the event loop waiting 300-400 ms (send lag p99) at 1.2x
    saturation on 2 cores. Without the right (not root) nothing changes and ``raised`` is False."""

    def __init__(self, n: int = 10, autogroup: Path = AUTOGROUP):
        self.n, self.autogroup = n, autogroup
        self.raised = False
        self.autogroup_raised = False
        self._old: int | None = None
        self._old_group: int | None = None

    def __enter__(self) -> "client_priority":
        try:
            self._old = os.getpriority(os.PRIO_PROCESS, 0)
            os.setpriority(os.PRIO_PROCESS, 0, self._old - self.n)
            self.raised = True
        except (OSError, AttributeError):
            self.raised = False
        self._old_group = autogroup_nice(self.autogroup)
        if self._old_group is not None:
            try:
                self.autogroup.write_text(str(max(-20, self._old_group - self.n)))
                self.autogroup_raised = True
            except OSError:
                self.autogroup_raised = False
        return self

    def __exit__(self, *exc: object) -> None:
        if self.raised and self._old is not None:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, self._old)
            except OSError:
                pass
        if self.autogroup_raised and self._old_group is not None:
            try:
                self.autogroup.write_text(str(self._old_group))
            except OSError:
                pass
