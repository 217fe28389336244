"""The P/D app's configuration surface (no engines started)."""

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

PD_YAML = Path(__file__).resolve().parents[2] / "serve_configs" / "pd.yaml"


def test_pd_yaml_validates_and_builds():
    from llmd_ray import PDAppArgs, build_pd_app

    doc = yaml.safe_load(PD_YAML.read_text())
    (app,) = doc["applications"]
    assert app["import_path"] == "llmd_ray:build_pd_app"
    assert app["runtime_env"]["env_vars"]["PYTHONHASHSEED"] == "0"
    args = PDAppArgs.model_validate(app["args"])
    assert (args.prefill.num_replicas, args.decode.num_replicas) == (1, 1)
    assert args.pd.transport == "object_store" and args.pd.decider.policy == "prefix"
    assert build_pd_app(app["args"]) is not None


def test_role_profiles_are_valid_scheduler_configs():
    from llmd_ray.routing import Scheduler
    from llmd_ray.routing.types import Endpoint, RoutingRequest
    from llmd_ray.serving.pd_app import role_router_config

    for role in ("prefill", "decode"):
        sched = Scheduler.from_config(role_router_config(role))
        assert list(sched.profiles) == [role]
        eps = [Endpoint("a", role=role), Endpoint("b", role="prefill" if role == "decode" else "decode")]
        result = sched.schedule(RoutingRequest("r", list(range(300)), 128), eps)
        assert result.ranked == ["a"]  # the other role is filtered out


def test_bad_pd_args_name_the_field():
    from llmd_ray import PDAppArgs

    with pytest.raises(ValidationError, match="pd.decider.policy"):
        PDAppArgs.model_validate({"pd": {"decider": {"policy": "sometimes"}}})
    with pytest.raises(ValidationError, match="prefill.num_replicas"):
        PDAppArgs.model_validate({"prefill": {"num_replicas": 0}})
    with pytest.raises(ValidationError, match="pd.transport"):
        PDAppArgs.model_validate({"pd": {"transport": "tcp"}})
