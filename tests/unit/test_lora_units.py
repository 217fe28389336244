"""LoRA pieces that need no engine: the tiny adapters' build, engine args, slot accounting, stable ids."""

import hashlib
import json

import pytest

from llmd_ray.engine import tiny_lora
from llmd_ray.engine.config import EngineConfig
from llmd_ray.engine.stats import LoraSlots, StatsRecorder


def _digest(path):
    return {f: hashlib.sha256((path / f).read_bytes()).hexdigest() for f in tiny_lora.REQUIRED_FILES}


def test_tiny_lora_build_is_deterministic_and_peft_shaped(tmp_path):
    a = tiny_lora.build_tiny_lora(0, tmp_path / "a")
    b = tiny_lora.build_tiny_lora(0, tmp_path / "b")
    c = tiny_lora.build_tiny_lora(1, tmp_path / "c")
    assert _digest(a) == _digest(b) != _digest(c)
    config = json.loads((a / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["target_modules"]) == ("LORA", 8, ["q_proj", "v_proj"])
    from safetensors.numpy import load_file

    tensors = load_file(str(a / "adapter_model.safetensors"))
    assert tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].shape == (8, 384)
    assert tensors["base_model.model.model.layers.2.self_attn.v_proj.lora_B.weight"].shape == (128, 8)
    assert len(tensors) == 3 * 2 * 2
    assert tiny_lora.is_complete(a, tiny_lora.TinyLoraSpec(index=0))
    assert not tiny_lora.is_complete(a, tiny_lora.TinyLoraSpec(index=1))


def test_resolve_adapter(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMD_RAY_MODEL_DIR", str(tmp_path / "models" / "tiny-llama"))
    path = tiny_lora.resolve_adapter("tiny-lora-3")
    assert path == str(tmp_path / "models" / "tiny-lora-3")
    assert tiny_lora.is_complete(path, tiny_lora.TinyLoraSpec(index=3))
    assert tiny_lora.resolve_adapter(str(tmp_path)) == str(tmp_path.resolve())
    assert tiny_lora.resolve_adapter("org/some-hub-adapter") == "org/some-hub-adapter"


def test_engine_config_lora_args():
    assert "enable_lora" not in EngineConfig().engine_args("/m", "cpu")  # off by default: nothing changes
    args = EngineConfig(enable_lora=True, max_loras=2, max_lora_rank=8).engine_args("/m", "cpu")
    assert (args["enable_lora"], args["max_loras"], args["max_lora_rank"]) == (True, 2, 8)
    assert "max_cpu_loras" not in args
    with pytest.raises(ValueError, match="max_loras: only valid with enable_lora"):
        EngineConfig(max_loras=2)


@pytest.mark.parametrize("capacity, steps, loads, order", [
    (2, [["a"], ["a"], ["b"], ["a", "b"]], 2, ["a", "b"]),
    (2, [["a"], ["b"], ["c"], ["a"]], 4, ["c", "a"]),  # a was evicted by c
    (1, [["a"], ["b"], ["a"]], 3, ["a"]),
    (2, [[], ["a"], []], 1, ["a"]),  # idle steps keep the slots
])
def test_lora_slots(capacity, steps, loads, order):
    slots, recorder = LoraSlots(capacity), StatsRecorder()
    assert sum(recorder.record_lora(slots, running) for running in steps) == loads
    s = recorder.snapshot()
    assert (s.lora_loads, list(s.lora_adapters), s.max_loras) == (loads, order, capacity)
    assert s.as_dict()["lora_loads"] == loads


def test_stable_lora_id():
    from llmd_ray.frontdoor.lora import stable_lora_id

    ids = {stable_lora_id(f"tiny-lora-{k}", f"/m/tiny-lora-{k}") for k in range(100)}
    assert len(ids) == 100 and all(1 <= i < 2**31 for i in ids)
    assert stable_lora_id("a", "/p") == stable_lora_id("a", "/p") != stable_lora_id("a", "/q")


def test_bench_lora_workload_draws_adapters_per_request():
    from pathlib import Path

    from llmd_ray.bench.benchmark import assign_models
    from llmd_ray.bench.config import load_config_file, validate_config
    from llmd_ray.workloads.jobs import Job

    cfg = validate_config(load_config_file(Path(__file__).parents[2] / "bench/lora/lora_zipf.yaml"))
    assert len(cfg.models) == 8 and cfg.model_popularity == "zipf"
    jobs, again = [Job(i, []) for i in range(400)], [Job(i, []) for i in range(400)]
    assign_models(jobs, cfg.models, cfg.model_popularity, cfg.model_zipf_exponent, cfg.seed)
    assign_models(again, cfg.models, cfg.model_popularity, cfg.model_zipf_exponent, cfg.seed)
    drawn = [j.meta["model"] for j in jobs]
    assert drawn == [j.meta["model"] for j in again]  # seeded
    assert drawn.count("tiny-lora-0") > drawn.count("tiny-lora-7") > 0  # Zipf, all used
    plain = [Job(0, [])]
    assign_models(plain, None, "uniform", 1.0, 0)
    assert "model" not in plain[0].meta
