"""Per-decision routing traces: why each request went where it went, and the replicas' load over time.

Off unless the router is given a ``DecisionTraceArgs`` (``RouterArgs.decision_trace``). On the routing
path a sampled decision costs one deque append of references (the request, the ``SchedulingResult``, the
candidate ``Endpoint`` objects, the prefix matches and the predicted TTFTs, none of which change after the
decision); a thread of its own turns them into JSON lines and appends them to one file per router
(``<dir>/decisions-<router id>.jsonl``) every ``flush_s``, releasing the GIL between records so the
event loop is never kept waiting long. Per-replica load is sampled every ``load_period_s`` by a callback
the thread schedules on the router's loop (``call_soon_threadsafe``: it never waits for it).

The ring is bounded (``capacity``): when the writer falls behind the oldest records are dropped and a
``dropped`` line says how many. Lines (``kind``):

* ``header``: router id, host, pid, start time, sample rate, the profile's scorer weights;
* ``decision``: ``t``, ``request_id``, ``session``, ``tokens``, ``block_size``, ``group`` (the first
  block's hash, hex; None under one block), ``verdict`` (the affinity filter's: warm/cold/released/
  imbalanced; None without one), ``affinity_off``, ``filters`` ([plugin, kept, removed, reason]),
  ``chosen``, ``candidates`` (per replica: ``id``, ``waiting``, ``running``, ``kv``, ``in_flight``,
  ``hit_tokens`` (predicted prefix hit), ``eligible`` (passed the filters), ``total``, ``scores``
  (unweighted, by scorer) and ``ttft_s`` (the predicted-latency picker's prediction, when it runs));
* ``routed``: the replica Ray actually used, when it was not the chosen one (its queue was full);
* ``load``: ``t`` and per replica ``id``, ``waiting``, ``running``, ``kv``, ``in_flight``, ``hits``,
  ``queries`` (the engine's cumulative prefix-cache counters), ``stats_t``;
* ``dropped``: ``n`` records lost to a full ring since the last one.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from llmd_ray.routing.result import SchedulingResult
from llmd_ray.routing.types import Endpoint, RoutingRequest

if TYPE_CHECKING:
    from llmd_ray.routing.scheduler import Scheduler

_SCALE = 1 << 32


class DecisionTraceArgs(BaseModel):
    """Where and how much a router traces (the ``decision_trace`` field of ``RouterArgs``)."""

    model_config = ConfigDict(extra="forbid")

    dir: str = Field(description="Directory of the trace files; each router appends to "
                     "`decisions-<host>-<pid>-<id>.jsonl` there (created if missing).")
    sample_rate: float = Field(1.0, gt=0, le=1, description="Share of requests traced (by a hash of the request id, "
                               "so every router samples the same requests).")
    capacity: int = Field(65536, ge=16, description="Records held in memory between flushes; beyond it the oldest are "
                          "dropped and counted in a `dropped` line.")
    flush_s: float = Field(1.0, gt=0, description="How often the writer thread appends the held records to the file.")
    load_period_s: float = Field(0.5, gt=0, description="How often each replica's load (waiting, running, KV usage, "
                                 "prefix-cache counters) is sampled into a `load` line.")


LoadSource = Callable[[], Sequence[tuple[str, Mapping[str, Any], int]]]  # (replica id, routing stats, in flight)


def sampled(request_id: str, rate: float) -> bool:
    """Whether ``request_id`` is traced at ``rate`` (the same answer in every process)."""
    return rate >= 1.0 or zlib.crc32(request_id.encode()) < rate * _SCALE


def decision_record(t: float, request: RoutingRequest, result: SchedulingResult, endpoints: Sequence[Endpoint],
                    matches: Mapping[str, int] | None, ttfts: Mapping[str, float] | None) -> dict[str, Any]:
    """The JSON-ready ``decision`` line (see the module doc)."""
    idx = {eid: i for i, eid in enumerate(result.endpoint_ids)}
    names = list(result.scores)
    bs = request.block_size
    cands = []
    for e in endpoints:
        i = idx.get(e.id)
        c = {"id": e.id, "waiting": e.num_waiting, "running": e.num_running, "kv": round(e.kv_cache_usage, 4),
             "in_flight": e.in_flight, "hit_tokens": (matches.get(e.id, 0) * bs) if matches else 0,
             "eligible": i is not None}
        if i is not None:
            c["total"] = round(float(result.totals[i]), 4)
            c["scores"] = {n: round(float(result.scores[n][i]), 4) for n in names}
        if ttfts and e.id in ttfts:
            c["ttft_s"] = round(float(ttfts[e.id]), 5)
        cands.append(c)
    hashes = request.block_hashes if request.num_blocks else []
    verdict = result.affinity
    return {
        "kind": "decision", "t": t, "request_id": request.request_id, "session": request.session_id,
        "tokens": request.num_tokens, "block_size": bs, "group": hashes[0][:8].hex() if hashes else None,
        "verdict": None if verdict is None else str(verdict), "affinity_off": result.affinity_off,
        "filters": [[f.plugin, f.kept, len(f.removed), f.reason] for f in result.filters],
        "chosen": result.target, "candidates": cands,
    }


def load_record(t: float, replicas: Sequence[tuple[str, Mapping[str, Any], int]]) -> dict[str, Any]:
    """The JSON-ready ``load`` line from (replica id, routing stats, in flight) triples."""
    out = []
    for rid, st, in_flight in replicas:
        g = st.get
        out.append({"id": rid, "waiting": g("num_waiting", 0), "running": g("num_running", 0),
                    "kv": round(float(g("kv_cache_usage", 0.0) or 0.0), 4), "in_flight": in_flight,
                    "hits": g("prefix_cache_hits", 0), "queries": g("prefix_cache_queries", 0),
                    "stats_t": g("updated_at")})
    return {"kind": "load", "t": t, "replicas": out}


def router_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class DecisionTracer:
    """The ring and its writer thread. ``decision``/``routed``/``load`` run on the router's loop."""

    def __init__(self, args: DecisionTraceArgs, scheduler: Scheduler | None = None,
                 load_source: LoadSource | None = None, rid: str | None = None,
                 clock: Callable[[], float] = time.time):
        self.args = args
        self.id = rid or router_id()
        self.path = Path(args.dir) / f"decisions-{self.id}.jsonl"
        self.clock = clock
        self._ring: deque = deque(maxlen=args.capacity)
        self._appended = 0  # on the loop
        self._taken = 0  # in the writer
        self._load_source = load_source
        self._chosen: dict[str, tuple[str, str]] = {}  # router key -> (request id, chosen) of traced decisions
        self._header = {"kind": "header", "router": self.id, "host": socket.gethostname(), "pid": os.getpid(),
                        "t": clock(), "sample_rate": args.sample_rate}
        self._scheduler, self._prefix, self._predictor = scheduler, None, None
        if scheduler is not None:
            from llmd_ray.routing.plugins.predicted_latency import PredictedLatencyPicker
            from llmd_ray.routing.plugins.prefix_cache import PrefixCacheScorer

            self._prefix = scheduler.plugin_of_type(PrefixCacheScorer)
            self._predictor = scheduler.plugin_of_type(PredictedLatencyPicker)
            prof = scheduler.profile
            self._header.update(profile=prof.name, filters=[f.name for f in prof.filters], picker=prof.picker.name,
                                weights={s.name: w for s, w in prof.scorers})
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = 0
        self.dropped = 0

    # ------------------------------------------------------------------ on the loop
    def wants(self, request_id: str) -> bool:
        return sampled(request_id, self.args.sample_rate)

    def decision(self, key: str, request: RoutingRequest, result: SchedulingResult, endpoints: Sequence[Endpoint],
                 matches: Mapping[str, int] | None = None, ttfts: Mapping[str, float] | None = None) -> None:
        """Hold a sampled decision (references only: serialized by the writer). Without ``matches``/``ttfts``
        they are read from the scheduler's last decision (its prefix index matches, the predicted TTFTs)."""
        cycle = self._scheduler.last_cycle if self._scheduler is not None else None
        if matches is None and self._prefix is not None and cycle is not None and cycle.request is request:
            matches = self._prefix.matches(cycle)
        if ttfts is None and self._predictor is not None:
            ttfts = self._predictor.last_ttfts(request)
        self._push(("d", self.clock(), request, result, endpoints, matches, ttfts))
        if result.target is not None:
            chosen = self._chosen
            chosen[key] = (request.request_id, result.target)
            if len(chosen) > self.args.capacity:
                chosen.pop(next(iter(chosen)))

    def routed(self, key: str, replica: str) -> None:
        """Ray sent the request to ``replica``: a ``routed`` line when that was not the traced choice."""
        got = self._chosen.pop(key, None)
        if got is not None and got[1] != replica:
            self._push({"kind": "routed", "t": self.clock(), "request_id": got[0], "chosen": got[1],
                        "replica": replica})

    def sample_load(self) -> None:
        if self._load_source is not None:
            self._push(("l", self.clock(), [(rid, dict(st or {}), n) for rid, st, n in self._load_source()]))

    def _push(self, item: Any) -> None:
        self._ring.append(item)
        self._appended += 1

    # ------------------------------------------------------------------ the writer
    @property
    def idle(self) -> bool:
        """The writer thread has not been started."""
        return self._thread is None

    def start(self, loop: Any = None) -> None:
        """Start the writer thread (``loop``: the router's event loop, where load samples are taken)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, args=(loop,), name="llmd-decision-trace", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the writer after a last flush (tests, benchmarks; a router's thread ends with its loop)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        else:
            self.flush()

    def _run(self, loop: Any) -> None:
        next_load = next_flush = time.monotonic()
        while not self._stop.is_set() and not (loop is not None and loop.is_closed()):
            now = time.monotonic()
            if self._load_source is not None and now >= next_load:
                next_load = now + self.args.load_period_s
                if loop is None:
                    self.sample_load()
                else:
                    try:
                        loop.call_soon_threadsafe(self.sample_load)
                    except RuntimeError:  # the loop closed
                        break
            if now >= next_flush:
                next_flush = now + self.args.flush_s
                self.flush()
            self._stop.wait(max(0.0, min(next_flush, next_load if self._load_source else next_flush) - time.monotonic()))
        self.flush()

    def flush(self) -> int:
        """Serialize and append every held record; how many lines were written."""
        ring, lines = self._ring, []
        if self.written == 0 and not self.path.exists():
            lines.append(json.dumps(self._header))
        n = 0
        while True:
            try:
                item = ring.popleft()
            except IndexError:
                break
            n += 1
            lines.append(json.dumps(self._serialize(item), separators=(",", ":")))
            time.sleep(0)  # let the loop have the GIL between records
        lost = self._appended - self._taken - n - len(ring)  # appended minus everything accounted for
        self._taken += n
        if lost > 0:
            self._taken += lost
            self.dropped += lost
            lines.append(json.dumps({"kind": "dropped", "t": self.clock(), "n": lost}))
        if lines:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
            self.written += len(lines)
        return len(lines)

    @staticmethod
    def _serialize(item: Any) -> dict[str, Any]:
        if isinstance(item, dict):
            return item
        if item[0] == "d":
            return decision_record(*item[1:])
        return load_record(item[1], item[2])
