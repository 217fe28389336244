#!/bin/sh
# The image's default command: `serve run` a serve config (default: serve_configs/default.yaml, offline, on the
# baked tiny model) with its HTTP proxy on all interfaces, so `podman run -p 8000:8000 IMAGE` is reachable from
# outside the container. That is the one change, the same one the RayService manifests make to serveConfigV2.
#   podman run --rm -p 127.0.0.1:8000:8000 --shm-size 2g llmd-ray:0.1.0-cpu [serve.sh CONFIG]
set -eu
config=${1:-/opt/llmd-ray/serve_configs/default.yaml}
out=${TMPDIR:-/tmp}/llmd-ray-serve.yaml
python3 - "$config" "$out" <<'PY'
import sys

import yaml

with open(sys.argv[1]) as f:
    cfg = yaml.safe_load(f)
cfg.setdefault("http_options", {})["host"] = "0.0.0.0"
with open(sys.argv[2], "w") as f:
    yaml.safe_dump(cfg, f, sort_keys=False)
PY
exec serve run "$out"
