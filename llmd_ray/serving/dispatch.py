"""Dispatch of each request over the app's variant deployments (the ingress side of variants).

``VariantDispatcher`` holds one streaming handle per variant, the requests
this ingress has outstanding on each, and each variant's running replicas,
polled from Serve's status every ``poll_s`` in a worker thread, so the event
loop never waits on Ray. ``choose_variant`` (``variants.py``) picks.

``VariantStream`` is what the ingress iterates. Until the first chunk it is
re-sent, to a variant picked afresh:

* when the replica or its engine dies (``RetryingStream``'s retries), and
* when its variant has no running replica left while another has (the
  variant was scaled to zero after the pick): without this the request
  would wait in the handle for a cold start.

After the first chunk it is pinned to its replica, and Serve's graceful
shutdown lets the replica finish it before a scale-down stops it; if the
replica dies instead, the front door moves the stream (``frontdoor/migrating.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from llmd_ray.serving.periodic import PeriodicPoll
from llmd_ray.serving.retry import RetryingStream
from llmd_ray.serving.variants import VariantLoad, choose_variant, stranded

logger = logging.getLogger("ray.serve")


class DispatchConfig(BaseModel):
    """How the ingress dispatches over variants (built by ``build_app`` from ``AppArgs.variants``)."""

    model_config = ConfigDict(extra="forbid")

    accelerators: dict[str, str] = Field(default_factory=dict, description="Variant -> hardware label.")
    poll_s: float = Field(default=1.0, gt=0, description="How often the variants' running replicas are polled.")


def serve_running_replicas(app: str, deployments: Mapping[str, str]) -> dict[str, int]:
    """Running replicas per variant from ``serve.status()`` (blocking: call it in a thread)."""
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None:
        return {}
    out = {}
    for variant, name in deployments.items():
        dep = status.deployments.get(name)
        if dep is not None:
            out[variant] = int(dep.replica_states.get("RUNNING", 0))
    return out


def call_generate(stream_handle: Any, request: Any) -> Any:
    """``stream_handle.generate.remote(request)``, as a Serve request of its own.

    A handle call made while serving a request inherits that request's internal id, by which Serve's router
    (and ours) track pending requests; one client request may become several engine requests at once (a prompt
    batch, beam search), and two pending requests under one id are never both routed. Each gets a fresh id.
    """
    import dataclasses

    from ray.serve import context
    from ray.serve._private.utils import generate_request_id

    current = context._get_serve_request_context()
    token = context._serve_request_context.set(
        dataclasses.replace(current, _internal_request_id=generate_request_id()))
    try:
        return stream_handle.generate.remote(request)
    finally:
        context._serve_request_context.reset(token)


class VariantDispatcher(PeriodicPoll):
    """Per-variant handles, outstanding requests and running replicas; picks a variant per request."""

    def __init__(self, handles: Mapping[str, Any], fetch: Callable[[], Mapping[str, int]] | None = None,
                 poll_s: float = 1.0, accelerators: Mapping[str, str] | None = None):
        if not handles:
            raise ValueError("no variant handles")
        self.names = list(handles)
        self.handles = list(handles.values())
        self.streams = [h.options(stream=True) for h in self.handles]
        self.accelerators = dict(accelerators or {})
        self.fetch = fetch
        self.poll_s = poll_s
        self.running: list[int | None] = [None] * len(self.names)
        self.outstanding = [0] * len(self.names)
        self.sent = [0] * len(self.names)
        self.redispatched = 0
        self.poll_failures = 0
        self._ready_at: float | None = None
        self._rr = 0

    def __len__(self) -> int:
        return len(self.names)

    # ------------------------------------------------------------ replica counts
    def start(self) -> None:
        """Start polling running replicas (only with several variants and a fetch function)."""
        if self.fetch is not None and len(self) > 1:
            super().start()

    @property
    def poll_period_s(self) -> float:
        return self.poll_s

    async def poll_once(self) -> None:
        counts = await asyncio.to_thread(self.fetch)
        for i, name in enumerate(self.names):
            if name in counts:
                self.running[i] = int(counts[name])

    def poll_failed(self, exc: Exception) -> None:  # keep the last counts; a new poll follows
        self.poll_failures += 1
        if self.poll_failures in (1, 10, 100):
            logger.warning("variant dispatch: replica-count poll failed (%s), %d so far",
                           type(exc).__name__, self.poll_failures)

    # ----------------------------------------------------------------- choice
    def loads(self) -> list[VariantLoad]:
        return [VariantLoad(n, r, o) for n, r, o in zip(self.names, self.running, self.outstanding)]

    def pick(self) -> int:
        return choose_variant(self.loads()) if len(self) > 1 else 0

    def is_stranded(self, index: int) -> bool:
        return stranded(self.loads(), index)

    def acquire(self, index: int) -> None:
        self.outstanding[index] += 1
        self.sent[index] += 1

    def release(self, index: int) -> None:
        self.outstanding[index] = max(0, self.outstanding[index] - 1)

    def stream(self, request: Any) -> RetryingStream | VariantStream:
        """The generation stream for ``request`` (a plain RetryingStream with one variant, as before)."""
        if len(self) == 1:
            return RetryingStream(lambda: call_generate(self.streams[0], request), request.request_id)
        return VariantStream(self, request)

    def stats_handle(self) -> Any:
        """A handle for ``stats`` calls: round robin over variants with running replicas."""
        live = [i for i, r in enumerate(self.running) if r is None or r > 0] or [0]
        self._rr += 1
        return self.handles[live[self._rr % len(live)]]

    async def ready(self, timeout_s: float = 2.0) -> bool:
        """True once some engine replica answers ``stats`` (remembered for a second, so probes stay cheap)."""
        now = time.monotonic()
        if self._ready_at is not None and now - self._ready_at < 1.0:
            return True
        try:
            await asyncio.wait_for(self.stats_handle().stats.remote(), timeout_s)
        except Exception:  # no replica yet (the call waits for one), or it failed: not ready
            return False
        self._ready_at = now
        return True

    def status(self) -> dict[str, dict]:
        return {n: {"accelerator": self.accelerators.get(n), "running": self.running[i],
                    "outstanding": self.outstanding[i], "sent": self.sent[i]}
                for i, n in enumerate(self.names)}


class VariantStream:
    """A generation on a picked variant; re-sent to a freshly picked variant until its first chunk."""

    def __init__(self, dispatcher: VariantDispatcher, request: Any, max_redispatches: int = 10):
        self._d = dispatcher
        self._request = request
        self._index: int | None = None
        self._holding = False
        self._started = False
        self._max_redispatches = max_redispatches
        self.redispatches = 0
        self._inner = RetryingStream(self._attempt, request.request_id)

    @property
    def variant(self) -> str | None:
        return None if self._index is None else self._d.names[self._index]

    @property
    def retries(self) -> int:
        return self._inner.retries

    def _attempt(self):
        self._release()
        self._index = self._d.pick()
        self._d.acquire(self._index)
        self._holding = True
        return call_generate(self._d.streams[self._index], self._request)

    def _release(self) -> None:
        if self._holding:
            self._holding = False
            self._d.release(self._index)

    def __aiter__(self) -> VariantStream:
        return self

    async def __anext__(self) -> Any:
        try:
            chunk = await (self._inner.__anext__() if self._started else self._first())
        except BaseException:  # finished, failed or cancelled: the variant carries it no more
            self._release()
            raise
        self._started = True
        if getattr(chunk, "finished", False):
            self._release()
        return chunk

    async def _first(self) -> Any:
        while True:
            nxt = asyncio.ensure_future(self._inner.__anext__())
            try:
                while not nxt.done():
                    await asyncio.wait({nxt}, timeout=self._d.poll_s)
                    if not nxt.done() and self.redispatches < self._max_redispatches \
                            and self._d.is_stranded(self._index):
                        break
            except BaseException:
                nxt.cancel()
                raise
            if nxt.done():
                return nxt.result()
            nxt.cancel()  # no await in between: it cannot have produced a chunk
            await asyncio.gather(nxt, return_exceptions=True)
            self.redispatches += 1
            self._d.redispatched += 1
            logger.info("request %s: variant %s has no running replica; re-sent", self._request.request_id,
                        self.variant)
            self._inner.restart()

    def cancel(self) -> None:
        self._inner.cancel()
        self._release()

    def __del__(self):  # abandoned without cancel or finish: do not leave the variant looking busy
        try:
            self._release()
        except Exception:
            pass


def ingress_dispatcher(llm: Any, dispatch: DispatchConfig | dict | None = None) -> VariantDispatcher:
    """The ingress's dispatcher (polling): ``llm`` is one LLMServer handle, or {variant: handle}."""
    cfg = DispatchConfig.model_validate(dispatch or {})
    handles = dict(llm) if isinstance(llm, Mapping) else {"default": llm}
    fetch = None
    if len(handles) > 1:
        from functools import partial

        from ray import serve

        app = serve.get_replica_context().app_name
        fetch = partial(serve_running_replicas, app, {n: h.deployment_name for n, h in handles.items()})
    d = VariantDispatcher(handles, fetch, cfg.poll_s, cfg.accelerators)
    d.start()  # the ingress's loop is running: poll replica counts (several variants only)
    return d
