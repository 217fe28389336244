"""Prefix-cache block hashes, bit-for-bit equal to vLLM's (v1, ``sha256``).

vLLM 0.32 (``vllm/v1/core/kv_cache_utils.py``) hashes a request's prompt in
full blocks of ``block_size`` tokens, each hash chained on its parent's::

    h_0 = sha256(pickle.dumps((NONE_HASH, tuple(tokens[0:B]), extra_keys), HIGHEST_PROTOCOL))
    h_i = sha256(pickle.dumps((h_{i-1},  tuple(tokens[iB:(i+1)B]), extra_keys), HIGHEST_PROTOCOL))

* Only FULL blocks are hashed; the trailing partial block has no hash.
* ``HIGHEST_PROTOCOL`` is 5 on Python 3.8-3.13 (``vllm.utils.hashing.sha256``).
* ``NONE_HASH = sha256(pickle.dumps(seed))`` where ``seed`` is the string in
  ``PYTHONHASHSEED`` if that variable is set (this project pins it to "0"),
  else ``"vllm-none-hash"`` for sha256 (``resolve_none_hash_seed``). The
  router must resolve the same seed as the engines: pass it explicitly, or run
  with the same ``PYTHONHASHSEED``.
* ``extra_keys`` is ``None`` for plain text requests (no LoRA, no multimodal
  input, no ``cache_salt``, no prompt embeddings). With a cache salt the
  FIRST block carries ``(("cache_salt", salt),)``; with LoRA every block
  carries ``("lora", name, path)`` first. Both are supported here.
* Token ids must be Python ``int`` (pickle encodes numpy ints differently).

KV events (``BlockStored``/``BlockRemoved``) carry, by default
(``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=1``), only the low 64 bits of each hash:
``int.from_bytes(h, "big") & (2**64 - 1)``; see :func:`to_event_hash`.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

DEFAULT_NONE_HASH_SEED = "vllm-none-hash"
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_LOW64 = (1 << 64) - 1


def sha256(obj: Any) -> bytes:
    """vLLM's ``sha256``: SHA-256 of the object's pickle (highest protocol)."""
    return hashlib.sha256(pickle.dumps(obj, protocol=_PROTOCOL)).digest()


def resolve_hash_seed(seed: str | None = None) -> str:
    """The NONE_HASH seed: explicit > ``PYTHONHASHSEED`` > vLLM's fixed default."""
    if seed is not None:
        return seed
    env = os.environ.get("PYTHONHASHSEED")
    return env if env is not None else DEFAULT_NONE_HASH_SEED


@lru_cache(maxsize=8)
def _none_hash_for(seed: str) -> bytes:
    return sha256(seed)


def none_hash(seed: str | None = None) -> bytes:
    """The parent hash of every first block (vLLM's ``NONE_HASH``)."""
    return _none_hash_for(resolve_hash_seed(seed))


def hash_block_tokens(
    parent_hash: bytes | None, block_token_ids: Sequence[int], extra_keys: tuple | None = None,
    *, seed: str | None = None,
) -> bytes:
    """One block's hash, as vLLM's ``hash_block_tokens(sha256, parent, tokens, extra_keys)``."""
    if not parent_hash:
        parent_hash = none_hash(seed)
    return sha256((parent_hash, tuple(block_token_ids), extra_keys))


def block_hashes(
    token_ids: Sequence[int], block_size: int, *, seed: str | None = None,
    parent_hash: bytes | None = None, cache_salt: str | None = None,
    lora: tuple[str, str] | None = None,
) -> list[bytes]:
    """Chained hashes of the full blocks of ``token_ids`` (a partial tail is skipped).

    ``parent_hash`` continues a chain (the first block here is not block 0, so
    ``cache_salt`` is then ignored, as in vLLM). ``lora`` is ``(name, path)``.
    """
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    n = len(token_ids) // block_size
    if n == 0:
        return []
    if type(token_ids[0]) is not int:  # numpy ints pickle differently
        token_ids = [int(t) for t in token_ids]
    dumps, digest, proto = pickle.dumps, hashlib.sha256, _PROTOCOL
    lora_key = [("lora", lora[0], lora[1])] if lora else []
    first_keys = lora_key + ([("cache_salt", cache_salt)] if cache_salt and parent_hash is None else [])
    rest_keys = tuple(lora_key) if lora_key else None
    prev = parent_hash or none_hash(seed)
    out: list[bytes] = []
    for i in range(n):
        extra = (tuple(first_keys) or None) if i == 0 else rest_keys
        start = i * block_size
        prev = digest(dumps((prev, tuple(token_ids[start:start + block_size]), extra), protocol=proto)).digest()
        out.append(prev)
    return out


def to_event_hash(block_hash: bytes) -> int:
    """The 64-bit int a KV event carries for ``block_hash`` (vLLM's ``maybe_convert_block_hash``)."""
    return int.from_bytes(block_hash, "big") & _LOW64


def to_event_hashes(hashes: Sequence[bytes]) -> list[int]:
    return [int.from_bytes(h, "big") & _LOW64 for h in hashes]
