"""A real Prometheus scrapes the running apps through Ray's metrics export; every metric of the
catalog (llmd_ray/observability/catalog.py, the README's table) is there under its name and labels,
and every dashboard panel's query answers data.

One Ray cluster of its own, one Serve config deployed through the config path (an app-level
autoscaling policy is taken only from a config) with two apps served at once (KV tiers run on
aggregated variants only, so P/D and tiers need two):
* ``pd``: a prefill and a decode variant (each 1..1 replicas, sized by the VariantAutoscalingPolicy:
  wva_*), QoS classes with objectives and flow control, the default router (approximate index);
* ``tiers``: one aggregated replica with KV tiers (memory, disk, shared) and the precise prefix index.
A short load: chat and completions, streamed and not, two QoS classes, prompts long enough to split
(P/D) and to come back from a tier after the engine evicted them, and one refused request (400).
"""

from __future__ import annotations

import os
import random
import time

import httpx
import pytest

from llmd_ray.observability.catalog import CATALOG as ALL
from llmd_ray.observability.dashboards import metrics_in
from llmd_ray.observability.dashboards import all_queries, substitute
from tests.support.prometheus import Prometheus, prometheus_binary, ray_targets

pytestmark = [pytest.mark.own_cluster, pytest.mark.timeout(1500),
              pytest.mark.skipif(prometheus_binary() is None,
                                 reason="Debian's `prometheus` binary is not installed (apt-get install -y prometheus; .ci/run does)")]

# Families these apps cannot produce, each with where it is exercised; nothing else may be left out.
NOT_HERE = {"migration": "an engine replica must die mid-stream (tests/integration/test_stream_migration.py)"}
CATALOG = [m for m in ALL if m.app not in NOT_HERE]
LEFT_OUT = {m.name for m in ALL if m.app in NOT_HERE}
PORT = int(os.environ.get("LLMD_RAY_TEST_PROM_SERVE_PORT", "18740"))
METRICS_PORT = int(os.environ.get("LLMD_RAY_TEST_PROM_METRICS_PORT", "18741"))
BLOCK_RECORD = 393_216 + 2048
QOS = {"default_class": "interactive", "header": "x-llmd-qos",
       "classes": {"interactive": {"priority": 2, "ttft_objective_s": 5.0, "itl_objective_s": 0.5, "max_queue_wait_s": 60},
                   "batch": {"priority": 0, "sheddable": True, "max_queue_wait_s": 120}}}
ENGINE = {"model": "tiny-llama", "max_model_len": 2048, "kv_cache_space_gib": 1}


def _variant(name: str, role: str, core: str) -> dict:
    return {"name": name, "role": role, "accelerator": "cpu-1core", "engine": {"cpu_bind": core}, "replica_num_cpus": 0.5,
            "min_replicas": 1, "max_replicas": 1, "serve_autoscaling": {"metrics_interval_s": 1.0},
            "cost_per_hour": 0.05 if role == "prefill" else 0.06, "profile": "cpu-1core-tiny-llama"}


def serve_config(tmp) -> dict:
    env = {"env_vars": {"PYTHONHASHSEED": "0"}}
    pd = {"engine": ENGINE, "variants": [_variant("prefill", "prefill", "0"), _variant("decode", "decode", "1")],
          "pd": {"transport": "object_store", "prefill_timeout_s": 120, "decider": {"policy": "prefix", "min_uncached_tokens": 256}},
          "qos": QOS, "ingress": {"flow_control": {"enabled": True, "stats_period_s": 0.25}}}
    tiers = {"num_replicas": 1, "engine": {**ENGINE, "num_kv_blocks": 17},
             "kv_tiers": {"memory_bytes": 6 * BLOCK_RECORD, "disk_dir": str(tmp / "disk"), "disk_bytes": 20 * BLOCK_RECORD,
                          "shared": True, "shared_bytes": 100 * BLOCK_RECORD, "shm_root": f"/dev/shm/llmd-prom-test-{os.getpid()}",
                          "min_load_blocks": 1},
             "qos": QOS, "router": {"policy": "llmd", "precise_index": True,
                                     # on with one ingress too, so the shared-decision families are scraped
                                     "share_decisions": True, "share_decisions_sync_s": 0.5, "config": {
                 "plugins": [{"type": "precise-prefix-cache"}, {"type": "prefix-cache"}, {"type": "queue"}, {"type": "max-score"}],
                 "schedulingProfiles": [{"name": "default", "plugins": [
                     {"pluginRef": "precise-prefix-cache", "weight": 3}, {"pluginRef": "prefix-cache", "weight": 1},
                     {"pluginRef": "queue", "weight": 2}, {"pluginRef": "max-score"}]}]}}}
    policy = {"policy_function": "llmd_ray.autoscaling.policy:VariantAutoscalingPolicy",
              "policy_kwargs": {"interval_s": 2, "cold_start_s": 5, "downscale_stable_s": 20}}
    return {"http_options": {"host": "127.0.0.1", "port": PORT}, "applications": [
        {"name": "pd", "route_prefix": "/pd", "import_path": "llmd_ray:build_app", "runtime_env": env, "args": pd,
         "autoscaling_policy": policy},
        {"name": "tiers", "route_prefix": "/tiers", "import_path": "llmd_ray:build_app", "runtime_env": env, "args": tiers}]}


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    import ray
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    tmp = tmp_path_factory.mktemp("prom")
    schema = ServeDeploySchema.model_validate(serve_config(tmp))
    os.environ.setdefault("PYTHONHASHSEED", "0")
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             _metrics_export_port=METRICS_PORT, _system_config={"metrics_report_interval_ms": 1000},
             runtime_env={"env_vars": {"PYTHONHASHSEED": "0"}})
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": PORT})
        _get_global_client().deploy_apps(schema)

        def running():
            st = serve.status().applications
            failed = [f"{n}: {a.message}" for n, a in st.items() if a.status == "DEPLOY_FAILED"]
            assert not failed, failed
            return len(st) == 2 and all(a.status == "RUNNING" for a in st.values())

        Prometheus.wait(running, 600, "apps RUNNING", poll_s=1)
        yield {"base": f"http://127.0.0.1:{PORT}", "tmp": tmp}
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def prom(apps):
    p = Prometheus(apps["tmp"] / "prometheus", ray_targets())
    yield p
    p.stop()


def _tokens(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(10, 4000) for _ in range(n)]


def _stream(c: httpx.Client, path: str, body: dict, headers: dict | None = None) -> None:
    with c.stream("POST", path, json={**body, "stream": True}, headers=headers or {}) as r:
        assert r.status_code == 200, r.read()
        events = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and not any('"error"' in e for e in events[:-1]), events[-3:]


def load(base: str, prom: Prometheus) -> None:
    rng = random.Random(17)
    chat = {"model": "tiny-llama", "messages": [{"role": "user", "content": "Say something about metrics."}],
            "max_tokens": 8, "ignore_eos": True}
    with httpx.Client(base_url=base, timeout=300) as c:
        for app in ("/pd", "/tiers"):
            for qos in ("interactive", "batch"):
                h = {"x-llmd-qos": qos}
                r = c.post(f"{app}/v1/chat/completions", json=chat, headers=h)
                assert r.status_code == 200, r.text
                _stream(c, f"{app}/v1/chat/completions", chat, h)
                _stream(c, f"{app}/v1/completions", {"model": "tiny-llama", "prompt": "Metrics are", "max_tokens": 8,
                                                      "ignore_eos": True}, h)
            r = c.post(f"{app}/v1/completions", json={"model": "tiny-llama", "prompt": "x", "n": 0})
            assert 400 <= r.status_code < 500, r.text  # refused: an error code for the status-code panel
        # Over min_uncached_tokens: split, the KV handed from prefill to decode. Two distinct prompts, the second
        # once Prometheus has the first, so the handoff histograms increase within the panels' window.
        for i, stream in enumerate((True, False)):
            body = {"model": "tiny-llama", "prompt": _tokens(rng, 700), "max_tokens": 6, "ignore_eos": True}
            if stream:
                _stream(c, "/pd/v1/completions", body)
            else:
                assert c.post("/pd/v1/completions", json=body).status_code == 200
            Prometheus.wait(lambda: prom.has_value(f"sum(ray_llmd_pd_handoff_seconds_count) >= {i + 1}"), 60,
                            f"handoff {i + 1} scraped")
        # Tiers: A, then enough other prompts to evict A from the engine's 17 blocks, then A from a tier.
        prompts = [_tokens(rng, 4 * 128 + 5) for _ in range(5)]
        for p in prompts + prompts[:1]:
            r = c.post("/tiers/v1/completions", json={"model": "tiny-llama", "prompt": p, "max_tokens": 4, "ignore_eos": True})
            assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def loaded(apps, prom):
    Prometheus.wait(prom.targets_up, 60, "Ray's metrics targets up")
    load(apps["base"], prom)
    return prom


def _missing(prom: Prometheus) -> list[str]:
    names = "|".join(m.series for m in CATALOG)
    present = {s["metric"]["__name__"] for s in prom.query(f'group by (__name__) ({{__name__=~"{names}"}})')}
    return [m.name for m in CATALOG if m.series not in present]


def test_every_catalog_metric_is_scraped_with_its_labels(loaded):
    assert {m.app for m in ALL} - {"pd", "tiers", "any"} == set(NOT_HERE)  # a new family names where it is tested
    try:
        Prometheus.wait(lambda: not _missing(loaded), 120, "every catalog metric scraped", poll_s=1)
    except TimeoutError:
        pytest.fail(f"not scraped: {_missing(loaded)}")
    wrong = {}
    for m in CATALOG:
        got = loaded.label_names(m.series)
        if not set(m.all_labels) <= got:
            wrong[m.name] = sorted(set(m.all_labels) - got)
    assert not wrong, f"labels missing: {wrong}"
    assert "SessionName" in loaded.label_names("ray_vllm_num_requests_running")  # what the dashboards filter on


def test_every_dashboard_panel_has_data(loaded):
    queries = [(k, t, substitute(e)) for k, t, e in all_queries() if not metrics_in(e) & LEFT_OUT]
    for k, t, q in queries:  # an invalid query fails at once, naming its panel
        try:
            loaded.query(q)
        except ValueError as e:
            pytest.fail(f"{k} / {t}: invalid PromQL {q!r}: {e}")

    def empty():
        return [f"{k} / {t}: {q}" for k, t, q in queries if not loaded.has_value(q)]

    try:
        Prometheus.wait(lambda: not empty(), 90, "every panel has data", poll_s=2)
    except TimeoutError:
        pytest.fail("panels without data:\n" + "\n".join(empty()))


def test_autoscaler_exports_desired_running_and_cost_per_variant(loaded):
    def values():
        out = {}
        for name in ("ray_wva_desired_replicas", "ray_wva_current_replicas", "ray_wva_cost_per_hour"):
            for s in loaded.query(name):
                out[(name, s["metric"]["variant_name"])] = float(s["value"][1])
        return out if len(out) == 6 and out[("ray_wva_current_replicas", "decode")] == 1 else None

    v = Prometheus.wait(values, 60, "wva gauges for both variants")
    assert v[("ray_wva_desired_replicas", "prefill")] == 1 and v[("ray_wva_desired_replicas", "decode")] == 1, v
    assert v[("ray_wva_cost_per_hour", "prefill")] == pytest.approx(0.05) and v[("ray_wva_cost_per_hour", "decode")] == pytest.approx(0.06)
