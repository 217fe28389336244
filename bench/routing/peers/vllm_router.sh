#!/usr/bin/env bash
# Peer system for the routing benchmark: vllm-router (vllm-project/router, PyPI `vllm-router`,
# policy cache_aware) in front of 2 plain vLLM OpenAI servers of the tiny model.
#
# Engines as in bench/routing/serve_*_pressure.yaml: float32, eager, max_model_len 4096, 128 KV
# blocks of 128 tokens (--num-gpu-blocks-override), prefix caching on, max_num_seqs 64, seed 0,
# PYTHONHASHSEED=0, engine i pinned to core i (VLLM_CPU_OMP_THREADS_BIND=i,
# VLLM_CPU_NUM_OF_RESERVED_CPU=0), cached tokens reported (--enable-prompt-tokens-details).
# vLLM's process layout otherwise: API server -> EngineCore -> Worker (vLLM-CPU forces the mp executor
# when engine multiprocessing is on); ours run the engine inside the Serve replica process.
# Each server is warmed with 2 one-token requests before the router starts (our engines warm up
# at start-up too), so no measured request pays vLLM's first-request initialisation.
#
#   bash bench/routing/peers/vllm_router.sh            # router on 127.0.0.1:8000
#   PORT=8000 BACKEND_PORTS="8101 8102" POLICY=cache_aware bash bench/routing/peers/vllm_router.sh
#   python -m llmd_ray.bench run W.yaml --system 'vllm-router=cmd:bash bench/routing/peers/vllm_router.sh' ...
#
# Runs until SIGINT/SIGTERM, then stops the router and both servers (SIGTERM, SIGKILL after 20 s).
# The `vllm` console script is broken on vllm-cpu, hence `python -m vllm.entrypoints.openai.api_server`.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
ROUTER="${VLLM_ROUTER:-$(dirname "$PY")/vllm-router}"
MODEL_DIR="${LLMD_RAY_MODEL_DIR:-$HOME/.cache/llmd_ray/models/tiny-llama}"
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"
read -r -a BACKEND_PORTS <<< "${BACKEND_PORTS:-8101 8102}"
POLICY="${POLICY:-cache_aware}"
STARTUP_TIMEOUT_S="${STARTUP_TIMEOUT_S:-900}"
LOG_DIR="${LOG_DIR:-}"   # per-process logs here (default: all to this script's stdout/stderr)

PIDS=()
log() { echo "[vllm_router.sh] $*" >&2; }

cleanup() {
    trap - INT TERM EXIT
    log "stopping ${PIDS[*]:-nothing}"
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for _ in $(seq 1 40); do
        alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.5
    done
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            log "SIGKILL $pid and its children"
            pkill -KILL -P "$pid" 2>/dev/null
            kill -KILL "$pid" 2>/dev/null
        fi
    done
    wait 2>/dev/null
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap cleanup EXIT

[ -f "$MODEL_DIR/config.json" ] || { log "no model at $MODEL_DIR (python -m llmd_ray.engine.tiny builds it)"; exit 2; }
[ -x "$ROUTER" ] || { log "no vllm-router at $ROUTER (pip install vllm-router: the peers extra)"; exit 2; }

out() { if [ -n "$LOG_DIR" ]; then mkdir -p "$LOG_DIR"; echo "$LOG_DIR/$1.log"; else echo /dev/stderr; fi; }

t0=$(date +%s.%N)
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
WORKERS=()
for i in "${!BACKEND_PORTS[@]}"; do
    p="${BACKEND_PORTS[$i]}"
    PYTHONHASHSEED=0 VLLM_CPU_OMP_THREADS_BIND="$i" VLLM_CPU_NUM_OF_RESERVED_CPU=0 VLLM_CPU_KVCACHE_SPACE=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
        "$PY" -m vllm.entrypoints.openai.api_server --model "$MODEL_DIR" --served-model-name tiny-llama \
        --host 127.0.0.1 --port "$p" --dtype float32 --enforce-eager --max-model-len 4096 --block-size 128 \
        --num-gpu-blocks-override 128 --enable-prefix-caching --max-num-seqs 64 --seed 0 \
        --enable-prompt-tokens-details --disable-uvicorn-access-log >>"$(out "vllm_$p")" 2>&1 &
    PIDS+=($!)
    WORKERS+=("http://127.0.0.1:$p")
    log "vLLM server $i on :$p (core $i), pid $!"
done

# health-wait: every server answers /health, or fail fast when one exits
deadline=$(( $(date +%s) + STARTUP_TIMEOUT_S ))
for i in "${!WORKERS[@]}"; do
    until curl -sf -o /dev/null "${WORKERS[$i]}/health"; do
        kill -0 "${PIDS[$i]}" 2>/dev/null || { log "vLLM server ${WORKERS[$i]} exited during start-up"; exit 1; }
        [ "$(date +%s)" -lt "$deadline" ] || { log "vLLM server ${WORKERS[$i]} not healthy after ${STARTUP_TIMEOUT_S}s"; exit 1; }
        sleep 1
    done
done
for w in "${WORKERS[@]}"; do
    for k in 1 2; do
        curl -sf -o /dev/null -H 'Content-Type: application/json' "$w/v1/completions" \
            -d "{\"model\": \"tiny-llama\", \"prompt\": \"warm up $k\", \"max_tokens\": 1}" \
            || { log "warm-up request to $w failed"; exit 1; }
    done
done
log "vLLM servers healthy and warm after $(elapsed) s; starting vllm-router ($POLICY) on $HOST:$PORT"

"$ROUTER" --host "$HOST" --port "$PORT" --policy "$POLICY" --worker-urls "${WORKERS[@]}" \
    --log-level warning >>"$(out router)" 2>&1 &
PIDS+=($!)
router_pid=$!
until curl -sf -o /dev/null "http://$HOST:$PORT/v1/models"; do
    kill -0 "$router_pid" 2>/dev/null || { log "vllm-router exited during start-up"; exit 1; }
    sleep 0.5
done
log "ready on http://$HOST:$PORT after $(elapsed) s"

# serve until a signal or until any child exits (then stop the rest: a half system is no system)
wait -n "${PIDS[@]}"
log "a child exited (status $?); stopping"
exit 1
