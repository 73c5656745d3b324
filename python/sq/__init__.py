"""SQ: run a model compiled by sq-compile from Python.

A ctypes binding over the C API of `model.so` (include/sq/Runtime/sq_runtime.h).
Needs only Debian's python3 and python3-numpy:

    import sys; sys.path.insert(0, "python")
    import sq
    m = sq.Model("model.so")                 # weights: model.so.weights
    print(m.config, m.description)
    logits = m.logits([72, 101, 108, 108])   # numpy [4, vocab], fresh context
    text = m.generate("Hello", n=40)         # byte-level models take text
    ids = m.generate([1, 15043], n=40)       # others take token ids
    ppl = m.perplexity(open("wiki.test.txt", "rb").read(), seqlen=256)

Compiling needs the compiler library of a build (build/lib/libsq_compile.so,
or $SQ_COMPILE_LIB), the same code as the sq-compile tool:

    sq.compile("model.onnx", "model.so", quantize="w4a4kv4", rotate="hadamard")

Text is tokenized as raw UTF-8 bytes (the byte-level models); for a
SentencePiece model pass token ids. Errors raise sq.Error with the runtime's
one-line message and its status code.
"""

import ctypes
import math
import os

import numpy as np

__all__ = ["Model", "Error", "compile"]


class Error(RuntimeError):
    """An error reported by the SQ runtime (`code` is its sq_status)."""

    def __init__(self, message, code=0):
        super().__init__(message)
        self.code = code


class _Config(ctypes.Structure):
    _fields_ = [
        ("vocab_size", ctypes.c_int64),
        ("hidden_size", ctypes.c_int64),
        ("intermediate_size", ctypes.c_int64),
        ("num_layers", ctypes.c_int64),
        ("num_heads", ctypes.c_int64),
        ("num_kv_heads", ctypes.c_int64),
        ("head_dim", ctypes.c_int64),
        ("max_positions", ctypes.c_int64),
        ("bos_token_id", ctypes.c_int32),
        ("eos_token_id", ctypes.c_int32),
    ]


_P = ctypes.c_void_p
_ERR = ctypes.POINTER(ctypes.c_void_p)


def _bind(lib):
    sig = {
        "sq_error_code": (ctypes.c_int, [_P]),
        "sq_error_message": (ctypes.c_char_p, [_P]),
        "sq_error_free": (None, [_P]),
        "sq_runtime_abi_version": (ctypes.c_int32, []),
        "sq_model_open": (_P, [ctypes.c_char_p, _ERR]),
        "sq_model_free": (None, [_P]),
        "sq_model_get_config": (None, [_P, ctypes.POINTER(_Config)]),
        "sq_model_description": (ctypes.c_char_p, [_P]),
        "sq_context_create": (_P, [_P, ctypes.c_int64, ctypes.c_int64, _ERR]),
        "sq_context_free": (None, [_P]),
        "sq_context_reset": (None, [_P]),
        "sq_context_length": (ctypes.c_int64, [_P]),
        "sq_forward": (ctypes.c_int, [_P, _P, ctypes.c_int64, ctypes.c_int64, _P, _ERR]),
        "sq_prefill": (ctypes.c_int, [_P, _P, ctypes.c_int64, ctypes.c_int64, _P, _ERR]),
        "sq_decode": (ctypes.c_int, [_P, _P, _P, _ERR]),
    }
    for name, (res, args) in sig.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise Error("not a model compiled by sq-compile (no %s)" % name)
        fn.restype = res
        fn.argtypes = args


_compiler = None


def _compile_library():
    global _compiler
    if _compiler is None:
        path = os.environ.get("SQ_COMPILE_LIB") or os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "..", "..", "build",
            "lib", "libsq_compile.so")
        if not os.path.exists(path):
            raise Error("%s: no compiler library (build SQ, or set "
                        "SQ_COMPILE_LIB)" % os.path.normpath(path), 2)
        lib = ctypes.CDLL(path, mode=os.RTLD_LOCAL)
        lib.sq_compile.restype = ctypes.c_int
        lib.sq_compile.argtypes = [
            ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
            ctypes.c_uint64, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int64,
            ctypes.c_int64, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
        _compiler = lib
    return _compiler


def compile(model, output, quantize=None, rotate=None, seed=0,
            calib_data=None, tokenizer=None, calib_steps=0, calib_seqlen=0,
            emit="so"):
    """Compiles `model` (model.onnx, a Hugging Face folder, .mlir or
    .mlirbc) to `output` as sq-compile does (sq::compileModel): quantize is the --quantize spec or
    "none" (default w4a4kv4), rotate one of learned (the default), hadamard,
    random, file:PATH, none; calib_data, tokenizer, calib_steps and
    calib_seqlen (tokens per calibration window) are --rotate=learned's
    calibration as sq-compile's --calib-* flags (0: the default); emit one
    of so, obj, llvm, mlir, sq. As with
    sq-compile, giving quantize or rotate for an already quantized input
    prints a note that they are ignored. Raises sq.Error with the compiler's
    one-line message."""
    lib = _compile_library()

    def arg(v):
        return None if v is None else str(v).encode()

    error = ctypes.create_string_buffer(4096)
    rc = lib.sq_compile(arg(model), arg(output), arg(quantize), arg(rotate),
                        int(seed), arg(calib_data), arg(tokenizer),
                        int(calib_steps), int(calib_seqlen), arg(emit), error,
                        len(error))
    if rc != 0:
        raise Error(error.value.decode(errors="replace"), 1)
    return output


class Model:
    """A compiled model and one context (KV cache) for generation.

    max_context: tokens the context holds (default: the model's context, or
    2048 when the model records none). max_batch: sequences per call.
    """

    ABI_VERSION = 1

    def __init__(self, path, max_context=None, max_batch=1):
        path = os.path.abspath(path)
        if not os.path.exists(path):
            raise Error("%s: no such file" % path, 2)
        try:
            self._lib = ctypes.CDLL(path, mode=os.RTLD_LOCAL)
        except OSError as e:
            raise Error("%s: cannot load the compiled model: %s" % (path, e), 3)
        _bind(self._lib)
        if self._lib.sq_runtime_abi_version() != self.ABI_VERSION:
            raise Error("%s: runtime ABI version %d, this binding speaks %d" % (
                path, self._lib.sq_runtime_abi_version(), self.ABI_VERSION), 3)
        self._model = self._check(lambda err: self._lib.sq_model_open(path.encode(), err))
        cfg = _Config()
        self._lib.sq_model_get_config(self._model, ctypes.byref(cfg))
        self.config = {name: getattr(cfg, name) for name, _ in _Config._fields_}
        self.vocab_size = cfg.vocab_size
        self.description = self._lib.sq_model_description(self._model).decode()
        self.max_context = int(max_context or cfg.max_positions or 2048)
        self.max_batch = int(max_batch)
        self._ctx = self._check(lambda err: self._lib.sq_context_create(
            self._model, self.max_context, self.max_batch, err))

    def _check(self, call, status=False):
        """Calls call(err) and raises the runtime's error if it set one (a
        NULL handle or a non-zero status always comes with one)."""
        err = ctypes.c_void_p()
        result = call(ctypes.byref(err))
        if err.value:
            code = self._lib.sq_error_code(err)
            message = self._lib.sq_error_message(err).decode()
            self._lib.sq_error_free(err)
            raise Error(message, code)
        if (status and result != 0) or (not status and result is None):
            raise Error("the runtime failed without a message", result or 8)
        return result

    def close(self):
        if getattr(self, "_ctx", None):
            self._lib.sq_context_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            self._lib.sq_model_free(self._model)
            self._model = None

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def reset(self):
        """Forgets the cached tokens."""
        self._lib.sq_context_reset(self._ctx)

    def __len__(self):
        return self._lib.sq_context_length(self._ctx)

    @staticmethod
    def _ids(tokens):
        if isinstance(tokens, str):
            tokens = tokens.encode("utf-8")
        if isinstance(tokens, (bytes, bytearray)):
            tokens = list(tokens)
        ids = np.ascontiguousarray(np.asarray(tokens, dtype=np.int32))
        if ids.ndim == 1:
            ids = ids[None, :]
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise Error("tokens must be a non-empty sequence (or [batch, n])", 1)
        return ids

    def forward(self, tokens):
        """Runs tokens after the cached ones; logits of every position,
        numpy float32 [n, vocab] (or [batch, n, vocab] for 2-D tokens)."""
        ids = self._ids(tokens)
        batch, n = ids.shape
        out = np.empty((batch, n, self.vocab_size), dtype=np.float32)
        self._check(lambda err: self._lib.sq_forward(
            self._ctx, ids.ctypes.data, batch, n, out.ctypes.data, err),
            status=True)
        return out[0] if np.ndim(tokens) <= 1 or isinstance(tokens, (str, bytes)) else out

    def logits(self, tokens):
        """forward() on a fresh context."""
        self.reset()
        return self.forward(tokens)

    def generate(self, prompt, n=32, temperature=0.0, seed=0, stop_at_eos=True):
        """Greedy (or sampled, with temperature > 0) continuation of prompt.
        Text in, text out for byte-level models; ids in, ids out otherwise."""
        as_text = isinstance(prompt, str)
        ids = list(self._ids(prompt)[0])
        bos = self.config["bos_token_id"]
        if as_text and bos >= 0:
            ids = [bos] + ids
        rng = np.random.default_rng(seed)
        self.reset()
        logits = self.forward(ids)[-1]
        out = []
        for i in range(n):
            if temperature > 0:
                p = np.exp((logits - logits.max()) / temperature)
                nxt = int(rng.choice(len(p), p=p / p.sum()))
            else:
                nxt = int(np.argmax(logits))
            if stop_at_eos and nxt == self.config["eos_token_id"]:
                break
            out.append(nxt)
            if i + 1 < n:
                step = np.empty(self.vocab_size, dtype=np.float32)
                tok = np.array([nxt], dtype=np.int32)
                self._check(lambda err: self._lib.sq_decode(
                    self._ctx, tok.ctypes.data, step.ctypes.data, err),
                    status=True)
                logits = step
        if as_text:
            return bytes(t for t in out if t < 256).decode("utf-8", errors="replace")
        return out

    def perplexity(self, text, seqlen=256, max_windows=None):
        """Perplexity as sq-run --ppl computes it: non-overlapping windows of
        seqlen tokens, the next-token NLL averaged over every prediction."""
        ids = self._ids(text)[0]
        if len(ids) < seqlen:
            raise Error("%d tokens, fewer than one window of %d" % (len(ids), seqlen), 1)
        windows = (len(ids) - seqlen) // seqlen + 1
        if max_windows:
            windows = min(windows, max_windows)
        nll, count = 0.0, 0
        for w in range(windows):
            window = ids[w * seqlen:(w + 1) * seqlen]
            logits = self.logits(window).astype(np.float64)
            mx = logits.max(axis=1, keepdims=True)
            logz = mx[:, 0] + np.log(np.exp(logits - mx).sum(axis=1))
            target = window[1:]
            nll -= float((logits[np.arange(seqlen - 1), target] - logz[:-1]).sum())
            count += seqlen - 1
        return math.exp(nll / count)
