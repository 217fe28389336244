"""Pure properties of the router's block hashes (vLLM equivalence: tests/integration)."""

import hashlib
import pickle
import subprocess
import sys

import pytest

from llmd_ray.routing.hashing import (
    DEFAULT_NONE_HASH_SEED, block_hashes, hash_block_tokens, none_hash, resolve_hash_seed, to_event_hash,
    to_event_hashes,
)
from llmd_ray.routing.types import RoutingRequest

TOKENS = list(range(1000, 1000 + 40))


def test_no_vllm_or_ray_import():
    # In a fresh interpreter: other test tiers in the same session import Ray.
    code = ("import sys, llmd_ray.routing.hashing; "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('ray', 'vllm')]")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_chain_property():
    hs = block_hashes(TOKENS, 8, seed="0")
    parent = none_hash("0")
    for i, h in enumerate(hs):
        expected = hashlib.sha256(
            pickle.dumps((parent, tuple(TOKENS[i * 8:(i + 1) * 8]), None), protocol=pickle.HIGHEST_PROTOCOL)
        ).digest()
        assert h == expected == hash_block_tokens(parent, TOKENS[i * 8:(i + 1) * 8], seed="0")
        parent = h


@pytest.mark.parametrize(
    "num_tokens, block_size, expected_blocks",
    [(0, 8, 0), (7, 8, 0), (8, 8, 1), (15, 8, 1), (16, 8, 2), (40, 8, 5), (40, 16, 2), (1500, 128, 11)],
)
def test_full_blocks_only(num_tokens, block_size, expected_blocks):
    tokens = list(range(num_tokens))
    assert len(block_hashes(tokens, block_size)) == expected_blocks
    assert RoutingRequest("r", tokens, block_size).num_blocks == expected_blocks


def test_prefix_stability():
    a = block_hashes(TOKENS, 8)
    assert block_hashes(TOKENS[:24] + [7] * 16, 8)[:3] == a[:3]
    assert block_hashes(TOKENS[:24] + [7] * 16, 8)[3:] != a[3:]
    assert block_hashes(TOKENS + [1, 2, 3], 8) == a  # a partial tail changes nothing


def test_position_matters_through_the_chain():
    # the same block content after a different prefix hashes differently
    x = block_hashes([1] * 8 + [5] * 8, 8)
    y = block_hashes([2] * 8 + [5] * 8, 8)
    assert x[1] != y[1]


def test_determinism_and_seed():
    assert block_hashes(TOKENS, 8, seed="0") == block_hashes(list(TOKENS), 8, seed="0")
    assert block_hashes(TOKENS, 8, seed="0") != block_hashes(TOKENS, 8, seed="1")
    assert none_hash("0") == hashlib.sha256(pickle.dumps("0", protocol=pickle.HIGHEST_PROTOCOL)).digest()


def test_seed_resolution(monkeypatch):
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    assert resolve_hash_seed() == "0" and resolve_hash_seed("x") == "x"
    monkeypatch.delenv("PYTHONHASHSEED")
    assert resolve_hash_seed() == DEFAULT_NONE_HASH_SEED


def test_continuing_a_chain_with_parent_hash():
    full = block_hashes(TOKENS, 8)
    assert block_hashes(TOKENS[16:], 8, parent_hash=full[1]) == full[2:]


def test_extra_keys_change_hashes():
    plain = block_hashes(TOKENS, 8)
    salted = block_hashes(TOKENS, 8, cache_salt="tenant")
    assert all(p != s for p, s in zip(plain, salted))  # the salt on block 0 changes the whole chain
    assert block_hashes(TOKENS, 8, lora=("a", "/p")) != plain


def test_numpy_like_ints_are_coerced():
    class I(int):  # stands in for numpy.int64: not exactly int
        pass

    assert block_hashes([I(t) for t in TOKENS], 8) == block_hashes(TOKENS, 8)


def test_event_hash_is_low_64_bits():
    h = bytes(range(32))
    assert to_event_hash(h) == int.from_bytes(h[-8:], "big")
    assert to_event_hashes([h, h]) == [to_event_hash(h)] * 2
    assert 0 <= to_event_hash(b"\xff" * 32) == 2**64 - 1


def test_request_caches_hashes():
    r = RoutingRequest("r", TOKENS, 8)
    assert r.block_hashes is r.block_hashes
    assert r.event_block_hashes == to_event_hashes(r.block_hashes)


def test_bad_block_size():
    with pytest.raises(ValueError):
        block_hashes(TOKENS, 0)
