import pytest
from pydantic import ValidationError

from llmd_ray.engine.config import EngineConfig


def test_cpu_defaults_map_onto_vllm_args():
    cfg = EngineConfig()
    args = cfg.engine_args("/m", "cpu")
    assert args["model"] == "/m" and args["tokenizer"] == "/m"
    assert args["served_model_name"] == ["tiny-llama"]
    assert args["dtype"] == "float32"
    assert args["enforce_eager"] is True
    assert args["distributed_executor_backend"] == "uni"
    assert args["enable_prefix_caching"] is True
    assert args["disable_log_stats"] is False
    assert "num_gpu_blocks_override" not in args and "gpu_memory_utilization" not in args


def test_gpu_defaults():
    args = EngineConfig(model="org/m").engine_args("/m", "gpu")
    assert args["dtype"] == "auto" and args["enforce_eager"] is False
    assert args["gpu_memory_utilization"] == 0.9
    assert "distributed_executor_backend" not in args


def test_optional_and_passthrough_args():
    cfg = EngineConfig(num_kv_blocks=40, block_size=64, served_model_name="x", engine_kwargs={"max_num_partial_prefills": 2})
    args = cfg.engine_args("/m", "cpu")
    assert args["num_gpu_blocks_override"] == 40 and args["block_size"] == 64
    assert args["served_model_name"] == ["x"] and cfg.name == "x"
    assert args["max_num_partial_prefills"] == 2


def test_environment():
    env = EngineConfig(kv_cache_space_gib=3).environment("cpu", "1")
    assert env == {
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_CPU_KVCACHE_SPACE": "3",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_CPU_OMP_THREADS_BIND": "1",
        "TORCHDYNAMO_DISABLE": "1",  # eager on CPU: vLLM's logprobs helper runs uncompiled
    }
    gpu = EngineConfig().environment("gpu", None)
    assert "VLLM_CPU_KVCACHE_SPACE" not in gpu and "TORCHDYNAMO_DISABLE" not in gpu  # GPU compiles its graphs
    assert "TORCHDYNAMO_DISABLE" not in EngineConfig(enforce_eager=False).environment("cpu", None)
    compiled = EngineConfig(engine_kwargs={"compilation_config": {"mode": 3}})
    assert "TORCHDYNAMO_DISABLE" not in compiled.environment("cpu", None)
    assert EngineConfig(enforce_eager=True).environment("gpu", None)["TORCHDYNAMO_DISABLE"] == "1"


@pytest.mark.parametrize(
    ("setting", "device", "method"),
    [("auto", "cpu", "fork"), ("auto", "gpu", "spawn"), ("spawn", "cpu", "spawn"), ("fork", "gpu", "fork")],
)
def test_engine_core_start(setting, device, method):
    assert EngineConfig(engine_core_start=setting).resolved_engine_core_start(device) == method


def test_device_resolution():
    assert EngineConfig().resolved_device(platform_is_gpu=False) == "cpu"
    assert EngineConfig().resolved_device(platform_is_gpu=True) == "gpu"
    assert EngineConfig(device="cpu").resolved_device(platform_is_gpu=True) == "cpu"


@pytest.mark.parametrize(
    "bad,field",
    [({"max_num_seqs": 0}, "max_num_seqs"), ({"typo_field": 1}, "typo_field"), ({"kv_cache_space_gib": 0}, "kv_cache_space_gib")],
)
def test_errors_name_the_field(bad, field):
    with pytest.raises(ValidationError) as e:
        EngineConfig(**bad)
    assert field in str(e.value)
