"""``python -m llmd_ray.autoscaling.profile``: measure a real engine, write its profile JSON.

Decode: ``b`` concurrent requests of a ``ctx``-token prompt generate
``--decode-tokens`` each (ignore_eos); the ITL is the mean gap between a
request's streamed tokens once every request of the batch is decoding.
Prefill: single requests of distinct random prompts with max_tokens=1; the
time to the first token is one prefill. The fits (``perf.fit_decode``,
``perf.fit_prefill``) and the raw points go into the JSON.

    python -m llmd_ray.autoscaling.profile --name cpu-1core-tiny-llama --accelerator cpu-1core \
        --cpu-bind 0 --out llmd_ray/autoscaling/profiles/cpu-1core-tiny-llama.json
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import time
from datetime import datetime, timezone

from llmd_ray.autoscaling.perf import ProfileModel, fit_decode, fit_prefill, save_profile


async def _stream_times(engine, request) -> list[float]:
    times = []
    async for chunk in engine.generate(request):
        if chunk.token_ids:
            times.extend([time.perf_counter()] * len(chunk.token_ids))
    return times


def _prompt(rng: random.Random, n: int, vocab: int) -> list[int]:
    return [rng.randrange(10, vocab) for _ in range(n)]


async def measure(args) -> ProfileModel:
    from llmd_ray.engine.config import EngineConfig
    from llmd_ray.engine.engine import Engine
    from llmd_ray.engine.types import GenerateRequest, SamplingOptions

    cfg = EngineConfig(model=args.model, max_num_seqs=args.max_num_seqs, cpu_bind=args.cpu_bind,
                       max_num_batched_tokens=args.max_num_batched_tokens, enable_prefix_caching=False)
    t0 = time.perf_counter()
    engine = await Engine.start(cfg)
    startup = time.perf_counter() - t0
    rng = random.Random(0)
    vocab = args.vocab
    decode, prefill = [], []
    try:
        for ctx in args.contexts:
            for b in args.batches:
                reqs = [GenerateRequest(f"d{ctx}-{b}-{i}", _prompt(rng, ctx, vocab),
                                        SamplingOptions(max_tokens=args.decode_tokens, ignore_eos=True, temperature=0.0))
                        for i in range(b)]
                streams = await asyncio.gather(*(_stream_times(engine, r) for r in reqs))
                start = max(s[0] for s in streams)  # every request has its first token: pure decode from here
                gaps = [(s[-1] - max(s[0], start)) / max(1, sum(1 for x in s if x > start)) for s in streams]
                itl_ms = 1000 * sum(gaps) / len(gaps)
                decode.append((b, ctx + args.decode_tokens / 2, round(itl_ms, 3)))
                print(f"decode batch {b:3d} ctx {ctx:5d}: ITL {itl_ms:7.2f} ms", flush=True)
        for n in args.prefill_lengths:
            samples = []
            for rep in range(args.repeats):
                req = GenerateRequest(f"p{n}-{rep}", _prompt(rng, n, vocab), SamplingOptions(max_tokens=1, ignore_eos=True))
                t = time.perf_counter()
                async for _ in engine.generate(req):
                    pass
                samples.append(1000 * (time.perf_counter() - t))
            ms = sorted(samples)[len(samples) // 2]
            prefill.append((n, round(ms, 3)))
            print(f"prefill {n:5d} tokens: {ms:8.1f} ms ({n / ms * 1000:.0f} tok/s)", flush=True)
        kv_tokens = engine.num_blocks * engine.block_size
        block = engine.block_size
        max_batched = args.max_num_batched_tokens or engine._llm.vllm_config.scheduler_config.max_num_batched_tokens
    finally:
        engine.shutdown()
    a, b_, g = fit_decode(decode)
    d, e = fit_prefill(prefill)
    return ProfileModel(
        name=args.name, model=args.model, accelerator=args.accelerator, source="measured",
        citation=f"python -m llmd_ray.autoscaling.profile on {platform.node()} ({platform.processor() or platform.machine()}), cpu_bind={args.cpu_bind}",
        itl_alpha_ms=a, itl_beta_ms=b_, itl_gamma_ms=g, prefill_delta_ms=d, prefill_epsilon_ms=e,
        max_num_seqs=args.max_num_seqs, max_num_batched_tokens=int(max_batched), kv_cache_tokens=int(kv_tokens),
        block_size=int(block), startup_s=round(startup, 2),
        points={"decode": decode, "prefill": prefill}, measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="Profile name.")
    p.add_argument("--accelerator", required=True, help="Accelerator label, e.g. cpu-1core, H100.")
    p.add_argument("--model", default="tiny-llama", help="Model (EngineConfig.model).")
    p.add_argument("--out", required=True, help="Output JSON path.")
    p.add_argument("--cpu-bind", default="auto", help="CPU: vLLM core list for the engine, e.g. 0.")
    p.add_argument("--max-num-seqs", type=int, default=64)
    p.add_argument("--max-num-batched-tokens", type=int, default=None)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 32])
    p.add_argument("--contexts", type=int, nargs="+", default=[128, 1024])
    p.add_argument("--decode-tokens", type=int, default=24)
    p.add_argument("--prefill-lengths", type=int, nargs="+", default=[128, 512, 1024, 2048])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--vocab", type=int, default=4096, help="Sample prompt ids below this.")
    args = p.parse_args(argv)
    model = asyncio.run(measure(args))
    save_profile(model, args.out)
    print(f"alpha {model.itl_alpha_ms:.2f} ms, beta {model.itl_beta_ms:.3f} ms/seq, gamma {model.itl_gamma_ms:.4f} "
          f"ms/seq/1k ctx; prefill delta {model.prefill_delta_ms:.1f} ms, epsilon {model.prefill_epsilon_ms:.1f} ms/1k tok")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
