"""The router's block hashes equal vLLM's own (``hash_block_tokens`` with sha256).

Needs vllm installed but no engine and no Ray. ``_vllm_reference_hashes``
drives vLLM's real functions exactly as ``get_request_block_hasher`` does for
a plain text request (full blocks only, ``extra_keys=None``).
"""

from __future__ import annotations

import os
import random

import pytest

from llmd_ray.routing.hashing import DEFAULT_NONE_HASH_SEED, block_hashes, none_hash, to_event_hash


def _vllm_reference_hashes(token_ids: list[int], block_size: int, extra_keys_first=None, extra_keys_rest=None):
    from vllm.utils.hashing import sha256
    from vllm.v1.core import kv_cache_utils as kcu

    kcu.init_none_hash(sha256)
    out, parent = [], None
    for i in range(len(token_ids) // block_size):
        extra = extra_keys_first if i == 0 else extra_keys_rest
        parent = kcu.hash_block_tokens(sha256, parent, token_ids[i * block_size:(i + 1) * block_size], extra)
        out.append(parent)
    return out, kcu.NONE_HASH


def _vllm_event_hash(h: bytes) -> int:
    from vllm.v1.core.kv_cache_utils import maybe_convert_block_hash

    return maybe_convert_block_hash(h)


@pytest.mark.parametrize("block_size", [16, 128])
@pytest.mark.parametrize("num_tokens", [0, 15, 16, 127, 128, 1500, 4096])
def test_block_hashes_equal_vllm(block_size, num_tokens):
    rng = random.Random(num_tokens * 1000 + block_size)
    tokens = [rng.randrange(0, 150_000) for _ in range(num_tokens)]
    ref, ref_none = _vllm_reference_hashes(tokens, block_size)
    assert none_hash() == ref_none
    assert block_hashes(tokens, block_size) == ref
    assert [to_event_hash(h) for h in ref] == [_vllm_event_hash(h) for h in ref]


def test_none_hash_seed_resolution_matches_vllm(monkeypatch):
    from vllm.utils.hashing import sha256
    from vllm.v1.core import kv_cache_utils as kcu

    for seed in ("0", "12345", None):
        if seed is None:
            monkeypatch.delenv("PYTHONHASHSEED", raising=False)
        else:
            monkeypatch.setenv("PYTHONHASHSEED", seed)
        kcu.init_none_hash(sha256)
        assert none_hash() == kcu.NONE_HASH
        assert none_hash(seed if seed is not None else DEFAULT_NONE_HASH_SEED) == kcu.NONE_HASH


def test_cache_salt_and_lora_extra_keys_match_vllm():
    rng = random.Random(7)
    tokens = [rng.randrange(0, 32000) for _ in range(64)]
    salted, _ = _vllm_reference_hashes(tokens, 16, (("cache_salt", "tenant-a"),), None)
    assert block_hashes(tokens, 16, cache_salt="tenant-a") == salted
    lora = ("lora", "adapter", "/models/adapter")
    with_lora, _ = _vllm_reference_hashes(tokens, 16, (lora, ("cache_salt", "s")), (lora,))
    assert block_hashes(tokens, 16, cache_salt="s", lora=("adapter", "/models/adapter")) == with_lora


if __name__ == "__main__":  # script use: python tests/integration/test_routing_hash_equivalence.py
    os.environ.setdefault("PYTHONHASHSEED", "0")
    toks = list(range(1500))
    assert block_hashes(toks, 128) == _vllm_reference_hashes(toks, 128)[0]
    print("router hashes == vLLM hashes for", len(toks) // 128, "blocks")
