"""The P/D benchmark's client side: streamed completions and the three workloads (handoff, mixed, decider).

Every request streams random token ids (nothing cached unless a workload reuses a prefix on purpose)
with greedy sampling and `ignore_eos`, so each produces exactly `max_tokens` tokens; times are taken
at the client for every SSE chunk that carries text.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Awaitable, Callable

import httpx

MODEL = "tiny-llama"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def random_prompt(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(10, 4000) for _ in range(n)]


async def stream(client: httpx.AsyncClient, prompt: list[int], max_tokens: int) -> dict:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "stream": True}
    t0 = time.perf_counter()
    times = []
    async with client.stream("POST", "/v1/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if line.startswith("data: {") and '"text"' in line:
                times.append(time.perf_counter())
    if not times:
        raise RuntimeError("stream ended without a token")
    return {"ttft_s": times[0] - t0, "itl_s": [b - a for a, b in zip(times, times[1:])], "e2e_s": times[-1] - t0,
            "tokens": len(times)}


StatsFn = Callable[[], Awaitable[dict]] | None


async def _split_delta(stats: StatsFn, before: dict | None, row: dict) -> None:
    if stats is None or before is None:
        return
    after = await stats()
    row["handoff_bytes"] = after["handoff_bytes"] - before["handoff_bytes"]
    row["handoff_s"] = after["handoff_seconds"] - before["handoff_seconds"]
    row["split"] = after["counts"].get("handoffs", 0) > before["counts"].get("handoffs", 0)


async def handoff_run(url: str, lengths: list[int], trials: int, stats: StatsFn, seed: int) -> list[dict]:
    """Sequential requests of each prompt length (nothing cached): TTFT, and the handoff the decode side measured."""
    rng = random.Random(seed)
    rows = []
    async with httpx.AsyncClient(base_url=url, timeout=600) as c:
        await stream(c, random_prompt(rng, 300), 4)  # warm the path
        for n in lengths:
            for _ in range(trials):
                before = await stats() if stats else None
                r = await stream(c, random_prompt(rng, n), 4)
                row = {"prompt_tokens": n, "ttft_s": r["ttft_s"]}
                await _split_delta(stats, before, row)
                rows.append(row)
                print(row, flush=True)
    return rows


def summarize_handoff(rows: list[dict]) -> dict:
    out = {}
    for n in sorted({r["prompt_tokens"] for r in rows}):
        rs = [r for r in rows if r["prompt_tokens"] == n]
        s = {"ttft_s": statistics.median(r["ttft_s"] for r in rs)}
        if "handoff_s" in rs[0]:
            s["handoff_s"] = statistics.median(r["handoff_s"] for r in rs)
            s["handoff_bytes"] = statistics.median(r["handoff_bytes"] for r in rs)
            s["split_fraction"] = sum(r["split"] for r in rs) / len(rs)
            if s["handoff_s"] > 0 and s["handoff_bytes"] > 0:
                s["handoff_GBps"] = s["handoff_bytes"] / s["handoff_s"] / 1e9
                s["handoff_share_of_ttft"] = s["handoff_s"] / s["ttft_s"]
        out[str(n)] = s
    return out


async def mixed_run(url: str, seconds: float, long_every_s: float, seed: int, short_clients: int = 3) -> dict:
    """Closed-loop short requests (64 in / 64 out) plus a long one (2,000 in / 100 out) every `long_every_s`."""
    rng = random.Random(seed)
    short, long_, errors = [], [], []
    stop = time.perf_counter() + seconds

    async def one(c, n_in: int, n_out: int, into: list) -> None:
        try:
            into.append(await stream(c, random_prompt(rng, n_in), n_out))
        except Exception as exc:  # noqa: BLE001 - counted and reported, never dropped
            errors.append(f"{n_in} in: {exc}")

    async def short_loop(c):
        while time.perf_counter() < stop:
            await one(c, 64, 64, short)

    async def long_loop(c):
        tasks = []
        while time.perf_counter() < stop:
            tasks.append(asyncio.create_task(one(c, 2000, 100, long_)))
            await asyncio.sleep(long_every_s)
        await asyncio.gather(*tasks)

    async with httpx.AsyncClient(base_url=url, timeout=600) as c:
        for _ in range(2):
            await stream(c, random_prompt(rng, 300), 4)
        t0 = time.perf_counter()
        await asyncio.gather(*(short_loop(c) for _ in range(short_clients)), long_loop(c))
        wall = time.perf_counter() - t0
    itl = [x for r in short for x in r["itl_s"]]
    return {
        "wall_s": wall, "short_requests": len(short), "long_requests": len(long_), "errors": errors,
        "short_itl_p50_s": pct(itl, 50), "short_itl_p90_s": pct(itl, 90), "short_itl_p99_s": pct(itl, 99),
        "short_itl_p999_s": pct(itl, 99.9), "short_itl_max_s": max(itl, default=float("nan")),
        "short_itl_samples": len(itl), "short_itl_stalls_over_250ms": sum(x > 0.25 for x in itl),
        "short_worst_itl_p50_s": pct([max(r["itl_s"], default=0.0) for r in short], 50),
        "short_worst_itl_p99_s": pct([max(r["itl_s"], default=0.0) for r in short], 99),
        "short_ttft_p50_s": pct([r["ttft_s"] for r in short], 50),
        "short_ttft_p99_s": pct([r["ttft_s"] for r in short], 99),
        "long_ttft_p50_s": pct([r["ttft_s"] for r in long_], 50),
        "long_itl_p99_s": pct([x for r in long_ for x in r["itl_s"]], 99),
        "output_tokens_per_s": (sum(r["tokens"] for r in short) + sum(r["tokens"] for r in long_)) / wall,
    }


async def decider_run(url: str, lengths: list[int], trials: int, stats: StatsFn, seed: int,
                      turn_prefix: int = 2000, turn_new: int = 128) -> list[dict]:
    """Idle TTFT against the tokens decode lacks: fresh prompts of each length, and a second chat turn
    (`turn_prefix` tokens already sent, `turn_new` new ones), where the decode replica holds the prefix."""
    rng = random.Random(seed)
    rows = []
    async with httpx.AsyncClient(base_url=url, timeout=600) as c:
        await stream(c, random_prompt(rng, 300), 4)
        cases = [("fresh", n) for n in lengths for _ in range(trials)] + [("second_turn", turn_new)] * trials
        for kind, n in cases:
            prompt = random_prompt(rng, n)
            if kind == "second_turn":
                history = random_prompt(rng, turn_prefix)
                await stream(c, history, 4)  # turn 1: now cached where it ran
                prompt = history + prompt
            before = await stats() if stats else None
            r = await stream(c, prompt, 4)
            row = {"case": kind, "uncached_tokens": n, "prompt_tokens": len(prompt), "ttft_s": r["ttft_s"]}
            await _split_delta(stats, before, row)
            rows.append(row)
            print(row, flush=True)
    return rows


def summarize_decider(rows: list[dict]) -> dict:
    out = {}
    for key in sorted({(r["case"], r["uncached_tokens"]) for r in rows}, key=lambda k: (k[0] != "fresh", k[1])):
        rs = [r for r in rows if (r["case"], r["uncached_tokens"]) == key]
        s = {"ttft_s": statistics.median(r["ttft_s"] for r in rs)}
        if "split" in rs[0]:
            s["split_fraction"] = sum(r["split"] for r in rs) / len(rs)
        out[f"{key[0]}:{key[1]}"] = s
    return out
