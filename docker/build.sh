#!/usr/bin/env bash
# Builds llmd-ray's image without pulling a base image (make image / make image-gpu):
#   1. mmdebstrap: a minimal Debian root filesystem (the host's suite) with python3 and the shared libraries Ray and
#      vLLM load at run time;
#   2. buildah: that tree as the image's one layer, the repository copied to /opt/llmd-ray, and docker/install.sh
#      (the script docker/Dockerfile runs too) installing llmd-ray and its pinned dependencies into /opt/venv,
#      with the host's pip settings (find-links, local indexes, CA bundle) mounted read-only for the build only;
#   3. buildah commit into the local containers-storage, where podman finds it (`podman images`).
# Build times and the image size are merged into bench/results/image/build.json ($LLMD_IMAGE_RESULTS).
# Usage: docker/build.sh cpu|gpu TAG      Needs root and: apt-get install -y mmdebstrap buildah podman
set -euo pipefail
variant=${1:?usage: build.sh cpu|gpu TAG}
tag=${2:?usage: build.sh cpu|gpu TAG}
case $variant in cpu|gpu) ;; *) echo "build.sh: the variant is cpu or gpu, not '$variant'" >&2; exit 2 ;; esac
repo=$(cd "$(dirname "$0")/.." && pwd)
results=${LLMD_IMAGE_RESULTS:-$repo/bench/results/image/build.json}
for tool in mmdebstrap buildah podman; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool is missing: apt-get install -y mmdebstrap buildah podman" >&2; exit 2; }
done

# shellcheck disable=SC1091
. /etc/os-release
suite=${LLMD_IMAGE_SUITE:-$VERSION_CODENAME}
mirror=${LLMD_IMAGE_MIRROR:-http://deb.debian.org/debian}
security=${LLMD_IMAGE_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# python3-venv: /opt/venv; libnuma1, libgomp1, libstdc++6: vLLM's CPU kernels; procps: ps for Ray;
# wget: KubeRay's probes; ca-certificates: hub downloads; g++, libc6-dev, python3-dev: a C++ compiler for the
# kernels torch compiles at first use even in eager mode (vLLM's sampler compiles its logprob ranking with
# torch.compile; without a compiler the first request asking for logprobs kills the engine core; on GPU,
# Triton's launcher is compiled with gcc too). vLLM's own CPU image installs gcc/g++ for the same reason.
packages=python3,python3-venv,python3-dev,ca-certificates,libnuma1,libgomp1,libstdc++6,g++,libc6-dev,procps,wget

work=$(mktemp -d /var/tmp/llmd-image.XXXXXX)
ctr=""
cleanup() { [ -n "$ctr" ] && buildah rm "$ctr" >/dev/null 2>&1; rm -rf "$work"; }
trap cleanup EXIT

t0=$(date +%s)
echo "== rootfs: mmdebstrap $suite (minbase + $packages)"
mmdebstrap --mode=root --variant=minbase --include="$packages" \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  "$suite" "$work/rootfs.tar" \
  "deb $mirror $suite main" "deb $mirror $suite-updates main" "deb $security $suite-security main"
t1=$(date +%s)

echo "== install: docker/install.sh $variant in the new root (buildah run)"
ctr=$(buildah from scratch)
buildah add "$ctr" "$work/rootfs.tar" / >/dev/null
tar -C "$repo" --exclude=__pycache__ --exclude='*.pyc' -cf "$work/src.tar" \
  pyproject.toml README.md llmd_ray serve_configs docker
buildah add "$ctr" "$work/src.tar" /opt/llmd-ray >/dev/null

# The host's pip settings, so the build resolves as the host does (e.g. torch's CPU wheel from a local folder).
pip_get() { python3 -m pip config get "global.$1" 2>/dev/null || true; }
find_links=${PIP_FIND_LINKS:-$(pip_get find-links)}
# A find-links folder holding torch's CPU build would win over the CUDA one (a local version sorts higher).
[ "$variant" = gpu ] && find_links=${LLMD_IMAGE_GPU_FIND_LINKS:-}
extra_index=${PIP_EXTRA_INDEX_URL:-$(pip_get extra-index-url)}
index=${PIP_INDEX_URL:-$(pip_get index-url)}
# chroot isolation: no OCI runtime or cgroups needed for the build step (hosts without systemd, nested VMs).
run=(--isolation "${BUILDAH_ISOLATION:-chroot}" --network host)
for loc in $find_links $extra_index $index; do
  p=${loc#file://}
  [ "${p%/simple}" != "$p" ] && p=${p%/simple}   # a local "simple" index links to ../../files
  [ -d "$p" ] && run+=(-v "$p:$p:ro")
done
envs=(LLMD_VENV=/opt/venv PYTHONHASHSEED=0 "PIP_FIND_LINKS=$find_links" "PIP_EXTRA_INDEX_URL=$extra_index")
[ -n "$index" ] && envs+=("PIP_INDEX_URL=$index")
cert=${PIP_CERT:-$(pip_get cert)}
if [ -n "$cert" ] && [ -f "$cert" ]; then run+=(-v "$cert:/run/build-ca.crt:ro"); envs+=(PIP_CERT=/run/build-ca.crt); fi
model_dir=""
if [ "$variant" = cpu ]; then model_dir=/opt/llmd-ray/models/tiny-llama; envs+=("LLMD_MODEL_DIR=$model_dir"); fi
buildah run "${run[@]}" "$ctr" -- env "${envs[@]}" sh /opt/llmd-ray/docker/install.sh "$variant" /opt/llmd-ray
buildah run --isolation "${BUILDAH_ISOLATION:-chroot}" "$ctr" -- \
  sh -c 'rm -rf /root/.cache /tmp/* /opt/llmd-ray/build /opt/llmd-ray/*.egg-info'
t2=$(date +%s)

echo "== commit $tag"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/pyproject.toml")
config=(--env PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
        --env PYTHONHASHSEED=0 --env LANG=C.UTF-8 --workingdir /opt/llmd-ray --port 8000 --port 8265 --port 6379
        --label org.opencontainers.image.title=llmd-ray --label "org.opencontainers.image.version=$version"
        --label "org.opencontainers.image.description=llmd-ray $variant: Ray Serve + vLLM ($suite root from mmdebstrap)"
        --cmd /opt/llmd-ray/docker/serve.sh)
[ -n "$model_dir" ] && config+=(--env "LLMD_RAY_MODEL_DIR=$model_dir")
buildah config "${config[@]}" "$ctr"
buildah commit --rm "$ctr" "$tag" >/dev/null
ctr=""
t3=$(date +%s)

size=$(podman image inspect "$tag" --format '{{.Size}}')
podman images "$tag"
mkdir -p "$(dirname "$results")"
python3 - "$results" "$variant" "$tag" "$size" "$t0" "$t1" "$t2" "$t3" "$suite" "$(nproc)" <<'PY'
import datetime, json, os, sys

path, variant, tag, size, t0, t1, t2, t3, suite, cores = sys.argv[1:]
t0, t1, t2, t3 = (int(t) for t in (t0, t1, t2, t3))
data = json.load(open(path)) if os.path.exists(path) else {}
data[variant] = {
    "tag": tag, "size_bytes": int(size), "size_gb": round(int(size) / 1e9, 2), "debian_suite": suite,
    "seconds": {"rootfs_mmdebstrap": t1 - t0, "install_pip": t2 - t1, "commit": t3 - t2, "total": t3 - t0},
    "built_at": datetime.datetime.fromtimestamp(t3, datetime.timezone.utc).isoformat(timespec="seconds"),
    "host_cores": int(cores),
}
with open(path, "w") as f:
    json.dump(data, f, indent=2, sort_keys=True)
    f.write("\n")
print(f"{tag}: {int(size) / 1e9:.2f} GB, built in {t3 - t0} s (rootfs {t1 - t0} s, install {t2 - t1} s, "
      f"commit {t3 - t2} s) -> {path}")
PY
