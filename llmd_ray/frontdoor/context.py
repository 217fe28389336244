"""Per-request state of the front door, shared by the pipeline and the engine client (no vLLM import).

One client request may become several engine requests (a prompt batch, beam
search); its :class:`RequestContext` records the replica that answered first,
timing for the per-class metrics, the engine streams to cancel if the client
goes away, and llmd-ray's own limits. The pipeline sets ``CURRENT`` around its
call into vLLM's serving class; ``RemoteEngineClient.generate`` reads it.
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass, field
from typing import Any

from llmd_ray.engine.types import GenerateChunk
from llmd_ray.serving.qos_metrics import Timing


@dataclass(slots=True)
class RequestContext:
    """One client request (which vLLM may split into several engine requests: prompt batches, beams)."""

    timing: Timing = field(default_factory=lambda: Timing(time.monotonic()))
    prompt_param: str = "prompt"  # the request field a prompt-length error names
    max_prompt_tokens: int | None = None
    max_tokens_cap: int | None = None
    max_migrations: int = 3  # a stream's moves to another replica when its replica dies (IngressConfig)
    replica: str | None = None
    request_id: str | None = None
    streams: list[Any] = field(default_factory=list)
    error: Any = None  # the first error event of the response's stream (an LLMDRayError)

    def on_chunk(self, chunk: GenerateChunk) -> None:
        if self.replica is None and chunk.replica:
            self.replica = chunk.replica
        self.timing.chunk(chunk)

    def cancel(self) -> None:
        """Cancel every engine request still running (the client went away)."""
        for stream in self.streams:
            stream.cancel()


CURRENT: contextvars.ContextVar[RequestContext] = contextvars.ContextVar("llmd_ray_request_context")
