"""The real OpenAIIngress over two variant deployments of a SIMULATED LLMServer (SimLLM): requests spread
over both, and nothing is lost when one variant is scaled to zero (and back) under traffic.
Also: AppArgs.variants builds one LLMServer-<name> deployment per variant, and bad args name the field."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
import yaml
from pydantic import ValidationError
from ray import serve
from ray.serve._private.common import DeploymentID

from llmd_ray.serving.ingress import OpenAIIngress
from tests.conftest import HTTP_PORT
from tests.support.sim_llm import SimLLM

APP, PREFIX = "variants-component", "/variants"
NAMES = {"cpu-a": "LLMServer-cpu-a", "cpu-b": "LLMServer-cpu-b"}
TOKENS = 20


@pytest.fixture(scope="module")
def url(serve_instance):
    llms = {v: SimLLM.options(name=d).bind(chunk_delay_s=0.05, tokens=TOKENS) for v, d in NAMES.items()}
    engine = {"model": "tiny-llama", "max_model_len": 4096}
    dispatch = {"poll_s": 0.2, "accelerators": {"cpu-a": "cpu-1core", "cpu-b": "cpu-1core"}}
    serve.run(OpenAIIngress.bind(llms, engine, {}, {}, dispatch), name=APP, route_prefix=PREFIX,
              external_scaler_enabled=True)
    yield f"http://127.0.0.1:{HTTP_PORT}{PREFIX}"
    serve.delete(APP)


async def variants_status() -> dict:
    return (await serve.get_app_handle(APP).flow_status.remote())["variants"]


async def wait_running(want: dict[str, int], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = await variants_status()
        if {v: s["running"] for v, s in status.items()} == want:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"running replicas never became {want}: {status}")


def scale(variant: str, n: int) -> None:
    controller = serve.context._get_global_client()._controller
    import ray

    ray.get(controller.update_deployment_replicas.remote(DeploymentID(NAMES[variant], APP), n))


async def arrivals(variant: str) -> set[int]:
    return set(await serve.get_deployment_handle(NAMES[variant], app_name=APP).arrivals.remote())


async def complete(client: httpx.AsyncClient, marker: int, min_tokens: int = 0) -> str:
    body = {"model": "tiny-llama", "prompt": [marker], "max_tokens": max(TOKENS, min_tokens), "stream": True,
            "min_tokens": min_tokens}
    r = await client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.text.endswith("data: [DONE]\n\n") and '"error"' not in r.text, r.text[-300:]
    return r.text


@pytest.fixture
async def client(url):
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        yield c


async def test_requests_spread_over_both_variants(client):
    await wait_running({"cpu-a": 1, "cpu-b": 1})
    markers = list(range(1000, 1008))
    await asyncio.gather(*(complete(client, m) for m in markers))  # each ~1 s: all in flight together
    a, b = (await arrivals("cpu-a")) & set(markers), (await arrivals("cpu-b")) & set(markers)
    assert a | b == set(markers) and not a & b
    assert len(a) >= 3 and len(b) >= 3, (a, b)
    status = await variants_status()
    assert all(s["outstanding"] == 0 and s["accelerator"] == "cpu-1core" for s in status.values()), status


async def test_scaling_a_variant_to_zero_under_traffic_loses_nothing(client):
    await wait_running({"cpu-a": 1, "cpu-b": 1})
    # Two long requests: one on each variant (ties go to cpu-a, then cpu-b is the less loaded).
    long = [asyncio.create_task(complete(client, 2000 + i, min_tokens=60)) for i in range(2)]
    deadline = time.monotonic() + 10
    while any(s["outstanding"] != 1 for s in (await variants_status()).values()):
        assert time.monotonic() < deadline, await variants_status()
        await asyncio.sleep(0.05)
    scale("cpu-b", 0)  # its replica drains the request it holds, then stops
    steady = [asyncio.create_task(complete(client, 2100 + i)) for i in range(6)]
    for text in await asyncio.gather(*long):
        assert text.count('"text":" x"') == 60
    await asyncio.gather(*steady)
    await wait_running({"cpu-a": 1, "cpu-b": 0})
    after = list(range(2200, 2206))
    await asyncio.gather(*(complete(client, m) for m in after))
    assert set(after) <= await arrivals("cpu-a")  # nothing waits on the variant at zero
    scale("cpu-b", 1)
    await wait_running({"cpu-a": 1, "cpu-b": 1})
    back = list(range(2300, 2308))
    await asyncio.gather(*(complete(client, m) for m in back))
    assert await arrivals("cpu-b") & set(back), "traffic did not return to cpu-b"


# --------------------------------------------------------- AppArgs.variants (no cluster needed)


VARIANTS_YAML = Path(__file__).resolve().parents[2] / "serve_configs" / "variants.yaml"


def test_variants_yaml_validates_and_builds_one_deployment_per_variant():
    from ray._common.utils import import_attr
    from ray.serve._private.build_app import build_app as serve_build
    from ray.serve.schema import ServeDeploySchema

    from llmd_ray import build_app
    from llmd_ray.topology import carry

    schema = ServeDeploySchema.model_validate(yaml.safe_load(VARIANTS_YAML.read_text()))
    (app,) = schema.applications
    import_attr(app.autoscaling_policy["policy_function"])(**app.autoscaling_policy["policy_kwargs"])  # knobs only
    built = serve_build(build_app(app.args), name=app.name)
    deps = {d.name: d for d in built.deployments}
    assert set(deps) == {"LLMServer-cpu-a", "LLMServer-cpu-b", "OpenAIIngress"}
    a, b = deps["LLMServer-cpu-a"], deps["LLMServer-cpu-b"]
    # the policy reads each variant and the app's classes from its deployment's autoscaling_config
    seen = [carry.read(d._deployment_config.autoscaling_config.policy.policy_kwargs) for d in (a, b)]
    assert [(v.name, v.deployment_name) for v, _ in seen] == [("cpu-a", "LLMServer-cpu-a"), ("cpu-b", "LLMServer-cpu-b")]
    assert all(q.default_class == "interactive" for _, q in seen)
    assert (a.init_args[0]["cpu_bind"], b.init_args[0]["cpu_bind"]) == ("0", "1")
    bounds = [d._deployment_config.autoscaling_config for d in (a, b)]
    assert [(c.min_replicas, c.max_replicas) for c in bounds] == [(1, 1), (0, 1)]
    assert b._deployment_config.autoscaling_config.upscale_delay_s == 0
    ingress = deps["OpenAIIngress"]
    assert set(ingress.init_args[0]) == {"cpu-a", "cpu-b"}
    assert ingress.init_args[4] == {"accelerators": {"cpu-a": "cpu-1core", "cpu-b": "cpu-1core"}}


def test_without_variants_the_app_is_unchanged():
    from ray.serve._private.build_app import build_app as serve_build

    from llmd_ray import build_app

    built = serve_build(build_app({"num_replicas": 2}), name="x")
    deps = {d.name: d for d in built.deployments}
    assert set(deps) == {"LLMServer", "OpenAIIngress"}
    assert deps["LLMServer"]._deployment_config.num_replicas == 2
    assert len(deps["OpenAIIngress"].init_args) == 4


@pytest.mark.parametrize("args, field", [
    ({"variants": []}, "variants"),
    ({"variants": [{"name": "a"}, {"name": "a"}]}, "duplicate names"),
    ({"num_replicas": 3, "variants": [{"name": "a"}]}, "num_replicas"),
    ({"variants": [{"name": "a", "engine": {"max_num_seqs": 0}}]}, "variants.0.engine.max_num_seqs"),
    ({"variants": [{"name": "a", "engine": {"max_model_len": 1024}}]}, "engine.max_model_len"),
    ({"variants": [{"name": "a", "autoscaling": {"min_replicas": 3, "max_replicas": 2}}]}, "min_replicas"),
    ({"variants": [{"name": "Bad Name"}]}, "variants.0.name"),
    ({"variants": [{"name": "a", "cost": 1}]}, "variants.0.cost"),
])
def test_bad_variant_args_name_the_field(args, field):
    from llmd_ray import AppArgs

    with pytest.raises(ValidationError, match=field):
        AppArgs.model_validate(args)
