"""Where does vllm-router's cache_aware policy put new prefixes? (bench/results/routing/README.md, vllm-router)

Starts bench/routing/peers/vllm_router.sh (2 vLLM servers of the tiny model + vllm-router, cache_aware), sends
4 groups x 4 prompts (1,500-token shared prefix + 200 tokens) one at a time, and records which server ran each
(from the servers' vllm:request_success_total) and its cached tokens. Writes
bench/results/routing/vllm_router_diag/placements.json.

    .venv/bin/python bench/routing/vllm_router_diag.py
"""
import re, subprocess, sys, time, json, os, signal
import httpx, numpy as np
ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from llmd_ray.bench.prompts import PromptBuilder
from llmd_ray.engine.models import resolve_model
env = {**os.environ, "LOG_DIR": "/tmp/vr_logs"}
os.makedirs("/tmp/vr_logs", exist_ok=True)
p = subprocess.Popen(["bash", "bench/routing/peers/vllm_router.sh"], cwd=str(ROOT), env=env,
                     stdout=open("/tmp/vr_diag.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
t0 = time.time()
while True:
    try:
        if httpx.get("http://127.0.0.1:8000/v1/models", timeout=2).status_code == 200: break
    except Exception: pass
    if time.time() - t0 > 900: sys.exit("no start")
    time.sleep(2)
print("ready after", round(time.time() - t0), "s", flush=True)
def served():
    out = {}
    for port in (8101, 8102):
        m = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        def val(name):
            return sum(float(x) for x in re.findall(rf"^{name}\{{[^}}]*\}} ([0-9.e+]+)", m, re.M))
        out[port] = {"requests": val("vllm:request_success_total"), "hit_tokens": val("vllm:prefix_cache_hits_total"),
                     "query_tokens": val("vllm:prefix_cache_queries_total")}
    return out
from transformers import AutoTokenizer
b = PromptBuilder(AutoTokenizer.from_pretrained(str(resolve_model("tiny-llama"))))
rng = np.random.default_rng(1)
rows = []
groups = [b.text(1500, rng) for _ in range(4)]
for q in range(4):
    for g in range(4):
        prompt = b.text(1700, rng, prefix=groups[g])
        before = served()
        r = httpx.post("http://127.0.0.1:8000/v1/completions", json={"model": "tiny-llama", "prompt": prompt, "max_tokens": 2}, timeout=120)
        after = served()
        port = [k for k in after if after[k]["requests"] > before[k]["requests"]]
        cached = r.json().get("usage", {}).get("prompt_tokens_details", {}) or {}
        rows.append({"group": g, "q": q, "server": port, "cached": cached.get("cached_tokens")})
        print(rows[-1], flush=True)
try:
    print(httpx.get("http://127.0.0.1:29000/metrics", timeout=5).text[:200])
except Exception as e:
    print("no router metrics on 29000:", e)
os.killpg(p.pid, signal.SIGTERM); p.wait(60)
out = ROOT / "bench/results/routing/vllm_router_diag"
out.mkdir(parents=True, exist_ok=True)
json.dump(rows, open(out / "placements.json", "w"), indent=1)
