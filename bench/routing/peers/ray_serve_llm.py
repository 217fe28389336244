"""Peer system for the routing benchmark: Ray Serve LLM with PrefixCacheAffinityRouter.

Ray Serve LLM's own OpenAI app (the LLMServer deployment and OpenAiIngress that
`ray.serve.llm.build_openai_app` builds; see `deploy` for why in two steps) over
2 replicas of the tiny model, routed by `ray.serve.llm.request_router:
PrefixCacheAffinityRouter` (its prefix-tree router; `--router pow2` gives
Serve's default router instead). Engines as in bench/routing/serve_*_pressure.yaml:
float32, eager, max_model_len 4096, 128 KV blocks of 128 tokens
(num_gpu_blocks_override), prefix caching on, max_num_seqs 64, seed 0,
PYTHONHASHSEED=0, each engine pinned to its own core (replica rank r ->
VLLM_CPU_OMP_THREADS_BIND=r, set by a Ray Serve LLM start-up callback).
vLLM's process layout otherwise: replica -> EngineCore -> Worker (vLLM-CPU
forces the mp executor when engine multiprocessing is on); ours run the
engine inside the replica process.

It starts a private local Ray cluster (`ray.init(address="local")`: random
ports, never an existing cluster), 8 logical CPUs (each LLM replica reserves
2: the replica actor plus its placement-group bundle), serves on
http://HOST:PORT until SIGINT/SIGTERM, then shuts Serve and that cluster down.

    .venv/bin/python bench/routing/peers/ray_serve_llm.py [--port 8000]
    python -m llmd_ray.bench run W.yaml --system 'ray-serve-llm=cmd:.venv/bin/python bench/routing/peers/ray_serve_llm.py' ...

Needs the `peers` extra (pyarrow, pandas, jsonref, hf_transfer, pybind11,
meson: what ray.llm imports), installed by hand; `ray[llm]` would pull CUDA vLLM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import httpx

MODEL_DIR = Path(os.environ.get("LLMD_RAY_MODEL_DIR", "~/.cache/llmd_ray/models/tiny-llama")).expanduser()
ROUTERS = {"prefix": "ray.serve.llm.request_router:PrefixCacheAffinityRouter", "pow2": None}


def engine_kwargs() -> dict:
    """The same vLLM engine settings as the project's pressure configs (EngineConfig.engine_args)."""
    return {"dtype": "float32", "enforce_eager": True, "max_model_len": 4096, "block_size": 128,
            "num_gpu_blocks_override": 128, "enable_prefix_caching": True, "max_num_seqs": 64, "seed": 0,
            "enable_prompt_tokens_details": True}


def engine_env() -> dict[str, str]:
    return {"PYTHONHASHSEED": "0", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _pin_callback():
    """A Ray Serve LLM callback that pins the replica's engine to core `rank mod cores` before it starts."""
    from ray.llm._internal.common.callbacks.base import CallbackBase  # noqa: PLC0415

    class PinEngineToCore(CallbackBase):
        async def on_before_node_init(self) -> None:
            from ray import serve  # noqa: PLC0415

            rank = serve.get_replica_context().rank
            rank = getattr(rank, "rank", rank)
            cpus = sorted(os.sched_getaffinity(0))
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = str(cpus[int(rank) % len(cpus)])
            print(f"[peer] replica rank {rank}: VLLM_CPU_OMP_THREADS_BIND={os.environ['VLLM_CPU_OMP_THREADS_BIND']}",
                  flush=True)

    return PinEngineToCore


def llm_config(args: argparse.Namespace):
    from ray.serve.llm import LLMConfig  # noqa: PLC0415

    deployment = {"num_replicas": args.replicas}
    router = ROUTERS[args.router]
    if router:
        deployment["request_router_config"] = {"request_router_class": router,
                                               "request_router_kwargs": json.loads(args.router_kwargs)}
    return LLMConfig(
        model_loading_config={"model_id": args.model_name, "model_source": str(MODEL_DIR)},
        engine_kwargs=engine_kwargs(),
        deployment_config=deployment,
        placement_group_config={"bundles": [{"CPU": 1}]},
        runtime_env={"env_vars": engine_env()},
        callback_config={"callback_class": _pin_callback()},
        log_engine_metrics=True,
    )


def deploy(args: argparse.Namespace) -> None:
    """What `build_openai_app` builds (LLMServer deployment + OpenAiIngress), in two steps.

    Ray Serve LLM's ingress answers GET /v1/models as soon as it is up, while the engines may still be
    loading for minutes; a benchmark that waits for /v1/models would then measure a half-started system.
    So the engines are deployed first (app `engines`, no HTTP route) and the ingress only once every
    engine replica is running, with a handle to them; routing is the same (the handle's request router).
    """
    from ray import serve  # noqa: PLC0415
    from ray.llm._internal.serve.core.configs.openai_api_models import to_model_metadata  # noqa: PLC0415
    from ray.serve.llm import build_llm_deployment  # noqa: PLC0415
    from ray.serve.llm.ingress import OpenAiIngress, make_fastapi_ingress  # noqa: PLC0415

    llm = llm_config(args)
    engines = build_llm_deployment(llm)
    serve.run(engines, name="engines", route_prefix=None)  # returns when every replica is running
    (name,) = serve.status().applications["engines"].deployments  # LLMServer:<model id>
    handle = serve.get_deployment_handle(name, app_name="engines")
    options = {**OpenAiIngress.get_deployment_options([llm]), "num_replicas": 1}
    options.pop("autoscaling_config", None)
    ingress = serve.deployment(make_fastapi_ingress(OpenAiIngress), **options).bind(
        llm_deployments={llm.model_id: handle}, model_cards={llm.model_id: to_model_metadata(llm.model_id, llm)})
    serve.run(ingress, name="default", route_prefix="/")


WARMUP_PROMPTS = ("alpha bravo charlie", "zulu yankee xray", "mike november oscar", "golf hotel india")


def warm_up(base_url: str, model: str, n: int) -> None:
    """Sequential 1-token prompts that share no prefix (match rate 0 < 10%), which the router is documented to
    send to the replica holding the least text: so both replicas (and the ingress, ~5 s on its first call
    here) pay their first-request costs before the harness measures, as ours do at start-up. Not verified
    per replica (Ray deduplicates the replicas' access logs)."""
    with httpx.Client(timeout=300, trust_env=False) as c:
        for i in range(n):
            prompt = WARMUP_PROMPTS[i % len(WARMUP_PROMPTS)] + f" {i}"
            r = c.post(f"{base_url}/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": 1})
            r.raise_for_status()


def reap(procs: list) -> None:
    """Ray workers outlive ray.shutdown() by up to a minute: end what this script started, by pid."""
    import psutil  # noqa: PLC0415

    alive = [p for p in procs if p.is_running()]
    _, still = psutil.wait_procs(alive, timeout=5)
    for p in still:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, still = psutil.wait_procs(still, timeout=10)
    for p in still:
        try:
            p.kill()
        except psutil.Error:
            pass


def start_ray(num_cpus: int, attempts: int = 3) -> None:
    """A private local cluster. Ray gives its raylet a fixed 30 s to register, which a busy machine can miss:
    then clean up and try again."""
    import psutil  # noqa: PLC0415
    import ray  # noqa: PLC0415

    for attempt in range(1, attempts + 1):
        procs = psutil.Process().children(recursive=True)
        try:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True,
                     runtime_env={"env_vars": {"PYTHONHASHSEED": "0"}})
            return
        except Exception as exc:  # noqa: BLE001 - ray raises a bare Exception here
            if "timed out during startup" not in str(exc) or attempt == attempts:
                raise
            print(f"[peer] ray.init attempt {attempt} failed ({exc}); retrying", flush=True)
            ray.shutdown()
            reap(procs + psutil.Process().children(recursive=True))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--model-name", default="tiny-llama", help="name clients pass as `model`")
    p.add_argument("--router", choices=sorted(ROUTERS), default="prefix")
    p.add_argument("--router-kwargs", default="{}", help="JSON for PrefixCacheAffinityRouter (default: its own)")
    p.add_argument("--num-cpus", type=int, default=8, help="logical CPUs of the private Ray cluster")
    p.add_argument("--warmup", type=int, default=4, help="warm-up requests after start (0: none)")
    args = p.parse_args(argv)
    if not (MODEL_DIR / "config.json").exists():
        print(f"error: no model at {MODEL_DIR} (build it: python -m llmd_ray.engine.tiny)", file=sys.stderr)
        return 2

    return serve_until_signal(args, deploy, f"ray-serve-llm ({args.router})")


def serve_until_signal(args: argparse.Namespace, deploy, label: str) -> int:
    """Start a private Ray cluster and Serve on args.host:args.port, ``deploy(args)``, warm up, serve until
    SIGINT/SIGTERM, then shut Serve and the cluster down (also when interrupted during start-up)."""
    stop, ready = threading.Event(), threading.Event()

    def on_signal(*_):  # during start-up: unwind through `finally` (shutdown); once serving: leave the wait loop
        if not ready.is_set():
            raise KeyboardInterrupt
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)

    import ray  # noqa: PLC0415
    from ray import serve  # noqa: PLC0415

    t0 = time.monotonic()
    try:
        start_ray(args.num_cpus)
        serve.start(http_options={"host": args.host, "port": args.port}, proxy_location="EveryNode")
        deploy(args)
        base = f"http://{args.host}:{args.port}"
        if args.warmup:
            warm_up(base, args.model_name, args.warmup)
        ready.set()
        print(f"[peer] {label} ready on {base} after {time.monotonic() - t0:.1f} s", flush=True)
        while not stop.wait(0.5):
            pass
        print("[peer] stopping", flush=True)
        return 0
    except KeyboardInterrupt:
        print("[peer] interrupted during start-up", flush=True)
        return 130
    finally:
        import psutil  # noqa: PLC0415

        procs = psutil.Process().children(recursive=True)
        try:
            if ray.is_initialized():  # else serve.shutdown() would ray.init() into whatever cluster it finds
                serve.shutdown()
        finally:
            ray.shutdown()
            reap(procs)

if __name__ == "__main__":
    sys.exit(main())
