"""The load loop: release jobs on schedule, stream every request, record it.

A dispatcher sleeps until each job's arrival time and starts it as a task;
max_concurrency is a semaphore taken per request (not per session), so a
late slot shows up as `queue_ms`, and the client's own lateness (event loop
busy) as `dispatch_lag_ms`. Sessions (multi_turn) send turn k+1 only after
turn k finished plus its think time, with the whole history and the
session's `x-session-id` header. A failed turn ends its session; the turns
it would have sent are recorded as failed ("session aborted").
"""

from __future__ import annotations

import asyncio
import gc
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx

from llmd_ray.workloads.jobs import Job

from .client import chat_payload, completions_payload, make_http_client, stream_request
from .schema import RequestRecord

try:
    from tqdm import tqdm
except ImportError:  # pragma: no cover - tqdm is in the bench extra
    tqdm = None


@dataclass
class RunOptions:
    base_url: str
    model: str
    max_concurrency: int | None = None
    ignore_eos: bool = True
    temperature: float | None = None
    extra_body: dict | None = None
    timeout_s: float = 600.0
    progress: bool = True
    label: str = "bench"


@dataclass
class RunOutput:
    records: list[RequestRecord]
    start_perf: float     # perf_counter() at run start (t = 0 of every *_s field)
    start_epoch: float    # time.time() at run start
    duration_s: float     # run start (t = 0, the schedule's origin) -> last finish, as vllm bench
    chat_messages: dict[int, list[dict]]  # record id -> messages sent (chat only)
    loop_lag_ms: list[float]  # event-loop oversleep samples: the client's own stalls
    gc_pause_ms: list[float] = field(default_factory=list)  # the client's cyclic-GC pauses during the run


class _Live:
    """Counters shown on the progress bar."""

    def __init__(self, total: int, enabled: bool, label: str):
        self.ok = self.failed = self.in_flight = self.max_in_flight = 0
        self.bar = tqdm(total=total, unit="req", desc=label, dynamic_ncols=True) if enabled and tqdm else None

    def _show(self) -> None:
        if self.bar is not None:  # drawn at tqdm's own pace (refresh=False)
            self.bar.set_postfix(ok=self.ok, failed=self.failed, in_flight=self.in_flight, refresh=False)

    def started(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self._show()

    def finished(self, ok: bool, sent: bool = True) -> None:
        self.in_flight -= int(sent)
        self.ok += int(ok)
        self.failed += int(not ok)
        self._show()
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Runner:
    def __init__(self, opts: RunOptions, client: httpx.AsyncClient | None = None):
        self.opts = opts
        self.client = client
        self.records: list[RequestRecord] = []
        self.chat_messages: dict[int, list[dict]] = {}
        self.sem = asyncio.Semaphore(opts.max_concurrency) if opts.max_concurrency else None
        self.t0 = 0.0
        self.next_id = 0
        self.live: _Live | None = None
        self.loop_lag_ms: list[float] = []
        self.gc_pause_ms: list[float] = []

    def _now(self) -> float:
        return time.perf_counter() - self.t0

    async def _send(self, job: Job, turn_idx: int, messages: list[dict] | None,
                    scheduled_s: float) -> tuple[RequestRecord, str]:
        o, turn = self.opts, job.turns[turn_idx]
        extra, model = o.extra_body or {}, job.meta.get("model", o.model)  # a job's own model: BenchConfig.models
        if messages is None:
            url = o.base_url.rstrip("/") + "/v1/completions"
            payload = completions_payload(model, turn.prompt, turn.max_tokens, o.ignore_eos, o.temperature, extra)
            headers = None
        else:
            url = o.base_url.rstrip("/") + "/v1/chat/completions"
            payload = chat_payload(model, messages, turn.max_tokens, o.ignore_eos, o.temperature, extra)
            headers = {"x-session-id": job.session_id}
        ready = self._now()
        if self.sem is not None:
            await self.sem.acquire()
        try:
            sent, rid = self._now(), self.next_id
            self.next_id += 1
            self.live.started()
            res = await stream_request(self.client, url, payload, headers)
        finally:
            if self.sem is not None:
                self.sem.release()
        api = "chat" if messages is not None else "completions"
        rec, text = _to_record(rid, job, turn_idx, scheduled_s, sent, res, turn.expected_input_tokens,
                               turn.max_tokens, api)
        rec.queue_ms, rec.dispatch_lag_ms = (sent - ready) * 1e3, max(0.0, ready - scheduled_s) * 1e3
        self.records.append(rec)
        if messages is not None:
            self.chat_messages[rec.id] = list(messages)
        self.live.finished(rec.ok)
        return rec, text

    async def _run_job(self, job: Job) -> None:
        if not job.is_chat:
            await self._send(job, 0, None, job.arrival_s)
            return
        messages = [{"role": "system", "content": job.system_prompt}] if job.system_prompt else []
        scheduled = job.arrival_s
        for k, turn in enumerate(job.turns):
            messages.append({"role": "user", "content": turn.user_content})
            rec, text = await self._send(job, k, messages, scheduled)
            if not rec.ok:
                for j in range(k + 1, len(job.turns)):
                    self.records.append(_aborted(job, j, self._now()))
                    self.live.finished(False, sent=False)
                return
            messages.append({"role": "assistant", "content": text})
            if turn.think_after_s > 0:
                await asyncio.sleep(turn.think_after_s)
            scheduled = self._now()

    async def _lag_monitor(self, period: float = 0.05) -> None:
        """How late the event loop wakes a sleeper: a busy or CPU-starved client shows here."""
        while True:
            t = time.perf_counter()
            await asyncio.sleep(period)
            self.loop_lag_ms.append(max(0.0, time.perf_counter() - t - period) * 1e3)

    async def run(self, jobs: list[Job]) -> RunOutput:
        with _quiet_gc(self.gc_pause_ms):
            return await self._run(jobs)

    async def _run(self, jobs: list[Job]) -> RunOutput:
        jobs = sorted(jobs, key=lambda j: (j.arrival_s, j.index))
        total = sum(len(j.turns) for j in jobs)
        own_client = self.client is None
        if own_client:
            self.client = make_http_client(self.opts.timeout_s)
        self.live = _Live(total, self.opts.progress, self.opts.label)
        tasks = []
        monitor = asyncio.create_task(self._lag_monitor())
        self.t0, start_epoch = time.perf_counter(), time.time()
        try:
            for job in jobs:
                delay = job.arrival_s - self._now()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(self._run_job(job)))
            await asyncio.gather(*tasks)
        finally:
            for t in (*tasks, monitor):
                t.cancel()
            self.live.close()
            if own_client:
                await self.client.aclose()
        last = max((r.sent_s + (r.e2e_ms or 0.0) / 1e3 for r in self.records), default=0.0)
        for r in self.records:  # aborted turns were never sent: number them last
            if r.id < 0:
                r.id, self.next_id = self.next_id, self.next_id + 1
        self.records.sort(key=lambda r: r.id)
        return RunOutput(self.records, self.t0, start_epoch, max(last, 1e-9), self.chat_messages,
                         self.loop_lag_ms, self.gc_pause_ms)


@contextmanager
def _quiet_gc(pauses_ms: list[float]):
    """Keep Python's cyclic GC from stalling the load loop during a phase.

    Everything alive when the phase starts (earlier phases' records, the jobs) is collected once and frozen out of
    the collector (`gc.freeze`), so a full collection in the phase walks only the phase's own objects; without it
    the stalls grew phase after phase (loop lag p99 70 -> 500 ms over three rounds). Each collection's pause is
    recorded in ``pauses_ms``.
    """
    started: list[float] = []

    def probe(phase: str, info: dict) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            pauses_ms.append((time.perf_counter() - started.pop()) * 1e3)

    gc.collect()
    gc.freeze()
    gc.callbacks.append(probe)
    try:
        yield
    finally:
        gc.callbacks.remove(probe)
        gc.unfreeze()


def _to_record(rid, job, turn_idx, scheduled_s, sent_s, res, expected, max_tokens, api) -> RequestRecord:
    times = res.chunk_times
    itl = [(b - a) * 1e3 for a, b in zip(times, times[1:])]
    out_tokens = res.completion_tokens if res.completion_tokens is not None else len(times)
    ttft = res.ttft_s * 1e3 if res.ttft_s is not None else None
    e2e = res.e2e_s * 1e3 if res.e2e_s is not None else None
    ok = res.ok
    tpot = (e2e - ttft) / (out_tokens - 1) if ok and out_tokens > 1 else None
    return RequestRecord(
        id=rid, job=job.index, turn=turn_idx, session_id=job.session_id, group=job.group, stage=job.stage, api=api,
        scheduled_s=scheduled_s, sent_s=sent_s, ok=ok, status_code=res.status_code, error=res.error,
        ttft_ms=ttft if ok else None, e2e_ms=e2e, tpot_ms=tpot, itl_ms=itl if ok else [],
        input_tokens=res.prompt_tokens if res.prompt_tokens is not None else expected,
        expected_input_tokens=expected, output_tokens=out_tokens if ok else 0, max_tokens=max_tokens,
        cached_tokens=res.cached_tokens, chunks=len(times), usage_reported=res.usage_reported,
        request_id=res.request_id,
    ), res.text


def _aborted(job, turn_idx, now) -> RequestRecord:
    return RequestRecord(id=-1, job=job.index, turn=turn_idx, session_id=job.session_id, stage=job.stage, api="chat",
                         scheduled_s=now, sent_s=now, ok=False, error="session aborted",
                         max_tokens=job.turns[turn_idx].max_tokens)
