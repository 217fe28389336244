"""Stream migration's pure part (``frontdoor/migration.py``): the re-sent request, the token accounting, the
text joined across the boundary (held-back text, stop strings spanning it) and what is refused."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from llmd_ray.engine.types import GenerateRequest, SamplingOptions
from llmd_ray.engine.vllm_call import VllmCall
from llmd_ray.frontdoor.migration import (Seen, Splice, continue_output, first_spanning_stop, pending_text, refusal,
                                          resend)


@dataclass
class Params:  # the SamplingParams fields migration reads (vLLM's own is tested in tests/component)
    max_tokens: int | None = 600
    min_tokens: int = 0
    n: int = 1
    temperature: float = 0.0
    seed: int | None = 7
    stop: list[str] = field(default_factory=list)
    include_stop_str_in_output: bool = False
    prompt_logprobs: int | None = None
    truncate_prompt_tokens: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    structured_outputs: object = None
    logits_processors: list | None = None
    skip_special_tokens: bool = True


def out(ids, text, finished=False, cached=0, cum=None):
    o = SimpleNamespace(index=0, token_ids=list(ids), text=text, cumulative_logprob=cum, finish_reason=None,
                        stop_reason=None)
    return SimpleNamespace(request_id="engine-id", outputs=[o], finished=finished, num_cached_tokens=cached)


def request(**params):
    p = Params(**params)
    call = VllmCall(p, {"type": "token", "cache_salt": "s"}, {"priority": 2})
    return GenerateRequest("req-1", [1, 2, 3], SamplingOptions(max_tokens=p.max_tokens or 0, vllm=call),
                           session_id="sess", kv_transfer_params={"x": 1})


def seen_of(*outputs):
    s = Seen()
    for o in outputs:
        s.observe(o)
    return s


@pytest.mark.parametrize("params,streamed,max_tokens,min_tokens", [
    ({}, 1, 599, 0),
    ({"max_tokens": 600, "min_tokens": 600}, 250, 350, 350),
    ({"max_tokens": 600, "min_tokens": 100}, 250, 350, 0),
    ({"max_tokens": None}, 10, None, 0),
])
def test_resend_extends_the_prompt_and_reduces_the_budget(params, streamed, max_tokens, min_tokens):
    req = request(prompt_logprobs=3, truncate_prompt_tokens=100, **params)
    seen = seen_of(out(range(10, 10 + streamed), "x" * streamed))
    new = resend(req, seen, 2)
    p = new.sampling.vllm.params
    assert new.prompt_token_ids == [1, 2, 3] + list(range(10, 10 + streamed))
    assert (p.max_tokens, p.min_tokens) == (max_tokens, min_tokens)
    assert (new.sampling.max_tokens, new.sampling.min_tokens) == (max_tokens or 0, min_tokens)
    assert p.seed == 7 and p.temperature == 0.0  # same sampling
    assert p.prompt_logprobs is None and p.truncate_prompt_tokens is None
    assert new.request_id == "req-1-m2" and new.session_id == "sess" and new.kv_transfer_params is None
    assert new.sampling.vllm.engine_input == {"type": "token", "cache_salt": "s"}
    assert new.sampling.vllm.kwargs == {"priority": 2}
    # the original is untouched (a second migration starts from it again)
    assert req.prompt_token_ids == [1, 2, 3] and req.sampling.vllm.params.max_tokens == params.get("max_tokens", 600)
    assert req.sampling.vllm.params.prompt_logprobs == 3


def test_resend_with_nothing_left_is_refused():
    with pytest.raises(ValueError, match="nothing left"):
        resend(request(max_tokens=3), seen_of(out([5, 6, 7], "abc")), 1)


@pytest.mark.parametrize("params,reason", [
    ({}, None),
    ({"n": 2}, "n > 1"),
    ({"structured_outputs": object()}, "structured output"),
    ({"presence_penalty": 0.5}, "penalties"),
    ({"frequency_penalty": -0.1}, "penalties"),
    ({"logits_processors": [print]}, "logits processors"),
    ({"stop": ["\n"], "seed": None, "temperature": 1.0}, None),
])
def test_refusal(params, reason):
    got = refusal(Params(**params))
    assert (got is None) if reason is None else (reason in got)


def test_seen_accounts_tokens_text_and_the_first_cached_count():
    s = seen_of(out([5], "a", cached=16, cum=-0.5), out([6, 7], "bc", cached=0, cum=-1.25))
    assert (s.token_ids, s.text, s.cached_tokens, s.cumulative_logprob, s.outputs, s.finished) == \
        ([5, 6, 7], "abc", 16, -1.25, 2, False)
    s.observe(out([8], "d", finished=True))
    assert s.finished and s.token_ids == [5, 6, 7, 8]


@pytest.mark.parametrize("decoded,sent,pending", [
    ("Hello wor", "Hello", " wor"),
    ("Hello", "Hello", ""),
    ("Hi \ufffd", "Hi", " "),  # an incomplete UTF-8 tail is the new replica's to send
    ("Other", "Hello", ""),  # cannot tell: send nothing extra
    (None, "x", ""),
])
def test_pending_text(decoded, sent, pending):
    assert pending_text(decoded, sent) == pending


@pytest.mark.parametrize("text,boundary,stops,hit", [
    ("abcSTOPx", 5, ["STOP"], ("STOP", 3)),
    ("abcSTOPx", 3, ["STOP"], None),  # starts at the boundary: the new replica's own
    ("abcSTOPx", 8, ["STOP"], None),  # all before: the old replica would have stopped
    ("xxENDyy", 4, ["END", "xEND"], ("END", 2)),
    ("aXYZ", 2, ["XYZ", "XY"], ("XY", 1)),  # the earliest end wins
])
def test_first_spanning_stop(text, boundary, stops, hit):
    assert first_spanning_stop(text, boundary, stops) == hit


def feed_all(splice, texts, finished_last=True, start_generated=10):
    sent, hit = [], None
    for i, t in enumerate(texts):
        s, hit = splice.feed(t, finished_last and i == len(texts) - 1, start_generated + i + 1)
        sent.append(s)
        if hit:
            break
    return sent, hit


@pytest.mark.parametrize("sent,pending,params,texts,want,hit", [
    # no stop spans: the held text goes first once no stop can span any more, then text passes through
    ("one two", " th", {"stop": ["THREE!"]}, [" r", "ee", " four", " five"], ["", "", " th ree four", " five"], None),
    # a stop starting in the held-back text and ending in the new replica's: the output ends before it
    ("one two", " ST", {"stop": ["STOP"]}, ["OP", " more"], [" "], "STOP"),
    # ... with the stop kept in the output
    ("one ST", "", {"stop": ["STOP"], "include_stop_str_in_output": True}, ["OP", "x"], ["OP"], "STOP"),
    # a stop starting in the text already sent
    ("one S", "T", {"stop": ["STOP"]}, ["O", "P"], ["", ""], "STOP"),
    # the stream finishes while text is held: it is all sent
    ("a", "b", {"stop": ["LONGSTOP"]}, ["c"], ["bc"], None),
    # within min_tokens stops do not count
    ("one two", " ST", {"stop": ["STOP"], "min_tokens": 50}, ["OP", " more"], ["", " STOP more"], None),
])
def test_splice(sent, pending, params, texts, want, hit):
    splice = Splice.start(sent, pending, Params(**params))
    got, got_hit = feed_all(splice, texts)
    assert (got, got_hit) == (want, hit)


def test_continue_output_rewrites_a_migrated_delta():
    seen = seen_of(out([5], "a", cached=16, cum=-0.5))
    o = out([6], "b", cached=4, cum=-0.25)
    o.outputs[0].index = 3
    assert continue_output(o, "req-1", seen, seen.cumulative_logprob, None, 2) is None
    c = o.outputs[0]
    assert (o.request_id, o.num_cached_tokens, c.index, c.cumulative_logprob, c.text) == ("req-1", 16, 0, -0.75, "b")


def test_continue_output_ends_the_stream_at_a_spanning_stop():
    seen = seen_of(out([5], "a S"))
    splice = Splice.start(seen.text, "", Params(stop=[" STOP"]))
    o = out([6], "TOP and on")
    assert continue_output(o, "req-1", seen, None, splice, 2) == " STOP"
    c = o.outputs[0]
    assert (o.finished, c.finish_reason, c.stop_reason, c.text) == (True, "stop", " STOP", "")
