"""Every shipped serve config is well-formed Serve YAML for one of our app builders, with valid router configs."""

from pathlib import Path

import pytest
import yaml

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "serve_configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_serve_config_is_well_formed(path):
    doc = yaml.safe_load(path.read_text())
    (app,) = doc["applications"]
    assert app["import_path"] == "llmd_ray:build_app"  # one builder for every topology
    assert app["runtime_env"]["env_vars"]["PYTHONHASHSEED"] == "0"
    assert doc["http_options"] == {"host": "127.0.0.1", "port": 8000}
    router = app["args"].get("router", {})
    if router.get("config") is not None:
        from llmd_ray.routing import Scheduler

        Scheduler.from_config(router["config"])  # a bad plugin config names plugin and field


def test_prefix_routing_is_the_default_profile():
    """Issue 15 item 6: the config the README presents as the prefix router is build_app's default, written out."""
    from llmd_ray.routing import DEFAULT_CONFIG_YAML

    path = next(p for p in CONFIGS if p.name == "prefix_routing.yaml")
    (app,) = yaml.safe_load(path.read_text())["applications"]
    assert app["args"]["router"] == {"policy": "llmd", "config": yaml.safe_load(DEFAULT_CONFIG_YAML)}
    assert "\n".join(line.strip() for line in DEFAULT_CONFIG_YAML.splitlines()) in \
        "\n".join(line.strip() for line in path.read_text().splitlines())  # comments too: the same text
