#!/usr/bin/env bash
# The house rules of DESIGN.md §2, checked on the dependency graph:
# the operator never links BPF, and neither the node agent nor the
# profiles (nor the light embedding crate) link ONNX Runtime or tokenizers.
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0
# forbid PACKAGE CRATE...: PACKAGE's normal dependency tree must not contain CRATE
forbid() {
  local pkg=$1; shift
  local tree
  tree=$(cargo tree --offline -p "$pkg" -e normal,build --prefix none --format '{p}' 2>/dev/null ||
         cargo tree -p "$pkg" -e normal,build --prefix none --format '{p}')
  for crate in "$@"; do
    if grep -q "^$crate v" <<<"$tree"; then
      echo "check-deps: $pkg depends on $crate:" >&2
      cargo tree -p "$pkg" -e normal,build -i "$crate" >&2 || true
      fail=1
    fi
  done
}

forbid kestrel-operator libbpf-rs libbpf-sys libbpf-cargo kestrel-node-agent
forbid kestrel-node-agent ort ort-sys tokenizers kestrel-embed-onnx
forbid kestrel-profile ort ort-sys tokenizers kestrel-embed-onnx
forbid kestrel-embed ort ort-sys tokenizers
forbid kestrel-events ort tokenizers libbpf-rs

if ((fail)); then
  exit 1
fi
echo "check-deps: operator without BPF; agent, profile and embed without ONNX Runtime"
