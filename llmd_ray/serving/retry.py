"""Transparent retry of a generation whose replica dies before its first token.

Until a replica has streamed the first chunk, nothing has reached the client,
so a request whose replica (or engine) died can be sent again: the router
routes it around the dead replica, which Serve has already reported to it.
After the first chunk tokens have been delivered: the front door's
``MigratingStream`` (``frontdoor/migrating.py``) then re-sends the request with
those tokens appended to its prompt, and the stream goes on.

``RetryingStream`` wraps ``handle.options(stream=True).generate.remote(req)``
and keeps the ``DeploymentResponseGenerator`` surface the ingress uses
(``__anext__``, ``__aiter__``, ``cancel``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from llmd_ray.errors import EngineDeadError

logger = logging.getLogger("ray.serve")

RETRY_BACKOFF_S = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


def is_replica_failure(exc: BaseException) -> bool:
    """A failure of the serving replica or its engine (not of the request itself)."""
    if isinstance(exc, EngineDeadError) or isinstance(getattr(exc, "cause", None), EngineDeadError):
        return True
    try:
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, (ActorDiedError, ActorUnavailableError, RayActorError))


class RetryingStream:
    """A streaming handle call, re-issued while no chunk has been received."""

    def __init__(self, start: Callable[[], Any], request_id: str, max_attempts: int = 6):
        self._start = start
        self._request_id = request_id
        self._max_attempts = max_attempts
        self._attempt = 1
        self._gen = start()
        self._started = False
        self.retries = 0

    def __aiter__(self) -> "RetryingStream":
        return self

    async def __anext__(self) -> Any:
        while True:
            try:
                chunk = await self._gen.__anext__()
            except StopAsyncIteration:
                raise
            except Exception as e:
                if self._started or self._attempt >= self._max_attempts or not is_replica_failure(e):
                    raise
                delay = RETRY_BACKOFF_S[min(self._attempt, len(RETRY_BACKOFF_S) - 1)]
                logger.warning(
                    "request %s: replica failed before the first token (%s); retry %d/%d",
                    self._request_id, type(e).__name__, self._attempt, self._max_attempts - 1,
                )
                self._attempt += 1
                self.retries += 1
                if delay:
                    await asyncio.sleep(delay)
                self._gen = self._start()
                continue
            self._started = True
            return chunk

    def cancel(self) -> None:
        self._gen.cancel()

    def restart(self) -> None:
        """Cancel the current attempt and start another (only before the first chunk)."""
        if self._started:
            raise RuntimeError("restart after the first chunk")
        self._gen.cancel()
        self._gen = self._start()
