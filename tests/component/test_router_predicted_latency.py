"""LLMDRequestRouter with the predicted-latency picker inside Ray Serve, over fake replicas that time their
requests with the engine's ``LatencyLog`` and report the samples in ``record_routing_stats``.

Replica rank 0 is slow (0.8 s to the first token) but reports an empty queue; rank 1 is fast but reports one
request waiting. The profile prior (0.5 s per waiting request) sends the first requests to the slow replica;
only a router that learns from the reported latencies moves to the fast one.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from ray import serve

from llmd_ray.engine.latency import LatencyLog, timed
from llmd_ray.engine.types import GenerateChunk, GenerateRequest, SamplingOptions
from llmd_ray.serving.app import RouterArgs, request_router_config
from llmd_ray.serving.replica import replica_context

APP = "router-predicted-latency"
BLOCK = 4
CONFIG = {
    "plugins": [{"type": "prefix-cache"}, {"type": "predicted-latency",
                                          "parameters": {"prefillTokensPerSecond": 2000, "decodeStepSeconds": 0.02,
                                                         "waitingRequestSeconds": 0.5}}],
    "schedulingProfiles": [{"name": "default", "plugins": [{"pluginRef": "prefix-cache"},
                                                           {"pluginRef": "predicted-latency"}]}],
}


@serve.deployment(num_replicas=2, max_ongoing_requests=64, ray_actor_options={"num_cpus": 0})
class TimedFakeLLM:
    def __init__(self):
        self.rank, self.id = replica_context()
        self.latency = LatencyLog()

    async def _stream(self, request: GenerateRequest):
        await asyncio.sleep(0.8 if self.rank == 0 else 0.02)
        for i in range(3):
            yield GenerateChunk(request.request_id, f"{self.rank}", [i], len(request.prompt_token_ids), 0, i + 1,
                                "length" if i == 2 else None)
            await asyncio.sleep(0.01)

    async def generate(self, request: GenerateRequest):
        async for chunk in timed(self.latency, request.request_id, self._stream(request)):
            yield chunk

    def record_routing_stats(self) -> dict:
        return {"num_waiting": 0 if self.rank == 0 else 1, "num_running": 0, "kv_cache_usage": 0.0,
                "block_size": BLOCK, "num_blocks": 10_000, "updated_at": time.time(), **self.latency.export()}


@pytest.fixture(scope="module")
def handle(serve_instance):
    config = request_router_config(RouterArgs(config=CONFIG, stats_period_s=0.2))
    h = serve.run(TimedFakeLLM.options(request_router_config=config).bind(), name=APP, route_prefix=None)
    yield h
    serve.delete(APP)


async def _route(handle, rng) -> str:
    req = GenerateRequest(f"r{rng.random()}", [rng.randrange(1000) for _ in range(3 * BLOCK)],
                          SamplingOptions(max_tokens=3))
    chunks = [c async for c in handle.options(stream=True).generate.remote(req)]
    return chunks[0].text


@pytest.mark.asyncio
async def test_the_router_learns_which_replica_is_slow(handle):
    rng = random.Random(7)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60.0
    # Until the stats arrive both replicas look alike (ties go to the first candidate); once they have,
    # the prior believes the reported queue and rank 0 looks faster.
    while await _route(handle, rng) != "0":
        assert loop.time() < deadline, "rank 0 never chosen: the prior should prefer its empty queue"
    streak = 0
    while streak < 5 and loop.time() < deadline:  # until five requests in a row go to the fast replica
        streak = streak + 1 if await _route(handle, rng) == "1" else 0
    assert streak == 5, "the router never learnt that rank 0 is slow"
