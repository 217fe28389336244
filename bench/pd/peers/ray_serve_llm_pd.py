"""Peer system for the P/D benchmark: Ray Serve LLM's own P/D app, `ray.serve.llm.build_pd_openai_app`.

1 prefill + 1 decode replica of the tiny model, KV moved by vLLM's NixlConnector with CPU buffers
(`kv_buffer_device: cpu`; Ray Serve LLM's NIXL backend gives each engine its side-channel port), decode
as orchestrator (Ray's `PDDecodeServer` calls `PDPrefillServer` with max_tokens=1, then decodes).
Engines as in the routing peer (bench/routing/peers/ray_serve_llm.py: float32, eager, max_model_len
4096, 128 KV blocks of 128 tokens, prefix caching, seed 0), prefill pinned to core 0 and decode to
core 1 (`VLLM_CPU_OMP_THREADS_BIND` in each deployment's runtime env), as llmd-ray's pd.yaml pins them.

It starts a private local Ray cluster, serves on http://HOST:PORT until SIGINT/SIGTERM, then shuts down:

    .venv/bin/python bench/pd/peers/ray_serve_llm_pd.py --port 18741

Needs the `peers` packages that ray.llm imports (see the routing peer), and nixl (`make setup`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "routing" / "peers"))

import ray_serve_llm as peer  # noqa: E402  (engine settings, private cluster, warm-up, reaping)


def llm_config(role: str, core: int, model_name: str):
    from ray.serve.llm import LLMConfig  # noqa: PLC0415

    kv = {"kv_connector": "NixlConnector", "kv_role": "kv_both", "kv_buffer_device": "cpu"}
    return LLMConfig(
        model_loading_config={"model_id": model_name, "model_source": str(peer.MODEL_DIR)},
        engine_kwargs={**peer.engine_kwargs(), "kv_transfer_config": kv},
        deployment_config={"num_replicas": 1},
        placement_group_config={"bundles": [{"CPU": 1}]},
        runtime_env={"env_vars": {**peer.engine_env(), "VLLM_CPU_OMP_THREADS_BIND": str(core)}},
        log_engine_metrics=True,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model-name", default="tiny-llama")
    p.add_argument("--num-cpus", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args(argv)
    if not (peer.MODEL_DIR / "config.json").exists():
        print(f"error: no model at {peer.MODEL_DIR}", file=sys.stderr)
        return 2
    def deploy(a: argparse.Namespace) -> None:
        from ray import serve  # noqa: PLC0415
        from ray.serve.llm import build_pd_openai_app  # noqa: PLC0415

        app = build_pd_openai_app({"prefill_config": llm_config("prefill", 0, a.model_name),
                                   "decode_config": llm_config("decode", 1, a.model_name)})
        serve.run(app, name="default", route_prefix="/")

    return peer.serve_until_signal(args, deploy, "ray-serve-llm P/D (NIXL, CPU buffers)")

if __name__ == "__main__":
    sys.exit(main())
