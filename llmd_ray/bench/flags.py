"""`run`'s flags merged over the optional workload YAML, validated once as a ``BenchConfig``.

Flags are named like `vllm bench serve` where it has one; any flag given
overrides the file, so errors name the field either way. Used by the
command line (``cli``) and the commands it dispatches to (``commands``).
"""

from __future__ import annotations

import argparse
import math

from llmd_ray.workloads.spec import (
    LengthDist, LongInputWorkload, LongOutputWorkload, MultiTurnWorkload, RandomWorkload, SharedPrefixWorkload,
)

from .config import BenchConfig, load_config_file, validate_config
from .schema import ValidityThresholds

_WORKLOAD_FLAGS = ("num_requests", "input_len", "output_len", "num_groups", "prompts_per_group", "system_prompt_len",
                   "question_len", "group_popularity", "zipf_exponent", "num_sessions", "turns_per_session", "think_time_s")


def _is_length(wtype: str, field: str) -> bool:
    model = {"random": RandomWorkload, "long_input": LongInputWorkload, "long_output": LongOutputWorkload,
             "shared_prefix": SharedPrefixWorkload, "multi_turn": MultiTurnWorkload}[wtype]
    f = model.model_fields.get(field)
    return f is not None and f.annotation is LengthDist


def config_from_args(a: argparse.Namespace) -> BenchConfig:
    data = load_config_file(a.config) if a.config else {}
    wl = dict(data.get("workload") or {})
    if a.workload and a.workload != wl.get("type", "random"):
        wl = {}
    wtype = a.workload or wl.get("type", "random")
    wl["type"] = wtype
    for key in _WORKLOAD_FLAGS:
        v = getattr(a, key)
        if v is None:
            continue
        if _is_length(wtype, key):
            wl[key] = {**(wl.get(key) or {}), "mean": v}
        else:
            wl[key] = v
    for key in ("input_len", "output_len", "question_len"):
        if not _is_length(wtype, key) or not (a.length_distribution or a.range_ratio is not None or a.std_ratio):
            continue
        d = dict(wl.get(key) or {"mean": {"input_len": 512, "output_len": 128, "question_len": 64}[key]})
        if a.range_ratio is not None:
            d["range_ratio"] = a.range_ratio
            d.setdefault("distribution", "uniform")
        if a.std_ratio is not None:
            d["std_ratio"] = a.std_ratio
        if a.length_distribution:
            d["distribution"] = a.length_distribution
        wl[key] = d
    data["workload"] = wl
    load = dict(data.get("load") or {})
    if a.rate is not None:
        load["rate"], load["rates"] = (a.rate[0], None) if len(a.rate) == 1 else (load.get("rate", math.inf), a.rate)
    if a.burstiness is not None and a.process is None and a.burstiness != 1.0:
        load["process"] = "gamma"
    for key in ("process", "burstiness", "max_concurrency", "stages", "duration_s"):
        if getattr(a, key) is not None:
            load[key] = getattr(a, key)
    data["load"] = load
    for key in ("name", "model", "tokenizer", "seed", "ignore_eos", "temperature", "metrics_url", "metrics_interval_s",
                "timeout_s", "warmup_requests"):
        if getattr(a, key) is not None:
            data[key] = getattr(a, key)
    slo = dict(data.get("slo") or {})
    slo.update({k: v for k, v in (("ttft_ms", a.slo_ttft_ms), ("tpot_ms", a.slo_tpot_ms)) if v is not None})
    data["slo"] = slo
    if a.cost_per_hour is not None or a.replicas is not None:
        cost = dict(data.get("cost") or {})
        cost.update({k: v for k, v in (("per_hour", a.cost_per_hour), ("replicas", a.replicas)) if v is not None})
        data["cost"] = cost
    return validate_config(data, a.config or "command line")


def thresholds_from_args(a: argparse.Namespace) -> ValidityThresholds:
    """The compare validity limits from `--max-load-per-core`, `--load-ratio`, `--load-abs`, `--max-send-lag-ms`."""
    return ValidityThresholds(max_foreign_cores=a.max_foreign_cores, max_load_per_core=a.max_load_per_core,
                              load_ratio=a.load_ratio, load_abs=a.load_abs,
                              max_send_lag_p99_ms=a.max_send_lag_ms)
