#!/usr/bin/python3
"""Measures the quantization results table of docs/results.md.

    /usr/bin/python3 scripts/quant_results.py [--shared ../shared/data]
        [--build build] [--update docs/results.md] [--quick]

For each shared model (the byte-level WikiText-2 LLaMA, and stories260K)
it imports the ONNX model, runs every configuration through
`sq-opt [rotation] --quantize=SPEC` and measures perplexity with `sq-run`:

  FP; RTN W4A16 per channel and in groups (g32 does not divide these
  models' MLP widths, 344 = 43 * 8 and 172 = 43 * 4: g8 and g4); RTN W8A8; W4A4KV4 with RTN and with
  GPTQ, each without rotation, with --spinquant-rotate=mode=hadamard
  (QuaRot-style) and with mode=random (mean over seeds 0, 1, 2).

Evaluation: WikiText-2 test (byte tokens, every window of 256) for the
byte model; the first 64 windows of 512 tokens of the TinyStories
validation excerpt for stories260K. GPTQ calibration (128 samples) comes
from text the evaluation does not see: WikiText-2 *valid* for the byte
model, the second half of the TinyStories excerpt for stories260K.
--quick evaluates 16 windows and calibrates on 16 samples (a smoke run).
With --update, the table replaces the block between the
`<!-- quant-results -->` markers of that file. Prints every command.
"""

import argparse
import json
import os
import subprocess
import sys
import time


def run(cmd):
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out.stdout


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=os.path.join(root, "..", "shared", "data"))
    ap.add_argument("--build", default=os.path.join(root, "build"))
    ap.add_argument("--update", help="markdown file to update between markers")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    bin_ = os.path.join(args.build, "bin")
    work = os.path.join(args.build, "quant-results")
    os.makedirs(work, exist_ok=True)
    shared = os.path.abspath(args.shared)
    nsamples = 16 if args.quick else 128

    # Calibration text for stories260K: the second half of the excerpt.
    excerpt = os.path.join(shared, "tinystories", "tinystories_valid_excerpt.txt")
    stories_calib = os.path.join(work, "tinystories_calib.txt")
    with open(excerpt, encoding="utf-8") as f:
        text = f.read()
    half = text.index("\n", len(text) // 2) + 1
    with open(stories_calib, "w", encoding="utf-8") as f:
        f.write(text[half:])

    models = [
        dict(name="wiki2-byte-llama", onnx=os.path.join(shared, "wiki2-byte-llama", "model.onnx"),
             tok="byte", seqlen=256,
             text=os.path.join(shared, "wikitext2", "wikitext2_tokens_test.txt"),
             windows=16 if args.quick else 0,
             calib=os.path.join(shared, "wikitext2", "wikitext2_tokens_valid.txt"),
             group=8,
             what="WikiText-2 test, " + ("first 16 windows" if args.quick else
                                           "all windows") + " of 256 bytes"),
        dict(name="stories260K", onnx=os.path.join(shared, "stories260K-onnx", "nocache", "model.onnx"),
             tok="sp:" + os.path.join(shared, "llama2c", "tok512.model"), seqlen=512,
             text=excerpt, windows=16 if args.quick else 64, calib=stories_calib,
             group=4,
             what="TinyStories valid excerpt, first %d windows of 512 tokens"
                  % (16 if args.quick else 64)),
    ]
    rotations = [("none", []), ("hadamard", ["0"]), ("random", ["0", "1", "2"])]
    rows = []
    for m in models:
        if not os.path.exists(m["onnx"]):
            print("skipping %s: %s not present" % (m["name"], m["onnx"]), file=sys.stderr)
            continue
        base = os.path.join(work, m["name"] + ".mlirbc")
        run([os.path.join(bin_, "sq-translate"), "--import-onnx", m["onnx"],
             "--emit-bytecode", "-o", base])

        def ppl(path):
            cmd = [os.path.join(bin_, "sq-run"), path, "--ppl", m["text"],
                   "--tokenizer", m["tok"], "--seqlen", str(m["seqlen"]), "--json"]
            if m["windows"]:
                cmd += ["--max-windows", str(m["windows"])]
            return json.loads(run(cmd))["ppl"]

        def quantized(rotation, seed, spec):
            out = os.path.join(work, "q.mlirbc")
            cmd = [os.path.join(bin_, "sq-opt"), base]
            if rotation != "none":
                cmd.append("--spinquant-rotate=mode=%s seed=%s" % (rotation, seed))
            cmd += ["--quantize=" + spec, "--emit-bytecode", "-o", out]
            t = time.time()
            run(cmd)
            return ppl(out), time.time() - t

        fp = ppl(base)
        rows.append((m["name"], "FP", "-", "-", fp))
        calib = "calib=%s,tokenizer=%s,seqlen=%d,nsamples=%d" % (
            m["calib"], m["tok"], m["seqlen"], nsamples)
        configs = [
            ("RTN W4A16 per channel", "none", "w4a16"),
            ("RTN W4A16 g%d" % m["group"], "none", "w4a16,wgroup=%d" % m["group"]),
            ("RTN W8A8", "none", "w8a8"),
        ]
        for rot, _ in rotations:
            configs.append(("RTN W4A4KV4", rot, "w4a4kv4"))
            configs.append(("GPTQ W4A4KV4", rot, "w4a4kv4,gptq," + calib))
        for label, rot, spec in configs:
            seeds = dict(rotations)[rot] or ["0"]
            vals = [quantized(rot, s, spec)[0] for s in seeds]
            mean = sum(vals) / len(vals)
            rows.append((m["name"], label, rot, "%d" % len(seeds), mean, vals))
        rows.append((m["name"], "_what", m["what"]))

    lines = []
    for name in [m["name"] for m in models]:
        mine = [r for r in rows if r[0] == name]
        if not mine:
            continue
        what = [r for r in mine if r[1] == "_what"][0][2]
        fp = [r for r in mine if r[1] == "FP"][0][4]
        lines.append("**%s** (%s)\n" % (name, what))
        lines.append("| configuration | rotation | seeds | perplexity | gap to FP |")
        lines.append("|---|---|---|---|---|")
        for r in mine:
            if r[1] == "_what":
                continue
            extra = ""
            if len(r) > 5 and len(r[5]) > 1:
                extra = " (" + ", ".join("%.4f" % v for v in r[5]) + ")"
            lines.append("| %s | %s | %s | %.4f%s | %+.4f |" % (r[1], r[2], r[3], r[4], extra, r[4] - fp))
        lines.append("")
    table = "\n".join(lines)
    print(table)
    if args.update:
        with open(args.update, encoding="utf-8") as f:
            doc = f.read()
        start, end = "<!-- quant-results -->", "<!-- /quant-results -->"
        if start in doc and end in doc:
            a = doc.index(start) + len(start)
            b = doc.index(end)
            doc = doc[:a] + "\n" + table + "\n" + doc[b:]
            with open(args.update, "w", encoding="utf-8") as f:
                f.write(doc)
        else:
            print("no markers in %s; table not written" % args.update, file=sys.stderr)


if __name__ == "__main__":
    main()
