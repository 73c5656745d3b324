#!/usr/bin/env python3
"""Encoding speed of SQ's hf: tokenizers and of the oracle, in one run.

  bench/tokenizer_speed.py [--text FILE] [--repeats N] [--build build]
                           [--modules build/hf-oracle/node_modules]

For each tokenizer of the @lenml packages (see test/Tokenizers), encodes the
text (default: WikiText-2 test, /work/shared/data or $SQ_SHARED_DATA) with

  SQ      `sq-run --tokenizer hf:DIR --encode TEXT -o ids.bin --bench
          --repeats N`: the tokenizer is loaded once and the median of N
          encodings (file read included) is timed in-process;
  oracle  @lenml/tokenizers (transformers.js) under node, timed in-process
          around encode() with a fresh tokenizer each repeat
          (bench/hf_tokenizer_oracle.mjs bench);

checks that both give the same number of ids, and prints a Markdown table
(MB/s = 10^6 bytes of text per second, tokens/s). The two run one after the
other on the same machine; on a shared machine the absolute numbers move
with its load, the ratio less.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

TOKENIZERS = ("llama3", "llama3_1", "qwen3", "llama2")


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shared = os.environ.get("SQ_SHARED_DATA", os.path.join(root, "..", "shared", "data"))
    p = argparse.ArgumentParser()
    p.add_argument("--text", default=os.path.join(shared, "wikitext2", "wikitext2_raw_test_hf_rows_crlf.raw"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--build", default=os.path.join(root, "build"))
    p.add_argument("--modules", default=None)
    a = p.parse_args()
    modules = a.modules or os.environ.get("SQ_HF_ORACLE_MODULES") or os.path.join(a.build, "hf-oracle", "node_modules")
    sq_run = os.path.join(a.build, "bin", "sq-run")
    oracle = os.path.join(root, "bench", "hf_tokenizer_oracle.mjs")
    env = dict(os.environ, SQ_HF_ORACLE_MODULES=os.path.abspath(modules))
    size = os.path.getsize(a.text)
    print("text: %s (%d bytes); %d repeats, medians; %s" % (os.path.basename(a.text), size, a.repeats,
                                                           time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
    print()
    print("| tokenizer | ids | SQ encode s | SQ MB/s | SQ tokens/s | SQ load s | oracle encode s | oracle MB/s | oracle tokens/s | SQ speed / oracle |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "ids.bin")
        for name in TOKENIZERS:
            d = os.path.join(modules, "@lenml", "tokenizer-" + name, "models")
            if not os.path.isdir(d):
                print("| %s | (package not installed) |" % name)
                continue
            r = subprocess.run([sq_run, "--tokenizer", "hf:" + d, "--encode", a.text, "-o", out, "--bench",
                                "--repeats", str(a.repeats)], check=True, capture_output=True, text=True)
            sqr = json.loads(r.stdout.strip().splitlines()[-1])
            ids, sq, load = sqr["tokens"], sqr["seconds"], sqr["load_seconds"]
            r = subprocess.run(["node", oracle, "bench", d, a.text, str(a.repeats)], env=env,
                               check=True, capture_output=True, text=True)
            js = json.loads(r.stdout.strip().splitlines()[-1])
            if js["tokens"] != ids:
                sys.exit("%s: SQ gave %d ids, the oracle %d" % (name, ids, js["tokens"]))
            print("| %s | %d | %.3f | %.2f | %.0f | %.2f | %.3f | %.2f | %.0f | %.1fx |" % (
                name, ids, sq, size / sq / 1e6, ids / sq, load, js["seconds"], size / js["seconds"] / 1e6,
                ids / js["seconds"], js["seconds"] / sq))


if __name__ == "__main__":
    main()
