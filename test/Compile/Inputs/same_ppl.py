"""Checks that two `sq-run --json` perplexity results agree.

    same_ppl.py A.json B.json DIGITS

Prints "same perplexity to DIGITS digits: A vs B" or fails with both
numbers. DIGITS significant digits must agree after rounding, or the two
must differ by less than half a unit of the last of them.
"""
import json
import sys

a = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
b = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
digits = int(sys.argv[3])
pa, pb = a["ppl"], b["ppl"]
fmt = "%%.%dg" % digits
unit = 10 ** (len(str(int(pb))) - digits)
if fmt % pa != fmt % pb and abs(pa - pb) >= unit / 2:
    sys.exit("perplexities differ: %.6f vs %.6f" % (pa, pb))
if a["tokens"] != b["tokens"]:
    sys.exit("different token counts: %d vs %d" % (a["tokens"], b["tokens"]))
print("same perplexity to %d digits: %.6f vs %.6f (%d tokens)" % (digits, pa, pb, a["tokens"]))
