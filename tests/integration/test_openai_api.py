"""The OpenAI API, driven by the official `openai` client, on real engines."""

from __future__ import annotations

import pytest

MODEL = "tiny-llama"
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()


def long_text(n_words: int, salt: str) -> str:
    return salt + " " + " ".join(WORDS[i % len(WORDS)] + str(i % 7) for i in range(n_words))


def test_models(openai_client):
    models = openai_client.models.list()
    assert [m.id for m in models.data] == [MODEL]


def test_health(http):
    r = http.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_chat_non_streaming(openai_client):
    r = openai_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello there"}], max_tokens=8, temperature=0
    )
    assert r.object == "chat.completion" and r.model == MODEL
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("length", "stop")
    assert 1 <= r.usage.completion_tokens <= 8
    assert r.usage.prompt_tokens > 3
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_streaming_matches_non_streaming_under_greedy(openai_client):
    kwargs = dict(model=MODEL, messages=[{"role": "user", "content": "Count with me"}], max_tokens=12,
                  temperature=0, extra_body={"ignore_eos": True})
    full = openai_client.chat.completions.create(**kwargs)
    stream = openai_client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 12 and not chunks[-1].choices
    assert text == full.choices[0].message.content
    assert full.usage.completion_tokens == 12


def test_completions_streaming_and_not(openai_client):
    full = openai_client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=10, temperature=0,
                                            extra_body={"ignore_eos": True})
    assert full.object == "text_completion" and full.usage.completion_tokens == 10
    parts = list(openai_client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=10,
                                                  temperature=0, stream=True, extra_body={"ignore_eos": True}))
    assert "".join(p.choices[0].text for p in parts) == full.choices[0].text
    assert parts[-1].choices[0].finish_reason == "length"


def test_completion_from_token_ids(openai_client):
    r = openai_client.completions.create(model=MODEL, prompt=[5, 6, 7, 8, 9], max_tokens=3, extra_body={"ignore_eos": True})
    assert r.usage.prompt_tokens == 5 and r.usage.completion_tokens == 3


def test_seed_makes_sampling_reproducible(openai_client):
    kw = dict(model=MODEL, prompt="Random story", max_tokens=16, temperature=1.0, top_p=0.9, seed=1234,
              extra_body={"ignore_eos": True})
    a = openai_client.completions.create(**kw).choices[0].text
    b = openai_client.completions.create(**kw).choices[0].text
    assert a == b


def test_stop_string_ends_generation(openai_client):
    base = openai_client.completions.create(model=MODEL, prompt="Tell me", max_tokens=20, temperature=0,
                                            extra_body={"ignore_eos": True}).choices[0].text
    assert len(base) > 4
    stop = base[len(base) // 2: len(base) // 2 + 2]
    r = openai_client.completions.create(model=MODEL, prompt="Tell me", max_tokens=20, temperature=0, stop=[stop],
                                         extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "stop"
    assert stop not in r.choices[0].text and base.startswith(r.choices[0].text)


def test_logprobs(openai_client):
    r = openai_client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                              logprobs=True, top_logprobs=3, extra_body={"ignore_eos": True})
    content = r.choices[0].logprobs.content
    assert len(content) == 4
    for item in content:
        assert item.logprob <= 0 and 1 <= len(item.top_logprobs) <= 3
        assert item.top_logprobs[0].logprob >= item.logprob - 1e-4
    c = openai_client.completions.create(model=MODEL, prompt="hi", max_tokens=3, logprobs=2, extra_body={"ignore_eos": True})
    assert len(c.choices[0].logprobs.token_logprobs) == 3
    assert all(len(t) <= 3 for t in c.choices[0].logprobs.top_logprobs)  # top 2, plus the sampled token if not among them


def test_cached_tokens_reported_for_a_repeated_prefix(openai_client):
    prompt = long_text(600, "cache-probe")  # well over 2 blocks of 128 tokens
    first = openai_client.completions.create(model=MODEL, prompt=prompt, max_tokens=2, extra_body={"ignore_eos": True})
    # The two replicas are picked at random; a few tries land on the warm one.
    cached = [
        openai_client.completions.create(model=MODEL, prompt=prompt, max_tokens=2, extra_body={"ignore_eos": True})
        .usage.prompt_tokens_details.cached_tokens
        for _ in range(6)
    ]
    assert first.usage.prompt_tokens > 256
    assert max(cached) >= 256 and max(cached) % 128 == 0
    assert max(cached) < first.usage.prompt_tokens


@pytest.mark.asyncio
async def test_session_header_is_accepted(http):
    r = http.post("/v1/chat/completions", headers={"x-session-id": "s-1"},
                  json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert r.status_code == 200
