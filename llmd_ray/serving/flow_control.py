"""Flow control at the ingress: a gate in front of the LLMServer deployment (pure asyncio; no Ray import).

``FlowController.acquire`` admits a request (a :class:`Permit`), queues it, or
refuses it:

* at most ``max_inflight`` requests are released downstream at once;
* the pool is *saturated* when no replica with fresh stats has headroom (each
  has ``num_waiting >= queue_depth_threshold`` or ``kv_cache_usage >=
  kv_cache_threshold``, llm-d's saturation detector); nothing is released
  while it is, sheddable requests get 429 + Retry-After at once, and those
  already queued are shed when it starts;
* while no replica's stats are fresh (the poller lags, or replicas too busy to
  answer), saturation is unknown: the gate then releases at most
  ``blind_per_replica`` requests per replica it last knew of (the engines'
  ``max_num_seqs``, set by the ingress), so an overloaded pool is never fed
  blind; queued requests wait as usual;
* a queued request waits at most its class's ``max_queue_wait_s``, then gets
  503 (429 if sheddable), with Retry-After;
* the queue (:class:`FairQueue`) is ordered by priority, then fair share
  between tenants of a band, then earliest deadline.

Stats come from :class:`StatsPoller`, a background task that calls the
replicas' ``stats`` through a coroutine function it is given (the ingress
passes the DeploymentHandle call), never blocking the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from llmd_ray.errors import RequestShedError, ServiceOverloadedError
from llmd_ray.serving.flow_control_queue import FairQueue, Waiter
from llmd_ray.serving.periodic import PeriodicPoll
from llmd_ray.topology.qos import QoSClass

logger = logging.getLogger(__name__)


class FlowControlConfig(BaseModel):
    """The ingress's admission gate (``ingress.flow_control``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=False, description="Gate, queue and shed requests; off: pass straight through.")
    max_inflight: int = Field(
        default=128, ge=1, description="Requests released to LLMServer at once, per ingress replica (~ replicas x max_num_seqs)."
    )
    max_queued: int = Field(default=4096, ge=0, description="Requests waiting at the ingress; beyond: 503 (429 if sheddable).")
    queue_depth_threshold: int = Field(
        default=8, ge=1, description="A replica with this many waiting requests has no headroom."
    )
    kv_cache_threshold: float = Field(
        default=0.9, gt=0, le=1, description="A replica with this KV cache usage (0-1) has no headroom."
    )
    stats_period_s: float = Field(default=0.25, gt=0, description="How often replica stats are polled.")
    stats_max_age_s: float = Field(
        default=2.0, gt=0,
        description="Older replica stats are ignored; with none fresh, saturation is unknown and in-flight requests "
        "are bounded by blind_per_replica x the replicas last seen.",
    )
    blind_per_replica: int | None = Field(
        default=None, ge=1,
        description="In flight per replica while no stats are fresh; None: the engine's max_num_seqs (set by the ingress).",
    )
    stats_fanout: int = Field(default=4, ge=1, description="Concurrent `stats` calls per poll (they land on random replicas).")
    retry_after_s: float = Field(default=2.0, gt=0, description="Retry-After sent with a shed (429) or timed-out (503) request.")


@dataclass(slots=True)
class ReplicaLoad:
    """What saturation detection needs from one replica's ``stats``."""

    replica: str
    num_waiting: int
    kv_cache_usage: float
    received_at: float


def fresh_loads(loads: Iterable[ReplicaLoad], cfg: FlowControlConfig, now: float) -> list[ReplicaLoad]:
    return [r for r in loads if now - r.received_at <= cfg.stats_max_age_s]


def pool_saturated(loads: Iterable[ReplicaLoad], cfg: FlowControlConfig, now: float) -> bool:
    """True when no replica with fresh stats has headroom; False when none has fresh stats (then see ``blind``)."""
    fresh = fresh_loads(loads, cfg, now)
    if not fresh:
        return False
    return all(r.num_waiting >= cfg.queue_depth_threshold or r.kv_cache_usage >= cfg.kv_cache_threshold for r in fresh)


class FlowObserver:
    """Metrics hooks (no-ops here; ``qos_metrics.QoSMetrics`` exports them)."""

    def queued(self, qos: str) -> None: ...
    def admitted(self, qos: str, wait_s: float) -> None: ...
    def rejected(self, qos: str, reason: str) -> None: ...
    def state(self, inflight: int, depth: Mapping[str, int], saturated: bool) -> None: ...


@dataclass(slots=True, eq=False)
class Permit:
    """An admitted request; ``release`` it exactly once when its stream ends (extra calls are no-ops)."""

    qos: str
    tenant: str
    arrived: float
    admitted: float
    _controller: "FlowController | None" = field(default=None, repr=False)

    def release(self) -> None:
        c, self._controller = self._controller, None
        if c is not None:
            c._release()

    def __del__(self):  # a stream dropped before it started must not leak its slot
        try:
            self.release()
        except Exception:  # e.g. the event loop is gone at shutdown
            pass


class FlowController:
    def __init__(
        self,
        config: FlowControlConfig,
        classes: Mapping[str, QoSClass],
        observer: FlowObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self.classes = dict(classes)
        self.observer = observer or FlowObserver()
        self.clock = clock
        self.queue = FairQueue()
        self.inflight = 0
        self.saturated = False
        self.blind = False  # no fresh replica stats: admission bounded by blind_limit
        self.replicas_known = 0
        self.blind_per_replica = config.blind_per_replica
        self._seq = 0

    @property
    def limit(self) -> int:
        """Requests that may be in flight now: max_inflight, or the blind bound while stats are stale."""
        cap = self.config.max_inflight
        if self.blind and self.blind_per_replica is not None:
            cap = min(cap, max(1, self.replicas_known) * self.blind_per_replica)
        return cap

    # ------------------------------------------------------------ admission
    async def acquire(self, qos: str, tenant: str = "-") -> Permit:
        """Admit, queue, or refuse (RequestShedError 429 / ServiceOverloadedError 503) one request."""
        cls, now, cfg = self.classes[qos], self.clock(), self.config
        if not cfg.enabled:
            self.inflight += 1
            self.observer.admitted(qos, 0.0)
            return Permit(qos, tenant, now, now, self)
        if self.saturated and cls.sheddable:
            raise self._refuse(qos, "saturated")
        if len(self.queue) >= cfg.max_queued:
            raise self._refuse(qos, "queue_full")
        self._seq += 1
        w = Waiter(self._seq, qos, cls.priority, tenant, now, now + cls.max_queue_wait_s, cls.sheddable,
                   asyncio.get_running_loop().create_future())
        self.queue.push(w)
        self.observer.queued(qos)
        self._dispatch()
        if not w.future.done():
            try:
                await asyncio.wait({w.future}, timeout=max(0.0, w.deadline - self.clock()))
            except asyncio.CancelledError:  # the client went away while queued
                if w.future.done() and not w.future.cancelled() and w.future.exception() is None:
                    self._release()
                else:
                    self.queue.remove(w)
                    self._report()
                raise
        if not w.future.done():  # deadline passed without admission
            self.queue.remove(w)
            w.future.cancel()
            self._report()
            raise self._refuse(qos, "queue_timeout")
        exc = w.future.exception()
        if exc is not None:
            raise exc
        return Permit(qos, tenant, now, w.admitted_at, self)

    def _refuse(self, qos: str, reason: str) -> Exception:
        cls, ra = self.classes[qos], self.config.retry_after_s
        self.observer.rejected(qos, reason)
        if reason == "saturated":
            return RequestShedError(
                f"the service is saturated and QoS class '{qos}' is sheddable; retry later",
                code="request_shed", retry_after_s=ra,
            )
        what = ("the ingress queue is full" if reason == "queue_full"
                else f"no capacity within QoS class '{qos}''s max queue wait of {cls.max_queue_wait_s:g} s")
        err_cls = RequestShedError if cls.sheddable else ServiceOverloadedError
        return err_cls(f"the service is overloaded: {what}; retry later", code=reason, retry_after_s=ra)

    def _release(self) -> None:
        self.inflight = max(0, self.inflight - 1)
        self._dispatch()

    def _dispatch(self) -> None:
        limit = self.limit
        while self.queue and not self.saturated and self.inflight < limit:
            w = self.queue.pop()
            self.inflight += 1
            w.admitted_at = self.clock()
            w.future.set_result(None)
            self.observer.admitted(w.qos, w.admitted_at - w.arrived)
        self._report()

    def _report(self) -> None:
        self.observer.state(self.inflight, self.queue.depth_by_class(), self.saturated)

    # ---------------------------------------------------------- saturation
    def update_loads(self, loads: Iterable[ReplicaLoad], now: float | None = None) -> None:
        """Re-evaluate saturation from replica stats; shed queued sheddable requests when it starts."""
        loads, now = list(loads), self.clock() if now is None else now
        was, self.saturated = self.saturated, pool_saturated(loads, self.config, now)
        was_blind, self.replicas_known = self.blind, len(loads)
        self.blind = not fresh_loads(loads, self.config, now)
        if self.blind and not was_blind:
            logger.warning("flow control: no fresh replica stats; holding in-flight requests to %d", self.limit)
        if self.saturated and not was:
            logger.info("flow control: replicas saturated; holding requests, shedding sheddable ones")
        if self.saturated and self.config.enabled:
            for w in self.queue.drain(lambda w: w.sheddable):
                w.future.set_exception(self._refuse(w.qos, "saturated"))
        self._dispatch()

    def status(self) -> dict:
        return {"enabled": self.config.enabled, "inflight": self.inflight, "saturated": self.saturated,
                "blind": self.blind, "queued": self.queue.depth_by_class(), "max_inflight": self.config.max_inflight,
                "limit": self.limit}


class StatsPoller(PeriodicPoll):
    """Polls replica stats every ``stats_period_s`` and feeds :meth:`FlowController.update_loads`."""

    def __init__(self, fetch: Callable[[], Awaitable[dict]], controller: FlowController,
                 clock: Callable[[], float] = time.monotonic):
        self.fetch = fetch
        self.controller = controller
        self.clock = clock
        self.loads: dict[str, ReplicaLoad] = {}
        self.failures = 0

    @property
    def poll_period_s(self) -> float:
        return self.controller.config.stats_period_s

    async def poll_once(self) -> None:
        cfg = self.controller.config
        calls = [asyncio.wait_for(self.fetch(), timeout=max(cfg.stats_period_s, 1.0)) for _ in range(cfg.stats_fanout)]
        now = self.clock()
        for s in await asyncio.gather(*calls, return_exceptions=True):
            if isinstance(s, BaseException) or not isinstance(s, dict):
                self.failures += 1
                continue
            key = str(s.get("replica", s.get("rank")))
            self.loads[key] = ReplicaLoad(key, int(s.get("num_waiting", 0)), float(s.get("kv_cache_usage", 0.0)), now)
        for key in [k for k, r in self.loads.items() if now - r.received_at > 10 * cfg.stats_max_age_s]:
            del self.loads[key]  # replicas gone for good
        self.controller.update_loads(self.loads.values(), now)

    def poll_failed(self, exc: Exception) -> None:  # stale stats bound admission (blind)
        logger.error("flow control: stats poll failed", exc_info=exc)
