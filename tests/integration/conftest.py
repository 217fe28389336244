"""One Ray cluster and one aggregated app (2 replicas of the tiny model) for
the whole integration session, on a port of its own so that a running
`make serve` (port 8000) is not disturbed."""

from __future__ import annotations

import os
import socket
import time

import httpx
import pytest

APP_NAME = "default"
HTTP_PORT = int(os.environ.get("LLMD_RAY_TEST_PORT", "18000"))
METRICS_PORT = int(os.environ.get("LLMD_RAY_TEST_METRICS_PORT", "18080"))


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    os.environ.setdefault("PYTHONHASHSEED", "0")
    ray.init(
        num_cpus=4,  # logical: 2 LLMServer replicas reserve 1 each; engines pin real cores by rank
        include_dashboard=False,
        _metrics_export_port=METRICS_PORT,
        _system_config={"metrics_report_interval_ms": 1000},
        runtime_env={"env_vars": {"PYTHONHASHSEED": "0"}},
        log_to_driver=False,
    )
    yield ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def app(ray_cluster):
    """The default app, served on HTTP_PORT; yields its base URL."""
    from ray import serve

    from llmd_ray import build_app

    assert _port_free(HTTP_PORT), f"port {HTTP_PORT} is taken"
    serve.start(http_options={"host": "127.0.0.1", "port": HTTP_PORT})
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
