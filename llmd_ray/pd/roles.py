"""P/D disaggregation as replica features: ``PrefillRole`` and ``DecodeRole`` (decode-as-orchestrator).

    OpenAIIngress ──generate──> LLMServer-<decode variant> (DecodeRole)
                                  │ decide: split or prefill locally (pd.decider)
                                  │ split: LLMServer-<prefill variant>.prefill (PrefillRole)
                                  │        <── KVPayload (numpy, owned by this caller)
                                  │ write it to /dev/shm, run the request on the local
                                  ▼ engine with kv_transfer_params; its connector loads the blocks

Why the decode side orchestrates (Ray Serve LLM's current design, too): the
decode replica streams the tokens anyway, so no extra hop sits in the token
path; it knows its own prefix cache, queue and measured throughputs, which
is what the decider needs; and it is the *caller* of the prefill, so the
KV object the prefill returns is owned by the decode replica's worker.
A ``ray.put`` object dies with its owner; a method's return value is owned by
its caller, so a prefill replica that is scaled down or dies after answering
takes nothing with it, and the object is freed as soon as decode drops it.

vLLM runs its scheduler and worker (and our connector) in an EngineCore
process outside Ray, so each replica and its engine trade the blocks through
one shared-memory file per request (``llmd_ray.pd.shm``).

Anything failing on the remote path (prefill replica dead, timed out, KV
object lost, engine error) is counted and the request prefills locally.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from llmd_ray.engine.types import GenerateChunk, GenerateRequest
from llmd_ray.errors import EngineError
from llmd_ray.host import free_port
from llmd_ray.pd import shm
from llmd_ray.pd.config import PDConfig
from llmd_ray.pd.decider import Estimates, SplitInputs, decide
from llmd_ray.pd.handoff import EXPORT_ERROR_KEY, ExportRequest, KVHandoff, KVPayload
from llmd_ray.routing.hashing import block_hashes
from llmd_ray.routing.index import ApproximatePrefixIndex
from llmd_ray.pd.engine import kv_bytes_per_token, run_prefill
from llmd_ray.pd.metrics import PDMetrics
from llmd_ray.serving.feature import Feature, Inner

logger = logging.getLogger("ray.serve")


@dataclass(slots=True)
class PrefillRequest:
    """What the decode side asks of a prefill replica (duck-types GenerateRequest for routing)."""

    request_id: str
    prompt_token_ids: list[int]
    session_id: str | None = None
    skip_blocks: int = 0


@dataclass(slots=True)
class NixlPayload:
    kv_transfer_params: dict[str, Any]
    prefill_s: float = 0.0


class _Role(Feature):
    """What both roles share: the KV connector's engine args, NIXL's side channel, the replica's shm dir."""

    role = "prefill"

    def __init__(self, pd: PDConfig | dict | None, replica_id: str, device: str):
        self.pd = PDConfig.model_validate(pd or {})
        self.device = device
        self.name = f"pd-{self.role}"
        if self.pd.transport == "nixl":  # each engine listens on a side-channel port of its own
            import ray

            os.environ["VLLM_NIXL_SIDE_CHANNEL_PORT"] = str(free_port())
            os.environ["VLLM_NIXL_SIDE_CHANNEL_HOST"] = ray.util.get_node_ip_address()
        shm.sweep_stale(self.pd.shm_dir)
        self.shm = shm.ShmDir(f"{self.role}-{replica_id}", self.pd.shm_dir)

    def engine_args(self) -> dict[str, Any]:
        return {"kv_transfer_config": self.pd.kv_transfer_config(self.device, self.role)}

    def info(self) -> dict:
        return {"transport": self.pd.transport}

    def release(self) -> None:
        self.shm.remove()


class PrefillRole(_Role):
    """Computes prompts' KV and hands it to the caller (``LLMServer.prefill``)."""

    role = "prefill"

    def __init__(self, pd: PDConfig | dict | None, replica_id: str, device: str):
        super().__init__(pd, replica_id, device)
        self.prefilling: set[str] = set()  # request ids accepted and not yet answered

    async def prefill(self, replica: Any, request: PrefillRequest) -> KVPayload | NixlPayload:
        self.prefilling.add(request.request_id)
        try:
            return await self._prefill(replica.engine, request)
        finally:
            self.prefilling.discard(request.request_id)

    def pd_stats(self) -> dict:
        return {"prefilling": sorted(self.prefilling)}

    async def _prefill(self, engine: Any, request: PrefillRequest) -> KVPayload | NixlPayload:
        if self.pd.transport == "nixl":
            res = await run_prefill(engine, request.request_id, request.prompt_token_ids, {"do_remote_decode": True})
            if not res.kv_transfer_params:
                raise EngineError(f"prefill of {request.request_id} returned no NIXL transfer params")
            return NixlPayload(res.kv_transfer_params, res.elapsed_s)
        path = self.shm.path_for(request.request_id, "export")
        try:
            params = ExportRequest(path, request.skip_blocks).to_params()
            res = await run_prefill(engine, request.request_id, request.prompt_token_ids, params)
            handoff = KVHandoff.from_export_output(res.kv_transfer_params)
            if handoff is None:
                why = (res.kv_transfer_params or {}).get(EXPORT_ERROR_KEY, "no handoff in the engine's output")
                raise EngineError(f"prefill of {request.request_id} exported nothing: {why}")
            t0 = time.perf_counter()
            data = await asyncio.to_thread(shm.read_buffer, path, handoff.layout.dtype, handoff.buffer_shape)
            return KVPayload(handoff.at(None), data, res.elapsed_s, time.perf_counter() - t0)
        finally:
            shm.remove_file(path)


class DecodeRole(_Role):
    """Streams tokens; prefills remotely when the decider says it pays."""

    role = "decode"

    def __init__(self, model_name: str, pd: PDConfig | dict | None, prefill: Any, replica_id: str, device: str):
        super().__init__(pd, replica_id, device)
        self.prefill = prefill
        self.estimates = Estimates.from_config(self.pd.decider)
        self.pd_metrics = PDMetrics(model_name, self.pd.decider.policy, self.pd.transport)
        self.index = ApproximatePrefixIndex()  # what this replica's engine recently cached
        self.local_queue_tokens = 0
        self.remote_queue_tokens = 0
        self.block_size = 16
        self.kv_bytes_per_token = 0

    async def started(self, replica: Any) -> None:
        self.block_size = replica.engine.block_size
        self.num_blocks = max(1, replica.engine.num_blocks)
        self.index.set_capacity("self", self.num_blocks)
        self.kv_bytes_per_token = kv_bytes_per_token(replica.engine)

    async def wrap(self, replica: Any, request: GenerateRequest, inner: Inner) -> AsyncIterator[GenerateChunk]:
        bs = self.block_size
        hashes = block_hashes(request.prompt_token_ids, bs)
        cached = self.index.match(hashes).get("self", 0) * bs
        n = len(request.prompt_token_ids)
        inputs = SplitInputs(n, bs, cached, self.local_queue_tokens, self.remote_queue_tokens, self.kv_bytes_per_token)
        decision = decide(self.pd.decider, inputs, self.estimates)
        self.pd_metrics.decision(decision.split, decision.reason)
        kv_params, path, local_tokens = None, None, inputs.uncached_tokens
        if decision.split:
            kv_params, path = await self._remote_prefill(request, decision.skip_blocks)
            if kv_params is not None:
                local_tokens = max(1, n - (n - 1) // bs * bs)  # the tail decode still computes
        backlog = self.local_queue_tokens
        self.local_queue_tokens += local_tokens
        queued = True
        t0 = time.perf_counter()
        try:
            req = dataclasses.replace(request, kv_transfer_params=kv_params)
            async for chunk in inner(req):
                if queued:
                    queued = False
                    self.local_queue_tokens -= local_tokens
                    self.index.record("self", hashes)
                    if kv_params is None and backlog == 0:
                        self.estimates.observe_local_prefill(local_tokens, time.perf_counter() - t0)
                yield chunk
        finally:
            if queued:
                self.local_queue_tokens -= local_tokens
            shm.remove_file(path)

    async def _remote_prefill(self, request: GenerateRequest, skip_blocks: int) -> tuple[dict | None, str | None]:
        """Run the prefill remotely; on any failure count it and return (None, None) (decode prefills locally)."""
        n = len(request.prompt_token_ids)
        preq = PrefillRequest(request.request_id, request.prompt_token_ids, request.session_id, skip_blocks)
        backlog = self.remote_queue_tokens
        self.remote_queue_tokens += n
        t0 = time.perf_counter()
        response = None
        path = None
        try:
            response = self.prefill.prefill.remote(preq)
            payload = await asyncio.wait_for(response, self.pd.prefill_timeout_s)
            if isinstance(payload, NixlPayload):
                nbytes = (n - 1) // self.block_size * self.block_size * self.kv_bytes_per_token
                params = payload.kv_transfer_params
            else:
                path = self.shm.path_for(request.request_id, "import")
                await asyncio.to_thread(shm.write_buffer, path, payload.data)
                nbytes, params = payload.nbytes, payload.handoff.at(path).import_params()
                del payload.data  # the object-store copy can go now
            round_trip = time.perf_counter() - t0
            handoff_s = max(0.0, round_trip - payload.prefill_s)
            self.pd_metrics.handoff(nbytes, handoff_s, round_trip)
            if backlog == 0:
                self.estimates.observe_remote_prefill(n, payload.prefill_s)
            self.estimates.observe_transfer(nbytes, handoff_s)
            return params, path
        except asyncio.CancelledError:
            shm.remove_file(path)
            if response is not None:
                response.cancel()
            raise
        except Exception as e:
            shm.remove_file(path)
            if isinstance(e, asyncio.TimeoutError) and response is not None:
                response.cancel()
            reason = _fallback_reason(e)
            self.pd_metrics.fallback(reason)
            logger.warning("request %s: remote prefill failed (%s: %s); prefilling locally", request.request_id, reason, e)
            return None, None
        finally:
            self.remote_queue_tokens -= n

    async def reset(self) -> None:
        self.index.remove_endpoint("self")
        self.index.set_capacity("self", self.num_blocks)

    def pd_stats(self) -> dict:
        return {
            **self.pd_metrics.snapshot(),
            "estimates": {k: getattr(self.estimates, k) for k in ("prefill_tps", "decode_tps", "bandwidth", "overhead_s")},
            "shm_files": self.shm.files(),
        }


def _fallback_reason(e: BaseException) -> str:
    from ray import exceptions as rex
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    if isinstance(e, asyncio.TimeoutError):
        return "timeout"
    if isinstance(e, (rex.ObjectLostError, rex.OwnerDiedError, rex.ObjectFetchTimedOutError)):
        return "kv_lost"
    if isinstance(e, (rex.RayActorError, rex.ActorUnavailableError)):
        return "prefill_died"
    if isinstance(e, (DeploymentUnavailableError, BackPressureError)):
        return "prefill_unavailable"
    if isinstance(e, OSError):
        return "import_failed"
    return "prefill_error"
