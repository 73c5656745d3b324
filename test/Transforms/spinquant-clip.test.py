"""Helpers of spinquant-clip.test.

  loss CLIP.log NONE.log   the "loss on N fixed windows A -> B" of learned
                           clipping falls (B < A) and ends below the run
                           without it
  clips Q.mlir             the sq.fake_quant clip ratios: how many
                           quantizers, how many distinct ratios that are not
                           the spec's (0.9, 0.85, 0.95) nor 1
  manifest PROG.mlir IR    the clip ratios of the activation and KV-cache
                           quantizers in a compiled program's manifest
                           (qlinear act quant, attention keys/values) are
                           those of the quantized IR's quantizers
"""
import re
import sys


def after_loss(path):
    m = re.search(r"loss on \d+ fixed windows ([0-9.]+) -> ([0-9.]+)", open(path).read())
    return float(m.group(1)), float(m.group(2))


def ir_clips(path):
    """The clip ratios of the activation and KV-cache quantizers: every
    sq.fake_quant's and every sq.qlinear's act_quant (1 when not printed)."""
    clips = []
    for line in open(path):
        for attr in re.findall(r"(?<![a-z_])(?:act_)?quant = (#sq\.quant<[^>]*>)", line):
            if "sq.fake_quant" in line or "sq.qlinear" in line:
                m = re.search(r"clip = ([0-9.e+-]+)", attr)
                clips.append(float(m.group(1)) if m else 1.0)
    return clips


mode = sys.argv[1]
if mode == "loss":
    before, clip = after_loss(sys.argv[2])
    _, none = after_loss(sys.argv[3])
    if not (clip < before and clip < none):
        sys.exit("loss %.4f -> %.4f with learned clipping, %.4f without" % (before, clip, none))
    print("learned clipping lowers the loss: %.4f -> %.4f (%.4f without)" % (before, clip, none))
elif mode == "clips":
    clips = ir_clips(sys.argv[2])
    learned = {round(c, 12) for c in clips if all(abs(c - s) > 1e-9 for s in (0.9, 0.85, 0.95, 1.0))}
    print("%d quantizers, %d distinct learned clip ratios" % (len(clips), len(learned)))
elif mode == "manifest":
    text = open(sys.argv[2]).read()
    m = re.search(r'@sq_model_manifest\("(.*?)\\00"\)', text)
    manifest = m.group(1).replace("\\0A", "\n")
    got = []
    for line in manifest.splitlines():
        f = line.split()
        if f and f[0] == "qlinear" and f[-1].count(":") == 3:
            got.append(float(f[-1].split(":")[3]))
        elif f and f[0] == "attention":
            got += [float(q.split(":")[3]) for q in f[-2:] if q.count(":") == 3]
    want = ir_clips(sys.argv[3])
    if sorted(round(c, 12) for c in got) != sorted(round(c, 12) for c in want):
        sys.exit("manifest clips %s, IR clips %s" % (sorted(got), sorted(want)))
    print("manifest and IR: the same %d clip ratios" % len(got))
