"""One simulated engine replica: continuous batching from a profile, a prefix cache, fast-forwarded decode.

Per engine step (vLLM V1 style) a replica decodes one token for every running
sequence and prefills up to ``max_num_batched_tokens - batch`` prompt tokens
(chunked prefill, FCFS), admitting sequences while ``max_num_seqs`` and the
KV cache allow. Step time is the profile's ``step_ms``. While no prefill is
pending the batch is constant, so a whole run of decode steps up to the next
finish is one event; an arrival cuts the run at the next step boundary.

The prefix cache is an LRU over block hashes sized to the KV cache; a
request's cached leading blocks are skipped by prefill. When the simulator's
router records every request of this replica in its prefix index, with the
same capacity and LRU order (``Simulator(mirror_cache=True)``), the two are
the same LRU: the router's match is passed as ``SimRequest.hit_blocks`` and
this replica's own copy is not kept.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from llmd_ray.autoscaling.demand import DemandRecorder
from llmd_ray.autoscaling.perf import Profile


@dataclass(slots=True, eq=False)
class SimRequest:
    id: int
    arrival: float
    input_tokens: int
    output_tokens: int
    hashes: tuple
    cls: str = "default"
    job: object = None
    turn: int = 0
    session_id: str | None = None
    # filled in by the simulation
    remaining: int = 0  # prompt tokens still to prefill on the current replica
    cached: int = 0
    first_token: float | None = None
    finished: float | None = None
    needs_prefill: bool = True
    decode_only: bool = False  # P/D: prefill ran elsewhere
    prefill_done: float | None = None
    prompt: object = None  # the SynthText (chat history grows from it)
    replica: str | None = None
    decode_variant: str | None = None
    hit_blocks: int | None = None  # leading blocks the replica's cache holds, when the router's index mirrors it


@dataclass(slots=True, eq=False)
class SimReplica:
    id: str
    variant: str
    role: str  # prefill | decode | aggregated
    profile: Profile
    created: float
    ready_at: float
    recorder: DemandRecorder = field(default_factory=DemandRecorder)
    queue: deque = field(default_factory=deque)
    decoding: list = field(default_factory=list)  # heap (finish_counter, seq, request)
    counter: int = 0
    ctx_sum: float = 0.0
    kv_used: int = 0
    busy: bool = False
    epoch: int = 0
    run_start: float = 0.0
    run_step: float = 0.0
    run_counter0: int = 0
    run_end_counter: int = 0
    draining: bool = False
    removed_at: float | None = None
    cache: OrderedDict = field(default_factory=OrderedDict)
    cache_blocks: int = 0
    in_flight: int = 0
    seq: int = 0
    is_run: bool = False  # the current event is a fast-forwarded decode run
    chunk: int = 0  # prefill tokens in the current step
    host: object = None  # host.HostState: engines sharing a host slow each other (None: a host of its own)

    def __post_init__(self):
        self.cache_blocks = max(1, self.profile.kv_cache_tokens // self.profile.block_size)

    # ------------------------------------------------------------- stats
    @property
    def num_running(self) -> int:
        return len(self.decoding)

    @property
    def num_waiting(self) -> int:
        return len(self.queue)

    @property
    def kv_usage(self) -> float:
        return min(1.0, self.kv_used / self.profile.kv_cache_tokens)

    # --------------------------------------------------------- prefix cache
    def lookup(self, req: SimRequest) -> int:
        """Cached leading tokens for ``req`` (touches them), then caches all its blocks."""
        cache, hit = self.cache, 0
        for h in req.hashes:
            if h in cache:
                hit += 1
            else:
                break
        for h in reversed(req.hashes):  # tail first: the head ends most recently used
            if h in cache:
                cache.move_to_end(h)
            else:
                cache[h] = None
        while len(cache) > self.cache_blocks:
            cache.popitem(last=False)
        return min(hit * self.profile.block_size, req.input_tokens - 1)

    # ------------------------------------------------------------- engine
    def enqueue(self, req: SimRequest) -> None:
        self.in_flight += 1
        # Demand is counted where the live app counts it: on aggregated and decode replicas (decode orchestrates
        # P/D and sees every request), never on prefill replicas.
        if req.decode_only:
            key = self.recorder.on_arrival(req.input_tokens, req.output_tokens)
            self.recorder.on_cached(key, req.cached)
            req.remaining = 0
        else:
            if req.hit_blocks is None:
                cached = self.lookup(req)
            else:  # the router's prefix index mirrors this cache (see Simulator): it already matched the request
                cached = min(req.hit_blocks * self.profile.block_size, req.input_tokens - 1)
                req.hit_blocks = None
            req.cached = cached
            if self.role != "prefill":
                key = self.recorder.on_arrival(req.input_tokens, req.output_tokens)
                self.recorder.on_cached(key, cached)
            req.remaining = req.input_tokens - cached
        self.queue.append(req)

    def start_step(self, now: float) -> tuple[float, bool] | None:
        """Begin the next step or decode run; returns (end time, is_run) or None when idle."""
        p = self.profile
        b = len(self.decoding)
        ctx = self.ctx_sum / b if b else 0.0
        if self.queue:
            budget = p.max_num_batched_tokens - b
            chunk = 0
            admitted = b
            for req in self.queue:
                if budget <= 0 or admitted >= p.max_num_seqs:
                    break
                if req.remaining == req.input_tokens or req.decode_only:  # not yet admitted: KV room?
                    need = req.input_tokens + req.output_tokens
                    if self.kv_used + need > p.kv_cache_tokens and b:
                        break
                take = min(req.remaining, budget)
                chunk += take
                budget -= take
                admitted += 1
                if take < req.remaining:
                    break
            if admitted == b and chunk == 0 and b == 0:
                return None
            self.run_counter0 = self.counter
            self.run_end_counter = self.counter + (1 if b else 0)
            self.run_start = now
            self.run_step = p.step_ms(b if self.role != "prefill" else 0, ctx, chunk) / 1000.0
            if self.host is not None:
                self.run_step *= self.host.step_factor(self, prefill=chunk > 0)
            self.chunk = chunk
            return now + self.run_step, False
        if b:
            f = self.decoding[0][0]
            steps = max(1, f - self.counter)
            self.run_counter0 = self.counter
            self.run_end_counter = self.counter + steps
            self.run_start = now
            self.run_step = p.itl_ms(b, ctx) / 1000.0
            if self.host is not None:
                self.run_step *= self.host.step_factor(self, prefill=False)
            self.chunk = 0
            return now + steps * self.run_step, True
        return None

    def cut_run(self, now: float) -> float | None:
        """An arrival during a decode run: end it at the next step boundary (None: ends then anyway)."""
        done = int((now - self.run_start) / self.run_step) + 1
        if self.run_counter0 + done >= self.run_end_counter:
            return None
        self.run_end_counter = self.run_counter0 + done
        return self.run_start + done * self.run_step

    def finish_step(self, now: float) -> tuple[list[SimRequest], list[SimRequest]]:
        """Apply the step/run that just ended; returns (first tokens produced, finished requests)."""
        self.counter = self.run_end_counter
        firsts, done = [], []
        chunk = self.chunk
        # Prefill progress, FCFS, exactly as start_step planned it.
        while self.queue and (chunk > 0 or self.queue[0].remaining == 0):
            req = self.queue[0]
            if req.remaining == req.input_tokens or req.decode_only:
                self.kv_used += req.input_tokens + req.output_tokens
            take = min(req.remaining, chunk)
            req.remaining -= take
            chunk -= take
            if req.remaining > 0:
                break
            self.queue.popleft()
            if self.role == "prefill":  # hand off to decode: the caller routes it on
                self.kv_used -= req.input_tokens + req.output_tokens
                self.in_flight -= 1
                req.prefill_done = now
                done.append(req)
                continue
            if req.decode_only:
                left = req.output_tokens - 1
            else:
                req.first_token = now
                firsts.append(req)
                left = req.output_tokens - 1
            if left <= 0:
                self._finish(req, now, done)
            else:
                self.seq += 1
                heapq.heappush(self.decoding, (self.counter + left, self.seq, req))
                self.ctx_sum += req.input_tokens + req.output_tokens / 2
        self.chunk = 0
        while self.decoding and self.decoding[0][0] <= self.counter:
            _, _, req = heapq.heappop(self.decoding)
            self.ctx_sum -= req.input_tokens + req.output_tokens / 2
            self._finish(req, now, done)
        if not self.decoding:
            self.ctx_sum = 0.0
        return firsts, done

    def _finish(self, req: SimRequest, now: float, done: list) -> None:
        req.finished = now
        self.kv_used -= req.input_tokens + req.output_tokens
        self.in_flight -= 1
        done.append(req)

    def autoscaling_stats(self) -> dict[str, float]:
        return {"num_waiting": float(self.num_waiting), "num_running": float(self.num_running),
                "kv_cache_usage": self.kv_usage, **self.recorder.metrics()}
