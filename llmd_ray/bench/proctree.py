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


class client_priority:
    """Raise the calling thread's scheduling priority (nice ``-n``) for a load phase, then restore it.

    The load generator shares the host's cores with the systems under test; at a lower niceness its sends are
    not queued behind the engines, so the arrival process is the one scheduled. Only the calling thread (the
    event loop) changes on Linux, and processes started before keep their niceness. Without the right (not
    root) nothing changes and ``raised`` is False."""

    def __init__(self, n: int = 10):
        self.n = n
        self.raised = False
        self._old: int | None = None

    def __enter__(self) -> "client_priority":
        try:
            self._old = os.getpriority(os.PRIO_PROCESS, 0)
            os.setpriority(os.PRIO_PROCESS, 0, self._old - self.n)
            self.raised = True
        except (OSError, AttributeError):
            self.raised = False
        return self

    def __exit__(self, *exc: object) -> None:
        if self.raised and self._old is not None:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, self._old)
            except OSError:
                pass
