#!/usr/bin/env bash
# Builds Kestrel's two container images from the release binaries
# (docs/kubernetes.md, "Images"):
#
#   kestrel.local/kestrel-operator:<version>  the operator, the embedding model
#                                             and libonnxruntime (offline), no
#                                             BPF toolchain
#   kestrel.local/kestrel-agent:<version>     the node agent (its BPF objects are
#                                             compiled into the binary)
#
# Each image is one layer: the binary (debug info stripped), exactly the
# shared libraries it and the ONNX runtime load, copied from this host, and
# nothing else (no shell, no package manager). Files are sorted, owned by
# 0:0 and dated 1970, so the same inputs give the same image digest.
#
# usage: scripts/images.sh [--builder k8s-testenv|dockerfile] [--out DIR] [--registry R] [--tag T]
#   k8s-testenv (default): OCI archives DIR/kestrel-{operator,agent}.tar, made
#                with `k8s-testenv build-image` (tar, gzip, jq; no daemon),
#                loadable with `k8s-testenv load-image`, `ctr images import`,
#                `docker load`, `podman load` or `skopeo copy oci-archive:`.
#   dockerfile:  DIR/<image>/rootfs plus a Dockerfile (FROM scratch) for your
#                own builder: `docker build -t REF DIR/kestrel-operator`.
set -euo pipefail

cd "$(dirname "$0")/.."
builder=k8s-testenv
out=target/images
registry=${KESTREL_IMAGE_REGISTRY:-kestrel.local}
tag=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
while [ $# -gt 0 ]; do
  case $1 in
    --builder) builder=$2; shift 2;;
    --out) out=$2; shift 2;;
    --registry) registry=$2; shift 2;;
    --tag) tag=$2; shift 2;;
    *) echo "images: unknown option $1" >&2; exit 2;;
  esac
done
models=${KESTREL_MODEL_DIR:-/var/cache/kestrel/models}
testenv=${K8S_TESTENV:-$(cd .. && pwd)/shared/tools/k8s-testenv}
log() { printf 'images: %s\n' "$*" >&2; }

for b in kestrel-operator kestrel-agent; do
  [ -x "target/release/$b" ] || { log "target/release/$b missing: run 'make build' first"; exit 1; }
done
for f in model.onnx tokenizer.json libonnxruntime.so.1.31.1; do
  [ -f "$models/$f" ] || { log "$models/$f missing: run 'make deps'"; exit 1; }
done

# copy_libs ROOT FILE...: the shared libraries FILEs need (ldd), at the paths
# the dynamic loader looks them up.
copy_libs() {
  local root=$1; shift
  local lib
  for lib in $(ldd "$@" | awk '/=> \//{print $3} /^\t\/lib/{print $1}' | sort -u); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}

stage() {  # stage NAME: fills $out/NAME/rootfs
  local name=$1 root="$out/$1/rootfs"
  rm -rf "$out/$1"
  mkdir -p "$root/usr/bin" "$root/tmp"
  chmod 1777 "$root/tmp"
  objcopy --strip-debug "target/release/$name" "$root/usr/bin/$name"
  copy_libs "$root" "target/release/$name"
  if [ "$name" = kestrel-operator ]; then
    mkdir -p "$root/opt/kestrel/models"
    cp "$models/model.onnx" "$models/tokenizer.json" "$models/libonnxruntime.so.1.31.1" "$root/opt/kestrel/models/"
    ln -s libonnxruntime.so.1.31.1 "$root/opt/kestrel/models/libonnxruntime.so.1"
    ln -s libonnxruntime.so.1.31.1 "$root/opt/kestrel/models/libonnxruntime.so"
    copy_libs "$root" "$models/libonnxruntime.so.1.31.1"
  fi
  mkdir -p "$root/etc"
  printf 'root:x:0:0:root:/:/usr/bin/nologin\nkestrel:x:65532:65532:kestrel:/:/usr/bin/nologin\n' > "$root/etc/passwd"
  printf 'root:x:0:\nkestrel:x:65532:\n' > "$root/etc/group"
}

envs_for() {
  case $1 in
    kestrel-operator) echo "KESTREL_MODEL_DIR=/opt/kestrel/models";;
  esac
}

for name in kestrel-operator kestrel-agent; do
  start=$(date +%s)
  stage "$name"
  ref="$registry/$name:$tag"
  case $builder in
    k8s-testenv)
      [ -x "$testenv" ] || { log "k8s-testenv not found at $testenv (set K8S_TESTENV)"; exit 1; }
      envs=()
      for e in $(envs_for "$name"); do envs+=(--env "$e"); done
      "$testenv" build-image "$ref" "$out/$name.tar" --dir "$out/$name/rootfs" \
        "${envs[@]}" -- "/usr/bin/$name" >&2
      digest=$(tar -xOf "$out/$name.tar" index.json | jq -r '.manifests[0].digest')
      log "$ref -> $out/$name.tar ($(du -h "$out/$name.tar" | cut -f1), manifest $digest, $(( $(date +%s) - start )) s)"
      ;;
    dockerfile)
      printf 'FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/bin %s\nENTRYPOINT ["/usr/bin/%s"]\n' \
        "$(envs_for "$name")" "$name" > "$out/$name/Dockerfile"
      log "$out/$name: docker build -t $ref $out/$name"
      ;;
    *) log "unknown builder $builder (k8s-testenv or dockerfile)"; exit 2;;
  esac
done
