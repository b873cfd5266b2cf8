#!/usr/bin/env bash
# Make sure a fresh Debian machine has what the build, the venv and the local node need.
# Installs only what is missing, so a second run does nothing.
set -euo pipefail
# have CMD: on PATH, or in an sbin directory a non-root PATH may leave out
have() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
missing=()
have git || missing+=(git)
have curl || missing+=(curl)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
# build.sh: runc (cgo + seccomp) and the static pause binary
have gcc || missing+=(gcc)
compgen -G '/usr/lib/*-linux-gnu*/libc.a' >/dev/null || missing+=(libc6-dev)
have pkg-config || missing+=(pkg-config)
[ -f /usr/include/seccomp.h ] || missing+=(libseccomp-dev)
# the local node: image builds, base image, pod network, kube-proxy
have buildah || missing+=(buildah)
have debootstrap || missing+=(debootstrap)
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/portmap ] || missing+=(containernetworking-plugins)
have iptables || missing+=(iptables)
have conntrack || missing+=(conntrack)
if [ ${#missing[@]} -gt 0 ]; then
  echo "[system] installing Debian packages: ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}"
fi
if ! command -v go >/dev/null; then
  echo "error: Go >= 1.26.6 is required to build the platform's servers from source (etcd, Kubernetes, containerd, MinIO, helm, ...); install it and re-run" >&2
  exit 3
fi
