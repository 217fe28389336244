"""Server-side timeline: poll a Prometheus text endpoint during the run.

Metric names are matched by suffix, so vLLM's own `vllm:num_requests_waiting`
and Ray's re-export `ray_vllm:num_requests_waiting` (or `ray_vllm_...`, with
extra labels such as ReplicaId) both count. Every label set is one series
(one replica/engine); the timeline keeps each series and the aggregate:
sum for queue depths (waiting, running), mean for KV usage (a fraction per
replica; a sum would exceed 1). Server prefix-cache counters, when present,
give a server-side hit rate to check the client's cached_tokens figure.
"""

from __future__ import annotations

import asyncio
import math
import re
import time

import httpx

from .schema import ServerTimeline

GAUGES = {  # timeline field -> accepted metric name suffixes (":" and "_" both accepted)
    "waiting": ("vllm:num_requests_waiting",),
    "running": ("vllm:num_requests_running",),
    "kv_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    "lora_loads": ("llmd_lora_loads_total",),  # a counter: its per-replica series end at each replica's loads
}
COUNTERS = {
    "prefix_hits": ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_hits", "vllm:gpu_prefix_cache_hits_total"),
    "prefix_queries": ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_queries", "vllm:gpu_prefix_cache_queries_total"),
}
_LINE = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str, keep=None) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) for every sample line of the text exposition format.

    `keep(name) -> bool`, when given, skips other metrics before their labels are parsed: a Ray
    cluster's page grows with every replica that ever ran (tens of thousands of lines after a few
    phases), and parsing all of it on the harness's event loop delayed request sends by 100-300 ms.
    """
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if keep is not None:
            end = line.find("{")
            if not keep(line[:end] if end >= 0 else line.split(" ", 1)[0]):
                continue
        m = _LINE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(4))
        except ValueError:
            continue
        labels = dict(_LABEL.findall(m.group(3) or ""))
        out.append((m.group(1), labels, value))
    return out


def _norm(name: str) -> str:
    return name.replace(":", "_")


def match(name: str, suffixes: tuple[str, ...]) -> bool:
    n = _norm(name)
    return any(n.endswith(_norm(s)) for s in suffixes)


def series_key(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "_"


_WANTED = tuple(_norm(x) for group in (*GAUGES.values(), *COUNTERS.values()) for x in group)
_wanted_cache: dict[str, bool] = {}


def wanted(name: str) -> bool:
    """Is `name` one of the metrics the timeline keeps (memoised: a page repeats few names)."""
    hit = _wanted_cache.get(name)
    if hit is None:
        n = _norm(name)
        hit = _wanted_cache[name] = any(n.endswith(w) or n.endswith(w + "_total") for w in _WANTED)
    return hit


def extract(samples, suffixes) -> dict[str, float]:
    """series -> value for the first metric name that matches any suffix."""
    found: dict[str, float] = {}
    for name, labels, value in samples:
        if match(name, suffixes) and not _norm(name).endswith("_created"):
            found[series_key(labels)] = value
    return found


class MetricsPoller:
    """Poll `url` every `interval_s` until stopped; build a ServerTimeline."""

    def __init__(self, url: str, interval_s: float = 1.0, t0: float | None = None):
        self.url, self.interval_s = url, interval_s
        self.t0 = t0 if t0 is not None else time.perf_counter()
        self.timeline = ServerTimeline(url=url)
        self._counters: list[dict[str, float]] = []
        self._task: asyncio.Task | None = None
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(5.0), trust_env=False)

    def add(self, t: float, samples) -> None:
        tl = self.timeline
        tl.t_s.append(t)
        for field, suffixes in GAUGES.items():
            per = extract(samples, suffixes)
            agg = None
            if per:
                vals = [v for v in per.values() if not math.isnan(v)]
                agg = (sum(vals) / len(vals) if field == "kv_usage" else sum(vals)) if vals else None
            getattr(tl, field).append(agg)
            series = tl.per_replica.setdefault(field, {})
            n_prev = len(tl.t_s) - 1
            for key, v in per.items():
                series.setdefault(key, [None] * n_prev).append(v)
            for vals in series.values():  # a series absent from this scrape gets a gap
                if len(vals) < len(tl.t_s):
                    vals.append(None)
        self._counters.append({k: sum(extract(samples, s).values()) for k, s in COUNTERS.items()})

    async def poll_once(self) -> None:
        t = time.perf_counter() - self.t0
        try:
            r = await self._client.get(self.url)
            r.raise_for_status()
            # off the event loop, and only the wanted metrics: the loop sends the benchmark's requests
            samples = await asyncio.to_thread(parse_prometheus, r.text, wanted)
            self.add(t, samples)
        except (httpx.HTTPError, OSError):
            self.timeline.errors += 1

    async def _loop(self) -> None:
        while True:
            start = time.perf_counter()
            await self.poll_once()
            await asyncio.sleep(max(0.0, self.interval_s - (time.perf_counter() - start)))

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> ServerTimeline:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.poll_once()
        await self._client.aclose()
        c = self._counters
        if len(c) >= 2:
            dq = c[-1]["prefix_queries"] - c[0]["prefix_queries"]
            if dq > 0:
                self.timeline.prefix_cache_hit_rate = (c[-1]["prefix_hits"] - c[0]["prefix_hits"]) / dq
        return self.timeline
