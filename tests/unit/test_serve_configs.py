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
