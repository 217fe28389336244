"""KV tiers: LRU budgets, the file pool with disk spill, the shared index (pure)."""

import os

import pytest

from llmd_ray.tiers.pool_files import BlockDir, FileBlockPool
from llmd_ray.tiers.shared_index import SharedBlockIndex, event_hash
from llmd_ray.tiers.lru import LRUBudget


def test_lru_evicts_least_recently_used_within_budget():
    lru = LRUBudget(100)
    assert lru.admit("a", 40) == (True, [])
    assert lru.admit("b", 40) == (True, [])
    lru.touch("a")  # b is now the oldest
    ok, evicted = lru.admit("c", 40)
    assert ok and evicted == [("b", 40)]
    assert list(lru) == ["a", "c"] and lru.used_bytes == 80
    assert lru.stats()["evictions"] == 1


def test_lru_refuses_a_block_larger_than_the_budget_and_evicts_nothing():
    lru = LRUBudget(100)
    lru.admit("a", 60)
    assert lru.admit("huge", 101) == (False, [])
    assert "a" in lru and lru.used_bytes == 60 and lru.refused == 1


def test_lru_readmit_refreshes_size_without_evicting_itself():
    lru = LRUBudget(100)
    lru.admit("a", 50)
    lru.admit("b", 50)
    ok, evicted = lru.admit("a", 60)  # grows: must evict b, never a
    assert ok and evicted == [("b", 50)] and lru.used_bytes == 60
    assert lru.remove("a") == 60 and lru.used_bytes == 0 and lru.evictions == 1


def test_lru_zero_budget_admits_only_empty_blocks():
    lru = LRUBudget(0)
    assert lru.admit("a", 1)[0] is False
    with pytest.raises(ValueError):
        LRUBudget(-1)


def _rec(n: int, tag: int = 0) -> bytes:
    return bytes([tag]) * n


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)) if os.path.isdir(path) else 0


def test_pool_spills_evicted_blocks_to_disk_and_keeps_both_budgets(tmp_path):
    disk = FileBlockPool("disk", str(tmp_path / "disk"), 250)
    mem = FileBlockPool("memory", str(tmp_path / "mem"), 200, spill=disk)
    for i in range(6):
        assert mem.put(f"h{i}", _rec(100, i))
    assert sorted(BlockDir(str(tmp_path / "mem")).hashes()) == ["h4", "h5"]
    assert sorted(BlockDir(str(tmp_path / "disk")).hashes()) == ["h2", "h3"]  # h0, h1 fell off the disk too
    assert _dir_bytes(str(tmp_path / "mem")) <= 200 and _dir_bytes(str(tmp_path / "disk")) <= 250
    assert mem.get("h3") == (_rec(100, 3), "disk")
    assert mem.get("h0") is None and not mem.contains("h0")
    st = mem.stats()
    assert st["memory"]["evictions"] == 4 and st["memory"]["spilled"] == 4 and st["disk"]["evictions"] == 2


def test_pool_get_touches_so_hot_blocks_stay_in_memory(tmp_path):
    mem = FileBlockPool("memory", str(tmp_path / "mem"), 200)
    mem.put("a", _rec(100))
    mem.put("b", _rec(100))
    assert mem.get("a")[1] == "memory"
    mem.put("c", _rec(100))
    assert "a" in mem and "b" not in mem


def test_pool_refusing_memory_goes_straight_to_disk(tmp_path):
    disk = FileBlockPool("disk", str(tmp_path / "disk"), 1000)
    mem = FileBlockPool("memory", str(tmp_path / "mem"), 0, spill=disk)
    assert mem.put("a", _rec(100))
    assert mem.get("a") == (_rec(100), "disk")


def test_disk_pool_recovers_its_lru_from_the_directory_within_budget(tmp_path):
    d = str(tmp_path / "disk")
    first = FileBlockPool("disk", d, 1000)
    for i in range(5):
        first.put(f"h{i}", _rec(100, i))
        os.utime(BlockDir(d).file(f"h{i}"), (1000 + i, 1000 + i))
    again = FileBlockPool("disk", d, 300)  # smaller budget after a restart: oldest files go
    assert sorted(BlockDir(d).hashes()) == ["h2", "h3", "h4"]
    assert again.lru.used_bytes == 300 and again.get("h4") == (_rec(100, 4), "disk")


def test_pool_adopts_a_staged_file_and_discards_bad_blocks(tmp_path):
    mem = FileBlockPool("memory", str(tmp_path / "mem"), 1000)
    staged = BlockDir(str(tmp_path / "staged"))
    staged.write("s", _rec(100, 7))
    assert mem.adopt("s", staged.file("s"))
    assert not staged.contains("s") and mem.get("s") == (_rec(100, 7), "memory")
    mem.discard("s")
    assert mem.get("s") is None and mem.lru.used_bytes == 0
    assert not mem.adopt("gone", staged.file("gone"))


def test_shared_index_budget_lru_events_and_leading_runs():
    idx = SharedBlockIndex(budget_bytes=300)
    h = [f"{i:064x}" for i in range(1, 6)]
    for x in h[:3]:
        assert idx.put("ns", x, object(), 100, "node", "r1") == (True, [])
    assert [e.source for e in idx.lookup("ns", h[:2])] == ["r1", "r1"]  # touches h0, h1
    ok, evicted = idx.put("ns", h[3], object(), 100, "node", "r2")
    assert ok and len(evicted) == 1 and ("ns", h[2]) not in idx  # h2 was least recent
    assert len(idx.lookup("ns", h)) == 2  # the run stops at the evicted h2
    assert idx.lookup("other-ns", h[:1]) == []  # another namespace is a miss
    assert idx.put("ns", h[0], object(), 100, "node", "r3") == (True, [])  # duplicate: touched, kept
    assert idx.entries[("ns", h[0])].source == "r1" and idx.duplicate_puts == 1
    assert idx.put("ns", h[4], object(), 301, "node", "r1") == (False, [])
    stored, removed = idx.take_events()
    assert stored == [event_hash(x) for x in (h[0], h[1], h[2], h[3])] and removed == [event_hash(h[2])]
    assert idx.take_events() == ([], [])
    assert idx.lru.used_bytes <= 300
    assert len(idx.clear()) == 3 and idx.lru.used_bytes == 0


def test_event_hash_is_the_low_64_bits_like_vllm_events():
    from llmd_ray.routing.hashing import block_hashes, to_event_hashes

    hs = block_hashes(list(range(32)), 16, seed="0")
    assert [event_hash(x.hex()) for x in hs] == to_event_hashes(hs)
