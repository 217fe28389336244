"""KV tiers: the self-describing block record and the tier lookup (pure)."""

import numpy as np
import pytest

from llmd_ray.tiers import format as tf
from llmd_ray.kv.layout import KVLayout
from llmd_ray.tiers.lookup import lookup, new_full_blocks

LAYOUT = KVLayout("cpu", 2, 4, 8, "float32", "vec")
NS = tf.TierNamespace("tiny-llama", LAYOUT, ("l0", "l1", "l2"))
H = "ab" * 32
TOKENS = [1, 2, 3, 4]


def _payload(seed=0):
    return np.random.default_rng(seed).standard_normal(NS.payload_shape).astype(np.float32)


def test_record_round_trip_is_bit_exact():
    p = _payload()
    rec = tf.encode(NS, H, None, TOKENS, p)
    out = tf.decode(rec, NS, H, TOKENS)
    assert out.dtype == np.float32 and np.array_equal(out, p)
    out2 = tf.decode(np.frombuffer(rec, dtype=np.uint8), NS, bytes.fromhex(H))  # object-store form, bytes hash
    assert np.array_equal(out2, p)
    header, _ = tf.read_header(rec)
    assert header["ns"]["model"] == "tiny-llama" and header["tokens"] == TOKENS and header["hash"] == H


@pytest.mark.parametrize(
    "reader_ns",
    [
        tf.TierNamespace("other-model", LAYOUT, NS.layer_names),
        tf.TierNamespace("tiny-llama", KVLayout("cpu", 2, 4, 8, "bfloat16", "vec"), NS.layer_names),
        tf.TierNamespace("tiny-llama", KVLayout("kv_split", 2, 4, 8, "float32", "vec"), NS.layer_names),
        tf.TierNamespace("tiny-llama", KVLayout("cpu", 2, 4, 8, "float32", "amx"), NS.layer_names),
        tf.TierNamespace("tiny-llama", LAYOUT, ("l0", "l1")),
    ],
)
def test_namespace_mismatch_is_a_miss(reader_ns):
    rec = tf.encode(NS, H, None, TOKENS, _payload())
    assert reader_ns.digest() != NS.digest()
    with pytest.raises(tf.RecordMismatch):
        tf.decode(rec, reader_ns, H)


def test_wrong_hash_tokens_truncation_or_corruption_is_a_miss():
    rec = tf.encode(NS, H, "cd" * 32, TOKENS, _payload())
    with pytest.raises(tf.RecordMismatch, match="hash"):
        tf.decode(rec, NS, "ef" * 32)
    with pytest.raises(tf.RecordMismatch, match="tokens"):
        tf.decode(rec, NS, H, [1, 2, 3, 5])
    with pytest.raises(tf.RecordMismatch):
        tf.decode(rec[:-4], NS, H)
    bad = bytearray(rec)
    bad[-1] ^= 0xFF
    with pytest.raises(tf.RecordMismatch, match="checksum"):
        tf.decode(bytes(bad), NS, H)
    with pytest.raises(tf.RecordMismatch):
        tf.decode(b"garbage" * 10, NS, H)
    with pytest.raises(tf.RecordMismatch):
        tf.decode(rec[:20], NS, H)


def test_encode_rejects_wrong_payload_or_token_count():
    with pytest.raises(ValueError):
        tf.encode(NS, H, None, TOKENS, _payload().astype(np.float64))
    with pytest.raises(ValueError):
        tf.encode(NS, H, None, [1, 2], _payload())


def test_namespace_digest_is_stable_and_round_trips():
    assert tf.TierNamespace.from_dict(NS.to_dict()) == NS
    assert NS.digest() == tf.TierNamespace.from_dict(NS.to_dict()).digest() and len(NS.digest()) == 16


def _holders(mem=(), disk=(), shared=()):
    return [("memory", lambda h: h in mem), ("disk", lambda h: h in disk), ("shared", lambda h: h in shared)]


HS = [f"h{i}" for i in range(8)]


def test_lookup_runs_from_the_engine_hit_through_tiers_in_order():
    hit = lookup(HS, 8 * 4 + 1, 4, 4, _holders(mem={"h1", "h2"}, disk={"h2", "h3"}, shared={"h4"}))
    assert hit.first == 1 and hit.tiers == ("memory", "memory", "disk", "shared")
    assert hit.num_tokens(4) == 16 and hit.counts() == {"memory": 2, "disk": 1, "shared": 1}


def test_lookup_stops_at_the_first_gap_and_never_covers_the_last_prompt_token():
    assert lookup(HS, 33, 4, 0, _holders(mem={"h0", "h2"})).tiers == ("memory",)
    everything = _holders(mem=set(HS))
    assert lookup(HS, 32, 4, 0, everything).num_blocks == 7  # 32 tokens: block 7 holds the last token
    assert lookup(HS, 33, 4, 0, everything).num_blocks == 8
    assert lookup(HS, 3, 4, 0, everything).num_blocks == 0  # shorter than a block


def test_lookup_skips_runs_below_the_crossover_and_partial_local_hits():
    hit = lookup(HS, 33, 4, 0, _holders(mem={"h0", "h1"}), min_load_blocks=3)
    assert hit.num_blocks == 0 and hit.skipped == "below_min_load"
    assert lookup(HS, 33, 4, 0, _holders(mem={"h0", "h1", "h2"}), min_load_blocks=3).num_blocks == 3
    assert lookup(HS, 33, 4, 6, _holders(mem=set(HS))).num_blocks == 0  # mid-block local hit
    assert lookup(HS, 33, 4, 32, _holders(mem=set(HS))).num_blocks == 0  # engine holds it all
    with pytest.raises(ValueError):
        lookup(HS, 33, 4, 0, _holders(), min_load_blocks=0)


def test_new_full_blocks_to_save():
    assert new_full_blocks(num_hashes=8, saved_upto=0, computed_after_step=13, block_size=4) == range(0, 3)
    assert new_full_blocks(8, 3, 13, 4) == range(3, 3)
    assert new_full_blocks(8, 3, 40, 4) == range(3, 8)
    assert new_full_blocks(2, 0, 40, 4) == range(0, 2)  # hashes not yet known
