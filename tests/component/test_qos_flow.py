"""The real OpenAIIngress over a simulated LLMServer (SimLLM): API keys, rate limits,
QoS classes, priority order, shedding (429 + Retry-After), waiting then 503, metrics."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from ray import serve

from llmd_ray.serving.ingress import OpenAIIngress
from tests.conftest import HTTP_PORT, METRICS_PORT
from tests.support.sim_llm import SimLLM

APP, PREFIX = "qos-component", "/qos"
KEY = {"authorization": "Bearer sk-team-a-0001"}
INGRESS = {
    "flow_control": {"enabled": True, "max_inflight": 1, "stats_period_s": 0.1, "stats_max_age_s": 1.0,
                     "retry_after_s": 3},
    "auth": {"api_keys": [
        {"name": "team-a", "key": "sk-team-a-0001"},
        {"name": "slow", "key": "sk-slow-00001", "rate_limit_rps": 0.2, "burst": 1},
        {"name": "batchy", "key": "sk-batchy-001", "qos_class": "batch"},
    ]},
}
QOS = {"classes": {
    "interactive": {"priority": 2, "ttft_objective_s": 5.0, "max_queue_wait_s": 20},
    "standard": {"priority": 1, "max_queue_wait_s": 1.0},
    "batch": {"priority": 0, "sheddable": True, "max_queue_wait_s": 20},
}}


@pytest.fixture(scope="module")
def url(serve_instance):
    llm = SimLLM.options(name="SimLLM").bind(chunk_delay_s=0.02, tokens=3)
    engine = {"model": "tiny-llama", "max_model_len": 4096}
    serve.run(OpenAIIngress.bind(llm, engine, INGRESS, QOS), name=APP, route_prefix=PREFIX)
    yield f"http://127.0.0.1:{HTTP_PORT}{PREFIX}"
    serve.delete(APP)


@pytest.fixture
async def client(url):
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        yield c


def body(marker: int = 1, **kw) -> dict:
    return {"model": "tiny-llama", "prompt": [marker], "max_tokens": 3, **kw}


async def wait_for(pred, what: str, timeout: float = 20.0) -> dict:
    ingress = serve.get_app_handle(APP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = await ingress.flow_status.remote()
        if pred(status):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}: {status}")


async def set_load(num_waiting: int, kv: float):
    await serve.get_deployment_handle("SimLLM", app_name=APP).set_load.remote(num_waiting, kv)
    await wait_for(lambda s: s["saturated"] == (num_waiting > 0 or kv > 0.5), "saturation to change")


async def test_missing_or_wrong_key_gets_401_and_the_right_key_passes(client):
    for headers, code in [({}, "missing_api_key"), ({"authorization": "Bearer sk-wrong-0001"}, "invalid_api_key"),
                          ({"authorization": "sk-team-a-0001"}, "missing_api_key")]:
        r = await client.post("/v1/completions", json=body(), headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["type"] == "authentication_error" and r.json()["error"]["code"] == code
        assert r.headers["www-authenticate"] == "Bearer"
    assert (await client.get("/v1/models")).status_code == 401
    r = await client.post("/v1/completions", json=body(), headers=KEY)
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == " x x x"
    assert (await client.get("/v1/models", headers=KEY)).status_code == 200
    assert (await client.get("/health")).status_code == 200  # probes need no key


async def test_rate_limit_gets_429_with_retry_after(client):
    slow = {"authorization": "Bearer sk-slow-00001"}
    assert (await client.post("/v1/completions", json=body(), headers=slow)).status_code == 200
    r = await client.post("/v1/completions", json=body(), headers=slow)
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(r.headers["retry-after"]) >= 1
    assert (await client.post("/v1/completions", json=body(), headers=KEY)).status_code == 200  # other keys unaffected


async def test_class_selection_and_key_ceiling(client):
    r = await client.post("/v1/chat/completions", headers={**KEY, "x-llmd-qos": "batch"}, json={
        "model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "stream": True})
    assert r.status_code == 200 and r.headers["x-llmd-qos"] == "batch" and r.text.endswith("data: [DONE]\n\n")
    batchy = {"authorization": "Bearer sk-batchy-001"}
    r = await client.post("/v1/completions", json=body(model="tiny-llama:interactive"), headers=batchy)
    assert r.status_code == 403 and r.json()["error"]["param"] == "model"
    r = await client.post("/v1/completions", json=body(), headers={**KEY, "x-llmd-qos": "gold"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "x-llmd-qos"


async def test_priority_order_is_observable(client):
    sim = serve.get_deployment_handle("SimLLM", app_name=APP)
    # A long request holds the only slot (max_inflight 1) while others queue behind it.
    blocker = asyncio.create_task(client.post("/v1/completions", headers=KEY,
                                              json=body(100, max_tokens=150, min_tokens=150)))
    await wait_for(lambda s: s["inflight"] == 1, "the blocker to be admitted")
    tasks, queued = [], {}
    for i, qos in enumerate(["batch"] * 3 + ["standard"] * 2 + ["interactive"] * 3):
        if qos == "standard":
            continue  # standard's 1 s queue wait is shorter than the blocker; its 503 is tested below
        tasks.append(asyncio.create_task(client.post("/v1/completions", json=body(110 + i),
                                                     headers={**KEY, "x-llmd-qos": qos})))
        queued[qos] = queued.get(qos, 0) + 1  # arrival order: each request queued before the next is sent
        await wait_for(lambda s, want=dict(queued): s["queued"] == want, f"{queued} queued")
    assert all(r.status_code == 200 for r in await asyncio.gather(blocker, *tasks))
    arrivals = await sim.arrivals.remote()
    assert arrivals[-7:] == [100, 115, 116, 117, 110, 111, 112]  # interactive first, each class in arrival order


async def test_saturated_sheddable_gets_429_and_non_sheddable_waits_then_503(client):
    await set_load(50, 0.5)
    try:
        r = await client.post("/v1/completions", json=body(model="tiny-llama:batch"), headers=KEY)
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "request_shed" and r.headers["retry-after"] == "3"
        t0 = time.monotonic()
        r = await client.post("/v1/completions", json=body(), headers=KEY)
        assert r.status_code == 503 and time.monotonic() - t0 >= 0.9, r.text
        err = r.json()["error"]
        assert err["code"] == "queue_timeout" and "max queue wait" in err["message"] and r.headers["retry-after"] == "3"
        # The Python API answers with the typed errors.
        from llmd_ray.errors import RequestShedError

        with pytest.raises(RequestShedError):
            await serve.get_app_handle(APP).completions.remote(body(), qos="batch")
    finally:
        await set_load(0, 0.0)


async def test_a_waiting_request_is_admitted_when_saturation_clears(client):
    await set_load(0, 0.99)
    try:
        pending = asyncio.create_task(client.post("/v1/completions", json=body(), headers=KEY))
        await wait_for(lambda s: s["queued"].get("standard") == 1, "the request to queue")
    finally:
        await set_load(0, 0.0)
    assert (await pending).status_code == 200


async def test_per_class_metrics_are_exported(client):
    names = ["ray_llmd_qos_requests_admitted_total", "ray_llmd_qos_requests_rejected_total",
             "ray_llmd_qos_objective_total", "ray_llmd_qos_queue_wait_seconds_bucket"]
    r = await client.post("/v1/completions", json=body(stream=True), headers={**KEY, "x-llmd-qos": "interactive"})
    assert r.status_code == 200  # streamed: TTFT and ITL are measured against the class's objective
    deadline, text = time.monotonic() + 30, ""
    async with httpx.AsyncClient(timeout=10) as c:
        while time.monotonic() < deadline:
            text = (await c.get(f"http://127.0.0.1:{METRICS_PORT}/metrics")).text
            if all(n in text for n in names) and 'reason="queue_timeout"' in text:
                break
            await asyncio.sleep(0.5)
    for n in names:
        assert n in text, n
    assert 'objective="ttft"' in text and 'qos_class="interactive"' in text
    assert 'reason="saturated"' in text and 'reason="rate_limited"' in text
