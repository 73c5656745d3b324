"""Compares SQ's hf: tokenizer with the oracle (bench/hf_tokenizer_oracle.mjs).

  compare_hf.py SQ_RUN ORACLE_SCRIPT TOKENIZER_DIR TEXT OUT_PREFIX
                [--roundtrip exact|nfc|none] [--modes whole,lines,special]

For TEXT it encodes with `sq-run --tokenizer hf:DIR --encode` and with the
oracle, three ways: the whole file, every line on its own (--lines), and
with the special tokens (--add-special-tokens / add_special_tokens=true).
Every pair must be byte-identical; a mismatch prints the first differing
position with the ids around it and exits 1. Then decode: SQ's text of SQ's
ids must equal the oracle's decode of the same ids, and the round trip
decode(encode(TEXT)) must give TEXT back (exact), its NFC form (nfc: a
tokenizer with an NFC normalizer) or is not checked (none). Prints one line
"NAME TEXT: N ids identical (whole), M (lines), K (special); decode ok;
round trip R".
"""

import os
import struct
import subprocess
import sys
import unicodedata


def ids_of(path):
    data = open(path, "rb").read()
    return list(struct.unpack("<%di" % (len(data) // 4), data))


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("command failed (%d): %s\n%s" % (r.returncode, " ".join(cmd), r.stderr))


def main():
    sq_run, oracle, tok_dir, text, prefix = sys.argv[1:6]
    roundtrip = "exact"
    if "--roundtrip" in sys.argv:
        roundtrip = sys.argv[sys.argv.index("--roundtrip") + 1]
    modes = "whole,lines,special"
    if "--modes" in sys.argv:
        modes = sys.argv[sys.argv.index("--modes") + 1]
    # tokenizer-llama3/models -> tokenizer-llama3; a folder of its own: its name.
    name = os.path.basename(os.path.abspath(tok_dir))
    if name == "models":
        name = os.path.basename(os.path.dirname(os.path.abspath(tok_dir)))
    counts = []
    for mode, sq_flags, js_flags in (("whole", [], []),
                                     ("lines", ["--lines"], ["--lines"]),
                                     ("special", ["--add-special-tokens"], ["--special"])):
        if mode not in modes.split(","):
            counts.append(None)
            continue
        sq_out, js_out = prefix + "." + mode + ".sq.bin", prefix + "." + mode + ".js.bin"
        run([sq_run, "--tokenizer", "hf:" + tok_dir, "--encode", text, "-o", sq_out] + sq_flags)
        run(["node", oracle, "encode", tok_dir, text, js_out] + js_flags)
        a, b = ids_of(sq_out), ids_of(js_out)
        if a != b:
            i = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
            sys.exit("%s %s (%s): SQ has %d ids, the oracle %d; first difference at id %d:\n"
                     "  SQ     %s\n  oracle %s" % (name, os.path.basename(text), mode, len(a), len(b), i,
                                                 a[max(0, i - 5):i + 8], b[max(0, i - 5):i + 8]))
        counts.append(len(a))
    # Decode the whole-file ids with both.
    ids = prefix + ".whole.sq.bin"
    sq_text, js_text = prefix + ".sq.txt", prefix + ".js.txt"
    run([sq_run, "--tokenizer", "hf:" + tok_dir, "--decode", ids, "-o", sq_text])
    run(["node", oracle, "decode", tok_dir, ids, js_text])
    decoded = open(sq_text, "rb").read()
    if decoded != open(js_text, "rb").read():
        sys.exit("%s %s: SQ's decode differs from the oracle's" % (name, os.path.basename(text)))
    original = open(text, "rb").read().decode("utf-8", errors="replace")
    want = {"exact": original, "nfc": unicodedata.normalize("NFC", original)}.get(roundtrip)
    if want is not None and decoded.decode("utf-8") != want:
        got = decoded.decode("utf-8")
        i = next((k for k in range(min(len(got), len(want))) if got[k] != want[k]), min(len(got), len(want)))
        sys.exit("%s %s: decode(encode(text)) differs from the text (%s) at character %d: %r vs %r" %
                 (name, os.path.basename(text), roundtrip, i, got[i:i + 20], want[i:i + 20]))
    print("%s %s: ids identical: %s; decode ok; round trip %s" %
          (name, os.path.basename(text),
           ", ".join("%s %d" % (m, c) for m, c in zip(("whole", "lines", "special"), counts)
                     if c is not None), roundtrip))


if __name__ == "__main__":
    main()
