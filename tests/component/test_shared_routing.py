"""Two ingress replicas, each with its own router, sharing routing decisions through RoutingState (issue 16).

A fake ingress (2 replicas) holds a handle to fake engines (3 replicas); each ingress replica's handle has its
own ``LLMDRequestRouter``. A prefix routed by one ingress replica must then be routed to the same engine replica
by the other, whose own index never saw it: it learns it from the shared decisions. So that the other router
would choose differently on its own, the owner then reports a queue (``num_waiting`` 1, read from a file the
test writes): a router that does not know the prefix sends it to an idle replica (checked with sharing off).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

import pytest
from ray import serve

from llmd_ray.engine.types import GenerateChunk, GenerateRequest, SamplingOptions
from llmd_ray.serving.app import RouterArgs, request_router_config
from llmd_ray.serving.routing_state import ROUTING_STATE_DEPLOYMENT, RoutingState

APP = "shared-routing-component"
BLOCK = 4


@serve.deployment(num_replicas=3, max_ongoing_requests=64, ray_actor_options={"num_cpus": 0})
class FakeLLM:
    def __init__(self, loads: str):
        self.id = serve.get_replica_context().replica_id.unique_id
        self.loads = Path(loads)  # {replica id: num_waiting}, written by the test

    async def generate(self, request: GenerateRequest):
        yield GenerateChunk(request.request_id, self.id, [], len(request.prompt_token_ids), 0, 1, "length")

    def record_routing_stats(self) -> dict:
        waiting = json.loads(self.loads.read_text()).get(self.id, 0) if self.loads.exists() else 0
        return {"num_waiting": waiting, "num_running": 0, "kv_cache_usage": 0.0, "block_size": BLOCK,
                "num_blocks": 10_000, "updated_at": time.time()}


@serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0})
class FakeIngress:
    def __init__(self, llm, routing_state):
        self.id = serve.get_replica_context().replica_id.unique_id
        self.llm = llm

    async def route(self, tokens: list[int]) -> tuple[str, str]:
        """(this ingress replica, the engine replica its router chose)."""
        req = GenerateRequest(f"r{random.random()}", tokens, SamplingOptions(max_tokens=1))
        chunks = [c async for c in self.llm.options(stream=True).generate.remote(req)]
        return self.id, chunks[0].text


CONFIG = {  # the default profile's affinity, prefix and queue parts; no imbalance gate at these tiny loads
    "plugins": [{"type": "prefix-cache-affinity", "parameters": {"imbalanceAbsTokens": 1_000_000}},
                {"type": "prefix-cache"}, {"type": "queue"}, {"type": "max-score"}],
    "schedulingProfiles": [{"name": "default", "plugins": [
        {"pluginRef": "prefix-cache-affinity"}, {"pluginRef": "prefix-cache", "weight": 3},
        {"pluginRef": "queue", "weight": 2}, {"pluginRef": "max-score"}]}],
}


@pytest.fixture(scope="module")
def loads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("shared-routing") / "loads.json"


@pytest.fixture(scope="module")
def handles(serve_instance, loads):
    router = RouterArgs(config=CONFIG, stats_period_s=0.2, block_size=BLOCK, share_decisions=True,
                        share_decisions_sync_s=0.05)
    llm = FakeLLM.options(request_router_config=request_router_config(router)).bind(str(loads))
    state = serve.deployment(RoutingState).options(name=ROUTING_STATE_DEPLOYMENT, ray_actor_options={"num_cpus": 0}).bind()
    h = serve.run(FakeIngress.bind(llm, state), name=APP, route_prefix=None)
    yield h, serve.get_deployment_handle(ROUTING_STATE_DEPLOYMENT, app_name=APP)
    serve.delete(APP)


async def _until(cond, what: str, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while True:
        value = await cond()
        if value:
            return value
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_a_prefix_routed_by_one_ingress_replica_is_routed_alike_by_the_other(handles, loads):
    handle, state = handles
    rng = random.Random(7)

    async def both_routers_syncing():  # a router starts syncing on its first decision
        await handle.route.remote([rng.randrange(10_000) for _ in range(2 * BLOCK)])
        return len((await state.stats.remote())["origins"]) == 2

    await _until(both_routers_syncing, "both ingress replicas' routers never reached RoutingState")
    followed = 0
    for trial in range(6):
        prefix = [rng.randrange(10_000) for _ in range(6 * BLOCK)]
        published = (await state.stats.remote())["seq"]
        first, owner = await handle.route.remote(prefix + [1])

        async def shared_and_applied():  # every router has applied the log past the first decision of this prefix
            s = await state.stats.remote()
            return s["seq"] > published and all(o["since"] >= s["seq"] for o in s["origins"].values()) or None

        await _until(shared_and_applied, f"trial {trial}: the decision never reached the other router")
        loads.write_text(json.dumps({owner: 1}))  # alone, the other router would now avoid the owner

        async def other_router_sees_the_queue(streak=[0]):  # three fresh prefixes in a row avoid the owner
            ingress, engine = await handle.route.remote([rng.randrange(10_000) for _ in range(6 * BLOCK)])
            if ingress != first:
                streak[0] = streak[0] + 1 if engine != owner else 0
            return streak[0] >= 3

        await _until(other_router_sees_the_queue, f"trial {trial}: the other router never saw the owner's queue")
        other = None
        for i in range(50):  # until the other ingress replica takes one
            other, engine = await handle.route.remote(prefix + [2 + i])
            if other != first:
                break
            assert engine == owner
        assert other != first, "every request went to one ingress replica"
        assert engine == owner, (trial, owner, engine)
        loads.write_text("{}")
        followed += 1
    assert followed == 6
