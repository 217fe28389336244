"""One benchmark run end to end: prompts -> schedule -> load -> summary -> files.

`run_benchmark` is the single entry the CLI, sweeps and compare mode call.
It builds the seeded jobs, checks the endpoint with warmup requests, starts
the metrics poller, drives the Runner, then turns records into a
BenchResult (with the client's own CPU use during the run as a health
check) and writes DIR/result.json + DIR/requests.jsonl + plots.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from llmd_ray.workloads.arrivals import schedule
from llmd_ray.workloads.jobs import build_jobs, warmup_jobs, zipf_weights
from llmd_ray.workloads.spec import MultiTurnWorkload, default_count

from .config import BenchConfig
from .hostload import HostProbe, phase_load
from .proctree import client_priority
from .metrics import per_stage, summarize
from .prompts import PromptBuilder, default_tokenizer_path, load_tokenizer
from .report import environment_info, write_result
from .runner import Runner, RunOptions
from .schema import BenchResult, ClientOverhead
from .server_metrics import MetricsPoller


@dataclass
class RunRequest:
    """Everything a run needs besides the config."""

    base_url: str
    out_dir: Path
    rate: float | None = None          # one sweep point (None: cfg.load.rate)
    salt: int = 0                      # prompt-content salt (see workloads)
    label: str | None = None
    progress: bool = True
    client_overhead: ClientOverhead | None = None
    plots: bool = True


_BUILDERS: dict[str, PromptBuilder] = {}


def prompt_builder(cfg: BenchConfig) -> PromptBuilder:
    path = cfg.tokenizer or default_tokenizer_path(cfg.model)
    if path is None:
        raise ValueError(f"no tokenizer for model {cfg.model!r}: pass --tokenizer DIR (a local HF model/tokenizer dir)")
    if path not in _BUILDERS:
        _BUILDERS[path] = PromptBuilder(load_tokenizer(path))
    return _BUILDERS[path]


async def check_endpoint(base_url: str, model: str) -> list[str]:
    """GET /v1/models; returns warnings (a missing model name is not fatal: routers may alias)."""
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as c:
        try:
            r = await c.get(base_url.rstrip("/") + "/v1/models")
        except httpx.HTTPError as exc:
            raise ConnectionError(f"cannot reach {base_url}/v1/models: {type(exc).__name__}: {exc}") from None
    if r.status_code != 200:
        return [f"GET /v1/models returned HTTP {r.status_code}"]
    ids = [m.get("id") for m in r.json().get("data", [])]
    return [] if model in ids else [f"model {model!r} not in /v1/models {ids}"]


def _warnings(cfg: BenchConfig, result: BenchResult, records) -> list[str]:
    s, w = result.summary, []
    if s.failed:
        first = next(r.error for r in records if not r.ok)
        w.append(f"{s.failed} of {s.completed + s.failed} requests failed; first error: {first}")
    if s.input_token_mismatches:
        w.append(f"{s.input_token_mismatches} requests: server prompt_tokens != harness count (different tokenizer?)")
    if s.completed and s.cache_hit_rate is None:
        w.append("server did not report usage.prompt_tokens_details.cached_tokens (vLLM: --enable-prompt-tokens-details)")
    if cfg.workload.type in ("random", "long_input", "long_output") and (s.cache_hit_rate or 0) > 0.1:
        w.append(f"{s.cache_hit_rate:.0%} of prompt tokens hit the prefix cache in a workload without shared "
                 "prefixes: the server has seen these prompts (same seed before?); restart it or change --seed")
    short = sum(1 for r in records if r.ok and r.usage_reported and r.output_tokens != r.max_tokens)
    if cfg.ignore_eos and short:
        w.append(f"{short} requests returned fewer/more tokens than max_tokens despite ignore_eos")
    co = result.client_overhead
    if co and co.run_cpu_utilization and co.run_cpu_utilization > 0.7:
        w.append(f"client CPU at {co.run_cpu_utilization:.0%} of one core: results may be client-bound")
    if co and co.run_loop_lag_p99_ms and co.run_loop_lag_p99_ms > 20:
        w.append(f"client event loop woke up to {co.run_loop_lag_p99_ms:.0f} ms late (p99): the client was busy or "
                 "starved of CPU, and its latencies include that")
    gaps = [x for r in records if r.ok for x in r.itl_ms]
    coalesced = sum(x < 0.5 for x in gaps) / len(gaps) if gaps else 0.0
    if coalesced > 0.1:
        w.append(f"{coalesced:.0%} of inter-chunk gaps are < 0.5 ms: chunks arrived coalesced (client or server "
                 "starved of CPU, or the server batches its stream); ITL percentiles are per chunk, use TPOT")
    tl = result.server_timeline
    if tl is not None and tl.errors:
        w.append(f"{tl.errors} of {tl.errors + len(tl.t_s)} polls of {tl.url} failed")
    h = result.host_load
    load = phase_load(h) if h is not None else None
    if load is not None and load > h.cpu_count:
        if h.foreign_busy_cores is None:
            w.append(f"host load average {load:.2f} above its {h.cpu_count} cores during the run: processes queued "
                     "for CPU, latencies include that (a compare with such a phase is marked invalid)")
        else:  # the compare judges the share outside the benchmark's process trees, not the load average
            w.append(f"host load average {load:.2f} above its {h.cpu_count} cores during the run: the system under "
                     f"test was CPU-bound ({h.benchmark_cpu_cores or 0:.2f} cores in the benchmark's processes, "
                     f"{h.foreign_busy_cores:.2f} outside them; a compare is invalid only if the latter is too high)")
    if s.dispatch_lag_ms.p99 and s.dispatch_lag_ms.p99 > 50:
        w.append(f"client released requests late (dispatch lag p99 {s.dispatch_lag_ms.p99:.0f} ms)")
    return w


def assign_models(jobs: list, models: list[str] | None, popularity: str, zipf_exponent: float, seed: int) -> None:
    """Give each job a ``model`` (``job.meta``) drawn from ``models``, seeded; None: leave the run's model."""
    if not models:
        return
    import numpy as np

    p = zipf_weights(len(models), zipf_exponent) if popularity == "zipf" else np.full(len(models), 1 / len(models))
    for job, k in zip(jobs, np.random.default_rng([seed, 7]).choice(len(models), size=len(jobs), p=p)):
        job.meta["model"] = models[int(k)]


async def run_benchmark(cfg: BenchConfig, req: RunRequest) -> BenchResult:
    builder = await asyncio.to_thread(prompt_builder, cfg)
    warnings = await check_endpoint(req.base_url, cfg.model)
    arrivals = schedule(cfg.load, default_count(cfg.workload), cfg.seed, rate=req.rate)
    jobs = await asyncio.to_thread(build_jobs, cfg.workload, len(arrivals), builder, cfg.seed, req.salt)
    for job, a in zip(jobs, arrivals):
        job.arrival_s, job.stage = a.t, a.stage
    assign_models(jobs, cfg.models, cfg.model_popularity, cfg.model_zipf_exponent, cfg.seed)
    opts = RunOptions(base_url=req.base_url, model=cfg.model, max_concurrency=cfg.load.max_concurrency,
                      ignore_eos=cfg.ignore_eos, temperature=cfg.temperature, extra_body=cfg.extra_body,
                      timeout_s=cfg.timeout_s, progress=req.progress, label=req.label or cfg.name)
    if cfg.warmup_requests:
        wopts = RunOptions(**{**opts.__dict__, "progress": False, "max_concurrency": None})
        wout = await Runner(wopts).run(warmup_jobs(cfg.workload, cfg.warmup_requests, builder, cfg.seed + req.salt))
        if not any(r.ok for r in wout.records):
            raise ConnectionError(f"all warmup requests to {req.base_url} failed: {wout.records[0].error}")
    runner = Runner(opts)
    poller = MetricsPoller(cfg.metrics_url, cfg.metrics_interval_s) if cfg.metrics_url else None
    if poller:
        await poller.poll_once()  # baseline sample (counters) before the first request
        poller.start()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    probe = HostProbe.start()
    with client_priority() as prio:  # the client's sends are not queued behind the engines on a small host
        out = await runner.run(jobs)
    host_load = probe.finish([r.dispatch_lag_ms for r in out.records if r.error != "session aborted"])
    host_load.client_priority_raised = prio.raised
    cpu_util = (time.process_time() - cpu0) / max(time.perf_counter() - wall0, 1e-9)
    timeline = None
    if poller:
        timeline = await poller.stop()
        shift = poller.t0 - out.start_perf  # poller times -> run times (t = 0 at the first release)
        timeline.t_s = [t + shift for t in timeline.t_s]
    if isinstance(cfg.workload, MultiTurnWorkload):
        for r in out.records:
            if r.id in out.chat_messages:
                r.expected_input_tokens = builder.chat_count(out.chat_messages[r.id])
                if not r.usage_reported:
                    r.input_tokens = r.expected_input_tokens
    rate = req.rate if req.rate is not None else (None if cfg.load.stages or math.isinf(cfg.load.rate) else cfg.load.rate)
    kw = dict(slo_ttft_ms=cfg.slo.ttft_ms, slo_tpot_ms=cfg.slo.tpot_ms,
              cost_per_hour=cfg.cost.per_hour if cfg.cost else None, replicas=cfg.cost.replicas if cfg.cost else 1)
    summary = summarize(out.records, out.duration_s, offered_rate=rate, **kw)
    stages = per_stage(out.records, cfg.load.stages, **kw) if cfg.load.stages else []
    overhead = (req.client_overhead.model_copy() if req.client_overhead else ClientOverhead(method="not measured"))
    overhead.run_cpu_utilization = cpu_util
    overhead.run_loop_lag_p99_ms = float(np.percentile(out.loop_lag_ms, 99)) if out.loop_lag_ms else None
    overhead.run_gc_pause_max_ms = max(out.gc_pause_ms, default=0.0)
    cfg_dump = cfg.model_dump(mode="json")
    if req.rate is not None:
        cfg_dump["load"]["rate"], cfg_dump["load"]["rates"] = req.rate, None
    result = BenchResult(
        name=req.label or cfg.name, run_id=uuid.uuid4().hex[:12],
        started_at=datetime.fromtimestamp(out.start_epoch, UTC).isoformat(),
        base_url=req.base_url, model=cfg.model, config={**cfg_dump, "prompt_salt": req.salt},
        environment=environment_info(), summary=summary, per_stage=stages, client_overhead=overhead,
        server_timeline=timeline, host_load=host_load, warnings=warnings,
    )
    result.warnings += _warnings(cfg, result, out.records)
    write_result(result, out.records, req.out_dir, plots=req.plots)
    return result
