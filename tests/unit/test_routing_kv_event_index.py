"""KVEventIndex (actor side) and IndexMirror (router side): events, deltas, snapshots."""

from __future__ import annotations

import msgspec
import pytest

from llmd_ray.routing.hashing import block_hashes, to_event_hashes
from llmd_ray.routing.kv_event_index import IndexMirror, KVEventIndex, event_hash


def stored(hashes, medium="GPU", parent=None):
    return {"type": "BlockStored", "block_hashes": list(hashes), "parent_block_hash": parent,
            "token_ids": [], "block_size": 4, "lora_id": None, "medium": medium, "lora_name": None}


def removed(hashes, medium="GPU"):
    return {"type": "BlockRemoved", "block_hashes": list(hashes), "medium": medium}


def batch(*events):
    # The wire form: vLLM's KVEventBatch is an array-like msgspec struct.
    return msgspec.msgpack.decode(msgspec.msgpack.encode([1.0, list(events), None]))


def test_event_hash_accepts_ints_and_bytes():
    assert event_hash(5) == 5
    assert event_hash((1 << 64) + 7) == 7
    assert event_hash((7).to_bytes(32, "big")) == 7


@pytest.mark.parametrize(
    "events, query, expected",
    [
        ([stored([1, 2, 3])], [1, 2, 3, 4], {"a": (3, "gpu")}),
        ([stored([1, 2, 3]), removed([2])], [1, 2, 3], {"a": (1, "gpu")}),  # a hole ends the prefix
        ([stored([1, 2]), {"type": "AllBlocksCleared"}], [1, 2], {}),
        ([stored([9])], [1], {}),
        ([stored([1, 2], medium="CPU")], [1, 2], {"a": (2, "cpu")}),
        ([stored([1]), removed([1], medium="CPU")], [1], {"a": (1, "gpu")}),  # other tier's removal
    ],
)
def test_events_table(events, query, expected):
    index = KVEventIndex()
    index.apply_batch("a", 0, batch(*events))
    assert index.match(query) == expected


def test_leading_match_per_replica():
    index = KVEventIndex()
    index.apply_batch("a", 0, batch(stored([1, 2, 3])))
    index.apply_batch("b", 0, batch(stored([1, 2])))
    assert index.match([1, 2, 3]) == {"a": (3, "gpu"), "b": (2, "gpu")}


def test_duplicate_and_gap_sequences():
    index = KVEventIndex()
    index.apply_batch("a", 0, batch(stored([1])))
    index.apply_batch("a", 0, batch(stored([2])))  # replayed duplicate: ignored
    assert index.match([1, 2]) == {"a": (1, "gpu")}
    index.apply_batch("a", 5, batch(stored([2])))
    assert index.feeds["a"].gaps == 1


def test_drop_replica_forgets_its_blocks():
    index = KVEventIndex()
    index.apply_batch("a", 0, batch(stored([1, 2])))
    index.apply_batch("b", 0, batch(stored([1])))
    index.drop_replica("a")
    assert index.match([1, 2]) == {"b": (1, "gpu")}
    assert "a" not in index.feeds


def test_mirror_follows_deltas_then_snapshot_after_new_epoch():
    index = KVEventIndex()
    mirror = IndexMirror()
    index.apply_batch("a", 0, batch(stored([1, 2, 3])))
    mirror.apply(index.changes(mirror.epoch, mirror.seq))
    assert mirror.snapshots == 1 and mirror.lookup([1, 2, 3]) == {"a": (3, "gpu")}
    index.apply_batch("a", 1, batch(removed([3])))
    index.apply_batch("b", 0, batch(stored([1])))
    changes = index.changes(mirror.epoch, mirror.seq)
    assert "ops" in changes and len(changes["ops"]) == 2
    mirror.apply(changes)
    assert mirror.lookup([1, 2, 3]) == index.match([1, 2, 3]) == {"a": (2, "gpu"), "b": (1, "gpu")}
    # A restarted actor has a new epoch: the mirror's sequence numbers mean nothing there.
    reborn = KVEventIndex()
    reborn.apply_batch("b", 0, batch(stored([7])))
    mirror.apply(reborn.changes(mirror.epoch, mirror.seq))
    assert mirror.snapshots == 2 and mirror.lookup([1]) == {} and mirror.lookup([7]) == {"b": (1, "gpu")}


def test_trimmed_log_forces_a_snapshot():
    index = KVEventIndex(max_log=2)
    mirror = IndexMirror()
    mirror.apply(index.changes(None, 0))
    for i in range(5):
        index.apply_batch("a", i, batch(stored([i])))
    changes = index.changes(mirror.epoch, mirror.seq)
    assert "snapshot" in changes
    mirror.apply(changes)
    assert mirror.lookup([0]) == {"a": (1, "gpu")}


def test_mirror_staleness():
    mirror = IndexMirror()
    assert mirror.staleness_s() == float("inf")
    mirror.apply(KVEventIndex().changes(None, 0))
    assert mirror.staleness_s() < 1.0


def test_router_hashes_match_event_hashes_of_the_same_tokens():
    tokens = list(range(300))
    full = block_hashes(tokens, 128, seed="0")
    assert len(full) == 2  # only full blocks
    index = KVEventIndex()
    index.apply_batch("a", 0, batch(stored(to_event_hashes(full))))
    assert index.match(to_event_hashes(block_hashes(tokens[:256] + [1, 2], 128, seed="0"))) == {"a": (2, "gpu")}


@pytest.mark.parametrize(
    ("confirmed", "speculated", "at", "expected"),
    [
        ({}, {"a": [1, 2, 3]}, 1.0, {"a": (3, "gpu")}),                    # in flight: held before any event
        ({}, {"a": [1, 2, 3]}, 6.0, {}),                                   # TTL (5 s) passed, never confirmed
        ({"a": [1, 2, 3]}, {"a": [1, 2, 3]}, 6.0, {"a": (3, "gpu")}),      # confirmed outlives the speculation
        ({"a": [1]}, {"a": [2]}, 1.0, {"a": (2, "gpu")}),                  # a confirmed run extended by a speculative one
        ({"b": [1, 2]}, {"a": [1]}, 1.0, {"a": (1, "gpu"), "b": (2, "gpu")}),
        ({}, {"a": [2, 3]}, 1.0, {}),                                      # must be a leading run
    ],
)
def test_mirror_speculation_table(confirmed, speculated, at, expected):
    index = KVEventIndex()
    for replica, hashes in confirmed.items():
        index.apply_batch(replica, 0, batch(stored(hashes)))
    mirror = IndexMirror()
    mirror.apply(index.changes(None, 0))
    for replica, hashes in speculated.items():
        mirror.speculate(replica, hashes, ttl_s=5.0, now=0.0)
    assert mirror.lookup([1, 2, 3], now=at) == expected


def test_speculation_off_and_expired_entries_are_dropped():
    mirror = IndexMirror()
    mirror.speculate("a", [1, 2], ttl_s=0.0, now=0.0)
    assert mirror.speculative == {}
    mirror.speculate("a", [1], ttl_s=1.0, now=0.0)
    for i in range(255):  # every 256th call prunes what has expired
        mirror.speculate("b", [100 + i], ttl_s=1.0, now=10.0)
    assert "a" not in mirror.speculative and len(mirror.speculative["b"]) == 255


def test_mirror_follows_the_index_recovery_flag():
    mirror = IndexMirror()
    assert not mirror.is_recovering()
    changes = KVEventIndex().changes(None, 0)
    mirror.apply({**changes, "recovering": True})  # a restarted index, engines not replayed yet
    assert mirror.is_recovering() and mirror.staleness_s() < 1.0
    mirror.apply({**changes, "recovering": False})
    assert not mirror.is_recovering()
