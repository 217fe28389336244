"""Gauges kept alive: Ray exports a gauge only while it is being set (its agent drops a series not
refreshed within two report intervals), so a value set on events (an engine step, a routing decision)
vanishes from Prometheus when the events stop, e.g. an idle engine's queue and KV cache usage. The
keeper re-sets each kept series to its last value every ``PERIOD_S`` from one daemon thread per process."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

PERIOD_S = 1.0


class GaugeKeeper:
    def __init__(self, period_s: float = PERIOD_S):
        self.period_s = period_s
        self._last: dict[tuple[int, tuple], tuple[Any, float, dict[str, str] | None]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def set(self, gauge: Any, value: float, tags: Mapping[str, str] | None = None) -> None:
        t = dict(tags) if tags else None
        gauge.set(value, tags=t)
        with self._lock:
            self._last[(id(gauge), tuple(sorted((t or {}).items())))] = (gauge, value, t)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="llmd-gauge-keeper", daemon=True)
                self._thread.start()

    def refresh(self) -> None:
        with self._lock:
            kept = list(self._last.values())
        for gauge, value, tags in kept:
            try:
                gauge.set(value, tags=tags)
            except Exception:  # metrics are best effort
                pass

    def _run(self) -> None:
        while True:
            time.sleep(self.period_s)
            self.refresh()


_KEEPER = GaugeKeeper()


def keep(gauge: Any, value: float, tags: Mapping[str, str] | None = None) -> None:
    """``gauge.set(value, tags)``, and again every second until the next value."""
    _KEEPER.set(gauge, value, tags)
