"""The precise index path inside Ray Serve, with fake replicas that publish KV events.

Each FakeKV replica binds a ZMQ PUB socket and publishes vLLM-format
``KVEventBatch`` messages (topic, 8-byte sequence number, msgpack payload), as
a vLLM engine with ``kv_events_config`` does. The real ``KVIndex`` deployment
follows them and the router mirrors it. A prefix *preloaded* on one replica
(never routed there, so the approximate index cannot know it) must attract
requests to that replica.
"""

from __future__ import annotations

import random
import time

import msgspec
import pytest
import yaml
import zmq
from ray import serve

from llmd_ray.host import free_port
from llmd_ray.engine.types import GenerateChunk, GenerateRequest, SamplingOptions
from llmd_ray.routing.hashing import block_hashes, to_event_hashes
from llmd_ray.serving.app import RouterArgs, request_router_config
from llmd_ray.serving.kv_index import KVIndex

APP = "precise-component"
BLOCK = 4


@serve.deployment(num_replicas=3, max_ongoing_requests=64, ray_actor_options={"num_cpus": 0})
class FakeKV:
    def __init__(self, kv_index):
        self.id = serve.get_replica_context().replica_id.unique_id
        port = free_port("127.0.0.1")
        self.pub = zmq.Context.instance().socket(zmq.PUB)
        self.pub.bind(f"tcp://127.0.0.1:{port}")
        self.endpoints = {"events": f"tcp://127.0.0.1:{port}"}
        self.seq = 0

    def _publish(self, tokens: list[int]) -> None:
        hashes = to_event_hashes(block_hashes(tokens, BLOCK, seed="0"))
        event = {"type": "BlockStored", "block_hashes": hashes, "parent_block_hash": None, "token_ids": tokens,
                 "block_size": BLOCK, "lora_id": None, "medium": "GPU", "lora_name": None}
        payload = msgspec.msgpack.encode([time.time(), [event], None])
        self.pub.send_multipart([self.id.encode(), self.seq.to_bytes(8, "big"), payload])
        self.seq += 1

    async def generate(self, request: GenerateRequest):
        yield GenerateChunk(request.request_id, self.id, [], len(request.prompt_token_ids), 0, 1, "length")

    def preload(self, tokens: list[int]) -> str:
        self._publish(tokens)
        return self.id

    def record_routing_stats(self) -> dict:
        return {"num_waiting": 0, "num_running": 0, "kv_cache_usage": 0.1, "block_size": BLOCK,
                "num_blocks": 10_000, "updated_at": time.time(), "kv_events": self.endpoints}


class WatchedKVIndex(KVIndex):
    """The real KVIndex, remembering how far the router's mirror has caught up (the ``since`` of its syncs)."""

    def __init__(self):
        super().__init__()
        self.router_seq: int | None = None

    async def sync(self, live, epoch, since):
        if epoch == self.index.epoch:  # the router's mirror holds every change up to ``since``
            self.router_seq = since
        return await super().sync(live, epoch, since)

    def caught_up(self) -> tuple[int, int | None]:
        """(this index's seq, the seq the router last reported having applied)."""
        return self.index.seq, self.router_seq


CONFIG = {
    "plugins": [
        {"type": "prefix-cache-affinity", "parameters": {"matchSource": "precise"}},
        {"type": "precise-prefix-cache", "parameters": {"maxStalenessSeconds": 2}},
        {"type": "queue"},
        {"type": "max-score"},
    ],
    "schedulingProfiles": [{"name": "default", "plugins": [
        {"pluginRef": "prefix-cache-affinity"}, {"pluginRef": "precise-prefix-cache", "weight": 3},
        {"pluginRef": "queue", "weight": 1}, {"pluginRef": "max-score"},
    ]}],
}


@pytest.fixture(scope="module")
def handles(serve_instance):
    router = RouterArgs(config=CONFIG, stats_period_s=0.2, block_size=BLOCK, kv_index_sync_s=0.1)
    assert router.uses_precise_index()
    index = serve.deployment(WatchedKVIndex).options(name="KVIndex", ray_actor_options={"num_cpus": 0}).bind()
    app = FakeKV.options(request_router_config=request_router_config(router)).bind(index)
    h = serve.run(app, name=APP, route_prefix=None)
    yield h, serve.get_deployment_handle("KVIndex", app_name=APP)
    serve.delete(APP)


async def _route(handle, tokens) -> str:
    req = GenerateRequest(f"r{random.random()}", tokens, SamplingOptions(max_tokens=1))
    chunks = [c async for c in handle.options(stream=True).generate.remote(req)]
    return chunks[0].text


async def test_requests_follow_blocks_the_engine_reported(handles):
    import asyncio

    handle, kv_index = handles
    # Routers announce live replicas (with their event endpoints) on their first sync.
    await _route(handle, [1, 2, 3])
    deadline = time.monotonic() + 30
    while len((await kv_index.stats.remote())["following"]) < 3 and time.monotonic() < deadline:
        await _route(handle, [1, 2, 3])
        await asyncio.sleep(0.2)
    assert len((await kv_index.stats.remote())["following"]) == 3
    # ... and once it has replayed every engine it follows, the index stops telling routers it is recovering.
    while (await kv_index.stats.remote())["recovering"]:
        assert time.monotonic() < deadline, "the index never finished replaying the engines it follows"
        await asyncio.sleep(0.1)

    rng = random.Random(1)
    for trial in range(3):
        prefix = [rng.randrange(1000) for _ in range(6 * BLOCK)]
        owner = None
        # Preload lands on some replica: that replica now "holds" the prefix in its engine.
        owner = await handle.preload.remote(prefix)
        while max((await kv_index.lookup.remote(prefix, BLOCK, "0")).values(), default=0) < 6 * BLOCK:
            assert time.monotonic() < deadline + 30, "event never reached the index"
            await asyncio.sleep(0.1)
        indexed, _ = await kv_index.caught_up.remote()
        # The router's mirror has applied the index up to the prefix's event once a sync reports that seq.
        while ((await kv_index.caught_up.remote())[1] or 0) < indexed:
            assert time.monotonic() < deadline + 30, "the router's mirror never caught up with the index"
            await asyncio.sleep(0.05)
        chosen = {await _route(handle, prefix + [5000 + i]) for i in range(4)}
        assert chosen == {owner}, (trial, owner, chosen)


def _affinity_only(match_source: str) -> dict:
    return {
        "plugins": [{"type": "prefix-cache-affinity", "parameters": {"matchSource": match_source}}, {"type": "queue"}],
        "schedulingProfiles": [{"name": "default", "plugins": [
            {"pluginRef": "prefix-cache-affinity"}, {"pluginRef": "queue"}]}],
    }


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"config": CONFIG}, True),                                   # a precise-prefix-cache scorer
        ({"config": _affinity_only("precise")}, True),                # affinity filter on the precise index
        ({"config": _affinity_only("approximate")}, False),
        ({"config": yaml.safe_dump(_affinity_only("precise"))}, True),  # YAML text is parsed, not grepped
        ({"config": {**_affinity_only("approximate"), "kind": "EndpointPickerConfig"}}, False),
        ({}, False),                                                  # the default profile
        ({"config": CONFIG, "precise_index": False}, False),          # an explicit setting wins
        ({"config": CONFIG, "policy": "pow2"}, False),
    ],
)
def test_uses_precise_index_reads_the_parsed_config(args, expected):
    assert RouterArgs(**args).uses_precise_index() is expected


def test_uses_precise_index_rejects_a_bad_config_by_field():
    from llmd_ray.errors import ConfigError

    with pytest.raises(ConfigError, match="schedulingProfiles"):
        RouterArgs(config={"plugins": []}).uses_precise_index()
