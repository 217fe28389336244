"""Measurement discipline: the host's load around a phase, and whether a comparison is valid.

`HostProbe` samples the 1-min load average, /proc/stat busy jiffies and this
process's CPU time before and after a phase; `finish()` returns a `HostLoad`
(busy cores of the whole host, of this process, and of everything else).
`check_validity` turns the phases' HostLoad records into a verdict: a
comparison is invalid when

  * processes outside the benchmark (anything that is not the harness or a
    descendant of it: the systems under test are its children) kept more
    than `max_foreign_cores` cores busy during a phase: the machine was
    running something else, so latencies measure that contention;
  * where that figure is unavailable (no /proc), the old load-average
    rules: a phase's load (mean of the 1-min load average before and after
    it) above `max_load_per_core` x the core count, or phases' loads apart
    by more than `load_ratio` AND `load_abs`. The load average counts the
    servers under test too, so on a small host a system that is busy by
    itself (two engines on two cores) crosses it with nothing else running;
    it is recorded for every phase but judged only as that fallback;
  * the harness sent requests late: a phase's send lag p99 (ready-to-send
    minus scheduled arrival, concurrency waits excluded) > `max_send_lag_p99_ms`.

The 1-min load average is an exponentially weighted mean (it lags by about
a minute and counts runnable and uninterruptible tasks, the servers under
test included), so it is a coarse figure: good for spotting a machine that
was busy with something else, not for attributing milliseconds.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from .proctree import tree_cpu_seconds
from .schema import HostLoad, PhaseLoad, ValidityThresholds


def loadavg_1m() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):  # not available on this platform
        return None


def settle(below: float, max_wait_s: float = 240.0, poll_s: float = 2.0) -> tuple[float | None, float]:
    """Wait until the 1-minute load average is below ``below`` (or ``max_wait_s`` passed): the previous round's
    own start-up raises it, and a round started above it measures that. Returns (load then, seconds waited);
    the caller records the load and judges the round by it."""
    t0 = time.monotonic()
    while (load := loadavg_1m()) is not None and load >= below and time.monotonic() - t0 < max_wait_s:
        time.sleep(poll_s)
    return loadavg_1m(), time.monotonic() - t0


def proc_stat_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies summed over all CPUs from /proc/stat (None: not Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - idle, total


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass(slots=True)
class HostProbe:
    """Samples taken at phase start; `finish()` samples again and builds the HostLoad."""

    load_before: float | None
    stat_before: tuple[int, int] | None
    cpu_before: float
    wall_before: float
    tree_before: float | None = None

    @classmethod
    def start(cls) -> HostProbe:
        return cls(loadavg_1m(), proc_stat_jiffies(), time.process_time(), time.perf_counter(), tree_cpu_seconds())

    def finish(self, send_lag_ms: list[float]) -> HostLoad:
        wall = max(time.perf_counter() - self.wall_before, 1e-9)
        own = (time.process_time() - self.cpu_before) / wall
        stat, n = proc_stat_jiffies(), cpu_count()
        busy = None
        if self.stat_before is not None and stat is not None and stat[1] > self.stat_before[1]:
            busy = (stat[0] - self.stat_before[0]) / (stat[1] - self.stat_before[1])
        lag = sorted(send_lag_ms)
        tree_after = tree_cpu_seconds()
        tree = None if tree_after is None or self.tree_before is None else max(0.0, tree_after - self.tree_before) / wall
        return HostLoad(
            cpu_count=n, loadavg_1m_before=self.load_before, loadavg_1m_after=loadavg_1m(), wall_s=wall,
            host_busy_fraction=busy, harness_cpu_cores=own,
            other_busy_cores=max(0.0, busy * n - own) if busy is not None else None,
            benchmark_cpu_cores=tree,
            foreign_busy_cores=max(0.0, busy * n - tree) if busy is not None and tree is not None else None,
            send_lag_p50_ms=_pct(lag, 50), send_lag_p99_ms=_pct(lag, 99), send_lag_max_ms=lag[-1] if lag else None,
        )


def _pct(sorted_vals: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default) of already sorted values."""
    if not sorted_vals:
        return None
    pos = (len(sorted_vals) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def phase_load(h: HostLoad) -> float | None:
    """The phase's load figure: mean of the 1-min load average before and after (either alone if one is missing)."""
    vals = [v for v in (h.loadavg_1m_before, h.loadavg_1m_after) if v is not None]
    return sum(vals) / len(vals) if vals else None


def check_validity(phases: list[PhaseLoad], th: ValidityThresholds) -> list[str]:
    """Readable reasons why this comparison must not be cited (empty: valid). Phases without a record are skipped."""
    reasons: list[str] = []
    loads: list[tuple[str, float]] = []
    for p in phases:
        if p.host is None:
            continue
        foreign = p.host.foreign_busy_cores
        if foreign is not None and foreign > th.max_foreign_cores:
            reasons.append(f"{p.phase}: processes outside the benchmark kept {foreign:.2f} cores busy (limit "
                           f"{th.max_foreign_cores:g}): the host was running something else")
        load = phase_load(p.host) if foreign is None else None
        if load is not None:
            loads.append((p.phase, load))
            limit = th.max_load_per_core * p.host.cpu_count
            if load > limit:
                reasons.append(f"{p.phase}: load average {load:.2f} above {limit:g} "
                               f"({p.host.cpu_count} cores x {th.max_load_per_core:g}): the host was oversubscribed")
        lag = p.host.send_lag_p99_ms
        if lag is not None and lag > th.max_send_lag_p99_ms:
            reasons.append(f"{p.phase}: harness send lag p99 {lag:.0f} ms above {th.max_send_lag_p99_ms:g} ms: "
                           "the client released requests late")
    if len(loads) >= 2:
        (lo_name, lo), (hi_name, hi) = min(loads, key=lambda x: x[1]), max(loads, key=lambda x: x[1])
        if hi - lo > th.load_abs and (lo <= 0 or hi / lo > th.load_ratio):
            ratio = f"{hi / lo:.2f}x" if lo > 0 else "inf x"
            reasons.append(f"phases ran under different load: {hi_name} {hi:.2f} vs {lo_name} {lo:.2f} "
                           f"({ratio}, +{hi - lo:.2f}; limits {th.load_ratio:g}x and +{th.load_abs:g})")
    return reasons


def banner(valid: bool, reasons: list[str]) -> list[str]:
    """Lines to print above a comparison's table: nothing when valid, a loud banner when not."""
    if valid:
        return []
    bar = "!" * 78
    return [bar, "!! INVALID COMPARISON - do not cite these figures:", *(f"!!   - {r}" for r in reasons), bar]


def _f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def load_lines(loads: list[PhaseLoad]) -> list[str]:
    """One line per phase: load average before -> after, cores, other processes' busy cores, harness send lag."""
    out = []
    for p in loads:
        h = p.host
        if h is None:
            out.append(f"  load {p.phase:<18} -")
            continue
        lag = "/".join(_f(x, "{:.1f}") for x in (h.send_lag_p50_ms, h.send_lag_p99_ms, h.send_lag_max_ms))
        out.append(f"  load {p.phase:<18} {_f(h.loadavg_1m_before)} -> {_f(h.loadavg_1m_after)} on {h.cpu_count} cores, "
                   f"benchmark {_f(h.benchmark_cpu_cores)} cores, outside it {_f(h.foreign_busy_cores)}; send lag p50/p99/max {lag} ms")
    return out
