"""Logits of a compiled model.so with its KV cache: PREFILL tokens in one
forward, then one token per forward (python/sq binding).

    so_incremental_logits.py MODEL.so TOKENS.bin SEQLEN PREFILL OUT.bin

TOKENS.bin holds int32 ids; OUT.bin gets float32 [SEQLEN, vocab], as
bench/ort_static_cache.js cached writes them.
"""
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
import numpy as np  # noqa: E402
import sq  # noqa: E402

so, tokens, seqlen, prefill, out = sys.argv[1:6]
seqlen, prefill = int(seqlen), int(prefill)
raw = open(tokens, "rb").read()
ids = list(struct.unpack("<%di" % seqlen, raw[:4 * seqlen]))
with sq.Model(so, max_context=seqlen) as m:
    rows = [m.forward(ids[:prefill])]
    for t in range(prefill, seqlen):
        rows.append(m.forward(ids[t:t + 1]))
np.concatenate(rows).astype(np.float32).tofile(out)
