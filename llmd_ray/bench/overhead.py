"""Measure the client's own overhead against a local fake SSE server.

The fake server (llmd_ray.bench.fake_server) runs in its own process and
streams instantly, so what is left is the client: httpx, SSE parsing, JSON,
records, the event loop. Three measurements, all through the real Runner:

  1. latency floor: sequential 1-token requests; p50 TTFT is the smallest
     TTFT this client can report (client + loopback + fake server);
  2. CPU cost: client process CPU time for N 1-token requests, then for N
     requests of K tokens streamed 1 ms apart (so each chunk is its own
     network read, as with a real server); the difference per chunk is the
     per-token cost, the first batch per request is the per-request cost;
  3. capacity: requests at `concurrency` in flight, 16 tokens each, no
     delays; the achieved req/s and chunks/s bound what one client process
     can drive (the fake server shares the machine, so this is conservative).

    python -m llmd_ray.bench overhead
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np

from llmd_ray.host import free_port as _free_port
from llmd_ray.workloads.jobs import Job, Turn

from .runner import Runner, RunOptions
from .schema import ClientOverhead
from .server import ServerProcess


def free_port() -> int:
    """A free port on the loopback address (what the fake servers bind)."""
    return _free_port("127.0.0.1")


def _jobs(n: int, tokens: int) -> list[Job]:
    return [Job(i, [Turn(max_tokens=tokens, prompt="x")]) for i in range(n)]


async def _run(url: str, jobs: list[Job], concurrency: int, extra: dict | None = None):
    opts = RunOptions(base_url=url, model="tiny-llama", max_concurrency=concurrency, progress=False,
                      extra_body=extra or {}, ignore_eos=False)
    c0, w0 = time.process_time(), time.perf_counter()
    out = await Runner(opts).run(jobs)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    failed = sum(not r.ok for r in out.records)
    if failed:
        raise RuntimeError(f"{failed} requests to the fake server failed: {out.records[0].error}")
    return out, cpu, wall


async def measure_async(url: str, n: int = 200, tokens: int = 32, concurrency: int = 32) -> ClientOverhead:
    await _run(url, _jobs(20, 2), 4)  # warm connections, imports, JIT-ish caches
    seq, _, _ = await _run(url, _jobs(50, 1), 1)
    ttft_floor = float(np.median([r.ttft_ms for r in seq.records]))
    _, cpu1, _ = await _run(url, _jobs(n, 1), 8)
    _, cpuk, _ = await _run(url, _jobs(n, tokens + 1), 8, {"fake_itl_ms": 1.0})
    per_req = cpu1 / n * 1e3
    per_chunk = max(0.0, (cpuk - cpu1) / (n * tokens) * 1e3)
    cap_n, cap_tokens = 4 * n, 16
    _, _, wall = await _run(url, _jobs(cap_n, cap_tokens), concurrency)
    return ClientOverhead(
        ttft_floor_ms=ttft_floor, per_request_ms=per_req, per_token_ms=per_chunk,
        max_requests_per_s=cap_n / wall, max_chunks_per_s=cap_n * cap_tokens / wall,
        concurrency=concurrency, tokens_per_request=cap_tokens,
        method=(f"local fake SSE server in a separate process; floor: p50 TTFT of 50 sequential 1-token requests; "
                f"CPU: process_time over {n} x 1-token vs {n} x {tokens + 1}-token requests (chunks 1 ms apart); "
                f"capacity: {cap_n} x {cap_tokens}-token requests at concurrency {concurrency}"),
    )


def start_fake_server(port: int | None = None, **flags) -> ServerProcess:
    port = port or free_port()
    cmd = [sys.executable, "-m", "llmd_ray.bench.fake_server", "--port", str(port)]
    for k, v in flags.items():
        cmd += ["--" + k.replace("_", "-"), str(v)]
    root = str(Path(__file__).resolve().parents[2])
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    return ServerProcess(cmd, f"http://127.0.0.1:{port}", env=env, startup_timeout_s=60, stop_timeout_s=5).start()


async def measure_overhead(n: int = 200, tokens: int = 32, concurrency: int = 32) -> ClientOverhead:
    """Start a fake server process, measure, stop it. Takes a few seconds."""
    srv = await asyncio.to_thread(start_fake_server)
    try:
        return await measure_async(srv.base_url, n=n, tokens=tokens, concurrency=concurrency)
    finally:
        await asyncio.to_thread(srv.stop)


def format_overhead(o: ClientOverhead) -> str:
    return (f"client overhead: TTFT floor {o.ttft_floor_ms:.2f} ms, {o.per_request_ms:.3f} ms CPU/request, "
            f"{o.per_token_ms * 1e3:.1f} us CPU/token; capacity {o.max_requests_per_s:.0f} req/s, "
            f"{o.max_chunks_per_s:.0f} tok/s at concurrency {o.concurrency}")
