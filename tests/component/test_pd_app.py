"""The P/D topology's configuration surface: P/D is variants with roles, built by build_app (no engines started)."""

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parents[2]
PD_YAML = ROOT / "serve_configs" / "pd.yaml"
PD_RAMP_YAML = ROOT / "serve_configs" / "pd_autoscaling.yaml"


def built(args: dict):
    """Serve's own build step (what `serve run` does before deploying): deployments by name."""
    from ray.serve._private.build_app import build_app as serve_build

    from llmd_ray import build_app

    app = serve_build(build_app(args), name="pd")
    return {d.name: d for d in app.deployments}, app


def test_pd_yaml_builds_prefill_and_decode_variants_behind_one_ingress():
    from llmd_ray import AppArgs, LLMServer

    (app,) = yaml.safe_load(PD_YAML.read_text())["applications"]
    assert app["import_path"] == "llmd_ray:build_app"
    args = AppArgs.model_validate(app["args"])
    assert [(v.name, v.role, v.num_replicas) for v in args.variants] == [("prefill", "prefill", 1), ("decode", "decode", 1)]
    assert args.pd.transport == "object_store" and args.pd.decider.policy == "prefix"
    deps, built_app = built(app["args"])
    assert set(deps) == {"OpenAIIngress", "LLMServer-prefill", "LLMServer-decode"}
    # one replica class; the role is a feature
    assert deps["LLMServer-prefill"].func_or_class is LLMServer and deps["LLMServer-decode"].func_or_class is LLMServer
    assert deps["LLMServer-prefill"].init_args[2]["role"] == "prefill"
    assert deps["LLMServer-decode"].init_args[2]["role"] == "decode"
    assert deps["LLMServer-decode"].init_args[2]["pd"]["transport"] == "object_store"
    assert built_app.ingress_deployment_name == "OpenAIIngress"
    # the ingress sends to decode only (prefill is called by decode); decode holds its group's prefill handle
    ingress_llms = deps["OpenAIIngress"].init_args[0]
    assert list(ingress_llms) == ["decode"]
    assert deps["LLMServer-decode"].init_kwargs["prefill"].deployment_name == "LLMServer-prefill"
    assert deps["LLMServer-prefill"].init_kwargs["prefill"] is None
    # engines on cores of their own: decode's ranks follow prefill's
    assert (deps["LLMServer-prefill"].init_kwargs["rank_offset"], deps["LLMServer-decode"].init_kwargs["rank_offset"]) == (0, 1)


def test_pd_autoscaling_variants_carry_the_topology_to_the_policy():
    from llmd_ray.topology import carry

    (app,) = yaml.safe_load(PD_RAMP_YAML.read_text())["applications"]
    assert not {"variants", "classes"} & set(app["autoscaling_policy"]["policy_kwargs"])
    deps, _ = built(app["args"])
    for name, role in (("LLMServer-prefill", "prefill"), ("LLMServer-decode", "decode")):
        cfg = deps[name]._deployment_config.autoscaling_config
        assert (cfg.min_replicas, cfg.max_replicas) == (1, 2)
        variant, qos = carry.read(cfg.policy.policy_kwargs)
        assert variant.role == role and variant.deployment_name == name
        assert qos.classes["interactive"].ttft_objective_s == 3.0


def test_mixed_topology_dispatches_over_aggregated_and_decode():
    deps, _ = built({"engine": {"model": "tiny-llama"}, "variants": [
        {"name": "agg", "num_replicas": 1}, {"name": "p", "role": "prefill"}, {"name": "d", "role": "decode"}]})
    assert set(deps) == {"OpenAIIngress", "LLMServer-agg", "LLMServer-p", "LLMServer-d"}
    assert list(deps["OpenAIIngress"].init_args[0]) == ["agg", "d"]


@pytest.mark.parametrize("args, field", [
    ({"pd": {"decider": {"policy": "sometimes"}}, "variants": [{"name": "p", "role": "prefill"},
                                                                {"name": "d", "role": "decode"}]}, "pd.decider.policy"),
    ({"pd": {"transport": "tcp"}, "variants": [{"name": "p", "role": "prefill"}, {"name": "d", "role": "decode"}]},
     "pd.transport"),
    ({"variants": [{"name": "p", "role": "prefill", "num_replicas": 0}, {"name": "d", "role": "decode"}]},
     "variants.0.num_replicas"),
    ({"pd": {"transport": "nixl"}}, "pd: P/D needs variants with roles"),
    ({"prefill": {"num_replicas": 1}, "decode": {"num_replicas": 1}}, "prefill: no longer an app field: P/D is variants"),
    ({"variants": [{"name": "d", "role": "decode"}]}, "decode variant 'd' has no prefill variant"),
    ({"kv_tiers": {}, "variants": [{"name": "p", "role": "prefill"}, {"name": "d", "role": "decode"}]}, "kv_tiers"),
])
def test_bad_pd_args_name_the_field(args, field):
    from llmd_ray import AppArgs

    with pytest.raises(ValidationError, match=field):
        AppArgs.model_validate({"engine": {"model": "tiny-llama"}, **args})


def test_old_pd_builder_says_what_to_write():
    import llmd_ray

    with pytest.raises(AttributeError, match="build_pd_app is gone: P/D is built by llmd_ray:build_app from variants"):
        llmd_ray.build_pd_app  # noqa: B018
