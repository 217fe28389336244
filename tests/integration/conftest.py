"""One Ray cluster and one aggregated app (2 replicas of the tiny model) for
the whole integration session, on a port of its own so that a running
`make serve` (port 8000) is not disturbed."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import HTTP_PORT, METRICS_PORT  # noqa: F401  (re-exported for tests)

APP_NAME = "default"


@pytest.fixture(scope="session")
def app(serve_instance):
    """The default app, served on HTTP_PORT; yields its base URL."""
    from ray import serve

    from llmd_ray import build_app

    t0 = time.perf_counter()
    serve.run(
        build_app({"num_replicas": 2, "engine": {"model": "tiny-llama", "max_model_len": 4096}}),
        name=APP_NAME,
        route_prefix="/",
    )
    print(f"\napp ready in {time.perf_counter() - t0:.1f}s")
    yield f"http://127.0.0.1:{HTTP_PORT}"


@pytest.fixture(scope="session")
def base_url(app) -> str:
    return app + "/v1"


@pytest.fixture
def http(app):
    with httpx.Client(base_url=app, timeout=120) as client:
        yield client


@pytest.fixture
def openai_client(base_url):
    from openai import OpenAI

    return OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def llm_handle(app):
    from ray import serve

    return serve.get_deployment_handle("LLMServer", app_name=APP_NAME)


async def replica_stats(llm_handle, replicas: int = 2, tries: int = 60) -> dict[int, dict]:
    """Stats of every LLMServer replica, keyed by rank (calls land on random replicas)."""
    seen: dict[int, dict] = {}
    for _ in range(tries):
        s = await llm_handle.stats.remote()
        seen[s["rank"]] = s
        if len(seen) == replicas:
            break
    return seen
