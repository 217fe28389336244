"""Benchmark harness for OpenAI-compatible LLM servers (llm-d on Ray Serve, plain vLLM).

Seeded workloads built to exact token counts, open/closed-loop load with
sweeps and ramps, streaming SSE client with measured overhead, summary
figures in the style of `vllm bench serve` / inference-perf, plots, and
interleaved A/B comparisons. CLI: `python -m llmd_ray.bench run ...`;
result schema: llmd_ray.bench.schema; docs: bench/README.md.
"""

from .config import BenchConfig, validate_config
from .schema import SCHEMA_VERSION, BenchResult, CompareResult, RequestRecord, Summary

__all__ = ["BenchConfig", "validate_config", "SCHEMA_VERSION", "BenchResult", "CompareResult", "RequestRecord", "Summary"]
