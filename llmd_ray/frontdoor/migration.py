"""Stream migration, the pure part: what to re-send when a stream's replica dies, and how the rest joins on.

When the replica serving a stream dies after the client has had tokens, the
ingress re-sends the request to another replica with the prompt **plus the
token ids already streamed** as the new prompt, ``max_tokens`` and
``min_tokens`` reduced by what was generated, and the same sampling params and
seed (:func:`resend`). The new replica's outputs continue the same client
stream; the serving layer (vLLM's, in the ingress) sees one engine request:

* token accounting: the ingress restores the client's prompt on every output,
  so ``usage.prompt_tokens`` is the client's prompt; completion tokens are
  counted from the deltas, so they are all generated tokens; ``cached_tokens``
  stays the first replica's count for the client's prompt (vLLM reads it from
  the first output; the new replica's hits concern the extended prompt);
* text: the new replica's detokenizer is primed with the extended prompt, so
  its text continues the old text, but it never emits text of prompt tokens.
  What the old replica held back (the last ``len(longest stop) - 1`` chars
  when stop strings are set) is re-decoded by the ingress and sent first, and
  a stop string spanning the boundary is found here (:class:`Splice`);
* ``cumulative_logprob`` continues from the old total; logprobs of new tokens
  are the new replica's (the same context gives the same values).

Under greedy decoding the continuation is token-identical to an uninterrupted
run (up to the numerics of a prefill versus decode steps). A seeded sample
continues validly but not identically (the seeded generator starts afresh).
Refused (:func:`refusal`, a clean error instead): n > 1, structured output,
presence/frequency penalties (they count generated tokens only, which become
prompt) and custom logits processors.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from llmd_ray.engine.types import GenerateRequest
from llmd_ray.engine.vllm_call import VllmCall


def refusal(params: Any) -> str | None:
    """Why a stream with these vLLM ``SamplingParams`` cannot be migrated (None: it can)."""
    if (getattr(params, "n", 1) or 1) > 1:
        return "n > 1 is not migrated (each choice would need its own continuation)"
    if getattr(params, "structured_outputs", None) is not None:
        return "structured output is not migrated (the grammar state stays on the dead replica)"
    if getattr(params, "presence_penalty", 0.0) or getattr(params, "frequency_penalty", 0.0):
        return "presence/frequency penalties are not migrated (they count generated tokens only)"
    if getattr(params, "logits_processors", None):
        return "custom logits processors are not migrated"
    return None


@dataclass(slots=True)
class Seen:
    """What one stream (n == 1) has delivered to the client so far."""

    token_ids: list[int] = field(default_factory=list)
    text: str = ""  # the text sent to the client
    cached_tokens: int | None = None  # the first output's num_cached_tokens (the client's prompt)
    cumulative_logprob: float | None = None
    outputs: int = 0
    finished: bool = False

    def observe(self, out: Any) -> None:
        """Record one RequestOutput delta, as it goes to the client."""
        if self.outputs == 0:
            self.cached_tokens = out.num_cached_tokens
        self.outputs += 1
        for o in out.outputs:
            self.token_ids.extend(o.token_ids)
            self.text += o.text or ""
            if o.cumulative_logprob is not None:
                self.cumulative_logprob = o.cumulative_logprob
        self.finished = bool(out.finished)


def clone_params(params: Any) -> Any:
    clone = getattr(params, "clone", None)
    return clone() if callable(clone) else copy.deepcopy(params)


def resend(request: GenerateRequest, seen: Seen, attempt: int) -> GenerateRequest:
    """The engine request continuing ``request`` after ``seen`` (the ``attempt``-th migration)."""
    call: VllmCall = request.sampling.vllm
    params = clone_params(call.params)
    done = len(seen.token_ids)
    if params.max_tokens is not None:
        if params.max_tokens - done < 1:
            raise ValueError(f"nothing left to generate ({done} of max_tokens {params.max_tokens} streamed)")
        params.max_tokens -= done
    params.min_tokens = max(0, (params.min_tokens or 0) - done)
    params.prompt_logprobs = None  # sent with the first output already; the extended prompt is not the client's
    if getattr(params, "truncate_prompt_tokens", None) is not None:
        params.truncate_prompt_tokens = None  # the client's prompt was truncated once; never cut the continuation
    new_call = VllmCall(params, dict(call.engine_input), dict(call.kwargs))
    options = dataclasses.replace(request.sampling, max_tokens=params.max_tokens or 0,
                                  min_tokens=params.min_tokens, vllm=new_call)
    return dataclasses.replace(request, request_id=f"{request.request_id}-m{attempt}",
                               prompt_token_ids=list(request.prompt_token_ids) + list(seen.token_ids),
                               sampling=options, kv_transfer_params=None)


def pending_text(decoded: str | None, sent: str) -> str:
    """Text of the streamed tokens the client has not been sent (``decoded``: all of it, as the replica had it).

    A trailing replacement char is an incomplete UTF-8 sequence: the new replica completes and sends it.
    """
    if not decoded or not decoded.startswith(sent):
        return ""
    return decoded[len(sent):].rstrip("\ufffd")


def first_spanning_stop(text: str, boundary: int, stops: list[str]) -> tuple[str, int] | None:
    """(stop string, start) of the earliest-ending stop that starts before ``boundary`` and ends after it."""
    best: tuple[str, int] | None = None
    best_end = len(text) + 1
    for s in stops:
        for i in range(max(0, boundary - len(s) + 1), boundary):
            if text.startswith(s, i) and i + len(s) > boundary and i + len(s) < best_end:
                best, best_end = (s, i), i + len(s)
                break
    return best


@dataclass(slots=True)
class Splice:
    """Joins the new replica's text onto the text sent, finding stop strings that span the boundary.

    Until the new replica has produced ``len(longest stop) - 1`` chars (no spanning stop can end later), its
    text is held here with ``pending``; then everything held is sent and later text passes through.
    """

    tail: str  # the end of the text already sent (a spanning stop may start there)
    pending: str  # streamed tokens' text not sent yet (the old replica held it back)
    stop: list[str]
    include_stop: bool
    min_tokens: int  # the client's (stops count only past it)
    held: str = ""
    done: bool = False

    @classmethod
    def start(cls, sent: str, pending: str, params: Any) -> "Splice":
        stop = [params.stop] if isinstance(params.stop, str) else list(params.stop or [])
        window = max((len(s) for s in stop), default=1) - 1
        tail = sent[max(0, len(sent) - window):] if window else ""
        return cls(tail, pending, stop, bool(params.include_stop_str_in_output), params.min_tokens or 0,
                   done=not stop and not pending)

    @property
    def window(self) -> int:
        return max((len(s) for s in self.stop), default=1) - 1

    def feed(self, text: str, finished: bool, generated: int) -> tuple[str, str | None]:
        """(text to send now, the stop string ending the output here or None); ``generated``: tokens so far."""
        if self.done:
            return text, None
        self.held += text
        boundary = len(self.tail) + len(self.pending)
        joined = self.tail + self.pending + self.held
        hit = first_spanning_stop(joined, boundary, self.stop) if generated > self.min_tokens else None
        if hit is not None:
            s, i = hit
            self.done = True
            return joined[len(self.tail): i + len(s) if self.include_stop else i], s
        if finished or len(self.held) >= self.window:
            self.done = True
            return joined[len(self.tail):], None
        return "", None


def continue_output(out: Any, request_id: str, seen: Seen, base_logprob: float | None, splice: Splice | None,
                    generated: int) -> str | None:
    """Rewrite a migrated replica's RequestOutput as a delta of the client's stream; returns a spanning stop hit."""
    out.request_id = request_id
    out.num_cached_tokens = seen.cached_tokens
    hit = None
    for o in out.outputs:
        o.index = 0
        if base_logprob is not None and o.cumulative_logprob is not None:
            o.cumulative_logprob += base_logprob
        if splice is not None:
            o.text, hit = splice.feed(o.text or "", bool(out.finished), generated)
            if hit is not None:
                o.finish_reason, o.stop_reason = "stop", hit
                out.finished = True
    return hit
