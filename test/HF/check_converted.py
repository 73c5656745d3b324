#!/usr/bin/python3
"""Checks the converted folders of make_hf_checkpoints.py against their sources.

    check_converted.py stories FOLDER SHARED   stories260k: the Hugging Face forward
        (hf_reference.py: rotate-half RoPE on the permuted rows) equals a llama2.c
        forward of stories260K.bin (interleaved RoPE, unpermuted) within 1e-5 and
        PyTorch's logits of stories260K-onnx within 1e-4 (relative to the largest
        logit); prints the greedy text from BOS (60 tokens).
    check_converted.py wiki2 FOLDER SHARED     wiki2-byte: every weight is bit-identical
        to an initializer of wiki2-byte-llama/model.onnx (MatMul weights are stored
        transposed there) and the forward equals reference.npz (PyTorch) within 1e-4.
    check_converted.py tokenizer FOLDER SHARED tokenizer.json: its vocabulary is
        tok512.bin's pieces in order, its BPE merges encode the TinyStories excerpt
        (first 40 paragraphs) and a stress text to the same ids as llama2.c's encoder
        (highest-score pair first, with the dummy-prefix space), and its decoder
        inverts them.
Prints one line per check; exit status 1 if any fails.
"""

import json
import math
import os
import struct
import sys

import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_reference  # noqa: E402
import make_hf_checkpoints as mk  # noqa: E402

failed = False


def report(name, ok, detail):
    global failed
    failed |= not ok
    print("%s: %s (%s)" % (name, "ok" if ok else "FAIL", detail))


def rel(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


def llama2c_forward(c, w, tokens):
    """llama2.c run.c semantics in float64: interleaved-pair RoPE (theta 10000),
    GQA (query head h reads KV head h // (heads / kv_heads)), SwiGLU."""
    dim, nh, nkv = c["dim"], c["heads"], c["kv_heads"]
    hd = dim // nh
    T = len(tokens)
    f = lambda a: np.asarray(a, np.float64)  # noqa: E731
    x = f(w["tok"])[tokens]
    norm = lambda v, g: v / np.sqrt(np.mean(v * v, -1, keepdims=True) + 1e-5) * f(g)  # noqa: E731
    i = np.arange(0, hd, 2)
    freq = 1.0 / 10000.0 ** (i / hd)
    ang = np.outer(np.arange(T), freq)  # [T, hd/2]
    cos, sin = np.cos(ang), np.sin(ang)

    def rope(v, heads):  # v [T, heads*hd], pairs (2i, 2i+1) within each head
        v = v.reshape(T, heads, hd // 2, 2)
        a, b = v[..., 0], v[..., 1]
        c_, s_ = cos[:, None, :], sin[:, None, :]
        return np.stack([a * c_ - b * s_, a * s_ + b * c_], -1).reshape(T, heads * hd)

    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(c["layers"]):
        h = norm(x, w["rms_att"][l])
        q = rope(h @ f(w["wq"][l]).T, nh).reshape(T, nh, hd)
        k = rope(h @ f(w["wk"][l]).T, nkv).reshape(T, nkv, hd)
        v = (h @ f(w["wv"][l]).T).reshape(T, nkv, hd)
        out = np.zeros((T, nh, hd))
        for hh in range(nh):
            kv = hh // (nh // nkv)
            s = q[:, hh] @ k[:, kv].T / math.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            out[:, hh] = s @ v[:, kv]
        x = x + out.reshape(T, dim) @ f(w["wo"][l]).T
        h = norm(x, w["rms_ffn"][l])
        g = h @ f(w["w1"][l]).T
        x = x + (g / (1 + np.exp(-g)) * (h @ f(w["w3"][l]).T)) @ f(w["w2"][l]).T
    x = norm(x, w["rms_final"])
    return x @ f(w["cls"] if "cls" in w else w["tok"]).T


def read_tok_bin(path):
    data = open(path, "rb").read()
    pos = 4
    pieces = []
    while pos < len(data):
        score, n = struct.unpack_from("<fi", data, pos)
        pos += 8
        pieces.append((data[pos:pos + n].decode("utf-8"), score))
        pos += n
    return pieces


def decode_pieces(pieces, ids):
    """tokenizer.json's decoder: Replace(▁, ' '), ByteFallback, Fuse, Strip(1 leading space)."""
    out = bytearray()
    for i in ids:
        p = pieces[i]
        if len(p) == 6 and p.startswith("<0x") and p.endswith(">"):
            out.append(int(p[3:5], 16))
        else:
            out += p.replace("\u2581", " ").encode("utf-8")
    text = out.decode("utf-8", errors="replace")
    return text[1:] if text.startswith(" ") else text


def check_stories(folder, shared):
    c, w = mk.read_llama2c(os.path.join(shared, "llama2c", "stories260K.bin"))
    model = hf_reference.Model(folder)
    ref = np.load(os.path.join(shared, "stories260K-onnx", "nocache", "reference.npz"))
    seqs = [list(map(int, r)) for r in ref["input_ids"]]
    rng = np.random.default_rng(5)
    seqs.append([1] + rng.integers(3, 512, 99).tolist())
    worst = max(rel(model.forward(s), llama2c_forward(c, w, s)) for s in seqs)
    report("stories260k hf forward vs llama2.c forward", worst <= 1e-5, "rel %.2e <= 1e-5" % worst)
    worst = max(rel(model.forward(s), ref["logits"][i]) for i, s in enumerate(seqs[:2]))
    report("stories260k hf forward vs PyTorch reference.npz", worst <= 1e-4, "rel %.2e <= 1e-4" % worst)
    ids = model.greedy([1], 60)
    want = [int(t) for t in ref["greedy_ids"][1:]]  # greedy_ids: BOS + "Once upon a time" + 40
    tok = json.load(open(os.path.join(folder, "tokenizer.json")))
    pieces = {v: k for k, v in tok["model"]["vocab"].items()}
    text = decode_pieces(pieces, ids[1:])
    report("stories260k greedy ids from BOS are a prefix of reference.npz greedy_ids",
           ids[1:len(want) + 1] == want[:len(ids) - 1], "%d tokens compared" % min(len(want), len(ids) - 1))
    print("greedy: " + text)


def check_wiki2(folder, shared):
    import onnx
    from onnx import numpy_helper
    m = onnx.load(os.path.join(shared, "wiki2-byte-llama", "model.onnx"))
    inits = [numpy_helper.to_array(t) for t in m.graph.initializer]
    weights = hf_reference.read_safetensors(os.path.join(folder, "model.safetensors"))
    missing = []
    for name, arr in weights.items():
        arr = np.asarray(arr)
        cands = [arr] if arr.ndim == 1 or name == "model.embed_tokens.weight" else [arr.T]
        if not any(i.shape == c.shape and i.dtype == c.dtype and np.array_equal(i.view(np.uint32), np.ascontiguousarray(c).view(np.uint32))
                   for c in cands for i in inits):
            missing.append(name)
    report("wiki2-byte weights bit-identical to model.onnx initializers", not missing,
           "%d tensors%s" % (len(weights), ", unmatched: " + ", ".join(missing[:3]) if missing else ""))
    model = hf_reference.Model(folder)
    ref = np.load(os.path.join(shared, "wiki2-byte-llama", "reference.npz"))
    worst = max(rel(model.forward(list(map(int, r))), ref["logits"][i]) for i, r in enumerate(ref["input_ids"]))
    report("wiki2-byte hf forward vs PyTorch reference.npz", worst <= 1e-4, "rel %.2e <= 1e-4" % worst)
    c, w = mk.read_llama2c(os.path.join(shared, "wiki2-byte-llama", "model.bin"))
    s = list(map(int, ref["input_ids"][0]))
    worst = rel(model.forward(s), llama2c_forward(c, w, s))
    report("wiki2-byte hf forward vs llama2.c forward of model.bin", worst <= 1e-5, "rel %.2e <= 1e-5" % worst)


def llama2c_encode(pieces, scores, text):
    """llama2.c run.c encode(): dummy-prefix space, code points (byte fallback +3),
    then merge the adjacent pair with the highest-scoring concatenation."""
    index = {p: i for i, p in enumerate(pieces)}
    ids = []
    for ch in " " + text:
        if ch in index:
            ids.append(index[ch])
        else:
            ids.extend(b + 3 for b in ch.encode("utf-8"))
    while True:
        best, best_i = -1e10, -1
        for i in range(len(ids) - 1):
            j = index.get(pieces[ids[i]] + pieces[ids[i + 1]])
            if j is not None and scores[j] > best:
                best, best_i = scores[j], i
        if best_i < 0:
            return ids
        ids[best_i:best_i + 2] = [index[pieces[ids[best_i]] + pieces[ids[best_i + 1]]]]


def hf_bpe_encode(tok, text):
    """tokenizers' BPE model on the normalized text (no pre-tokenizer: one word):
    characters (unknown ones as <0xXX> byte pieces), then repeatedly the pair
    with the lowest merge rank, leftmost first."""
    vocab = tok["model"]["vocab"]
    ranks = {tuple(m.split(" ")): r for r, m in enumerate(tok["model"]["merges"])}
    text = "\u2581" + text.replace(" ", "\u2581")
    syms = []
    for ch in text:
        if ch in vocab:
            syms.append(ch)
        else:
            syms.extend("<0x%02X>" % b for b in ch.encode("utf-8"))
    while True:
        best, best_i = None, -1
        for i in range(len(syms) - 1):
            r = ranks.get((syms[i], syms[i + 1]))
            if r is not None and (best is None or r < best):
                best, best_i = r, i
        if best_i < 0:
            return [vocab[s] for s in syms]
        syms[best_i:best_i + 2] = [syms[best_i] + syms[best_i + 1]]


def check_tokenizer(folder, shared):
    tok = json.load(open(os.path.join(folder, "tokenizer.json")))
    binp = read_tok_bin(os.path.join(shared, "llama2c", "tok512.bin"))
    vocab = tok["model"]["vocab"]
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    # tok512.bin stores "▁" as a space and the control pieces as "\n<s>\n", "\n</s>\n".
    mism = [i for i, ((p, _), (q, _)) in enumerate(zip(by_id, binp))
            if i >= 3 and p.replace("\u2581", " ") != q]
    report("tokenizer.json vocab is tok512.bin's pieces in order",
           len(by_id) == len(binp) == 512 and [v for _, v in by_id] == list(range(512)) and not mism,
           "%d pieces, %d mismatches" % (len(by_id), len(mism)))
    pieces = [p.replace(" ", "\u2581") if i >= 3 else p for i, (p, _) in enumerate(binp)]
    pieces = [p.replace(" ", "\u2581") for p in pieces]
    scores = [s for _, s in binp]
    paras = open(os.path.join(shared, "tinystories", "tinystories_valid_excerpt.txt")).read().split("\n\n")
    texts = [p.strip() for p in paras if p.strip()][:40]
    texts.append("Hello  world\u00e9 \u65e5\u672c\u8a9e \U0001F600 12345 x\u0301 don't  \t tabs")
    bad = 0
    total = 0
    for t in texts:
        a = llama2c_encode([p.replace("\u2581", " ") for p in pieces], scores, t)
        b = hf_bpe_encode(tok, t)
        total += len(b)
        if a != b:
            bad += 1
        elif decode_pieces({v: k for k, v in vocab.items()}, b) != t:
            bad += 1
    report("tokenizer.json BPE ids equal llama2.c's encoder and decode back", bad == 0,
           "%d texts, %d tokens, %d differ" % (len(texts), total, bad))


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("stories", "wiki2", "tokenizer"):
        sys.exit(__doc__)
    {"stories": check_stories, "wiki2": check_wiki2, "tokenizer": check_tokenizer}[sys.argv[1]](
        sys.argv[2], sys.argv[3])
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
