"""Workload files and flags become one validated BenchConfig; errors name the field."""

import math
from pathlib import Path

import pytest

from llmd_ray.bench.cli import build_parser
from llmd_ray.bench.config import ConfigError, load_config_file, validate_config
from llmd_ray.bench.flags import config_from_args
from llmd_ray.workloads.spec import LengthDist

CONFIGS = sorted((Path(__file__).parents[2] / "bench" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_configs_validate(path):
    cfg = validate_config(load_config_file(path), str(path))
    assert cfg.name and cfg.workload.type


def test_shared_prefix_small_is_small():
    cfg = validate_config(load_config_file(Path(__file__).parents[2] / "bench/configs/shared_prefix_small.yaml"))
    w = cfg.workload
    assert (w.num_groups, w.prompts_per_group, w.system_prompt_len, w.question_len, w.output_len) == (4, 4, 1000, 100, 32)
    assert 1 <= cfg.load.rate <= 2


@pytest.mark.parametrize("data, field", [
    ({"workload": {"type": "shared_prefix", "num_groups": 0}}, "workload.num_groups"),
    ({"workload": {"type": "random", "input_len": {"mean": 10, "distribution": "zipf"}}}, "workload.input_len.distribution"),
    ({"workload": {"type": "nope"}}, "workload"),
    ({"load": {"burstiness": -1}}, "load.burstiness"),
    ({"load": {"stages": [{"rate": 1}]}}, "load.stages.0.duration_s"),
    ({"slo": {"ttft": 5}}, "slo.ttft"),
])
def test_errors_name_the_field(data, field):
    with pytest.raises(ConfigError) as e:
        validate_config(data, "test.yaml")
    assert f"field '{field}'" in str(e.value) and "test.yaml" in str(e.value)


def test_every_field_is_described():
    from llmd_ray.bench import config as C
    from llmd_ray.workloads import spec as W

    for model in (W.RandomWorkload, W.SharedPrefixWorkload, W.MultiTurnWorkload, W.LoadSpec, C.SLO, C.Cost,
                  C.BenchConfig, W.LengthDist, W.Stage, W.RunSpec):
        for name, f in model.model_fields.items():
            assert f.description or name == "type", f"{model.__name__}.{name} has no description"


def _args(*argv):
    return build_parser().parse_args(["run", "--out", "/tmp/x", *argv])


def test_flags_without_file():
    cfg = config_from_args(_args("--workload", "random", "--input-len", "512", "--output-len", "32",
                                 "--num-prompts", "50", "--rate", "2", "--seed", "3", "--max-concurrency", "8",
                                 "--slo-ttft-ms", "500", "--cost-per-hour", "2.5", "--replicas", "2"))
    w = cfg.workload
    assert w.type == "random" and w.num_requests == 50 and w.input_len == LengthDist(mean=512)
    assert w.output_len.mean == 32 and cfg.load.rate == 2 and cfg.load.max_concurrency == 8 and cfg.seed == 3
    assert cfg.slo.ttft_ms == 500 and cfg.cost.per_hour == 2.5 and cfg.cost.replicas == 2 and cfg.ignore_eos


def test_flags_override_file(tmp_path):
    f = tmp_path / "w.yaml"
    f.write_text("name: x\nseed: 1\nworkload: {type: shared_prefix, num_groups: 2, question_len: 10}\n"
                 "load: {rate: 1, process: constant}\n")
    cfg = config_from_args(_args(str(f), "--num-groups", "5", "--rate", "1,2,4", "--no-ignore-eos"))
    assert cfg.workload.num_groups == 5 and cfg.workload.question_len == 10
    assert cfg.load.rates == [1, 2, 4] and cfg.load.process == "constant" and not cfg.ignore_eos


def test_range_ratio_and_burstiness_flags():
    cfg = config_from_args(_args("--input-len", "100", "--range-ratio", "0.2", "--burstiness", "0.5", "--rate", "inf"))
    assert cfg.workload.input_len.distribution == "uniform" and cfg.workload.input_len.range_ratio == 0.2
    assert cfg.load.process == "gamma" and cfg.load.burstiness == 0.5 and math.isinf(cfg.load.rate)


def test_stages_flag():
    cfg = config_from_args(_args("--stages", "1x10,2x20"))
    assert [(s.rate, s.duration_s) for s in cfg.load.stages] == [(1, 10), (2, 20)]


def test_flag_errors_name_the_field():
    with pytest.raises(ConfigError, match="field 'workload.num_requests'"):
        config_from_args(_args("--num-prompts", "0"))
