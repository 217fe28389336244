"""The plugin router inside Ray Serve, on real engines: prefix affinity holds."""

from __future__ import annotations

import random

MODEL = "tiny-llama"


def _prompt(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(10, 4000) for _ in range(n)]


def test_shared_prefix_requests_land_where_the_prefix_is_cached(openai_client):
    rng = random.Random(7)
    prefixes = [_prompt(rng, 600) for _ in range(4)]  # 4 full 128-token blocks each
    cached = []
    for rep in range(3):
        for p in prefixes:
            r = openai_client.completions.create(model=MODEL, prompt=p + _prompt(rng, 40), max_tokens=2,
                                                 extra_body={"ignore_eos": True})
            if rep:
                cached.append(r.usage.prompt_tokens_details.cached_tokens)
    # Every repeat is routed to the replica holding its prefix: all 4 prefix blocks hit.
    # (Random routing over 2 replicas would miss about a quarter of these.)
    assert all(c >= 512 for c in cached), cached


def test_session_header_keeps_a_conversation_on_one_replica(http):
    rng = random.Random(11)
    history = _prompt(rng, 300)
    hits = []
    for turn in range(4):
        r = http.post("/v1/completions", headers={"x-session-id": "conv-42"},
                      json={"model": MODEL, "prompt": history, "max_tokens": 4, "ignore_eos": True})
        assert r.status_code == 200
        hits.append(r.json()["usage"]["prompt_tokens_details"]["cached_tokens"])
        history = history + _prompt(rng, 150)
    assert all(h >= 256 for h in hits[1:]), hits
