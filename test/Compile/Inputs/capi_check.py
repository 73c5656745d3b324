"""Calls every function of sq_runtime.h on a CPU model.so through ctypes and
prints one line per result: statuses, error messages, lengths, and whether
the logits of sq_prefill, sq_forward and sq_decode agree. Usage:
capi_check.py MODEL.so"""

import ctypes
import sys

lib = ctypes.CDLL(sys.argv[1])
P, I32, I64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64
ERR = ctypes.POINTER(ctypes.c_void_p)
FLOATS = ctypes.POINTER(ctypes.c_float)
TOKENS = ctypes.POINTER(ctypes.c_int32)


class Config(ctypes.Structure):
    _fields_ = [(n, I64) for n in (
        "vocab_size", "hidden_size", "intermediate_size", "num_layers",
        "num_heads", "num_kv_heads", "head_dim", "max_positions")] + [
        ("bos_token_id", I32), ("eos_token_id", I32)]


for name, res, args in [
        ("sq_error_code", ctypes.c_int, [P]),
        ("sq_error_message", ctypes.c_char_p, [P]),
        ("sq_error_free", None, [P]),
        ("sq_runtime_abi_version", I32, []),
        ("sq_model_open", P, [ctypes.c_char_p, ERR]),
        ("sq_model_free", None, [P]),
        ("sq_model_get_config", None, [P, ctypes.POINTER(Config)]),
        ("sq_model_vocab_size", I64, [P]),
        ("sq_model_description", ctypes.c_char_p, [P]),
        ("sq_context_create", P, [P, I64, I64, ERR]),
        ("sq_context_free", None, [P]),
        ("sq_context_reset", None, [P]),
        ("sq_context_length", I64, [P]),
        ("sq_prefill", ctypes.c_int, [P, TOKENS, I64, I64, FLOATS, ERR]),
        ("sq_forward", ctypes.c_int, [P, TOKENS, I64, I64, FLOATS, ERR]),
        ("sq_decode", ctypes.c_int, [P, TOKENS, FLOATS, ERR])]:
    f = getattr(lib, name)
    f.restype, f.argtypes = res, args


def error(err):
    """'code: message' of an error, which is freed."""
    text = "%d: %s" % (lib.sq_error_code(err),
                       lib.sq_error_message(err).decode())
    lib.sq_error_free(err)
    return text


def call(what, fn, *args):
    err = ctypes.c_void_p()
    status = fn(*args, ctypes.byref(err))
    if err.value:
        print("%s: status %s, error %s" % (what, status, error(err)))
    else:
        print("%s: ok" % what)
    return status


def tokens(values):
    return (I32 * len(values))(*values)


print("abi %d" % lib.sq_runtime_abi_version())
print("no error: %d '%s'" % (lib.sq_error_code(None),
                             lib.sq_error_message(None).decode()))
lib.sq_error_free(None)

err = ctypes.c_void_p()
model = lib.sq_model_open(None, ctypes.byref(err))  # its own path (dladdr)
if not model:
    sys.exit("open: " + error(err))
config = Config()
lib.sq_model_get_config(model, ctypes.byref(config))
lib.sq_model_get_config(None, ctypes.byref(config))
lib.sq_model_get_config(model, None)
vocab = lib.sq_model_vocab_size(model)
print("config: " + " ".join("%s=%d" % (n, getattr(config, n))
                            for n, _ in Config._fields_))
print("vocab %d, null model vocab %d, description '%s'" % (
    vocab, lib.sq_model_vocab_size(None),
    lib.sq_model_description(None).decode()))
print("description: " + lib.sq_model_description(model).decode())

cases = [("null model", None, 8, 1), ("zero context", model, 0, 1),
         ("zero batch", model, 8, 0)]
if config.max_positions:
    cases.append(("too long", model, config.max_positions + 1, 1))
for what, m, c, b in cases:
    err = ctypes.c_void_p()
    ctx = lib.sq_context_create(m, c, b, ctypes.byref(err))
    print("create %s: %s, %s" % (what, "context" if ctx else "none",
                                 error(err)))
    lib.sq_context_free(ctx)

err = ctypes.c_void_p()
ctx = lib.sq_context_create(model, 8, 2, ctypes.byref(err))
assert ctx and not err.value
seq = [3, 1, 4, 1, 5, 9, 2, 6]
two = tokens(seq[:3] + seq[4:7])
last = (ctypes.c_float * (2 * vocab))()
every = (ctypes.c_float * (2 * 3 * vocab))()
call("prefill 2x3", lib.sq_prefill, ctx, two, 2, 3, last)
print("length %d" % lib.sq_context_length(ctx))
call("prefill batch 1", lib.sq_prefill, ctx, two, 1, 1, last)
call("decode", lib.sq_decode, ctx, tokens([1, 9]), last)
print("length %d" % lib.sq_context_length(ctx))
call("prefill too many", lib.sq_prefill, ctx, tokens(seq * 2), 2, 5, None)
lib.sq_context_reset(ctx)
lib.sq_context_reset(None)
print("reset length %d, null length %d" % (lib.sq_context_length(ctx),
                                           lib.sq_context_length(None)))
call("forward 2x3", lib.sq_forward, ctx, two, 2, 3, every)
lib.sq_context_reset(ctx)
call("prefill 2x3 again", lib.sq_prefill, ctx, two, 2, 3, last)
print("prefill = forward's last positions: %s" % all(
    every[(b * 3 + 2) * vocab + v] == last[b * vocab + v]
    for b in range(2) for v in range(vocab)))

# Decoding one token at a time gives the logits of one prefill.
lib.sq_context_reset(ctx)
one = (ctypes.c_float * vocab)()
call("prefill 1x4", lib.sq_prefill, ctx, tokens(seq[:4]), 1, 4, one)
lib.sq_context_reset(ctx)
step = (ctypes.c_float * vocab)()
call("prefill 1x3", lib.sq_prefill, ctx, tokens(seq[:3]), 1, 3, None)
call("decode 1", lib.sq_decode, ctx, tokens(seq[3:4]), step)
print("decode = prefill: %s" % all(
    abs(one[v] - step[v]) <= 1e-3 * max(1.0, abs(one[v]))
    for v in range(vocab)))
call("bad token", lib.sq_decode, ctx, tokens([vocab]), step)
call("negative token", lib.sq_forward, ctx, tokens([1, -2]), 1, 2, None)
call("null tokens", lib.sq_prefill, ctx, None, 1, 1, None)
call("null context", lib.sq_decode, None, tokens([1]), step)
call("zero tokens", lib.sq_forward, ctx, tokens([1]), 1, 0, None)
call("batch 3", lib.sq_forward, ctx, tokens([1] * 3), 3, 1, None)
print("length %d" % lib.sq_context_length(ctx))
lib.sq_context_free(ctx)
lib.sq_context_free(None)
lib.sq_model_free(model)
lib.sq_model_free(None)

err = ctypes.c_void_p()
print("open missing: %s, %s" % (
    lib.sq_model_open(b"/nonexistent/m.so", ctypes.byref(err)),
    error(err)))
print("done")
