#!/usr/bin/env bash
# Make sure a fresh Debian machine has what the build and the venv need.
# Installs only what is missing, so a second run does nothing.
set -euo pipefail
missing=()
command -v git >/dev/null || missing+=(git)
command -v curl >/dev/null || missing+=(curl)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "[system] installing Debian packages: ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}"
fi
if ! command -v go >/dev/null; then
  echo "error: Go >= 1.24 is required to build the platform's servers from source (etcd, kube-apiserver, MinIO, helm); install it and re-run" >&2
  exit 3
fi
