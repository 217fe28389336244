"""Several models in one app (``AppArgs.models``): the args model and the deployment graph build_app makes
(imports Ray Serve, starts nothing). Every shipped serve config is checked as ``serve run`` checks it first:
Serve's config schema, ``AppArgs``, and the application graph the builder returns."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from llmd_ray.serving.app import AppArgs, ModelArgs, model_apps

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "serve_configs").glob("*.yaml"))
A = {"engine": {"model": "tiny-llama"}, "num_replicas": 1}
B = {"engine": {"model": "tiny-llama-b"}, "num_replicas": 1}


def built(args: dict, name: str = "default"):
    from ray.serve._private.build_app import build_app as serve_build

    from llmd_ray import build_app

    return {d.name: d for d in serve_build(build_app(args), name=name).deployments}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_serve_config_validates_and_builds_as_serve_run_does(path):
    from ray.serve.schema import ServeDeploySchema

    doc = yaml.safe_load(path.read_text())
    ServeDeploySchema.parse_obj(doc)  # as `serve run` reads the file
    (app,) = doc["applications"]
    AppArgs.model_validate(app["args"])
    assert "OpenAIIngress" in built(app["args"], app["name"])


def test_multi_model_yaml_is_two_different_tiny_models_one_replica_each():
    doc = yaml.safe_load((CONFIGS[0].parent / "multi_model.yaml").read_text())
    a = AppArgs.model_validate(doc["applications"][0]["args"])
    assert [(m.engine.model, m.num_replicas) for m in a.models] == [("tiny-llama", 1), ("tiny-llama-b", 1)]


def test_each_model_is_its_own_deployment_pinned_after_the_earlier_models():
    deps = built({"models": [{**A, "num_replicas": 2}, B]})
    a, b = deps["LLMServer-tiny-llama"], deps["LLMServer-tiny-llama-b"]
    assert a._deployment_config.num_replicas == 2 and b._deployment_config.num_replicas == 1
    assert a.init_kwargs.get("rank_offset", 0) == 0 and b.init_kwargs["rank_offset"] == 2  # cores 0-1, then 2
    assert a.init_args[0]["model"] == "tiny-llama" and b.init_args[0]["model"] == "tiny-llama-b"
    ingress = deps["OpenAIIngress"]
    models = ingress.init_kwargs["models"]
    assert [m["engine"]["model"] for m in models] == ["tiny-llama", "tiny-llama-b"]
    assert "LLMServer" not in deps  # no deployment of the default model besides


def test_a_models_router_and_variants_are_its_own():
    deps = built({"models": [
        {**A, "router": {"policy": "pow2"}},
        {"engine": {"model": "tiny-llama-b"}, "variants": [
            {"name": "b-one", "num_replicas": 1}, {"name": "b-two", "min_replicas": 0, "max_replicas": 1}]},
    ]})
    assert {"LLMServer-tiny-llama", "LLMServer-b-one", "LLMServer-b-two"} <= set(deps)
    pow2 = deps["LLMServer-tiny-llama"]._deployment_config.request_router_config
    llmd = deps["LLMServer-b-one"]._deployment_config.request_router_config
    assert "LLMDRequestRouter" not in str(pow2.request_router_class)
    assert "LLMDRequestRouter" in str(llmd.request_router_class)
    assert deps["LLMServer-b-one"].init_kwargs["rank_offset"] == 1  # after tiny-llama's one replica
    assert deps["LLMServer-b-two"].init_kwargs["rank_offset"] == 2


def test_single_model_args_are_unchanged():
    deps = built({"num_replicas": 2, "engine": {"model": "tiny-llama"}})
    assert {"LLMServer", "OpenAIIngress"} <= set(deps)
    assert deps["OpenAIIngress"].init_args[1]["model"] == "tiny-llama" and "models" not in deps[
        "OpenAIIngress"].init_kwargs
    assert AppArgs().models is None


@pytest.mark.parametrize("args,field", [
    ({"models": [A, B], "engine": {"model": "tiny-llama"}}, "engine: with `models`"),
    ({"models": [A, B], "num_replicas": 2}, "num_replicas: with `models`"),
    ({"models": [A, A]}, "models[1].engine: model name 'tiny-llama' is served twice"),
    ({"models": []}, "models"),
    ({"models": [A, {"engine": {"model": "tiny-llama-b"}, "variants": [{"name": "x", "num_replicas": 1}],
                     "num_replicas": 2}]}, "models[1]: "),
    ({"models": [{**A, "variants": [{"name": "v", "num_replicas": 1}], "num_replicas": 1}, B]}, "models[0]: "),
    ({"models": [{"engine": {"model": "tiny-llama"}, "variants": [{"name": "v", "num_replicas": 1}]},
                 {"engine": {"model": "tiny-llama-b"}, "variants": [{"name": "v", "num_replicas": 1}]}]},
     "models[1].variants: variant name(s) ['v']"),
    ({"models": [A, {**B, "router": {"precise_index": True}}]}, "models[1].router: the precise prefix index"),
    ({"models": [A, B], "kv_tiers": {}}, "kv_tiers: "),
    ({"models": [{"num_replicas": 1}]}, "engine"),
    ({"models": [{**A, "replicas": 3}]}, "replicas"),
])
def test_bad_models_args_name_the_field(args, field):
    with pytest.raises(ValidationError) as e:
        AppArgs.model_validate(args)
    assert field in str(e.value), str(e.value)


def test_models_inherit_the_apps_defaults():
    a = AppArgs.model_validate({"models": [A, {**B, "max_ongoing_requests": 8}], "replica_num_cpus": 2,
                                "router": {"policy": "pow2"}})
    subs = model_apps(a)
    assert [s.replica_num_cpus for s in subs] == [2, 2] and [s.max_ongoing_requests for s in subs] == [256, 8]
    assert all(s.router.policy == "pow2" for s in subs)
    assert ModelArgs.model_fields["num_replicas"].default == 1
