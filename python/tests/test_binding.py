"""Tests of the Python binding (python/sq) on a model compiled by sq-compile.

    test_binding.py MODEL.so EXECUTOR_LOGITS.bin TOKENS.bin SEQLEN EXPECTED_PPL.json

EXECUTOR_LOGITS.bin: sq-run's --logits-out of the executor on the same
quantized IR and TOKENS.bin (int32 ids); EXPECTED_PPL.json: sq-run --json of
the .so on TOKENS.bin with SEQLEN. Prints one line per check, fails on the
first mismatch.
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import numpy as np  # noqa: E402
import sq  # noqa: E402


def check(cond, what):
    if not cond:
        sys.exit("FAIL: " + what)
    print("ok: " + what)


so, logits_file, tokens_file, seqlen, ppl_file = sys.argv[1:6]
seqlen = int(seqlen)
tokens = np.fromfile(tokens_file, dtype=np.int32)
want = np.fromfile(logits_file, dtype=np.float32)

with sq.Model(so, max_context=64) as m:
    check(m.vocab_size == m.config["vocab_size"] > 0, "config (vocab %d)" % m.vocab_size)
    check("kernels" in m.description, "description: " + m.description)
    got = m.logits(tokens[:seqlen])
    want = want.reshape(seqlen, m.vocab_size)
    diff = float(np.abs(got - want).max())
    check(got.shape == (seqlen, m.vocab_size) and got.dtype == np.float32,
          "logits are numpy float32 [n, vocab]")
    check(diff <= 1e-4 * max(1.0, float(np.abs(want).max())),
          "logits equal the executor's (max |diff| %.2g)" % diff)

    # Prefill then decode equals one forward over everything.
    m.reset()
    head = m.forward(tokens[:seqlen - 2])
    tail = m.forward(tokens[seqlen - 2:seqlen])
    check(len(m) == seqlen, "context length %d" % len(m))
    both = np.concatenate([head, tail])
    check(float(np.abs(both - got).max()) <= 1e-5, "incremental forward matches")

    ids = m.generate(list(tokens[:4]), n=5)
    check(len(ids) == 5 and all(0 <= t < m.vocab_size for t in ids),
          "generate returns 5 ids: %s" % ids)
    greedy = int(np.argmax(m.logits(tokens[:4])[-1]))
    check(ids[0] == greedy, "generation is greedy")

    expected = json.load(open(ppl_file))["ppl"]
    ppl = m.perplexity(tokens, seqlen=seqlen)
    check(abs(ppl - expected) <= 1e-4 * expected,
          "perplexity %.6f equals sq-run's %.6f" % (ppl, expected))

    try:
        m.logits([m.vocab_size + 3])
        check(False, "a bad token id raises")
    except sq.Error as e:
        check(e.code == 1 and "outside the vocabulary" in str(e), "bad token id: %s" % e)
    try:
        m.forward(np.zeros(100, dtype=np.int32))
        check(False, "a full context raises")
    except sq.Error as e:
        check(e.code == 4, "context full: %s" % e)

try:
    sq.Model(so + ".missing")
    check(False, "a missing model raises")
except sq.Error as e:
    check("no such file" in str(e), "missing model: %s" % e)
print("all binding checks passed")
