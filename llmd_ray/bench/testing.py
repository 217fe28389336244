"""Test support: small real tokenizers built offline with the `tokenizers` library.

The bench tests (and anyone without the tiny model at hand) need a tokenizer
whose decode/encode round trip is as awkward as a real one: byte-level BPE
(GPT-2/llama-3 style, byte fragments that decode to U+FFFD) and a
sentencepiece-like Metaspace BPE with a BOS token (llama-2 style, leading
space markers). Both are trained in about a second on a generated corpus
and saved as a Hugging Face tokenizer dir that AutoTokenizer loads.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path

import numpy as np

_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_WORDS = (
    "the of and to in is was for on that with as by at from his her an were are which this be or had not "
    "model token cache prefix request latency server replica router engine queue batch decode prefill "
    "kubernetes ray serve vllm inference throughput memory block hash score pod gateway scheduler "
    "über café naïve façade 東京 数据 模型 🙂 🚀 ÷ × ≈ ∑ résumé coöperate"
).split()


def _corpus(n_lines: int = 3000, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n_lines):
        k = int(rng.integers(4, 20))
        words = [_WORDS[i] for i in rng.integers(0, len(_WORDS), size=k)]
        num = str(int(rng.integers(0, 10_000)))
        lines.append(" ".join(words) + f", {num}. " + "".join(rng.choice(list("()[]{}<>!?;:'\"-_/\\"), 3)))
    return lines


def make_test_tokenizer(path: str | Path, kind: str = "bytelevel", vocab_size: int = 600) -> str:
    """Train and save a tokenizer dir at `path`; returns the path.

    kind: "bytelevel" (no BOS, GPT-2 style) or "metaspace" (adds a BOS, llama-2 style).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: PLC0415
    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    if kind == "bytelevel":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(_corpus(), trainer)
        bos = None
    elif kind == "metaspace":
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
        tok.decoder = decoders.Sequence([decoders.Metaspace(replacement="\u2581", prepend_scheme="first"),
                                         decoders.ByteFallback(), decoders.Fuse()])
        byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
        trainer = trainers.BpeTrainer(vocab_size=vocab_size + 256, special_tokens=specials + byte_tokens)
        tok.train_from_iterator(_corpus(), trainer)
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
        bos = "<s>"
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token=bos or "<s>",
                                   eos_token="</s>", pad_token="<pad>", add_bos_token=bos is not None)
    fast.chat_template = _CHAT_TEMPLATE
    fast.save_pretrained(str(path))
    cfg = path / "tokenizer_config.json"
    data = json.loads(cfg.read_text())
    data["chat_template"] = _CHAT_TEMPLATE
    cfg.write_text(json.dumps(data, indent=1))
    return str(path)


@cache
def cached_test_tokenizer(kind: str = "bytelevel") -> str:
    """A test tokenizer dir under the temp dir, built once per machine (atomic rename)."""
    final = Path(tempfile.gettempdir()) / f"llmd_ray_bench_tokenizer_{kind}_v1"
    if not (final / "tokenizer_config.json").exists():
        tmp = Path(tempfile.mkdtemp(prefix=final.name + ".build-", dir=final.parent))
        make_test_tokenizer(tmp, kind)
        try:
            os.rename(tmp, final)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    return str(final)
