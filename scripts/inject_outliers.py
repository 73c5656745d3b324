#!/usr/bin/python3
"""Injects outlier channels into a LLaMA ONNX model without changing its function.

    /usr/bin/python3 scripts/inject_outliers.py IN.onnx OUT.onnx
        [--scale 16] [--key-pairs 1] [--value-dims 2] [--mlp-channels 4]
        [--seed 0] [--sq-translate build/bin/sq-translate]

Real LLMs have a few channels of much larger magnitude than the rest in
their keys, values and down_proj inputs; the small shared models have
none, so rotations and scalings have little to fix there. This script
makes such a variant, three exactly compensated rescalings per layer:

- keys: per KV head, `--key-pairs` RoPE pairs of k_proj's outputs times s
  and the same dimensions of every query head of its group (GQA) divided by
  s in q_proj. RoPE rotates each pair by an angle of its own, so scaling
  both members of a pair (rotate-half: dims i and i + head_dim/2;
  interleaved: 2i and 2i+1) by the same s commutes with it, and q . k is
  unchanged. The pairs are the lowest-frequency ones (the largest i), where
  real models' key outliers sit.
- values: per KV head, `--value-dims` seeded dimensions of v_proj's outputs
  times s, and the matching input columns of o_proj (those dims of every
  query head of the group) divided by s.
- MLP: `--mlp-channels` seeded intermediate channels of up_proj's outputs
  times s (silu(gate) * up is linear in up), the matching input columns of
  down_proj divided by s.

Biases of k/v/up (Qwen2) are scaled with their rows. The float model
computes the same function up to fp32 rounding (sq-run --ppl agrees to
about 1e-6 relative); the quantized one sees outliers.

The roles of the ONNX initializers come from SQ's own importer: the model
is imported with sq-translate, and each named IR weight
(model.layers.N.self_attn.k_proj.weight, ...) is matched to the ONNX
initializer holding the same values (a MatMul's [in, out] or a Gemm's /
the IR's [out, in]). A model whose importer rewrites weights (fused QKV,
interleaved-to-rotate-half permutations, 16-bit storage) is refused.
Prints a JSON summary (what was scaled) on stdout.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import numpy_helper

ROLES = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj")


def fail(msg):
    sys.exit("inject_outliers: " + msg)


def read_ir(sq_translate, model):
    """sq.config and the float weights {name: array [out, in] or [n]} of
    the imported model."""
    with tempfile.TemporaryDirectory() as tmp:
        text = os.path.join(tmp, "model.mlir")
        r = subprocess.run([sq_translate, "--import-onnx", model, "-o", text],
                           capture_output=True, text=True)
        if r.returncode:
            fail("sq-translate cannot import %s: %s" % (model, r.stderr.strip()))
        with open(text, encoding="utf-8") as f:
            ir = f.read()
    m = re.search(r"sq\.config = \{([^}]*)\}", ir)
    if not m:
        fail("the imported model has no sq.config")
    config = {}
    for key, value in re.findall(r"(\w+) = (\"[^\"]*\"|[-+0-9.e]+|true|false)", m.group(1)):
        config[key] = value.strip('"')
    shapes = {}
    for name, shape, dtype in re.findall(
            r"sq\.weight dense_resource<([^>]+)> : tensor<([0-9x]+)x(\w+)>", ir):
        if dtype != "f32" and name.split(".")[-2] in ROLES:
            fail("weight %s is stored as %s; the script handles fp32 models" % (name, dtype))
        shapes[name] = [int(d) for d in shape.split("x")]
    weights = {}
    for name, blob in re.findall(r"^\s*([\w.]+): \"0x([0-9A-F]+)\"", ir, re.M):
        if name in shapes:
            raw = bytes.fromhex(blob)[4:]  # alignment word, then the data
            weights[name] = np.frombuffer(raw, dtype="<f4").reshape(shapes[name])
    return config, weights


def match_initializers(model, weights):
    """{IR weight name: (initializer, transposed)} for the weights we touch."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    by_key = {}
    for name, a in inits.items():
        if a.dtype != np.float32:
            continue
        by_key.setdefault((a.shape, a.tobytes()), []).append(name)
    found = {}
    for name, w in weights.items():
        role = name.split(".")[-2] if name.endswith((".weight", ".bias")) else ""
        if role not in ROLES:
            continue
        for transposed, cand in ((True, w.T), (False, w)):
            hits = by_key.get((cand.shape, np.ascontiguousarray(cand).tobytes()))
            if hits:
                if len(hits) > 1:
                    fail("weight %s matches several initializers (%s)" % (name, ", ".join(hits)))
                found[name] = (hits[0], transposed and w.ndim == 2)
                break
        else:
            fail("no ONNX initializer holds %s (the importer rewrote it?)" % name)
    return inits, found


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--scale", type=float, default=16.0,
                    help="the outlier factor s (default 16)")
    ap.add_argument("--key-pairs", type=int, default=1,
                    help="RoPE pairs per KV head scaled in k_proj (default 1)")
    ap.add_argument("--value-dims", type=int, default=2,
                    help="value dimensions per KV head scaled in v_proj (default 2)")
    ap.add_argument("--mlp-channels", type=int, default=4,
                    help="intermediate channels scaled in up_proj (default 4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sq-translate", default=os.path.join(root, "build", "bin", "sq-translate"))
    args = ap.parse_args()
    s = args.scale
    if not s > 0:
        fail("--scale must be positive")

    config, weights = read_ir(args.sq_translate, args.input)
    heads = int(config["num_attention_heads"])
    kv = int(config["num_key_value_heads"])
    hd = int(config["head_dim"])
    layers = int(config["num_hidden_layers"])
    inter = int(config["intermediate_size"])
    layout = config.get("rope_layout", "rotate_half")
    if layout not in ("rotate_half", "interleaved"):
        fail("unknown rope_layout %s" % layout)
    if not (0 <= args.key_pairs <= hd // 2 and 0 <= args.value_dims <= hd
            and 0 <= args.mlp_channels <= inter):
        fail("--key-pairs <= head_dim/2, --value-dims <= head_dim and "
             "--mlp-channels <= intermediate_size are required")
    group = heads // kv

    model = onnx.load(args.input)
    inits, found = match_initializers(model, weights)
    new = {}  # initializer name -> array (ONNX layout)

    def scale_out(name, idx, f):
        """Output channels `idx` of IR weight `name` (rows of [out, in]; a
        bias's entries) times f, in the ONNX initializer."""
        if name not in found:
            return False
        init, transposed = found[name]
        a = new.get(init, inits[init].copy())
        if transposed:
            a[:, idx] *= np.float32(f)
        else:
            a[idx, ...] *= np.float32(f)
        new[init] = a
        return True

    def scale_in(name, idx, f):
        """Input columns `idx` of IR weight `name` ([out, in]) times f."""
        init, transposed = found[name]
        a = new.get(init, inits[init].copy())
        if transposed:
            a[idx, :] *= np.float32(f)
        else:
            a[:, idx] *= np.float32(f)
        new[init] = a

    rng = np.random.default_rng(args.seed)
    summary = {"scale": s, "layers": []}
    # The lowest-frequency pairs: i = hd/2 - 1, hd/2 - 2, ...
    pairs = [hd // 2 - 1 - p for p in range(args.key_pairs)]
    if layout == "rotate_half":
        kdims = sorted(d for i in pairs for d in (i, i + hd // 2))
    else:
        kdims = sorted(d for i in pairs for d in (2 * i, 2 * i + 1))
    for l in range(layers):
        p = "model.layers.%d." % l
        need = [p + "self_attn.%s.weight" % r for r in ("q_proj", "k_proj", "v_proj", "o_proj")] + \
               [p + "mlp.%s.weight" % r for r in ("up_proj", "down_proj")]
        for n in need:
            if n not in found:
                fail("%s not found in the imported model" % n)
        vdims = sorted(rng.choice(hd, args.value_dims, replace=False).tolist())
        mlp = sorted(rng.choice(inter, args.mlp_channels, replace=False).tolist())
        krows = [g * hd + d for g in range(kv) for d in kdims]
        qrows = [h * hd + d for h in range(heads) for d in kdims]
        vrows = [g * hd + d for g in range(kv) for d in vdims]
        ocols = [h * hd + d for h in range(heads) for d in vdims]
        if krows:
            scale_out(p + "self_attn.k_proj.weight", krows, s)
            scale_out(p + "self_attn.k_proj.bias", krows, s)
            scale_out(p + "self_attn.q_proj.weight", qrows, 1 / s)
            scale_out(p + "self_attn.q_proj.bias", qrows, 1 / s)
        if vrows:
            scale_out(p + "self_attn.v_proj.weight", vrows, s)
            scale_out(p + "self_attn.v_proj.bias", vrows, s)
            scale_in(p + "self_attn.o_proj.weight", ocols, 1 / s)
        if mlp:
            scale_out(p + "mlp.up_proj.weight", mlp, s)
            scale_out(p + "mlp.up_proj.bias", mlp, s)
            scale_in(p + "mlp.down_proj.weight", mlp, 1 / s)
        summary["layers"].append({"key_dims": kdims, "value_dims": vdims,
                                  "mlp_channels": mlp})
    # An initializer used for two roles would get two rescalings.
    used = {}
    for n, (init, _) in found.items():
        if used.setdefault(init, n) != n and not n.endswith(".bias"):
            fail("initializer %s is shared by %s and %s" % (init, used[init], n))
    for t in model.graph.initializer:
        if t.name in new:
            t.CopyFrom(numpy_helper.from_array(new[t.name], t.name))
    onnx.save_model(model, args.output)
    summary["initializers_changed"] = len(new)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
