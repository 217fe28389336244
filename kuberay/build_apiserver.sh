#!/usr/bin/env bash
# Build a real kube-apiserver (v1.20.2) offline from Debian's `kubernetes` source
# package with Debian's Go 1.19, for the KubeRay integration tests
# (tests/integration/test_kuberay_apiserver.py). etcd comes from Debian's
# `etcd-server`. The binary is cached; a second run prints its path at once.
#
#   kuberay/build_apiserver.sh            # build if missing, print the binary's path
#   kuberay/build_apiserver.sh --force    # rebuild
#   KEEP_SRC=1 kuberay/build_apiserver.sh # keep the source tree and Go cache (warm rebuilds)
#
# Cache: ${LLMD_RAY_KUBE_APISERVER_DIR:-${XDG_CACHE_HOME:-~/.cache}/llmd_ray/kube-apiserver}/v1.20.2/
# A cold compile takes ~12 min on 2 cores; it runs under `nice -n ${NICE:-19}`.
#
# Debian's source (1.20.5+really1.20.2) ships vendor/. Three changes make it build
# and behave under Go 1.19:
#  1. vendor/github.com/modern-go/reflect2 1.0.1 -> Debian's 1.0.2 (1.0.1 crashes
#     at run time on Go >= 1.18).
#  2. kube-openapi validate/type.go: the zero-value check becomes `data == nil`;
#     otherwise Go 1.19's reflect makes every "" count as null and the KubeRay
#     CRDs fail to validate.
#  3. pkg/generated/openapi/zz_generated.openapi.go is not in the tarball; it is
#     generated with the vendored openapi-gen, as Makefile.generated_files does.
set -euo pipefail

VERSION=1.20.2
CACHE="${LLMD_RAY_KUBE_APISERVER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/llmd_ray/kube-apiserver}"
OUT="$CACHE/v$VERSION"
BIN="$OUT/kube-apiserver"
NICE="${NICE:-19}"
GO_BIN_DIR=/usr/lib/go-1.19/bin
REFLECT2_SRC=/usr/share/gocode/src/github.com/modern-go/reflect2

log() { echo "[build_apiserver] $*" >&2; }

if [[ -x "$BIN" && "${1:-}" != "--force" ]]; then
    echo "$BIN"
    exit 0
fi

# --- Debian packages: the toolchain, etcd, reflect2 1.0.2, dpkg-source ---------
need=()
[[ -x "$GO_BIN_DIR/go" ]] || need+=(golang-1.19-go)
command -v etcd >/dev/null || need+=(etcd-server)
[[ -d "$REFLECT2_SRC" ]] || need+=(golang-github-modern-go-reflect2-dev)
command -v dpkg-source >/dev/null || need+=(dpkg-dev)
command -v rsync >/dev/null || need+=(rsync)
if ((${#need[@]})); then
    SUDO=""
    [[ $(id -u) == 0 ]] || SUDO="sudo"
    log "installing ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

# --- the source package, fetched with a private deb-src list -----------------
WORK="$CACHE/work-$VERSION"
mkdir -p "$WORK" "$OUT"
SRC="$WORK/src"
if [[ ! -f "$SRC/.extracted" ]]; then
    rm -rf "$SRC" "$WORK/apt" "$WORK/dl"
    mkdir -p "$WORK/apt/parts" "$WORK/apt/lists/partial" "$WORK/apt/cache" "$WORK/dl"
    # The machine's sources.list may have no deb-src line; use a list of our own
    # instead of editing /etc/apt.
    mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
    mirror="${mirror:-http://deb.debian.org/debian}"
    suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$mirror" "$suite" >"$WORK/apt/parts/deb-src.sources"
    APT=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$WORK/apt/parts"
         -o "Dir::State::Lists=$WORK/apt/lists" -o "Dir::Cache=$WORK/apt/cache")
    log "fetching Debian's kubernetes source package ($suite)"
    apt-get "${APT[@]}" update -qq
    (cd "$WORK/dl" && apt-get "${APT[@]}" source --download-only kubernetes 2>&1 | { grep -v '^W: Download is performed unsandboxed' || true; } >&2)
    dsc=$(ls "$WORK"/dl/kubernetes_*.dsc)
    case "$dsc" in *really$VERSION*|*_$VERSION-*) ;; *) log "unexpected source version: $dsc (want $VERSION)"; exit 1 ;; esac
    # apt checked the files against the signed Sources index; dpkg-source's own
    # "cannot verify inline signature" warning only means debian-keyring is absent.
    dpkg-source -x "$dsc" "$SRC" >&2
    touch "$SRC/.extracted"
fi
cd "$SRC"

# --- fix 1: reflect2 1.0.2 -----------------------------------------------------
if ! grep -q "llmd-ray: Debian reflect2" vendor/github.com/modern-go/reflect2/.llmd-ray 2>/dev/null; then
    log "vendor: reflect2 1.0.1 -> Debian's $(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev)"
    rm -rf vendor/github.com/modern-go/reflect2
    mkdir -p vendor/github.com/modern-go/reflect2
    cp "$REFLECT2_SRC"/*.go "$REFLECT2_SRC"/*.s vendor/github.com/modern-go/reflect2/ 2>/dev/null || true
    rm -f vendor/github.com/modern-go/reflect2/*_test.go
    [[ -f vendor/github.com/modern-go/reflect2/reflect2.go ]] || { log "copying reflect2 from $REFLECT2_SRC failed"; exit 1; }
    echo "llmd-ray: Debian reflect2" >vendor/github.com/modern-go/reflect2/.llmd-ray
fi

# --- fix 2: kube-openapi's zero-value check ------------------------------------
TYPE_GO=vendor/k8s.io/kube-openapi/pkg/validation/validate/type.go
sed -i 's/if data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data)) {/if data == nil {/' "$TYPE_GO"
grep -q '^	if data == nil {$' "$TYPE_GO" || { log "kube-openapi patch did not apply to $TYPE_GO"; exit 1; }

# --- build (GOPATH mode, as Kubernetes 1.20's own scripts do) -------------------
export PATH="$GO_BIN_DIR:$PATH"
cat >"$WORK/version.env" <<EOF
KUBE_GIT_COMMIT=''
KUBE_GIT_TREE_STATE='archive'
KUBE_GIT_VERSION='v$VERSION'
KUBE_GIT_MAJOR='1'
KUBE_GIT_MINOR='20'
EOF
export KUBE_GIT_VERSION_FILE="$WORK/version.env"
export KUBE_VERBOSE=0

# --- fix 3: pkg/generated/openapi -----------------------------------------------
OPENAPI_OUT=pkg/generated/openapi/zz_generated.openapi.go
if [[ ! -s "$OPENAPI_OUT" ]]; then
    log "building the vendored openapi-gen"
    nice -n "$NICE" hack/run-in-gopath.sh go install k8s.io/kubernetes/vendor/k8s.io/kube-openapi/cmd/openapi-gen
    # Input packages: those with a +k8s:openapi-gen= tag, staging/src named as vendor/
    # (Makefile.generated_files: ALL_GO_DIRS, ALL_K8S_TAG_FILES, KUBE_OPENAPI_TAG_FILES).
    dirs=$(find -H . \( -path './_*' -o -path './.*' -o -path ./vendor -o -path ./debian \) -prune \
               -o -type f -name '*.go' -print0 \
           | xargs -0 grep -l '^// *+k8s:' | xargs grep -l '+k8s:openapi-gen=' \
           | xargs -n1 dirname | sed -e 's|^\./||' -e 's|^staging/src/|vendor/|' \
           | grep -v -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/' \
           | LC_ALL=C sort -u | sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)
    log "generating $OPENAPI_OUT ($(tr ',' '\n' <<<"$dirs" | wc -l) packages)"
    mkdir -p _output
    nice -n "$NICE" hack/run-in-gopath.sh _output/local/go/bin/openapi-gen --logtostderr \
        -i "$dirs" -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
        -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt -r _output/KUBE_violations.report >&2
    [[ -s "$OPENAPI_OUT" ]] || { log "openapi-gen wrote no $OPENAPI_OUT"; exit 1; }
fi

log "compiling cmd/kube-apiserver with $(go version | cut -d' ' -f3) (nice $NICE)"
t0=$(date +%s)
nice -n "$NICE" hack/make-rules/build.sh cmd/kube-apiserver >&2
built=$(find _output -type f -name kube-apiserver -path '*bin*' | head -n1)
[[ -x "$built" ]] || { log "no kube-apiserver binary under _output"; exit 1; }
log "compiled in $(( $(date +%s) - t0 )) s"
install -m 0755 "$built" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
"$BIN" --version >&2

if [[ "${KEEP_SRC:-0}" != 1 ]]; then
    log "removing the build tree (KEEP_SRC=1 keeps it)"
    chmod -R u+w "$WORK" 2>/dev/null || true
    rm -rf "$WORK"
fi
echo "$BIN"
