"""write_ids.py OUT N VOCAB: N int32 token ids (the format of sq-run --tokens),
a fixed pseudo-random sequence below VOCAB."""
import array
import sys

out, n, vocab = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
x, ids = 12345, []
for _ in range(n):
    x = (x * 1103515245 + 12345) % (1 << 31)
    ids.append(x % vocab)
with open(out, "wb") as f:
    array.array("i", ids).tofile(f)
