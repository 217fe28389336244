"""``MigratingStream``: a client's engine stream that survives the death of its replica.

The backend re-sends a request whose replica dies before its first chunk
(``serving/retry.py``). This wraps the backend's stream for what comes after:
when the replica (or its engine) fails mid-stream, or its stream ends without
a finish, the request is re-sent to another replica with the tokens streamed so
far appended to its prompt (``migration.resend``) and its outputs continue the
same client stream (``migration.continue_output``). At most ``max_migrations``
per request; after that, or for a request that cannot be migrated
(``migration.refusal``), the stream ends with a clean error naming the
replica's failure and the reason. A stream the client cancelled is never
migrated. Non-streaming requests (one final output) need no migration: their
replica's death comes before the first chunk.

Exported (Ray metrics, in the ingress): ``llmd_stream_migrations_total``
{deployment, outcome: migrated | refused | exhausted | failed} and
``llmd_stream_migration_seconds`` {deployment}: the time from the failure to the
new replica's first output, i.e. the gap a migration adds to the stream.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from llmd_ray.engine.types import GenerateRequest
from llmd_ray.errors import EngineError
from llmd_ray.frontdoor.migration import Seen, Splice, continue_output, pending_text, refusal, resend
from llmd_ray.serving.retry import is_replica_failure

logger = logging.getLogger("ray.serve")

_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
_metrics: Any = None


def _record(deployment: str, outcome: str, seconds: float | None = None) -> None:
    global _metrics
    if _metrics is None:
        try:
            from ray.util import metrics

            _metrics = (
                metrics.Counter("llmd_stream_migrations_total", description="Streams whose replica died mid-stream, "
                                "by what happened: migrated, refused, exhausted (too many), failed.",
                                tag_keys=("deployment", "outcome")),
                metrics.Histogram("llmd_stream_migration_seconds", description="Time a stream migration added: "
                                  "from the replica's failure to the new replica's first output.",
                                  boundaries=_BUCKETS, tag_keys=("deployment",)),
            )
        except Exception:  # no Ray here (in-process tests, tools): no metrics
            _metrics = False
    if _metrics:
        try:
            _metrics[0].inc(1, tags={"deployment": deployment, "outcome": outcome})
            if seconds is not None:
                _metrics[1].observe(seconds, tags={"deployment": deployment})
        except Exception:
            logger.debug("stream migration metrics not recorded", exc_info=True)


class MigrationStats:
    """Counts of this process's migrations (for tests and the status endpoint)."""

    migrated = 0
    refused = 0
    seconds: list[float] = []


def deployment_of(backend: Any, stream: Any) -> str:
    """The engine deployment a stream ran on (a variant's, or the only one's)."""
    names, handles = getattr(backend, "names", None), getattr(backend, "handles", None)
    if not names or not handles:
        return "local"
    variant = getattr(stream, "variant", None)
    i = names.index(variant) if variant in names else 0
    return str(getattr(handles[i], "deployment_name", names[i]))


class MigratingStream:
    """The backend's stream for ``request``, re-sent mid-stream to another replica when its replica dies."""

    def __init__(self, backend: Any, request: GenerateRequest, max_migrations: int,
                 tokenizer: Callable[[], Any] | None = None):
        self._backend = backend
        self._request = request
        self._max = max_migrations
        self._tokenizer = tokenizer
        self._inner = backend.stream(request)
        self._seen = Seen()
        self._splice: Splice | None = None
        self._base_logprob: float | None = None
        self._failed_at: float | None = None
        self._deployment = "local"
        self._cancelled = False
        self.migrations = 0
        self.migration_s: list[float] = []

    def __aiter__(self) -> "MigratingStream":
        return self

    async def __anext__(self) -> Any:
        while True:
            try:
                chunk = await self._inner.__anext__()
            except StopAsyncIteration:
                if not self._seen.outputs or self._seen.finished or self._cancelled:
                    raise
                failure = "the engine stream ended before the request finished"
            except Exception as e:
                if not self._seen.outputs or self._seen.finished or self._cancelled or not is_replica_failure(e):
                    if self._failed_at is not None:
                        _record(self._deployment, "failed")
                    raise
                failure = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            else:
                return self._on_chunk(chunk)
            self._migrate(failure)

    def _on_chunk(self, chunk: Any) -> Any:
        out = chunk.output
        if out is None:
            return chunk  # the engine client refuses it
        if self._failed_at is not None:
            took = time.monotonic() - self._failed_at
            self._failed_at = None
            self.migration_s.append(took)
            MigrationStats.migrated += 1
            MigrationStats.seconds = [*MigrationStats.seconds[-999:], took]
            _record(self._deployment, "migrated", took)
        if self.migrations:
            generated = len(self._seen.token_ids) + sum(len(o.token_ids) for o in out.outputs)
            hit = continue_output(out, self._request.request_id, self._seen, self._base_logprob, self._splice,
                                  generated)
            if hit is not None:
                self._inner.cancel()  # the replica does not know its output ended at a stop spanning the boundary
        self._seen.observe(out)
        return chunk

    def _migrate(self, failure: str) -> None:
        self._deployment = deployment_of(self._backend, self._inner)
        params = self._request.sampling.vllm.params
        why = refusal(params)
        outcome = "refused"
        if why is None and self.migrations >= self._max:
            why, outcome = f"{self._max} migrations already made", "exhausted"
        new = None
        if why is None:
            try:
                new = resend(self._request, self._seen, self.migrations + 1)
            except ValueError as e:
                why = str(e)
        if new is None:
            MigrationStats.refused += 1
            _record(self._deployment, outcome)
            raise EngineError(f"the serving replica failed mid-stream ({failure}); the stream was not moved to "
                              f"another replica: {why}")
        self.migrations += 1
        logger.warning("request %s: serving replica failed after %d tokens (%s); migrating (%d/%d)",
                       self._request.request_id, len(self._seen.token_ids), failure, self.migrations, self._max)
        if params.stop:
            self._splice = Splice.start(self._seen.text, self._pending(params), params)
        self._base_logprob = self._seen.cumulative_logprob
        try:
            self._inner.cancel()
        except Exception:
            pass
        self._failed_at = self._failed_at or time.monotonic()  # a re-migration before any token: one gap
        self._inner = self._backend.stream(new)

    def _pending(self, params: Any) -> str:
        """Text the old replica held back (stop strings), re-decoded as its detokenizer had it."""
        if params.include_stop_str_in_output or self._tokenizer is None:
            return ""
        try:
            import tokenizers

            tok = self._tokenizer()._tokenizer  # vLLM's fast tokenizer wraps a tokenizers.Tokenizer
            stream = tokenizers.decoders.DecodeStream(ids=list(self._request.prompt_token_ids),
                                                      skip_special_tokens=params.skip_special_tokens)
            decoded = "".join(stream.step(tok, t) or "" for t in self._seen.token_ids)
        except Exception:
            logger.warning("request %s: held-back text not re-decoded", self._request.request_id, exc_info=True)
            return ""
        return pending_text(decoded, self._seen.text)

    def cancel(self) -> None:
        self._cancelled = True
        self._inner.cancel()
