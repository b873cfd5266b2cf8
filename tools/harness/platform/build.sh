#!/usr/bin/env bash
# Build the local platform's Go binaries from source, once per version per machine.
#
# Every binary lands in $KUBETRAIN_CACHE/bin/<name>-<version>/<name>; a binary that
# is already there is never rebuilt, so a warm run of this script takes well under a
# second. Module and build caches are Go's own (GOMODCACHE, GOCACHE), which also
# survive between runs. Versions are pinned here and nowhere else.
#
# Usage: tools/harness/platform/build.sh [TARGET ...]   (default: every target in DEFAULT_TARGETS)
#   targets: etcd kubernetes minio helm containerd runc coredns traefik registry pause skaffold
set -euo pipefail

ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
K8S_VERSION="${K8S_VERSION:-v1.36.3}"
MINIO_VERSION="${MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"
HELM_VERSION="${HELM_VERSION:-v4.3.1}"
CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.4.2}"
RUNC_VERSION="${RUNC_VERSION:-v1.4.4}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.14.7}"
TRAEFIK_VERSION="${TRAEFIK_VERSION:-v3.6.12}" # v3.7.x does not build: the module proxy refuses some of its dependencies
REGISTRY_VERSION="${REGISTRY_VERSION:-v3.1.2}"
# pause.c comes from the k8s.io/kubernetes module; PAUSE_TAG must match TAG in its build/pause/Makefile.
PAUSE_TAG="${PAUSE_TAG:-3.10.2}"
PAUSE_VERSION="$PAUSE_TAG-k8s$K8S_VERSION"
SKAFFOLD_VERSION="${SKAFFOLD_VERSION:-v2.16.1}"
# skaffold 2.16's helm deployer runs `helm version --client`, which helm 4 removed: it drives a
# helm 3 (linked as `helm3`; the product and the demo use helm 4).
HELM3_VERSION="${HELM3_VERSION:-v3.21.4}"
# Every Kubernetes binary comes from one wrapper module, so they share one build cache.
K8S_CMDS=(kube-apiserver kube-controller-manager kubectl kube-scheduler kubelet kube-proxy)
# containerd's three binaries come from one `go install`.
CONTAINERD_CMDS=(containerd containerd-shim-runc-v2 ctr)
# What a run without arguments builds (and then links into $BIN/current).
DEFAULT_TARGETS=(etcd kubernetes minio helm containerd runc coredns traefik registry pause skaffold helm3)
# Every target main accepts.
ALL_TARGETS=("${DEFAULT_TARGETS[@]}")

CACHE="${KUBETRAIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubetrain}"
BIN="$CACHE/bin"
WORK="$CACHE/src"
mkdir -p "$BIN" "$WORK"
export GOFLAGS="${GOFLAGS:--mod=mod}" CGO_ENABLED=0 GOTOOLCHAIN=local

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

need_go() {
  command -v go >/dev/null 2>&1 || {
    echo "error: the Go toolchain is not on PATH; install Go >= 1.26.6 (the platform's servers build from source; containerd v2.4 needs that version)" >&2
    exit 3
  }
}

# built NAME VERSION -> true if the cached binary exists
built() { [ -x "$BIN/$1-$2/$1" ]; }
k8s_built() { local c; for c in "${K8S_CMDS[@]}"; do built "$c" "$K8S_VERSION" || return 1; done; }
containerd_built() { local c; for c in "${CONTAINERD_CMDS[@]}"; do built "$c" "$CONTAINERD_VERSION" || return 1; done; }

timed() { # timed LABEL CMD... : run, then report wall seconds to stderr and to the build log
  local label=$1; shift
  local t0; t0=$(date +%s)
  "$@"
  local dt=$(( $(date +%s) - t0 ))
  built_target "$label" || { log "$label not built (${dt}s)"; return 0; }
  log "$label built in ${dt}s"
  echo "$(date -Iseconds) $label ${dt}s" >> "$CACHE/build-times.log"
}

build_etcd() {
  built etcd "$ETCD_VERSION" && { log "etcd $ETCD_VERSION cached"; return; }
  log "building etcd $ETCD_VERSION (wrapper main around etcdmain; ~1 min cold on 2 cores)"
  local d="$WORK/etcd-$ETCD_VERSION"
  mkdir -p "$d"
  cat > "$d/main.go" <<'GO'
// Wrapper so etcd's server builds without its repository's replace directives.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (
    cd "$d"
    [ -f go.mod ] || go mod init kubetrain.local/etcd >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    go mod tidy
    mkdir -p "$BIN/etcd-$ETCD_VERSION"
    go build -trimpath -o "$BIN/etcd-$ETCD_VERSION/etcd.tmp" .
    mv "$BIN/etcd-$ETCD_VERSION/etcd.tmp" "$BIN/etcd-$ETCD_VERSION/etcd"
  )
}

build_kubernetes() {
  if k8s_built; then
    log "kubernetes $K8S_VERSION cached"; return
  fi
  log "building ${K8S_CMDS[*]} $K8S_VERSION (~7 min cold on 2 cores)"
  local d="$WORK/kubernetes-$K8S_VERSION"
  local staging="v0.${K8S_VERSION#v1.}"
  mkdir -p "$d"
  (
    cd "$d"
    # The staging list comes from kubernetes' own go.mod, so a new staging module is never missed.
    local kmod
    kmod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    {
      echo "module kubetrain.local/kubernetes"
      echo
      echo "go $(sed -n 's/^go \([0-9.]*\).*/\1/p' "$kmod")"
      echo
      echo "require k8s.io/kubernetes $K8S_VERSION"
      echo
      grep -E '^\s*k8s\.io/[^ ]+ => \./staging/' "$kmod" | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
    } > go.mod
    log "wrapper go.mod pins $(grep -c '^replace' go.mod) staging modules to $staging"
    local c pkgs=()
    for c in "${K8S_CMDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c@$K8S_VERSION"); done
    go get "${pkgs[@]}"
    local major minor
    major=$(echo "$K8S_VERSION" | sed 's/^v\([0-9]*\)\..*/\1/')
    minor=$(echo "$K8S_VERSION" | sed 's/^v[0-9]*\.\([0-9]*\)\..*/\1/')
    local ld=""
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=2026-01-01T00:00:00Z"
    done
    for cmd in "${K8S_CMDS[@]}"; do
      built "$cmd" "$K8S_VERSION" && continue
      log "  compiling $cmd"
      mkdir -p "$BIN/$cmd-$K8S_VERSION"
      go build -trimpath -ldflags "-s -w $ld" -o "$BIN/$cmd-$K8S_VERSION/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
      mv "$BIN/$cmd-$K8S_VERSION/$cmd.tmp" "$BIN/$cmd-$K8S_VERSION/$cmd"
      log "  $cmd done"
    done
  )
}

build_minio() {
  built minio "$MINIO_VERSION" && { log "minio $MINIO_VERSION cached"; return; }
  log "building minio $MINIO_VERSION (~2.5-3.5 min cold)"
  mkdir -p "$BIN/minio-$MINIO_VERSION"
  GOBIN="$BIN/minio-$MINIO_VERSION" go install -trimpath "github.com/minio/minio@$MINIO_VERSION"
}

build_helm() {
  built helm "$HELM_VERSION" && { log "helm $HELM_VERSION cached"; return; }
  log "building helm $HELM_VERSION (~2-3.5 min cold)"
  mkdir -p "$BIN/helm-$HELM_VERSION"
  GOBIN="$BIN/helm-$HELM_VERSION" go install -trimpath "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
}

build_helm3() {
  built helm "helm3-$HELM3_VERSION" && { log "helm3 $HELM3_VERSION cached"; return; }
  log "building helm $HELM3_VERSION for skaffold (~2-3 min cold)"
  mkdir -p "$BIN/helm-helm3-$HELM3_VERSION"
  GOBIN="$BIN/helm-helm3-$HELM3_VERSION" go install -trimpath "helm.sh/helm/v3/cmd/helm@$HELM3_VERSION"
}

# mod_directives GOMOD: the replace and exclude directives of a go.mod, one per line in
# single-line form, so a wrapper module can repeat them (Go ignores a dependency's own
# replace/exclude lines unless the main module has them too). Local-path replaces are dropped.
mod_directives() {
  awk '
    { sub(/\/\/.*/, ""); $1 = $1 }
    /^(replace|exclude) *\($/ { blk = $1; next }
    blk != "" && /^\)/ { blk = ""; next }
    blk != "" && NF { print blk " " $0; next }
    /^(replace|exclude) / { print }
  ' "$1" | { grep -Ev '=> *\.\.?/' || true; }
}

# gomod_of MODULE@VERSION -> the path of that module's go.mod in the module cache; when the
# module proxy does not serve it, nothing on stdout, go's error on stderr as one line, status 1.
gomod_of() {
  local j err
  j=$(cd "$WORK" && go mod download -json "$1" 2>&1) || true
  err=$(printf '%s\n' "$j" | sed -n 's/^[[:space:]]*"Error": "\(.*\)",\{0,1\}$/\1/p')
  if [ -n "$err" ] || ! printf '%s\n' "$j" | grep -q '"GoMod"'; then
    printf '%s\n' "${err:-$j}" | sed 's/\\n\\t/ /g; s/\\[nt]/ /g' | tr '\n\t' '  ' | sed 's/  */ /g; s/ $//' >&2
    echo >&2
    return 1
  fi
  printf '%s\n' "$j" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p'
}

# wrapper_module DIR NAME MODULE VERSION: write DIR/go.mod requiring MODULE@VERSION plus MODULE's
# own replace and exclude lines, generated from its go.mod so none is ever missed or hand-copied.
wrapper_module() {
  local d=$1 name=$2 mod=$3 ver=$4 gomod
  gomod=$(gomod_of "$mod@$ver") || { echo "error: the module proxy does not serve $mod@$ver (see above)" >&2; exit 4; }
  mkdir -p "$d"
  {
    echo "module kubetrain.local/$name"
    echo
    echo "go $(sed -n 's/^go \([0-9.]*\).*/\1/p' "$gomod")"
    echo
    echo "require $mod $ver"
    echo
    mod_directives "$gomod"
  } > "$d/go.mod"
  log "wrapper go.mod for $name copies $(grep -c '^replace' "$d/go.mod" || true) replace and $(grep -c '^exclude' "$d/go.mod" || true) exclude lines"
}

# install_cmds NAME VERSION PKG@VERSION... : `go install` the packages (flags from the BUILD_FLAGS
# array) and move each binary to $BIN/<cmd>-VERSION/<cmd> once all of them have built.
install_cmds() {
  local name=$1 ver=$2; shift 2
  local tmp="$BIN/.$name-$ver.tmp" f c
  rm -rf "$tmp"; mkdir -p "$tmp"
  GOBIN="$tmp" go install -trimpath "${BUILD_FLAGS[@]}" "$@"
  for f in "$tmp"/*; do
    c=$(basename "$f")
    mkdir -p "$BIN/$c-$ver"
    mv "$f" "$BIN/$c-$ver/$c"
  done
  rmdir "$tmp"
}

build_containerd() {
  containerd_built && { log "containerd $CONTAINERD_VERSION cached"; return; }
  log "building ${CONTAINERD_CMDS[*]} $CONTAINERD_VERSION (~1.5-2 min cold on 2 cores)"
  local m=github.com/containerd/containerd/v2 c pkgs=()
  for c in "${CONTAINERD_CMDS[@]}"; do pkgs+=("$m/cmd/$c@$CONTAINERD_VERSION"); done
  # Pure Go (CGO_ENABLED=0); the snapshotters that need host libraries or tools are left out.
  BUILD_FLAGS=(-tags "no_btrfs no_devmapper no_zfs"
    -ldflags "-s -w -X $m/version.Version=$CONTAINERD_VERSION -X $m/version.Package=$m")
  install_cmds containerd "$CONTAINERD_VERSION" "${pkgs[@]}"
}

build_runc() {
  built runc "$RUNC_VERSION" && { log "runc $RUNC_VERSION cached"; return; }
  { command -v gcc && pkg-config --exists libseccomp; } >/dev/null 2>&1 || {
    echo "error: runc needs cgo and libseccomp: install gcc, pkg-config and libseccomp-dev (tools/harness/platform/ensure-system.sh does)" >&2
    exit 3
  }
  log "building runc $RUNC_VERSION (cgo + seccomp; ~25-40 s cold)"
  # runc embeds its version from its VERSION file; there is no version ldflag to set.
  BUILD_FLAGS=(-tags "seccomp urfave_cli_no_docs" -ldflags "-s -w")
  CGO_ENABLED=1 install_cmds runc "$RUNC_VERSION" "github.com/opencontainers/runc@$RUNC_VERSION"
}

build_coredns() {
  built coredns "$COREDNS_VERSION" && { log "coredns $COREDNS_VERSION cached"; return; }
  log "building coredns $COREDNS_VERSION (~2-3.5 min cold)"
  # Its go.mod has no replace directives, so a plain `go install` works; the version is a
  # constant in its source.
  BUILD_FLAGS=(-ldflags "-s -w")
  install_cmds coredns "$COREDNS_VERSION" "github.com/coredns/coredns@$COREDNS_VERSION"
}

build_traefik() {
  built traefik "$TRAEFIK_VERSION" && { log "traefik $TRAEFIK_VERSION cached"; return; }
  log "building traefik $TRAEFIK_VERSION (wrapper module; ~6.5-9.5 min cold on 2 cores, downloads included)"
  local d="$WORK/traefik-$TRAEFIK_VERSION" m=github.com/traefik/traefik/v3
  wrapper_module "$d" traefik "$m" "$TRAEFIK_VERSION"
  (
    cd "$d"
    go get "$m/cmd/traefik@$TRAEFIK_VERSION"
    mkdir -p "$BIN/traefik-$TRAEFIK_VERSION"
    go build -trimpath -ldflags "-s -w -X $m/pkg/version.Version=$TRAEFIK_VERSION -X $m/pkg/version.BuildDate=2026-01-01T00:00:00Z" \
      -o "$BIN/traefik-$TRAEFIK_VERSION/traefik.tmp" "$m/cmd/traefik"
    mv "$BIN/traefik-$TRAEFIK_VERSION/traefik.tmp" "$BIN/traefik-$TRAEFIK_VERSION/traefik"
  )
}

build_registry() {
  built registry "$REGISTRY_VERSION" && { log "registry $REGISTRY_VERSION cached"; return; }
  log "building the distribution registry $REGISTRY_VERSION (~1-1.5 min cold)"
  local m=github.com/distribution/distribution/v3
  BUILD_FLAGS=(-ldflags "-s -w -X $m/version.version=$REGISTRY_VERSION -X $m/version.mainpkg=$m")
  install_cmds registry "$REGISTRY_VERSION" "$m/cmd/registry@$REGISTRY_VERSION"
}

build_pause() {
  built pause "$PAUSE_VERSION" && { log "pause $PAUSE_VERSION cached"; return; }
  { command -v gcc && compgen -G '/usr/lib/*-linux-gnu*/libc.a'; } >/dev/null 2>&1 || {
    echo "error: pause is a static C binary: install gcc and libc6-dev (tools/harness/platform/ensure-system.sh does)" >&2
    exit 3
  }
  log "building pause $PAUSE_VERSION (kubernetes' pause.c, gcc -static; ~1 s once the k8s.io/kubernetes module is cached)"
  local kdir tag
  kdir=$(cd "$WORK" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -f "$kdir/build/pause/linux/pause.c" ] || { echo "error: no build/pause/linux/pause.c in k8s.io/kubernetes@$K8S_VERSION" >&2; exit 4; }
  tag=$(sed -n 's/^TAG ?= *//p' "$kdir/build/pause/Makefile")
  [ "$tag" = "$PAUSE_TAG" ] || {
    echo "error: kubernetes $K8S_VERSION ships pause $tag, but PAUSE_TAG is $PAUSE_TAG: update PAUSE_TAG in tools/harness/platform/build.sh" >&2
    exit 2
  }
  mkdir -p "$BIN/pause-$PAUSE_VERSION"
  gcc -Os -Wall -static -s -DVERSION="v$PAUSE_VERSION" -o "$BIN/pause-$PAUSE_VERSION/pause.tmp" "$kdir/build/pause/linux/pause.c"
  mv "$BIN/pause-$PAUSE_VERSION/pause.tmp" "$BIN/pause-$PAUSE_VERSION/pause"
}

build_skaffold() {
  built skaffold "$SKAFFOLD_VERSION" && { log "skaffold $SKAFFOLD_VERSION cached"; return; }
  local m=github.com/GoogleContainerTools/skaffold/v2 err
  # The module proxy serves only some skaffold versions (it refuses the version list and, e.g.,
  # v2.17.x, while v2.16.1 is served). A refusal is reported in one line and fails nothing.
  if ! err=$(gomod_of "$m@$SKAFFOLD_VERSION" 2>&1 >/dev/null); then
    log "skaffold $SKAFFOLD_VERSION skipped: the module proxy refuses it: $err"
    return 0
  fi
  log "building skaffold $SKAFFOLD_VERSION (wrapper module; ~4-5 min cold on 2 cores)"
  local d="$WORK/skaffold-$SKAFFOLD_VERSION" v="$m/pkg/skaffold/version"
  wrapper_module "$d" skaffold "$m" "$SKAFFOLD_VERSION"
  (
    cd "$d"
    go get "$m/cmd/skaffold@$SKAFFOLD_VERSION"
    mkdir -p "$BIN/skaffold-$SKAFFOLD_VERSION"
    go build -trimpath -ldflags "-s -w -X $v.version=$SKAFFOLD_VERSION -X $v.buildDate=2026-01-01T00:00:00Z" \
      -o "$BIN/skaffold-$SKAFFOLD_VERSION/skaffold.tmp" "$m/cmd/skaffold"
    mv "$BIN/skaffold-$SKAFFOLD_VERSION/skaffold.tmp" "$BIN/skaffold-$SKAFFOLD_VERSION/skaffold"
  )
}

# link: one directory (KUBETRAIN_BIN) that holds the current version of every binary
link_all() {
  local cur="$BIN/current" c
  mkdir -p "$cur"
  # link NAME PATH: point current/NAME at PATH if that binary is built; never leave a dangling
  # link (a subset of targets, or skaffold refused by the module proxy).
  link() { if [ -x "$2" ]; then ln -sf "$2" "$cur/$1"; else rm -f "$cur/$1"; fi; }
  link etcd "$BIN/etcd-$ETCD_VERSION/etcd"
  for c in "${K8S_CMDS[@]}"; do link "$c" "$BIN/$c-$K8S_VERSION/$c"; done
  link minio "$BIN/minio-$MINIO_VERSION/minio"
  link helm "$BIN/helm-$HELM_VERSION/helm"
  link helm3 "$BIN/helm-helm3-$HELM3_VERSION/helm"
  for c in "${CONTAINERD_CMDS[@]}"; do link "$c" "$BIN/$c-$CONTAINERD_VERSION/$c"; done
  link runc "$BIN/runc-$RUNC_VERSION/runc"
  link coredns "$BIN/coredns-$COREDNS_VERSION/coredns"
  link traefik "$BIN/traefik-$TRAEFIK_VERSION/traefik"
  link registry "$BIN/registry-$REGISTRY_VERSION/registry"
  link pause "$BIN/pause-$PAUSE_VERSION/pause"
  link skaffold "$BIN/skaffold-$SKAFFOLD_VERSION/skaffold"
}

main() {
  local targets=("$@") t
  [ ${#targets[@]} -gt 0 ] || targets=("${DEFAULT_TARGETS[@]}")
  local missing=0
  for t in "${targets[@]}"; do
    case " ${ALL_TARGETS[*]} " in
      *" $t "*) built_target "$t" || missing=1 ;;
      *) echo "error: unknown target '$t' (choose from ${ALL_TARGETS[*]})" >&2; exit 2 ;;
    esac
  done
  [ $missing -eq 0 ] || need_go
  local t0; t0=$(date +%s)
  for t in "${targets[@]}"; do
    if built_target "$t"; then log "$t cached"; else timed "$t" "build_$t"; fi
  done
  # current/ always points at the pinned version of every binary that is built.
  link_all
  log "all requested binaries ready in $BIN ($(( $(date +%s) - t0 ))s)"
}

built_target() {
  case $1 in
    etcd) built etcd "$ETCD_VERSION" ;;
    kubernetes) k8s_built ;;
    minio) built minio "$MINIO_VERSION" ;;
    helm) built helm "$HELM_VERSION" ;;
    helm3) built helm "helm3-$HELM3_VERSION" ;;
    containerd) containerd_built ;;
    runc) built runc "$RUNC_VERSION" ;;
    coredns) built coredns "$COREDNS_VERSION" ;;
    traefik) built traefik "$TRAEFIK_VERSION" ;;
    registry) built registry "$REGISTRY_VERSION" ;;
    pause) built pause "$PAUSE_VERSION" ;;
    skaffold) built skaffold "$SKAFFOLD_VERSION" ;;
  esac
}

main "$@"
