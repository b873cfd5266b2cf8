#!/usr/bin/env bash
# Build the local platform's Go binaries from source, once per version per machine.
#
# Every binary lands in $KUBETRAIN_CACHE/bin/<name>-<version>/<name>; a binary that
# is already there is never rebuilt, so a warm run of this script takes well under a
# second. Module and build caches are Go's own (GOMODCACHE, GOCACHE), which also
# survive between runs. Versions are pinned here and nowhere else.
#
# Usage: tools/platform/build.sh [etcd|kubernetes|minio|helm ...]   (default: all)
set -euo pipefail

ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
K8S_VERSION="${K8S_VERSION:-v1.36.3}"
MINIO_VERSION="${MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"
HELM_VERSION="${HELM_VERSION:-v4.3.1}"

CACHE="${KUBETRAIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubetrain}"
BIN="$CACHE/bin"
WORK="$CACHE/src"
mkdir -p "$BIN" "$WORK"
export GOFLAGS="${GOFLAGS:--mod=mod}" CGO_ENABLED=0 GOTOOLCHAIN=local

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

need_go() {
  command -v go >/dev/null 2>&1 || {
    echo "error: the Go toolchain is not on PATH; install Go >= 1.24 (the platform's servers build from source)" >&2
    exit 3
  }
}

# built NAME VERSION -> true if the cached binary exists
built() { [ -x "$BIN/$1-$2/$1" ]; }

timed() { # timed LABEL CMD... : run, then report wall seconds to stderr and to the build log
  local label=$1; shift
  local t0; t0=$(date +%s)
  "$@"
  local dt=$(( $(date +%s) - t0 ))
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
  if built kube-apiserver "$K8S_VERSION" && built kube-controller-manager "$K8S_VERSION" && built kubectl "$K8S_VERSION"; then
    log "kubernetes $K8S_VERSION cached"; return
  fi
  log "building kube-apiserver, kube-controller-manager, kubectl $K8S_VERSION (~5 min cold on 2 cores)"
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
    go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S_VERSION" "k8s.io/kubernetes/cmd/kubectl@$K8S_VERSION"
    local major minor
    major=$(echo "$K8S_VERSION" | sed 's/^v\([0-9]*\)\..*/\1/')
    minor=$(echo "$K8S_VERSION" | sed 's/^v[0-9]*\.\([0-9]*\)\..*/\1/')
    local ld=""
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=2026-01-01T00:00:00Z"
    done
    for cmd in kube-apiserver kube-controller-manager kubectl; do
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

# link: one directory (KUBETRAIN_BIN) that holds the current version of every binary
link_all() {
  local cur="$BIN/current"
  mkdir -p "$cur"
  ln -sf "$BIN/etcd-$ETCD_VERSION/etcd" "$cur/etcd"
  for c in kube-apiserver kube-controller-manager kubectl; do ln -sf "$BIN/$c-$K8S_VERSION/$c" "$cur/$c"; done
  ln -sf "$BIN/minio-$MINIO_VERSION/minio" "$cur/minio"
  ln -sf "$BIN/helm-$HELM_VERSION/helm" "$cur/helm"
}

main() {
  local targets=("$@")
  [ ${#targets[@]} -gt 0 ] || targets=(etcd kubernetes minio helm)
  local missing=0
  for t in "${targets[@]}"; do
    case $t in
      etcd) built etcd "$ETCD_VERSION" || missing=1 ;;
      kubernetes) { built kube-apiserver "$K8S_VERSION" && built kube-controller-manager "$K8S_VERSION" && built kubectl "$K8S_VERSION"; } || missing=1 ;;
      minio) built minio "$MINIO_VERSION" || missing=1 ;;
      helm) built helm "$HELM_VERSION" || missing=1 ;;
      *) echo "error: unknown target '$t' (choose from etcd kubernetes minio helm)" >&2; exit 2 ;;
    esac
  done
  [ $missing -eq 0 ] || need_go
  local t0; t0=$(date +%s)
  for t in "${targets[@]}"; do
    if built_target "$t"; then log "$t cached"; else timed "$t" "build_$t"; fi
  done
  [ ${#targets[@]} -eq 4 ] && link_all
  log "all requested binaries ready in $BIN ($(( $(date +%s) - t0 ))s)"
}

built_target() {
  case $1 in
    etcd) built etcd "$ETCD_VERSION" ;;
    kubernetes) built kube-apiserver "$K8S_VERSION" && built kube-controller-manager "$K8S_VERSION" && built kubectl "$K8S_VERSION" ;;
    minio) built minio "$MINIO_VERSION" ;;
    helm) built helm "$HELM_VERSION" ;;
  esac
}

main "$@"
