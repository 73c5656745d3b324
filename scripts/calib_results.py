#!/usr/bin/python3
"""Measures the learned-rotation table of docs/results.md.

    /usr/bin/python3 scripts/calib_results.py [--shared ../shared/data]
        [--build build] [--update docs/results.md] [--marker calib-results]
        [--quick] [--seeds 0,1,2] [--models wiki2-byte-llama,stories260K]
        [--weights RTN,GPTQ] [--rotations none,hadamard,random,learned,learned-r3hadamard]
        [--losses ce,kl,kl-top] [--extra "clip=learned"] [--work DIR]

For each shared model (the byte-level WikiText-2 LLaMA, and stories260K):
W4A4KV4 perplexity with RTN and with GPTQ weights after the rotations of
--spinquant-rotate with mode=hadamard (QuaRot-style), mode=random, and
mode=learned (SQ's default: Cayley SGD of R1/R2 from the Hadamard
initialization of the same seed, R3 by search, r3=search) and
learned-r3hadamard (SpinQuant's recipe exactly: r3=hadamard, R3 stays the
fixed Hadamard), each for seeds 0, 1, 2. As the official recipe does, the
rotations for RTN are trained under w4a4kv4 (round-to-nearest weights) and
those for GPTQ under w16a4kv4 (GPTQ quantizes the weights afterwards).

Calibration text (never the evaluation text): WikiText-2 *valid* for the
byte model (the repo's embedded excerpt is taken from it too), the second
half of the TinyStories excerpt for stories260K. Evaluation: the first 1000
windows of 256 bytes of WikiText-2 test (256,000 tokens of 1.25 M) and the
first 64 windows of 512 tokens of the TinyStories validation excerpt.
--quick: 10 calibration steps, 50 / 16 evaluation windows, seed 0 only.

Rotation `none` is W4A4KV4 without rotations (`--quantize` alone).
--losses: the calibration losses of the learned rows (loss= of
--spinquant-rotate: ce, SpinQuant's cross-entropy, the default; kl or
kl-top, distillation from the float model); a row per loss, labelled e.g.
`learned, kl-top`.

--models also takes the outlier variants `wiki2-byte-llama-outliers` and
`stories260K-outliers`: the shared model through scripts/inject_outliers.py
(default options: k_proj's lowest-frequency RoPE pair, 2 value dims per KV
head and 4 MLP channels per layer scaled by 16, compensated in q_proj,
o_proj and down_proj; the float model is unchanged), evaluated like it.
With --update, the table replaces the block between the
`<!-- MARKER -->` and `<!-- /MARKER -->` markers of that file (MARKER:
--marker, calib-results by default). Prints every command. --extra adds
options to the learned rows' --spinquant-rotate (e.g. "clip=learned"); their
label then says so.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time


def run(cmd):
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out.stdout, out.stderr


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=os.path.join(root, "..", "shared", "data"))
    ap.add_argument("--build", default=os.path.join(root, "build"))
    ap.add_argument("--update", help="markdown file to update between markers")
    ap.add_argument("--marker", default="calib-results")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", help="comma-separated (default 0,1,2; 0 with --quick)")
    ap.add_argument("--models", default="wiki2-byte-llama,stories260K")
    ap.add_argument("--weights", default="RTN,GPTQ")
    ap.add_argument("--rotations", default="hadamard,random,learned,learned-r3hadamard")
    ap.add_argument("--extra", default="",
                    help="more --spinquant-rotate options for the learned rows")
    ap.add_argument("--losses", default="ce")
    ap.add_argument("--work", help="scratch folder (default BUILD/calib-results; "
                    "give each concurrent run its own)")
    args = ap.parse_args()
    losses = args.losses.split(",")
    for loss in losses:
        if loss not in ("ce", "kl", "kl-top"):
            sys.exit("calib_results.py: --losses: expected ce, kl or kl-top, not %s" % loss)
    bin_ = os.path.join(args.build, "bin")
    work = args.work or os.path.join(args.build, "calib-results")
    os.makedirs(work, exist_ok=True)
    shared = os.path.abspath(args.shared)
    steps = 10 if args.quick else 100
    seeds = args.seeds.split(",") if args.seeds else (["0"] if args.quick else ["0", "1", "2"])
    nsamples = 16 if args.quick else 128

    excerpt = os.path.join(shared, "tinystories", "tinystories_valid_excerpt.txt")
    stories_calib = os.path.join(work, "tinystories_calib.txt")
    with open(excerpt, encoding="utf-8") as f:
        text = f.read()
    half = text.index("\n", len(text) // 2) + 1
    with open(stories_calib, "w", encoding="utf-8") as f:
        f.write(text[half:])

    models = [
        dict(name="wiki2-byte-llama",
             onnx=os.path.join(shared, "wiki2-byte-llama", "model.onnx"),
             tok="byte", seqlen=256,
             text=os.path.join(shared, "wikitext2", "wikitext2_tokens_test.txt"),
             windows=50 if args.quick else 1000,
             calib=os.path.join(shared, "wikitext2", "wikitext2_tokens_valid.txt")),
        dict(name="stories260K",
             onnx=os.path.join(shared, "stories260K-onnx", "nocache", "model.onnx"),
             tok="sp:" + os.path.join(shared, "llama2c", "tok512.model"), seqlen=512,
             text=excerpt, windows=16 if args.quick else 64, calib=stories_calib),
    ]
    models += [dict(m, name=m["name"] + "-outliers", outliers=True) for m in models]
    wanted = args.models.split(",")
    unknown = [w for w in wanted if w not in [m["name"] for m in models]]
    if unknown:
        sys.exit("calib_results.py: --models: unknown %s (expected %s)"
                 % (", ".join(unknown), ", ".join(m["name"] for m in models)))
    models = [m for m in models if m["name"] in wanted]
    lines = []
    for m in models:
        if not os.path.exists(m["onnx"]):
            print("skipping %s: %s not present" % (m["name"], m["onnx"]), file=sys.stderr)
            continue
        onnx_path = m["onnx"]
        if m.get("outliers"):
            onnx_path = os.path.join(work, m["name"] + ".onnx")
            run(["/usr/bin/python3", os.path.join(root, "scripts", "inject_outliers.py"),
                 m["onnx"], onnx_path, "--sq-translate", os.path.join(bin_, "sq-translate")])
        base = os.path.join(work, m["name"] + ".mlirbc")
        run([os.path.join(bin_, "sq-translate"), "--import-onnx", onnx_path,
             "--emit-bytecode", "-o", base])

        def ppl(path):
            out, _ = run([os.path.join(bin_, "sq-run"), path, "--ppl", m["text"],
                          "--tokenizer", m["tok"], "--seqlen", str(m["seqlen"]),
                          "--max-windows", str(m["windows"]), "--json"])
            return json.loads(out)["ppl"]

        fp = ppl(base)
        gptq = "gptq,calib=%s,tokenizer=%s,seqlen=%d,nsamples=%d" % (
            m["calib"], m["tok"], m["seqlen"], nsamples)
        rows = []
        for weights, spec, train in [("RTN", "w4a4kv4", "w4a4kv4"),
                                     ("GPTQ", "w4a4kv4," + gptq, "w16a4kv4")]:
            if weights not in args.weights.split(","):
                continue
            variants = []
            for label in args.rotations.split(","):
                if label.startswith("learned"):
                    variants += [(label, loss) for loss in losses]
                else:
                    variants.append((label, "ce"))
            for label, loss in variants:
                mode = "learned" if label.startswith("learned") else label
                vals, times = [], []
                for seed in seeds:
                    rotate = "mode=%s seed=%s" % (mode, seed)
                    if mode == "learned":
                        rotate += " steps=%d seqlen=%d quant=%s data=%s tokenizer=%s" % (
                            steps, m["seqlen"], train, m["calib"], m["tok"])
                        if label == "learned-r3hadamard":
                            rotate += " r3=hadamard"
                        if args.extra:
                            rotate += " " + args.extra
                        if loss != "ce":
                            rotate += " loss=" + loss
                    rotated = os.path.join(work, "rotated.mlirbc")
                    err = ""
                    if mode == "none":
                        rotated = base
                    else:
                        _, err = run([os.path.join(bin_, "sq-opt"), base,
                                      "--spinquant-rotate=" + rotate,
                                      "--emit-bytecode", "-o", rotated])
                    if mode == "learned":
                        t = re.search(r"in ([0-9.]+) s \(([0-9.]+) s/step\)", err)
                        r3 = re.search(r"R3 search: .* in ([0-9.]+) s", err)
                        search = float(r3.group(1)) if r3 else 0.0
                        times.append((float(t.group(1)) + search, float(t.group(2)), search))
                    out = os.path.join(work, "q.mlirbc")
                    run([os.path.join(bin_, "sq-opt"), rotated, "--quantize=" + spec,
                         "--emit-bytecode", "-o", out])
                    vals.append(ppl(out))
                if mode == "learned" and args.extra:
                    label += " (%s)" % args.extra
                if loss != "ce":
                    label += ", " + loss
                rows.append((weights, label, vals, times))
        lines.append("**%s** (FP perplexity %.4f; %d windows of %d tokens)\n"
                     % (m["name"], fp, m["windows"], m["seqlen"]))
        lines.append("| weights | rotation | perplexity, mean of seeds %s | gap to FP | calibration |"
                     % ", ".join(seeds))
        lines.append("|---|---|---|---|---|")
        for weights, mode, vals, times in rows:
            mean = sum(vals) / len(vals)
            each = " (" + ", ".join("%.4f" % v for v in vals) + ")" if len(vals) > 1 else ""
            cal = "-"
            if times:
                mean_t = lambda i: sum(t[i] for t in times) / len(times)
                cal = "%.1f s, %.3f s/step" % (mean_t(0), mean_t(1))
                if mean_t(2) > 0:
                    cal += " (R3 search %.1f s)" % mean_t(2)
            lines.append("| %s | %s | %.4f%s | %+.4f | %s |" % (weights, mode, mean, each,
                                                                mean - fp, cal))
        lines.append("")
    table = "\n".join(lines)
    print(table)
    if args.update:
        with open(args.update, encoding="utf-8") as f:
            doc = f.read()
        start, end = "<!-- %s -->" % args.marker, "<!-- /%s -->" % args.marker
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
