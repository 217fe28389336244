"""``PeriodicPoll``: a background task on the event loop that calls ``poll_once`` every period, forever.

Used by the ingress's pollers (replica stats for flow control, variants'
running replicas for dispatch). A failed poll is handed to ``poll_failed``
and the loop goes on; only cancellation (``stop``) ends it. Pure asyncio.
"""

from __future__ import annotations

import asyncio


class PeriodicPoll:
    _task: asyncio.Task | None = None

    @property
    def poll_period_s(self) -> float:
        raise NotImplementedError

    async def poll_once(self) -> None:
        raise NotImplementedError

    def poll_failed(self, exc: Exception) -> None:
        """A poll raised; the last values stay in use until the next poll."""

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let the poller die
                self.poll_failed(exc)
            await asyncio.sleep(self.poll_period_s)
