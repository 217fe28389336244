"""The offline tiny-llama builder (engine.tiny) and model resolution (engine.models); no Ray, no vLLM."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmd_ray.engine import models, tiny

REPO_ROOT = Path(__file__).resolve().parents[2]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fake_write_model(out: Path, spec: tiny.TinyLlamaSpec) -> None:
    """Stand-in for the real writer: the right files and marker, no torch."""
    for name in tiny.REQUIRED_FILES:
        (out / name).write_text(name)
    (out / tiny.BUILD_MARKER).write_text(json.dumps(tiny._marker(spec)))


def no_build(*args, **kwargs):
    raise AssertionError("a build was started where none was expected")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return tiny.build_tiny_model(tmp_path_factory.mktemp("first") / "tiny-llama")


@pytest.fixture(scope="module")
def tokenizer(built):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(built)


def test_build_is_byte_for_byte_deterministic(built, tmp_path):
    again = tiny.build_tiny_model(tmp_path / "again")
    for name in ("tokenizer.json", "model.safetensors", "config.json", "tokenizer_config.json"):
        assert sha256(built / name) == sha256(again / name), name


def test_layout_and_config(built, tokenizer):
    assert built.is_absolute() and tiny.is_complete(built)
    assert not [p for p in built.parent.iterdir() if p.name.startswith(".")], "staging left behind"
    config = json.loads((built / "config.json").read_text())
    spec = tiny.SPEC
    assert config["model_type"] == "llama" and config["tie_word_embeddings"] is False
    assert config["vocab_size"] == spec.vocab_size == len(tokenizer)
    assert (config["hidden_size"], config["num_hidden_layers"]) == (spec.hidden_size, spec.num_hidden_layers)
    assert config["num_key_value_heads"] == 2 and config["head_dim"] == 64
    assert config["max_position_embeddings"] == 8192
    generation = json.loads((built / "generation_config.json").read_text())
    eot, eos = tokenizer.convert_tokens_to_ids([tiny.EOT, tiny.EOS])
    assert generation["eos_token_id"] == [eot, eos]
    assert tokenizer.bos_token == tiny.BOS and tokenizer.eos_token == tiny.EOT
    assert tokenizer.pad_token == tiny.PAD


@pytest.mark.parametrize("text", [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "  leading spaces, tabs\tand\nnew lines\n\n",
    'def f(x):\n    return {"a": [1, 2, 3], "b": None}\n',
    "naïve café, 日本語のテキスト, emoji 🙂👍, math ∑ x² ≤ 10⁶",
    "",
])
def test_tokenizer_round_trips(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert tokenizer.decode(ids) == text
    with_bos = tokenizer(text).input_ids
    assert with_bos[0] == tokenizer.bos_token_id and with_bos[1:] == ids


def test_tokenizer_is_reasonably_compact(tokenizer):
    text = (tiny.DATA_DIR / "tiny_corpus.txt").read_text(encoding="utf-8")
    chars_per_token = len(text) / len(tokenizer(text, add_special_tokens=False).input_ids)
    assert 2.5 < chars_per_token < 6


def test_chat_template(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " Hi! "}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n")
    closed = tokenizer.apply_chat_template(messages, tokenize=False)
    assert closed == prompt.removesuffix("<|start_header_id|>assistant<|end_header_id|>\n\n")
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    assert tokenizer.convert_tokens_to_ids(tiny.EOT) in ids


def test_model_loads_and_runs(built):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(built).eval()
    assert model.dtype == torch.float32
    with torch.no_grad():
        logits = model(torch.tensor([[tiny.SPEC.vocab_size - 6, 10, 20, 30]])).logits
    assert logits.shape == (1, 4, tiny.SPEC.vocab_size) and torch.isfinite(logits).all()


def test_complete_build_is_skipped(built, monkeypatch):
    stamp = (built / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setattr(tiny, "_write_model", no_build)
    assert tiny.build_tiny_model(built) == built
    assert (built / "model.safetensors").stat().st_mtime_ns == stamp


def test_force_rebuild_replaces_atomically(tmp_path, monkeypatch):
    monkeypatch.setattr(tiny, "_write_model", fake_write_model)
    out = tiny.build_tiny_model(tmp_path / "m")
    (out / "stale.txt").write_text("old")
    assert tiny.build_tiny_model(out, force=True) == out
    assert tiny.is_complete(out) and not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    def crash(out, spec):
        (out / "config.json").write_text("{}")
        raise RuntimeError("boom")

    monkeypatch.setattr(tiny, "_write_model", crash)
    with pytest.raises(RuntimeError):
        tiny.build_tiny_model(tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_foreign_directory_is_not_overwritten(tmp_path, monkeypatch):
    monkeypatch.setattr(tiny, "_write_model", fake_write_model)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        tiny.build_tiny_model(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_resolve_model_passes_unknown_names_through():
    for name in ("meta-llama/Llama-3.1-8B-Instruct", "no/such/dir", "Qwen/Qwen2.5-0.5B"):
        assert models.resolve_model(name) == name


def test_resolve_model_absolutizes_local_dirs(tmp_path, monkeypatch):
    (tmp_path / "models" / "mine").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert models.resolve_model("models/mine") == str((tmp_path / "models" / "mine").resolve())
    assert models.resolve_model("./models/../models/mine") == str((tmp_path / "models" / "mine").resolve())


def test_default_model_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(tiny.MODEL_DIR_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert tiny.default_model_dir() == tmp_path / ".cache/llmd_ray/models/tiny-llama"
    monkeypatch.setenv(tiny.MODEL_DIR_ENV, str(tmp_path / "elsewhere"))
    assert tiny.default_model_dir() == tmp_path / "elsewhere"


def test_resolve_tiny_builds_once_at_default_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(tiny.MODEL_DIR_ENV, str(tmp_path / "cache" / "tiny"))
    monkeypatch.setattr(tiny, "_write_model", fake_write_model)
    path = models.resolve_model(tiny.TINY_MODEL_NAME)
    assert path == str(tmp_path / "cache" / "tiny") and tiny.is_complete(path)
    assert (tmp_path / "cache" / ".tiny.lock").exists()
    monkeypatch.setattr(tiny, "_write_model", no_build)
    assert models.resolve_model(tiny.TINY_MODEL_NAME) == path


def test_import_is_cheap():
    code = ("import sys, llmd_ray.engine.tiny, llmd_ray.engine.models; "
            "heavy = {'torch', 'transformers', 'tokenizers', 'vllm', 'ray'} & set(sys.modules); "
            "assert not heavy, heavy")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# ------------------------------------------------------------------ the second tiny model (multi-model apps)
def test_second_model_is_another_seed_and_size(built, tmp_path):
    """tiny-llama-b: its own weights, shape and token ids (BOS is vocab_size - 6 in each)."""
    from transformers import AutoConfig, AutoTokenizer

    b = tiny.build_tiny_model(tmp_path / "tiny-llama-b", spec=tiny.SPEC_B)
    assert tiny.is_complete(b, tiny.SPEC_B) and not tiny.is_complete(b) and not tiny.is_complete(built, tiny.SPEC_B)
    cfg = AutoConfig.from_pretrained(b)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size) == (256, 2, 3072)
    assert tiny.SPEC_B.seed != tiny.SPEC.seed and tiny.TINY_MODELS["tiny-llama-b"] is tiny.SPEC_B
    ids_a = AutoTokenizer.from_pretrained(built)("hello world")["input_ids"]
    ids_b = AutoTokenizer.from_pretrained(b)("hello world")["input_ids"]
    assert ids_b[0] == 3072 - 6 and ids_a[0] == 4096 - 6 and ids_a != ids_b


def test_second_model_resolves_beside_the_first(tmp_path, monkeypatch):
    monkeypatch.setenv(tiny.MODEL_DIR_ENV, str(tmp_path / "cache" / "tiny-llama"))
    monkeypatch.setattr(tiny, "_write_model", fake_write_model)
    path = models.resolve_model("tiny-llama-b")
    assert path == str(tmp_path / "cache" / "tiny-llama-b") and tiny.is_complete(path, tiny.SPEC_B)
    monkeypatch.setattr(tiny, "_write_model", no_build)
    assert models.resolve_model("tiny-llama-b") == path
    monkeypatch.delenv(tiny.MODEL_DIR_ENV)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert tiny.default_model_dir("tiny-llama-b") == tmp_path / ".cache/llmd_ray/models/tiny-llama-b"
