"""Result schema: what `DIR/result.json`, `DIR/requests.jsonl` and `compare.json` hold.

Units: times in ms unless the name ends in `_s`; throughputs per second of
wall time between the first request sent and the last response finished.
Bump SCHEMA_VERSION on any breaking change (removed/renamed/retyped field).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "1.0"


class _Model(BaseModel):
    # inf (rate: inf) round-trips as the JSON string "Infinity" instead of becoming null
    model_config = ConfigDict(ser_json_inf_nan="strings")


class RequestRecord(_Model):
    """One request as the client saw it (one line of requests.jsonl)."""

    id: int = Field(description="Sequence number in send order within the run.")
    job: int = Field(description="Job index (request, or session for multi_turn).")
    turn: int = Field(0, description="Turn within the session (0 for single-turn).")
    session_id: str | None = Field(None, description="x-session-id header value (multi_turn).")
    group: int | None = Field(None, description="Prefix group (shared_prefix).")
    stage: int = Field(0, description="Load stage index.")
    api: Literal["completions", "chat"] = Field(description="Endpoint used.")
    scheduled_s: float = Field(description="Planned release time, seconds after run start.")
    sent_s: float = Field(description="Actual send time, seconds after run start (after any concurrency wait).")
    queue_ms: float = Field(0.0, description="Time waiting for a max_concurrency slot.")
    dispatch_lag_ms: float = Field(0.0, description="Client lateness: ready-to-send time minus planned time (pacing health).")
    ok: bool = Field(description="HTTP 200 and at least one token chunk received.")
    status_code: int | None = Field(None, description="HTTP status (None: connection error/timeout).")
    error: str | None = Field(None, description="Error text for failed requests.")
    ttft_ms: float | None = Field(None, description="Send -> first chunk carrying generated text.")
    e2e_ms: float | None = Field(None, description="Send -> end of the response stream.")
    tpot_ms: float | None = Field(None, description="(e2e - ttft) / (output_tokens - 1); None if output_tokens < 2.")
    itl_ms: list[float] = Field(default_factory=list, description=(
        "Gaps between consecutive token chunks (a chunk may hold >1 token)."
    ))
    input_tokens: int | None = Field(None, description="usage.prompt_tokens (fallback: expected_input_tokens).")
    expected_input_tokens: int | None = Field(None, description="Prompt tokens as built/measured by the harness.")
    output_tokens: int = Field(0, description="usage.completion_tokens (fallback: token chunks counted).")
    max_tokens: int = Field(description="max_tokens requested.")
    cached_tokens: int | None = Field(None, description="usage.prompt_tokens_details.cached_tokens (None: not reported).")
    chunks: int = Field(0, description="Token-carrying SSE chunks received.")
    usage_reported: bool = Field(False, description="The server sent a usage block.")
    request_id: str | None = Field(None, description=(
        "The server's id of the request: the x-request-id response header, else the body's id (joins the "
        "llmd router's decision traces, python -m llmd_ray.bench.traces --requests)."))


class Stats(_Model):
    """Distribution of one latency (ms) over requests (or chunks, for ITL)."""

    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    count: int = 0


class CostSummary(_Model):
    per_hour: float = Field(description="Price per replica-hour.")
    replicas: int = Field(description="Replicas priced.")
    usd_per_million_output_tokens: float | None = Field(None, description="per_hour*replicas / (output tok/s * 3600) * 1e6.")
    usd_per_million_total_tokens: float | None = Field(None, description="Same, over input+output tokens.")


class Summary(_Model):
    completed: int = Field(description="Successful requests.")
    failed: int = Field(description="Failed requests (non-200, stream error, no token).")
    success_rate: float = Field(description="completed / (completed + failed).")
    duration_s: float = Field(description=(
        "Run start (t = 0 of the arrival schedule) to the last response end, seconds; per stage: "
        "stage start to the last end of its requests."
    ))
    offered_rate: float | None = Field(None, description="Configured arrival rate (None: stages/unbounded).")
    ttft_ms: Stats = Field(description="Time to first token.")
    tpot_ms: Stats = Field(description="Time per output token after the first (per request).")
    itl_ms: Stats = Field(description="Inter-chunk latency over all chunks of all requests.")
    e2e_ms: Stats = Field(description="End-to-end request latency.")
    request_throughput: float = Field(description="Completed requests per second.")
    output_throughput: float = Field(description="Output tokens per second.")
    total_token_throughput: float = Field(description="Input + output tokens per second.")
    total_input_tokens: int
    total_output_tokens: int
    total_cached_tokens: int | None = None
    cache_hit_rate: float | None = Field(None, description=(
        "sum cached / sum input tokens over requests reporting cached_tokens (None: server never "
        "reported)."
    ))
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None
    goodput: float | None = Field(None, description="Requests/s meeting every configured SLO (None: no SLO set).")
    goodput_fraction: float | None = Field(None, description="Fraction of all requests (failed count as bad) meeting the SLOs.")
    cost: CostSummary | None = None
    input_token_mismatches: int = Field(0, description="Requests whose usage.prompt_tokens differs from expected_input_tokens.")
    max_in_flight: int = Field(0, description="Peak concurrent requests observed by the client.")
    dispatch_lag_ms: Stats = Field(default_factory=Stats, description=(
        "Send time minus planned time, excluding concurrency waits: client pacing health."
    ))


class ClientOverhead(_Model):
    """The client's own cost, measured against a local instant SSE server (llmd_ray.bench.overhead)."""

    ttft_floor_ms: float | None = Field(None, description=(
        "p50 TTFT against a server that answers instantly, one request at a time: the latency "
        "floor (client + loopback + fake server)."
    ))
    per_request_ms: float | None = Field(None, description="Client CPU time per request (fixed part).")
    per_token_ms: float | None = Field(None, description="Client CPU time per streamed chunk (one token per chunk).")
    max_requests_per_s: float | None = Field(None, description=(
        "Requests/s the client sustained (instant server, `concurrency` in flight, "
        "`tokens_per_request` tokens each)."
    ))
    max_chunks_per_s: float | None = Field(None, description="Chunks/s parsed at that load.")
    concurrency: int | None = None
    tokens_per_request: int | None = None
    run_loop_lag_p99_ms: float | None = Field(
        None, description="During the measured run: p99 of how late the client's event loop woke up (sampled every 50 ms).")
    run_gc_pause_max_ms: float | None = Field(
        None, description="During the measured run: the longest pause of the client's cyclic garbage collector.")
    run_cpu_utilization: float | None = Field(None, description=(
        "During the measured run: client process CPU seconds / wall seconds (near 1.0 = "
        "client-bound)."
    ))
    method: str = Field("", description="How it was measured.")


class ServerTimeline(_Model):
    """Server metrics polled from a Prometheus text endpoint during the run."""

    url: str
    t_s: list[float] = Field(default_factory=list, description="Poll times, seconds after run start.")
    waiting: list[float | None] = Field(default_factory=list, description="Sum over replicas of *vllm:num_requests_waiting.")
    running: list[float | None] = Field(default_factory=list, description="Sum over replicas of *vllm:num_requests_running.")
    kv_usage: list[float | None] = Field(default_factory=list, description=(
        "Mean over replicas of *vllm:kv_cache_usage_perc (0-1)."
    ))
    lora_loads: list[float | None] = Field(default_factory=list, description=(
        "Sum over replicas of llmd_lora_loads_total (LoRA adapter loads since each replica started)."))
    per_replica: dict[str, dict[str, list[float | None]]] = Field(default_factory=dict, description=(
        "metric -> series labels -> values."
    ))
    prefix_cache_hit_rate: float | None = Field(None, description="Server counters: delta hits / delta queries over the run.")
    errors: int = 0


class HostLoad(_Model):
    """The host's load and the harness's lateness during one run (llmd_ray.bench.hostload)."""

    cpu_count: int = Field(description="CPUs this process may run on (sched_getaffinity).")
    loadavg_1m_before: float | None = Field(None, description="1-min load average just before the first request.")
    loadavg_1m_after: float | None = Field(None, description="1-min load average just after the last response.")
    wall_s: float = Field(description="Seconds between the two samples.")
    host_busy_fraction: float | None = Field(None, description=(
        "/proc/stat: busy / total jiffies over all CPUs between the samples (0-1; None: not Linux)."
    ))
    harness_cpu_cores: float = Field(description="This (client) process: CPU seconds / wall seconds.")
    other_busy_cores: float | None = Field(None, description=(
        "host_busy_fraction x cpu_count - harness_cpu_cores: cores kept busy by every other process "
        "(the servers under test included)."
    ))
    benchmark_cpu_cores: float | None = Field(None, description=(
        "CPU seconds / wall seconds of this process and all its descendants (the harness and the systems under "
        "test it started); None without /proc."
    ))
    foreign_busy_cores: float | None = Field(None, description=(
        "host_busy_fraction x cpu_count - benchmark_cpu_cores: cores kept busy by processes outside the benchmark."
    ))
    client_priority_raised: bool | None = Field(None, description=(
        "Whether the client's event loop ran at a raised priority (nice -10) during the phase."
    ))
    send_lag_p50_ms: float | None = Field(None, description=(
        "Harness lag, p50 over requests: ready-to-send time minus scheduled arrival (concurrency waits excluded)."
    ))
    send_lag_p99_ms: float | None = Field(None, description="Harness lag, p99 over requests.")
    send_lag_max_ms: float | None = Field(None, description="Harness lag, worst request.")


class BenchResult(_Model):
    schema_version: str = SCHEMA_VERSION
    name: str
    run_id: str
    started_at: str = Field(description="UTC ISO-8601 time of the run start.")
    base_url: str
    model: str
    config: dict = Field(description="The validated BenchConfig (see llmd_ray.bench.config).")
    environment: dict = Field(description="Host, Python, packages, git commit.")
    summary: Summary
    per_stage: list[Summary] = Field(default_factory=list, description="Summaries per load stage (stages only).")
    client_overhead: ClientOverhead | None = None
    server_timeline: ServerTimeline | None = None
    host_load: HostLoad | None = Field(None, description="Host load average, CPU use and harness send lag during the run.")
    warnings: list[str] = Field(default_factory=list)
    requests_file: str | None = Field("requests.jsonl", description="Per-request records, relative to result.json.")
    requests: list[RequestRecord] | None = Field(None, description="Inline records (only when requests_file is None).")


class RatioStat(_Model):
    ratio: float | None = Field(None, description="Mean over rounds (phase pairs) of A_i/B_i.")
    median: float | None = Field(None, description="Median over rounds of A_i/B_i: the headline figure.")
    min: float | None = Field(None, description="Smallest A_i/B_i over rounds.")
    max: float | None = Field(None, description="Largest A_i/B_i over rounds.")
    std: float | None = Field(None, description="Sample stdev of A_i/B_i over rounds (0 for one round).")
    rounds: int = Field(0, description="Rounds where both sides had the figure (B non-zero).")
    a: list[float | None] = Field(default_factory=list, description="Value per A phase.")
    b: list[float | None] = Field(default_factory=list, description="Value per B phase.")


class ValidityThresholds(_Model):
    """When a comparison is marked invalid (see llmd_ray.bench.hostload.check_validity)."""

    max_foreign_cores: float = Field(0.3, description=(
        "A phase during which processes outside the benchmark kept more than this many cores busy: invalid."))
    max_load_per_core: float = Field(1.0, description=(
        "Fallback without /proc: a phase's mean 1-min load average above this x cores: invalid."))
    load_ratio: float = Field(1.5, description="Phases' load max/min above this (and load_abs exceeded): invalid.")
    load_abs: float = Field(0.5, description="Phases' load max - min above this (and load_ratio exceeded): invalid.")
    max_send_lag_p99_ms: float = Field(50.0, description="A phase's harness send lag p99 above this: invalid.")


class PhaseLoad(_Model):
    """One phase's host load record, as copied into the comparison."""

    phase: str = Field(description="Phase dir name (e.g. A_phase0, fast_phase2).")
    host: HostLoad | None = Field(None, description="None: the phase failed or the platform has no load figures.")


class _Verdict(_Model):
    valid: bool = Field(True, description="False: a phase was oversubscribed, phases ran under different load, "
                                          "or the harness lagged; see invalid_reasons. Do not cite an invalid run.")
    invalid_reasons: list[str] = Field(default_factory=list, description="Why the comparison is invalid.")
    thresholds: ValidityThresholds = Field(default_factory=ValidityThresholds, description="Limits applied.")
    phase_loads: list[PhaseLoad] = Field(default_factory=list, description="Host load per phase, in run order.")
    rotate: bool = Field(False, description="Round i started at system i mod N (else every round in the given order).")


class CompareResult(_Verdict):
    schema_version: str = SCHEMA_VERSION
    name: str
    label_a: str
    label_b: str
    phases: int = Field(description="Phase pairs run, order A B A B ...")
    metrics: dict[str, RatioStat] = Field(description="Figure name (e.g. ttft_ms.p50) -> A/B ratio.")
    results_a: list[str] = Field(description="result.json paths of the A phases.")
    results_b: list[str]


class SystemSpec(_Model):
    """One system of an N-way compare (`--system LABEL=KIND:TARGET`)."""

    label: str = Field(description="Name in tables, plots and result dirs (letters, digits, `._+-`).")
    kind: Literal["url", "serve", "cmd"] = Field(description=(
        "url: a server already running at `target`; serve: `serve run target` started for each phase; "
        "cmd: the shell-style command `target` started for each phase (serve and cmd listen on --base-url)."
    ))
    target: str = Field(description="The URL, serve config path or command.")


class SystemRuns(SystemSpec):
    """What one system did in every phase, and its figures relative to the baseline."""

    base_url: str = Field(description="Where the harness sent its requests.")
    results: list[str | None] = Field(default_factory=list, description=(
        "result.json per phase, relative to compare_systems.json (None: the phase failed)."
    ))
    startup_s: list[float | None] = Field(default_factory=list, description=(
        "Per phase: server command launched -> /v1/models answered 200 (None: url system, or it failed)."
    ))
    errors: list[str | None] = Field(default_factory=list, description="Per phase: why it failed (None: ok).")
    vs_baseline: dict[str, RatioStat] = Field(default_factory=dict, description=(
        "Figure (e.g. ttft_ms.p50) -> this system / baseline: mean over phase pairs with min/max/std; "
        "`a` holds this system's value per phase, `b` the baseline's."
    ))


class SystemsCompareResult(_Verdict):
    """compare_systems.json: N systems, the same seeded workload, phases run round-robin."""

    schema_version: str = SCHEMA_VERSION
    name: str
    baseline: str = Field(description="Label every ratio is taken against.")
    phases: int = Field(description="Rounds; each runs every system once, in the order of `systems`.")
    unique_prompts: bool = Field(False, description=(
        "Every phase fresh prompt text (else the systems of round i share prompts, salt i)."
    ))
    order: list[str] = Field(default_factory=list, description="Phase dirs in the order they ran (label_phaseI).")
    complete: bool = Field(False, description="Every phase of every system ran without error.")
    systems: list[SystemRuns]
