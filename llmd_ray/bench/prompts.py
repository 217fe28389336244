"""Prompts built to an exact token count with the served model's tokenizer.

Counting convention: a prompt of N tokens is one the *server* counts as N
(`usage.prompt_tokens` on /v1/completions), i.e. `encode(text)` with the
tokenizer's default special tokens (BOS for llama-style tokenizers). The
builder works on the raw ids (no specials) and subtracts the special-token
overhead, so `count(text) == N` exactly.

How: sample ids from the vocabulary minus special/added tokens with a seeded
RNG, decode, re-encode, then trim or top up the re-encoded ids and repeat
until the round trip is stable at the target length (decode/encode is not
an identity: merges across boundaries, byte fragments). A prompt can also be
grown after a fixed prefix; the prefix's token ids are then checked to be
unchanged, so prompts of one shared_prefix group really share those tokens.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import numpy as np

TINY_MODEL_NAME = "tiny-llama"


def default_tokenizer_path(model: str) -> str | None:
    """The tiny model's dir for `tiny-llama` (its dir carries the tokenizer), else None."""
    if model != TINY_MODEL_NAME:
        return None
    try:  # the engine owns the location (honours $LLMD_RAY_MODEL_DIR); it imports nothing heavy
        from llmd_ray.engine.tiny import default_model_dir  # noqa: PLC0415

        return str(default_model_dir())
    except ImportError:
        env = os.environ.get("LLMD_RAY_MODEL_DIR")
        return os.path.expanduser(env) if env else str(Path.home() / ".cache/llmd_ray/models" / TINY_MODEL_NAME)


def load_tokenizer(path: str):
    """A transformers tokenizer from a local dir (never touches the network)."""
    from transformers import AutoTokenizer  # noqa: PLC0415 - heavy import, only when needed

    if not Path(path).exists():
        raise FileNotFoundError(f"tokenizer dir {path} does not exist (pass --tokenizer DIR)")
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


class PromptBuilder:
    """Builds text prompts whose token count, as the server sees it, is exact."""

    def __init__(self, tokenizer, max_rounds: int = 12, max_attempts: int = 20):
        self.tok = tokenizer
        self.max_rounds = max_rounds
        self.max_attempts = max_attempts
        special = set(tokenizer.all_special_ids)
        special |= set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
        self.vocab = np.array([i for i in range(len(tokenizer)) if i not in special], dtype=np.int64)
        if len(self.vocab) == 0:
            raise ValueError("tokenizer has no non-special tokens to sample from")

    @cached_property
    def special_overhead(self) -> int:
        """Tokens that encode() adds around any text (e.g. 1 for a BOS)."""
        return len(self.tok.encode("hello world", add_special_tokens=True)) - len(self.raw_ids("hello world"))

    def raw_ids(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def count(self, text: str) -> int:
        """Tokens the server counts for `text` sent as a completions prompt."""
        return len(self.tok.encode(text, add_special_tokens=True))

    def chat_count(self, messages: list[dict], add_generation_prompt: bool = True) -> int | None:
        """Tokens of the chat-templated conversation; None without a chat template."""
        if not getattr(self.tok, "chat_template", None):
            return None
        out = self.tok.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
        if isinstance(out, dict) or hasattr(out, "keys"):  # BatchEncoding in newer transformers
            out = out["input_ids"]
        return len(out)

    def _sample(self, rng: np.random.Generator, n: int) -> list[int]:
        return self.vocab[rng.integers(0, len(self.vocab), size=n)].tolist()

    def extend(self, prefix: str, n_new: int, rng: np.random.Generator) -> str:
        """Return `prefix + suffix` whose raw encoding is raw_ids(prefix) plus exactly
        n_new more tokens, with the prefix's ids unchanged."""
        if n_new <= 0:
            return prefix
        prefix_ids = self.raw_ids(prefix) if prefix else []
        p = len(prefix_ids)
        for _ in range(self.max_attempts):
            ids = self._sample(rng, n_new)
            for _ in range(self.max_rounds):
                text = prefix + self.tok.decode(ids, clean_up_tokenization_spaces=False)
                enc = self.raw_ids(text)
                if enc[:p] != prefix_ids:
                    break  # the suffix merged into the prefix: resample
                got = enc[p:]
                if len(got) == n_new:
                    return text
                ids = got[:n_new] if len(got) > n_new else got + self._sample(rng, n_new - len(got))
        raise RuntimeError(f"could not build a prompt of exactly {n_new} new tokens after a {p}-token prefix")

    def text(self, n_tokens: int, rng: np.random.Generator, prefix: str = "") -> str:
        """A prompt of exactly n_tokens server-counted tokens (specials included)."""
        target_raw = n_tokens - self.special_overhead
        if target_raw < 1:
            raise ValueError(f"{n_tokens} tokens is below the tokenizer's {self.special_overhead} special tokens + 1")
        have = len(self.raw_ids(prefix)) if prefix else 0
        if have > target_raw:
            raise ValueError(f"prefix already has {have} tokens, more than the {target_raw} wanted")
        out = self.extend(prefix, target_raw - have, rng)
        assert self.count(out) == n_tokens, (self.count(out), n_tokens)
        return out

    def content(self, n_tokens: int, rng: np.random.Generator) -> str:
        """Free text of exactly n_tokens raw tokens (for chat message contents)."""
        return self.extend("", n_tokens, rng)
