"""KV tiers on real engines (2 replicas of the tiny model, tiny engine caches, one app for the module).

- Greedy outputs served from the tiers (local pool, disk spill, shared object store) are token-identical
  to the cold computation, across block boundaries and after the engines evicted the prefixes.
- A replica is killed after computing a prefix; the other replica reuses it from the shared tier.
- Every pool stays within its byte budget; after the run the shared tier holds no object-store leak
  and no staged file is left behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time

import httpx
import pytest

from tests.conftest import HTTP_PORT

APP = "kvtiers"
MODEL = "tiny-llama"
BLOCK = 128
BLOCK_RECORD = 393_216 + 2048  # 3 layers x 2 heads x 128 x 128 x fp32, plus the record header
MEM_BYTES = 6 * BLOCK_RECORD
DISK_BYTES = 20 * BLOCK_RECORD
SHARED_BYTES = 100 * BLOCK_RECORD  # holds the whole run: what the engines and local pools evict stays reachable


@pytest.fixture(scope="module")
def tiers_app(serve_instance, tmp_path_factory):
    from ray import serve

    from llmd_ray import build_app

    root = tmp_path_factory.mktemp("kvtiers")
    shm_root = f"/dev/shm/llmd-kv-tiers-test-{os.getpid()}"
    args = {
        "num_replicas": 2,
        "engine": {"model": MODEL, "max_model_len": 2048, "num_kv_blocks": 17},
        "kv_tiers": {"memory_bytes": MEM_BYTES, "disk_dir": str(root / "disk"), "disk_bytes": DISK_BYTES,
                     "shared": True, "shared_bytes": SHARED_BYTES, "shm_root": shm_root,
                     "min_load_blocks": 1},  # single blocks too: the tests count exact block hits
        "router": {"policy": "llmd", "precise_index": True,
                   "config": {"plugins": [{"type": "precise-prefix-cache"}, {"type": "queue"}, {"type": "max-score"}],
                              "schedulingProfiles": [{"name": "default", "plugins": [
                                  {"pluginRef": "precise-prefix-cache", "weight": 3}, {"pluginRef": "queue", "weight": 2},
                                  {"pluginRef": "max-score"}]}]}},
    }
    serve.run(build_app(args), name=APP, route_prefix=f"/{APP}")
    yield {"url": f"http://127.0.0.1:{HTTP_PORT}/{APP}", "shm_root": shm_root, "disk": str(root / "disk")}
    serve.delete(APP)
    import shutil

    shutil.rmtree(shm_root, ignore_errors=True)  # replicas killed by Serve may skip __del__ (swept at next start)


@pytest.fixture(scope="module")
def store(tiers_app):
    from ray import serve

    return serve.get_deployment_handle("SharedKVStore", app_name=APP)


def _tokens(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(10, 4000) for _ in range(n)]


async def _complete(client: httpx.AsyncClient, prompt: list[int], max_tokens: int = 6) -> dict:
    r = await client.post("/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": max_tokens,
                                                   "temperature": 0, "ignore_eos": True, "logprobs": 1})
    assert r.status_code == 200, r.text
    return r.json()


def _out(body: dict) -> tuple:
    c = body["choices"][0]
    return c["text"], tuple(c["logprobs"]["tokens"])


def _cached(body: dict) -> int:
    return body["usage"]["prompt_tokens_details"]["cached_tokens"]


def _owners(shm_root: str) -> list[str]:
    return [os.path.join(shm_root, d) for d in sorted(os.listdir(shm_root)) if os.path.isdir(os.path.join(shm_root, d))]


def _conn_stats(owner: str) -> dict:
    out = {}
    for part in ("scheduler", "worker"):
        try:
            with open(os.path.join(owner, f"{part}.json")) as f:
                out.update(json.load(f))
        except (OSError, ValueError):
            pass
    return out


def _tier_hits(shm_root: str) -> dict[str, int]:
    """Blocks served per tier (and by the engines' own caches, ``engine``), over all replicas."""
    hits: dict[str, int] = {}
    for o in _owners(shm_root):
        for k, v in _conn_stats(o).items():
            if k.startswith("hit_blocks_") or k == "engine_hit_blocks":
                tier = "engine" if k == "engine_hit_blocks" else k[len("hit_blocks_"):]
                hits[tier] = hits.get(tier, 0) + v
    return hits


def _hashes(prompt: list[int]) -> list[str]:
    from llmd_ray.routing.hashing import block_hashes

    return [h.hex() for h in block_hashes(prompt, BLOCK, seed="0")]


async def _wait_shared(store, ns: str, prompt: list[int], timeout: float = 20.0) -> None:
    want = _hashes(prompt)
    deadline = time.monotonic() + timeout
    while await store.missing.remote(ns, want):
        assert time.monotonic() < deadline, "blocks never reached the shared tier"
        await asyncio.sleep(0.2)


def _namespace(shm_root: str) -> str:
    for o in _owners(shm_root):
        p = os.path.join(o, "namespace.json")
        if os.path.exists(p):
            with open(p) as f:
                return json.load(f)["digest"]
    raise AssertionError("no replica wrote its namespace")


def plasma_usage() -> tuple[int, int]:
    """(MiB, objects) in the object store, from Ray's own memory summary."""
    import re

    import ray
    from ray._private.internal_api import memory_summary

    text = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
    m = re.search(r"Plasma memory usage (\d+) MiB, (\d+) objects", text)
    assert m, f"unexpected memory summary: {text[:300]}"
    return int(m.group(1)), int(m.group(2))


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs if f.endswith(".kvb"))


def _total(owners: list[str], key: str) -> int:
    return sum(_conn_stats(o).get(key, 0) for o in owners)


async def _counted(owners: list[str], lookups: int, timeout: float = 20.0) -> None:
    """Wait until the connectors of ``owners`` have counted ``lookups`` scheduled requests in all.

    A connector writes its counters (lookups and tier hits, in one file write) when it schedules a
    request, before the request runs: once they show a request, its hits are in too.
    """
    deadline = time.monotonic() + timeout
    while _total(owners, "lookups") < lookups:
        assert time.monotonic() < deadline, f"connectors counted {_total(owners, 'lookups')} of {lookups} requests"
        await asyncio.sleep(0.1)


async def _wait_running(replicas: int, timeout: float = 30.0) -> None:
    """Wait until Serve's controller reports ``replicas`` running LLMServer replicas."""
    from ray import serve

    deadline = time.monotonic() + timeout
    while True:
        dep = (await asyncio.to_thread(serve.status)).applications[APP].deployments["LLMServer"]
        if dep.replica_states.get("RUNNING", 0) == replicas:
            return
        assert time.monotonic() < deadline, f"LLMServer replicas: {dep.replica_states}, not {replicas} running"
        await asyncio.sleep(0.1)


async def _evict_engine_caches(client: httpx.AsyncClient, rng: random.Random) -> None:
    """Fill both engines' 17-block caches with other prompts (two at once: one per replica)."""
    for _ in range(2):
        await asyncio.gather(*(_complete(client, _tokens(rng, 1900), max_tokens=1) for _ in range(2)))


async def test_tier_hits_are_token_identical_across_block_boundaries_and_eviction(tiers_app, store):
    rng = random.Random(9)
    prompts = [_tokens(rng, n) for n in (127, 128, 129, 256, 385, 700)]
    owners = _owners(tiers_app["shm_root"])
    assert len(owners) == 2, owners
    n0 = _total(owners, "lookups")
    async with httpx.AsyncClient(base_url=tiers_app["url"], timeout=300) as client:
        cold = [await _complete(client, p) for p in prompts]
        ns = _namespace(tiers_app["shm_root"])
        for p in prompts:
            await _wait_shared(store, ns, p)
        await _counted(owners, n0 + len(prompts))
        before = _tier_hits(tiers_app["shm_root"])
        await _evict_engine_caches(client, rng)
        warm = [await _complete(client, p) for p in prompts]
        await _counted(owners, n0 + 2 * len(prompts) + 4)  # and the 4 fillers
        after = _tier_hits(tiers_app["shm_root"])
    for p, c, w in zip(prompts, cold, warm):
        assert _out(w) == _out(c), f"{len(p)}-token prompt: tier hit changed the greedy output"
        assert _cached(w) == (len(p) - 1) // BLOCK * BLOCK, (len(p), _cached(w))  # every full block reused
    gained = {t: after.get(t, 0) - before.get(t, 0) for t in after}
    # Every full block of the warm prompts came from an engine cache or a tier, and the tiers served
    # most of them (the fillers evicted the engines' copies).
    assert sum(gained.values()) == sum((len(p) - 1) // BLOCK for p in prompts), gained
    assert sum(n for t, n in gained.items() if t != "engine") >= 5, gained


async def test_killed_replica_prefix_is_reused_from_the_shared_tier(tiers_app, store):
    import ray

    rng = random.Random(33)
    prompt = _tokens(rng, 5 * BLOCK + 40)
    hashes = _hashes(prompt)
    async with httpx.AsyncClient(base_url=tiers_app["url"], timeout=300) as client:
        first = await _complete(client, prompt)
        ns = _namespace(tiers_app["shm_root"])
        await _wait_shared(store, ns, prompt)
        holders = [o for o in _owners(tiers_app["shm_root"])
                   if os.path.exists(os.path.join(o, "mem", ns, hashes[0] + ".kvb"))]
        assert len(holders) == 1, holders
        computed_by = os.path.basename(holders[0])
        survivor = [o for o in _owners(tiers_app["shm_root"]) if o != holders[0]]
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["name"].startswith(f"SERVE_REPLICA::{APP}#LLMServer#") and a["name"].endswith(computed_by)]
        assert len(names) == 1, names
        shared_before, lookups_before = _total(survivor, "hit_blocks_shared"), _total(survivor, "lookups")
        ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
        await _wait_running(1)  # Serve saw it die (its replacement's engine takes far longer to start)
        again = await _complete(client, prompt)  # only the survivor is up
        await _counted(survivor, lookups_before + 1)
    assert _out(again) == _out(first)
    assert _cached(again) == 5 * BLOCK
    shared_after = _total(survivor, "hit_blocks_shared")
    assert shared_after - shared_before == 5, (shared_before, shared_after)


async def test_budgets_hold_and_nothing_leaks(tiers_app, store):
    stats = await store.stats.remote()
    assert 0 < stats["used_bytes"] <= SHARED_BYTES, stats
    mem_evictions = 0
    for o in _owners(tiers_app["shm_root"]):
        assert _dir_bytes(os.path.join(o, "mem")) <= MEM_BYTES
        staged = os.path.join(o, "staged")
        assert _dir_bytes(staged) == 0, os.listdir(staged)  # fetched blocks were loaded (moved) or released
        pools = _conn_stats(o).get("pools")
        if not pools:  # a replacement replica that has not saved anything yet
            continue
        assert pools["memory"]["used_bytes"] <= MEM_BYTES and pools["disk"]["used_bytes"] <= DISK_BYTES, pools
        mem_evictions += pools["memory"]["evictions"]
    assert mem_evictions > 0  # the run overflowed the memory pools (spilled to disk)
    for rank_dir in os.listdir(tiers_app["disk"]):
        assert _dir_bytes(os.path.join(tiers_app["disk"], rank_dir)) <= DISK_BYTES
    mib_before, objects_before = plasma_usage()
    cleared = await store.clear.remote()
    assert cleared == stats["blocks"]
    deadline = time.monotonic() + 20
    while True:
        mib, objects = plasma_usage()
        if objects <= objects_before - cleared or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert objects <= objects_before - cleared, (objects_before, objects, cleared)
    assert mib <= mib_before - stats["used_bytes"] // (1 << 20) + 1
    assert (await store.stats.remote())["used_bytes"] == 0

