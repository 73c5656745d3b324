#!/usr/bin/env python3
"""Writes Kernels.mlir: the GPU kernel library of lib/Runtime/CUDA/KernelABI.h.

    python3 gen_kernels.py > Kernels.mlir

The kernels are plain upstream MLIR (gpu, arith, math, scf, llvm, nvvm). This
script is only a macro processor: it spells out SSA names, constants and the
unrolled mma fragments of the two GEMMs, which are tedious and error prone by
hand. Kernels.mlir is checked in; regenerate it after editing this file.
"""

import math
import sys

NULL_OK = "!llvm.ptr"


class Fn:
    """Emits the body of one gpu.func as MLIR text."""

    def __init__(self, name, params, block, comment):
        self.name, self.params, self.block = name, params, block
        self.comment = comment
        self.lines, self.consts, self.ty = [], {}, {}
        self.cnt, self.ind = 0, 2
        for pname, pty in params:
            self.ty["%" + pname] = pty
        self.nt = block  # threads per block (1-D blocks everywhere)

    # -- plumbing ----------------------------------------------------------
    def e(self, text):
        self.lines.append("  " * self.ind + text)

    def note(self, text):
        for l in text.strip("\n").split("\n"):
            self.e("// " + l)

    def op(self, text, ty):
        self.cnt += 1
        v = "%%v%d" % self.cnt
        self.e("%s = %s" % (v, text))
        self.ty[v] = ty
        return v

    def c(self, val, ty):
        if ty in ("f32", "f64"):
            key = (float(val), ty)
            lit = repr(float(val)) if val == val and abs(val) != float("inf") else None
            if lit is None:
                lit = "0x7F800000" if ty == "f32" and val > 0 else "0xFF800000"
                if ty == "f64":
                    lit = "0x7FF0000000000000" if val > 0 else "0xFFF0000000000000"
            name = "%%c%s_%d" % (ty, len(self.consts))
        else:
            key = (int(val), ty)
            lit = str(int(val))
            name = "%%c%s_%s" % (ty, str(int(val)).replace("-", "m"))
        if key not in self.consts:
            self.consts[key] = (name, "%s = arith.constant %s : %s" % (name, lit, ty))
        self.ty[self.consts[key][0]] = ty
        return self.consts[key][0]

    def T(self, v):
        return self.ty[v]

    # -- arithmetic ----------------------------------------------------------
    def bin(self, opname, a, b):
        return self.op("arith.%s %s, %s : %s" % (opname, a, b, self.T(a)), self.T(a))

    def add(self, a, b):
        return self.bin("addf" if self.T(a)[0] == "f" else "addi", a, b)

    def sub(self, a, b):
        return self.bin("subf" if self.T(a)[0] == "f" else "subi", a, b)

    def mul(self, a, b):
        return self.bin("mulf" if self.T(a)[0] == "f" else "muli", a, b)

    def div(self, a, b):
        return self.bin("divf" if self.T(a)[0] == "f" else "divsi", a, b)

    def rem(self, a, b):
        return self.bin("remsi", a, b)

    def and_(self, a, b):
        return self.bin("andi", a, b)

    def or_(self, a, b):
        return self.bin("ori", a, b)

    def xor(self, a, b):
        return self.bin("xori", a, b)

    def shl(self, a, b):
        return self.bin("shli", a, b)

    def shr(self, a, b):  # logical
        return self.bin("shrui", a, b)

    def smin(self, a, b):
        return self.bin("minsi", a, b)

    def smax(self, a, b):
        return self.bin("maxsi", a, b)

    def fmin(self, a, b):
        return self.bin("minnumf", a, b)

    def fmax(self, a, b):
        return self.bin("maxnumf", a, b)

    def neg(self, a):
        return self.op("arith.negf %s : %s" % (a, self.T(a)), self.T(a))

    def cmp(self, pred, a, b):
        kind = "cmpf" if self.T(a)[0] == "f" else "cmpi"
        return self.op("arith.%s %s, %s, %s : %s" % (kind, pred, a, b, self.T(a)), "i1")

    def sel(self, c, a, b):
        return self.op("arith.select %s, %s, %s : %s" % (c, a, b, self.T(a)), self.T(a))

    def cast(self, opname, a, ty):
        return self.op("arith.%s %s : %s to %s" % (opname, a, self.T(a), ty), ty)

    def sext(self, a, ty="i64"):
        return self.cast("extsi", a, ty)

    def zext(self, a, ty="i64"):
        return self.cast("extui", a, ty)

    def trunc(self, a, ty="i32"):
        return self.cast("trunci", a, ty)

    def sitofp(self, a, ty="f32"):
        return self.cast("sitofp", a, ty)

    def fptosi(self, a, ty="i32"):
        return self.cast("fptosi", a, ty)

    def extf(self, a, ty="f64"):
        return self.cast("extf", a, ty)

    def truncf(self, a, ty="f32"):
        return self.cast("truncf", a, ty)

    def bitcast(self, a, ty):
        return self.cast("bitcast", a, ty)

    def math(self, fn, a):
        return self.op("math.%s %s : %s" % (fn, a, self.T(a)), self.T(a))

    def sqrt_rn(self, a):
        # Correctly rounded sqrt (math.sqrt would become libdevice's
        # __nv_sqrtf, which is sqrt.approx unless __CUDA_PREC_SQRT is set).
        assert self.T(a) == "f32"
        return self.op('llvm.inline_asm "sqrt.rn.f32 $0, $1;", "=f,f" %s : (f32) -> f32' % a, "f32")

    def ceildiv(self, a, b):
        one = self.c(1, self.T(a))
        return self.div(self.sub(self.add(a, b), one), b)

    # -- ids -------------------------------------------------------------------
    def gpu_id(self, what, dim="x", ty="i64"):
        v = self.op("gpu.%s %s" % (what, dim), "index")
        return self.op("arith.index_cast %s : index to %s" % (v, ty), ty)

    # -- memory ------------------------------------------------------------------
    def gep(self, p, idx, elty):
        pty = self.T(p)
        return self.op("llvm.getelementptr %s[%s] : (%s, %s) -> %s, %s" % (p, idx, pty, self.T(idx), pty, elty), pty)

    def load(self, p, ty):
        return self.op("llvm.load %s : %s -> %s" % (p, self.T(p), ty), ty)

    def store(self, v, p):
        self.e("llvm.store %s, %s : %s, %s" % (v, p, self.T(v), self.T(p)))

    def ld(self, base, idx, ty):
        return self.load(self.gep(base, idx, ty), ty)

    def st(self, base, idx, v):
        self.store(v, self.gep(base, idx, self.T(v)))

    def addr(self, sym, aspace=3):
        return self.op("llvm.mlir.addressof @%s : !llvm.ptr<%d>" % (sym, aspace), "!llvm.ptr<%d>" % aspace)

    def nonnull(self, p):
        z = self.op("llvm.mlir.zero : !llvm.ptr", "!llvm.ptr")
        return self.op('llvm.icmp "ne" %s, %s : !llvm.ptr' % (p, z), "i1")

    def to_global(self, p):
        return self.op("llvm.addrspacecast %s : !llvm.ptr to !llvm.ptr<1>" % p, "!llvm.ptr<1>")

    def barrier(self):
        self.e("gpu.barrier")

    # -- control flow ------------------------------------------------------------
    def for_(self, lo, hi, step, inits=()):
        """Opens an scf.for; returns (iv, iter args, results)."""
        self.cnt += 1
        k = self.cnt
        iv = "%%i%d" % k
        ity = self.T(lo)
        self.ty[iv] = ity
        args = ["%%a%d_%d" % (k, j) for j in range(len(inits))]
        for a, v in zip(args, inits):
            self.ty[a] = self.T(v)
        res = []
        head = "scf.for %s = %s to %s step %s" % (iv, lo, hi, step)
        if inits:
            head += " iter_args(%s) -> (%s)" % (
                ", ".join("%s = %s" % (a, v) for a, v in zip(args, inits)),
                ", ".join(self.T(v) for v in inits))
            r = "%%r%d" % k
            res = ["%s#%d" % (r, j) for j in range(len(inits))] if len(inits) > 1 else [r]
            for x, v in zip(res, inits):
                self.ty[x] = self.T(v)
            head = ("%s:%d = " % (r, len(inits)) if len(inits) > 1 else r + " = ") + head
        if ity != "index":
            head += " : " + ity
        self.e(head + " {")
        self.ind += 1
        return iv, args, res

    def end(self, yields=()):
        if yields:
            self.e("scf.yield %s : %s" % (", ".join(yields), ", ".join(self.T(v) for v in yields)))
        self.ind -= 1
        self.e("}")

    def if_(self, cond, types=()):
        self.cnt += 1
        k = self.cnt
        res = []
        head = "scf.if %s" % cond
        if types:
            r = "%%f%d" % k
            res = ["%s#%d" % (r, j) for j in range(len(types))] if len(types) > 1 else [r]
            for x, t in zip(res, types):
                self.ty[x] = t
            head = ("%s:%d = " % (r, len(types)) if len(types) > 1 else r + " = ") + head
            head += " -> (%s)" % ", ".join(types)
        self.e(head + " {")
        self.ind += 1
        return res

    def else_(self, yields=()):
        if yields:
            self.e("scf.yield %s : %s" % (", ".join(yields), ", ".join(self.T(v) for v in yields)))
        self.ind -= 1
        self.e("} else {")
        self.ind += 1

    # -- collectives -----------------------------------------------------------
    def shfl_xor(self, v, off):
        ty = self.T(v)
        w = self.c(32, "i32")
        o = self.c(off, "i32")
        if ty in ("f32", "i32"):
            self.cnt += 1
            r = "%%s%d" % self.cnt
            self.e("%s, %s_ok = gpu.shuffle xor %s, %s, %s : %s" % (r, r, v, o, w, ty))
            self.ty[r] = ty
            return r
        # 64-bit: two 32-bit shuffles.
        bits = self.bitcast(v, "i64") if ty == "f64" else v
        lo = self.trunc(bits)
        hi = self.trunc(self.shr(bits, self.c(32, "i64")))
        slo = self.shfl_xor(lo, off)
        shi = self.shfl_xor(hi, off)
        r = self.or_(self.zext(slo), self.shl(self.zext(shi), self.c(32, "i64")))
        return self.bitcast(r, "f64") if ty == "f64" else r

    def combine(self, kind, a, b):
        return {"add": self.add, "min": self.fmin, "max": self.fmax}[kind](a, b)

    def warp_reduce(self, vals):
        """vals: [(value, 'add'|'min'|'max')]; every lane gets the results."""
        out = [v for v, _ in vals]
        for off in (16, 8, 4, 2, 1):
            out = [self.combine(k, x, self.shfl_xor(x, off)) for x, (_, k) in zip(out, vals)]
        return out

    def block_reduce(self, vals, tid):
        """Block-wide reduction through @sq_red (8 x 8 slots of 8 bytes);
        every thread gets the results, combined in warp order (deterministic).
        Starts with a barrier, so it may be called back to back."""
        nw = self.nt // 32
        assert len(vals) <= 8 and nw <= 8
        w = self.warp_reduce(vals)
        red = self.addr("sq_red")
        lane = self.and_(tid, self.c(31, "i64"))
        warp = self.shr(tid, self.c(5, "i64"))
        self.barrier()
        self.if_(self.cmp("eq", lane, self.c(0, "i64")))
        for q, x in enumerate(w):
            slot = self.add(self.c(8 * q, "i64"), warp)
            self.store(x, self.gep(red, slot, "f64"))
        self.end()
        self.barrier()
        res = []
        for q, (x, (_, k)) in enumerate(zip(w, vals)):
            ty = self.T(x)
            r = None
            for j in range(nw):
                # slots are 8 bytes apart; f32 values use the low 4 bytes
                p = self.gep(red, self.c(8 * q + j, "i64"), "f64")
                y = self.load(p, ty)
                r = y if r is None else self.combine(k, r, y)
            res.append(r)
        return res

    def text(self):
        sig = ", ".join("%%%s: %s" % (n, t) for n, t in self.params)
        out = []
        for l in self.comment.strip("\n").split("\n"):
            out.append("  // " + l if l else "  //")
        out.append("  gpu.func @%s(%s) kernel attributes {known_block_size = array<i32: %d, 1, 1>} {"
                   % (self.name, sig, self.block))
        for _, (name, line) in sorted(self.consts.items(), key=lambda kv: kv[1][0]):
            out.append("    " + line)
        out.extend(self.lines)
        out.append("    gpu.return")
        out.append("  }")
        return "\n".join(out)


P = "!llvm.ptr"


def strided(f, tid, n, step):
    """for (i = tid; i < n; i += step)"""
    return f.for_(tid, n, f.c(step, f.T(n)))


# -----------------------------------------------------------------------------
# Elementwise
# -----------------------------------------------------------------------------

def elementwise(name, kind):
    params = [("out", P), ("a", P)] + ([("b", P)] if kind != "silu" else []) + [("n", "i64")]
    doc = {"add": "out = a + b", "mul": "out = a * b", "silu": "out = a / (1 + exp(-a)) (exp: libdevice __nv_expf)"}[kind]
    f = Fn(name, params, 256, """%s(%s): %s.
Thread mapping: grid ceil(n / 256), block 256; element i = blockIdx.x * 256 +
threadIdx.x, one per thread.""" % (name, ", ".join(p for p, _ in params), doc))
    i = f.add(f.mul(f.gpu_id("block_id"), f.c(256, "i64")), f.gpu_id("thread_id"))
    f.if_(f.cmp("slt", i, "%n"))
    a = f.ld("%a", i, "f32")
    if kind == "silu":
        e = f.math("exp", f.neg(a))
        v = f.div(a, f.add(f.c(1.0, "f32"), e))
    else:
        b = f.ld("%b", i, "f32")
        v = f.add(a, b) if kind == "add" else f.mul(a, b)
    f.st("%out", i, v)
    f.end()
    return f


def widen(f, base, idx, storage):
    """Element idx of a fp32 (0), f16 (1) or bf16 (2) array, as f32."""
    r = f.if_(f.cmp("eq", storage, f.c(0, "i32")), ["f32"])
    v0 = f.ld(base, idx, "f32")
    f.else_([v0])
    h = f.ld(base, idx, "i16")
    r2 = f.if_(f.cmp("eq", storage, f.c(1, "i32")), ["f32"])
    v1 = f.extf(f.bitcast(h, "f16"), "f32")
    f.else_([v1])
    v2 = f.bitcast(f.shl(f.zext(h, "i32"), f.c(16, "i32")), "f32")
    f.end([v2])
    f.end(r2)
    return r[0]


def embedding():
    f = Fn("sq_embedding", [("out", P), ("table", P), ("ids", P), ("tokens", "i64"), ("dim", "i64"), ("storage", "i32")], 128, """sq_embedding(out, table, ids: i32*, tokens, dim, storage): out[t, :] =
table[ids[t], :], storage 0 fp32, 1 f16, 2 bf16 (widened exactly).
Thread mapping: grid tokens, block 128; block t copies row ids[t], thread
x handles columns x, x + 128, ... (ids are not range-checked here: the
runtime validates them).""")
    t = f.gpu_id("block_id")
    tid = f.gpu_id("thread_id")
    row = f.sext(f.ld("%ids", t, "i32"))
    src = f.mul(row, "%dim")
    dst = f.mul(t, "%dim")
    c, _, _ = strided(f, tid, "%dim", 128)
    v = widen(f, "%table", f.add(src, c), "%storage")
    f.st("%out", f.add(dst, c), v)
    f.end()
    return f


def rms_norm():
    f = Fn("sq_rms_norm", [("out", P), ("in", P), ("scale", P), ("rows", "i64"), ("dim", "i64"), ("eps", "f32")], 256, """sq_rms_norm(out, in, scale (0: none), rows, dim, eps): per row,
inv = 1 / sqrt(float(sum(double(x)^2) / dim) + eps) (sum in f64 as the CPU
runtime, sqrt.rn), out = (x * inv) * scale.
Thread mapping: grid rows, block 256; thread x accumulates columns x,
x + 256, ... in f64, block reduction (warp shuffles, then warps in order).""")
    r = f.gpu_id("block_id")
    tid = f.gpu_id("thread_id")
    base = f.mul(r, "%dim")
    c, (acc,), (s,) = f.for_(tid, "%dim", f.c(256, "i64"), [f.c(0.0, "f64")])
    x = f.extf(f.ld("%in", f.add(base, c), "f32"))
    f.end([f.add(acc, f.mul(x, x))])
    (tot,) = f.block_reduce([(s, "add")], tid)
    mean = f.truncf(f.div(tot, f.sitofp("%dim", "f64")))
    inv = f.div(f.c(1.0, "f32"), f.sqrt_rn(f.add(mean, "%eps")))
    has = f.nonnull("%scale")
    c, _, _ = strided(f, tid, "%dim", 256)
    x = f.ld("%in", f.add(base, c), "f32")
    y = f.mul(x, inv)
    sc = f.if_(has, ["f32"])
    sv = f.ld("%scale", c, "f32")
    f.else_([sv])
    f.end([f.c(1.0, "f32")])
    f.st("%out", f.add(base, c), f.mul(y, sc[0]))
    f.end()
    return f


def rope():
    f = Fn("sq_rope", [("out", P), ("in", P), ("positions", P), ("rows", "i64"), ("dim", "i64"), ("heads", "i64"), ("theta", "f32"), ("interleaved", "i32"),
                       ("factor", "f32"), ("low_freq_factor", "f32"), ("high_freq_factor", "f32"), ("original", "f32")], 128, """sq_rope(out, in, positions: i64*, rows, dim, heads, theta, interleaved, factor, low_freq_factor,
        high_freq_factor, original):
head_dim d = dim / heads, inv_freq[i] = 1 / float(pow(double(theta), 2i / d))
(f64 pow as the CPU runtime); with factor > 0, LLaMA-3.1 scaling as
numerics::scaleRopeFrequency: wavelen = float(2 pi) / inv_freq, kept below
original / high_freq_factor, divided by factor above original /
low_freq_factor (bounds compared in f64), else with s = (original / wavelen
- low) / (high - low): (1 - s) * inv / factor + s * inv in fp32;
angle = float(pos) * inv_freq[i] in fp32,
cos/sin from libdevice; rotate_half pairs (i, i + d/2) or interleaved pairs
(2i, 2i+1).
Thread mapping: grid rows, block 128; block r handles row r, thread x the
pairs p = x, x + 128, ... of the heads * d/2 pairs (head p / (d/2), pair
p % (d/2)). in == out is allowed (each pair is read before it is written by
the same thread).""")
    r = f.gpu_id("block_id")
    tid = f.gpu_id("thread_id")
    d = f.div("%dim", "%heads")
    half = f.div(d, f.c(2, "i64"))
    npairs = f.mul("%heads", half)
    pos = f.sitofp(f.ld("%positions", r, "i64"), "f32")
    base = f.mul(r, "%dim")
    th = f.extf("%theta")
    inter = f.cmp("ne", "%interleaved", f.c(0, "i32"))
    p, _, _ = strided(f, tid, npairs, 128)
    h = f.div(p, half)
    i = f.rem(p, half)
    ex = f.div(f.sitofp(f.mul(i, f.c(2, "i64")), "f64"), f.sitofp(d, "f64"))
    pw = f.op("math.powf %s, %s : f64" % (th, ex), "f64")
    inv0 = f.div(f.c(1.0, "f32"), f.truncf(pw))
    wl = f.div(f.c(2.0 * math.pi, "f32"), inv0)
    wld = f.extf(wl)
    orig = f.extf("%original")
    keep = f.cmp("olt", wld, f.div(orig, f.extf("%high_freq_factor")))
    low = f.cmp("ogt", wld, f.div(orig, f.extf("%low_freq_factor")))
    smooth = f.div(f.sub(f.div("%original", wl), "%low_freq_factor"),
                   f.sub("%high_freq_factor", "%low_freq_factor"))
    mid = f.add(f.div(f.mul(f.sub(f.c(1.0, "f32"), smooth), inv0), "%factor"), f.mul(smooth, inv0))
    scaled = f.sel(keep, inv0, f.sel(low, f.div(inv0, "%factor"), mid))
    inv = f.sel(f.cmp("ogt", "%factor", f.c(0.0, "f32")), scaled, inv0)
    ang = f.mul(pos, inv)
    cs = f.math("cos", ang)
    sn = f.math("sin", ang)
    hb = f.add(base, f.mul(h, d))
    i2 = f.mul(i, f.c(2, "i64"))
    ia = f.add(hb, f.sel(inter, i2, i))
    ib = f.add(hb, f.sel(inter, f.add(i2, f.c(1, "i64")), f.add(i, half)))
    a = f.ld("%in", ia, "f32")
    b = f.ld("%in", ib, "f32")
    # interleaved: o[2i] = a c - b s, o[2i+1] = a s + b c
    # rotate_half: o[i] = a c - b s, o[i+half] = b c + a s
    oa = f.sub(f.mul(a, cs), f.mul(b, sn))
    ob = f.if_(inter, ["f32"])
    v1 = f.add(f.mul(a, sn), f.mul(b, cs))
    f.else_([v1])
    v2 = f.add(f.mul(b, cs), f.mul(a, sn))
    f.end([v2])
    f.st("%out", ia, oa)
    f.st("%out", ib, ob[0])
    f.end()
    return f


# -----------------------------------------------------------------------------
# The orthogonal transform of numerics::orthogonalTransformInPlace
# -----------------------------------------------------------------------------

def butterflies(f, smem, tid, n, p, nt):
    """Unnormalized Sylvester butterflies over each of the n / p blocks of p
    values in shared memory: stage len = 1, 2, ..., p/2; pair t of a stage
    is (j, j + len) with a = t / (p/2), r = t % (p/2),
    j = a p + (r / len) 2 len + r % len: v[j], v[j+len] = u + w, u - w, the
    same float operations as sylvesterButterflies (so the same bits)."""
    stages = f.op("math.cttz %s : i64" % p, "i64")
    hp = f.shr(p, f.c(1, "i64"))
    npair = f.shr(n, f.c(1, "i64"))
    st, _, _ = f.for_(f.c(0, "i64"), stages, f.c(1, "i64"))
    ln = f.shl(f.c(1, "i64"), st)
    t, _, _ = strided(f, tid, npair, nt)
    a = f.div(t, hp)
    rr = f.rem(t, hp)
    j = f.add(f.mul(a, p), f.add(f.mul(f.div(rr, ln), f.shl(ln, f.c(1, "i64"))), f.rem(rr, ln)))
    pj = f.gep(smem, j, "f32")
    pk = f.gep(smem, f.add(j, ln), "f32")
    u = f.load(pj, "f32")
    w = f.load(pk, "f32")
    f.store(f.add(u, w), pj)
    f.store(f.sub(u, w), pk)
    f.end()
    f.barrier()
    f.end()


def transform_setup(f, q, m, n):
    """p, whether Q is a +-1 Hadamard matrix, and the final scale."""
    p = f.div(n, m)
    mgt1 = f.cmp("sgt", m, f.c(1, "i64"))
    hr = f.if_(mgt1, ["i1"])
    q0 = f.math("absf", f.ld(q, f.c(0, "i64"), "f32"))
    f.else_([f.cmp("oeq", q0, f.c(1.0, "f32"))])
    f.end([f.op("arith.constant true", "i1")])
    had = hr[0]
    # Hadamard: 1/sqrt(n) (hadamardTransform); fallback: 1/sqrt(p).
    cnt = f.sel(had, n, p)
    scale = f.div(f.c(1.0, "f32"), f.sqrt_rn(f.sitofp(cnt, "f32")))
    return p, mgt1, had, scale


def transform_value(f, smem, q, m, p, mgt1, had, scale, idx):
    """Output idx = a p + b of the transform, from the butterflied values
    z in shared memory: (sum_c Q[c][a] z[c p + b]) * scale, summed over c in
    order: in fp32 for a +-1 Hadamard Q (exactly hadamardTransform's adds
    and subtracts), in f64 for the orthogonal fallback (as the CPU's double
    accumulation; Q itself is fp32 here)."""
    r = f.if_(mgt1, ["f32"])
    a = f.div(idx, p)
    b = f.rem(idx, p)
    rh = f.if_(had, ["f32"])
    c, (acc,), (s,) = f.for_(f.c(0, "i64"), m, f.c(1, "i64"), [f.c(0.0, "f32")])
    qv = f.ld(q, f.add(f.mul(c, m), a), "f32")
    z = f.ld(smem, f.add(f.mul(c, p), b), "f32")
    f.end([f.add(acc, f.mul(qv, z))])
    f.else_([f.mul(s, scale)])
    c, (acc,), (s2,) = f.for_(f.c(0, "i64"), m, f.c(1, "i64"), [f.c(0.0, "f64")])
    qv = f.extf(f.ld(q, f.add(f.mul(c, m), a), "f32"))
    z = f.extf(f.ld(smem, f.add(f.mul(c, p), b), "f32"))
    f.end([f.add(acc, f.mul(z, qv))])
    f.end([f.mul(f.truncf(s2), scale)])
    f.else_([rh[0]])
    v = f.mul(f.ld(smem, idx, "f32"), scale)
    f.end([v])
    return r[0]


def hadamard():
    f = Fn("sq_hadamard", [("out", P), ("in", P), ("rows", "i64"), ("n", "i64"), ("q", P), ("m", "i64")], 256, """sq_hadamard(out, in, rows, n, q (m x m fp32, 0 when m == 1), m):
out = in (Q kron H_p) / sqrt(p) per row, n = m p, index a p + b: the transform
of numerics::orthogonalTransformInPlace. Steps as in Hadamard.cpp: the row
goes to shared memory, Sylvester butterflies over each block of p (same
float operations, same bits), then out[a p + b] = sum_c Q[c][a] z[c p + b]
times the scale. Q as uploaded: a Hadamard matrix with +-1 entries
(recognized by |Q[0][0]| == 1; then the scale is 1/sqrt(n), i.e. Q/sqrt(m)
is the orthogonal factor, as hadamardTransform) or the orthogonal fallback
(scale 1/sqrt(p)).
Thread mapping: grid rows, block 256, dyn smem 4 n; thread x handles
elements x, x + 256, ... in each phase, barriers between the phases and
between butterfly stages. in == out is allowed (the row is in shared
memory before anything is written).""")
    r = f.gpu_id("block_id")
    tid = f.gpu_id("thread_id")
    s = f.addr("sq_dyn_smem")
    base = f.mul(r, "%n")
    i, _, _ = strided(f, tid, "%n", 256)
    f.st(s, i, f.ld("%in", f.add(base, i), "f32"))
    f.end()
    f.barrier()
    p, mgt1, had, scale = transform_setup(f, "%q", "%m", "%n")
    butterflies(f, s, tid, "%n", p, 256)
    i, _, _ = strided(f, tid, "%n", 256)
    v = transform_value(f, s, "%q", "%m", p, mgt1, had, scale, i)
    f.st("%out", f.add(base, i), v)
    f.end()
    return f


# -----------------------------------------------------------------------------
# SpinQuant's quantizer
# -----------------------------------------------------------------------------

def group_scale(f, lo, hi, bits, sym, clip):
    """numerics::groupScale with shrink 1: l = lo * clip, h = hi * clip in
    f64; symmetric: scale = float(max(-l, h) / (2^(b-1) - 1)), zero 0;
    asymmetric: scale = float((h - l) / (2^b - 1)),
    zero = rint(float(-l) / scale); !(scale > 0) gives scale 1, zero 0.
    Returns (scale, zero, qmin, qmax) as f32."""
    cf = f.extf(clip)
    l = f.mul(f.extf(lo), cf)
    h = f.mul(f.extf(hi), cf)
    one = f.c(1, "i32")
    b1 = f.sub(bits, one)
    issym = f.cmp("ne", sym, f.c(0, "i32"))
    qs = f.sub(f.shl(one, b1), one)              # 2^(b-1) - 1
    qa = f.sub(f.shl(one, bits), one)            # 2^b - 1
    qmax = f.sitofp(f.sel(issym, qs, qa), "f32")
    qmin = f.sel(issym, f.sitofp(f.sub(f.c(0, "i32"), f.shl(one, b1)), "f32"), f.c(0.0, "f32"))
    ssym = f.truncf(f.div(f.fmax(f.neg(l), h), f.sitofp(qs, "f64")))
    sasym = f.truncf(f.div(f.sub(h, l), f.sitofp(qa, "f64")))
    scale = f.sel(issym, ssym, sasym)
    pos = f.cmp("ogt", scale, f.c(0.0, "f32"))
    za = f.math("roundeven", f.div(f.truncf(f.neg(l)), scale))
    zero = f.sel(issym, f.c(0.0, "f32"), f.sel(pos, za, f.c(0.0, "f32")))
    scale = f.sel(pos, scale, f.c(1.0, "f32"))
    zero = f.sel(pos, zero, f.c(0.0, "f32"))
    return scale, zero, qmin, qmax


def quantize_value(f, x, scale, zero, qmin, qmax):
    """numerics::quantizeValue: clamp(rint(x / scale) + zero), as f32."""
    q = f.add(f.math("roundeven", f.div(x, scale)), zero)
    return f.fmin(f.fmax(q, qmin), qmax)


def minmax_loop(f, tid, begin, end, nt, value):
    """Per-thread min/max (starting at 0, as groupScale) over
    begin + tid, ... < end, then block-reduced."""
    z = f.c(0.0, "f32")
    i, (lo, hi), (rl, rh) = f.for_(f.add(begin, tid), end, f.c(nt, "i64"), [z, z])
    v = value(i)
    f.end([f.fmin(lo, v), f.fmax(hi, v)])
    return f.block_reduce([(rl, "min"), (rh, "max")], tid)


def fake_quant():
    f = Fn("sq_fake_quant", [("out", P), ("in", P), ("rows", "i64"), ("cols", "i64"), ("bits", "i32"), ("sym", "i32"), ("group", "i64"), ("clip", "f32")], 256, """sq_fake_quant(out, in, rows, cols, bits, sym, group (0: the row), clip):
per group, SpinQuant's quantizer (group_scale/quantize_value above) and
out = (q - zero) * scale, as numerics::fakeQuantRows.
Thread mapping: grid rows, block 256; groups one after the other, the
block's threads over the group's values (strided by 256), block min/max
reduction per group. in == out is allowed (a group is read for its range
before a barrier, then each value is read and written by one thread).""")
    r = f.gpu_id("block_id")
    tid = f.gpu_id("thread_id")
    gpos = f.cmp("sgt", "%group", f.c(0, "i64"))
    grp = f.sel(gpos, "%group", "%cols")
    base = f.mul(r, "%cols")
    g0, _, _ = f.for_(f.c(0, "i64"), "%cols", grp)
    gend = f.smin(f.add(g0, grp), "%cols")
    lo, hi = minmax_loop(f, tid, g0, gend, 256, lambda i: f.ld("%in", f.add(base, i), "f32"))
    scale, zero, qmin, qmax = group_scale(f, lo, hi, "%bits", "%sym", "%clip")
    i, _, _ = f.for_(f.add(g0, tid), gend, f.c(256, "i64"))
    x = f.ld("%in", f.add(base, i), "f32")
    q = quantize_value(f, x, scale, zero, qmin, qmax)
    f.st("%out", f.add(base, i), f.mul(f.sub(q, zero), scale))
    f.end()
    f.end()
    return f


def quantize():
    f = Fn("sq_quantize", [("codes", P), ("scales", P), ("zeros", P), ("x", P), ("m", "i64"), ("k", "i64"), ("kpad", "i64"), ("bits", "i32"), ("sym", "i32"), ("group", "i64"), ("clip", "f32"), ("q", P), ("hm", "i64"), ("hadamard", "i32")], 256, """sq_quantize(codes: u8*, scales, zeros: i32*, x, m, k, kpad, bits, sym,
group, clip, q, hm, hadamard): per row of x [m, k], optionally the transform
of sq_hadamard (n = k, Q = q of order hm), then per group of `group` values
(0: the row; a short last group as the CPU runtime) SpinQuant's quantizer;
codes[m, kpad] one byte per value, symmetric codes + 2^(bits-1) with zero
point 2^(bits-1), tail k..kpad zero; scales/zeros [m, ceil(k / group)].
Thread mapping: grid m, block 256, dyn smem 4 k: the row goes to shared
memory (butterflied there when hadamard); with hm > 1 the dense m x m
factor is recomputed for each use (twice per value: range, then codes),
which keeps shared memory at 4 k. Groups one after the other as in
sq_fake_quant.""")
    r = f.gpu_id("block_id")
    tid = f.gpu_id("thread_id")
    s = f.addr("sq_dyn_smem")
    base = f.mul(r, "%k")
    i, _, _ = strided(f, tid, "%k", 256)
    f.st(s, i, f.ld("%x", f.add(base, i), "f32"))
    f.end()
    f.barrier()
    doh = f.cmp("ne", "%hadamard", f.c(0, "i32"))
    # Without the transform: m = 1, scale 1 (value = s[i] * 1 exactly).
    hm = f.sel(doh, "%hm", f.c(1, "i64"))
    p, mgt1, had, scale = transform_setup(f, "%q", hm, "%k")
    f.if_(doh)
    butterflies(f, s, tid, "%k", p, 256)
    f.end()
    one = f.c(1.0, "f32")
    tscale = f.sel(doh, scale, one)
    value = lambda idx: transform_value(f, s, "%q", hm, p, mgt1, had, tscale, idx)
    gpos = f.cmp("sgt", "%group", f.c(0, "i64"))
    glt = f.cmp("slt", "%group", "%k")
    grp = f.sel(f.op("arith.andi %s, %s : i1" % (gpos, glt), "i1"), "%group", "%k")
    ngroups = f.ceildiv("%k", grp)
    issym = f.cmp("ne", "%sym", f.c(0, "i32"))
    off = f.sel(issym, f.shl(f.c(1, "i32"), f.sub("%bits", f.c(1, "i32"))), f.c(0, "i32"))
    offf = f.sitofp(off, "f32")
    crow = f.mul(r, "%kpad")
    gi, _, _ = f.for_(f.c(0, "i64"), ngroups, f.c(1, "i64"))
    g0 = f.mul(gi, grp)
    gend = f.smin(f.add(g0, grp), "%k")
    lo, hi = minmax_loop(f, tid, g0, gend, 256, value)
    sc, zero, qmin, qmax = group_scale(f, lo, hi, "%bits", "%sym", "%clip")
    i, _, _ = f.for_(f.add(g0, tid), gend, f.c(256, "i64"))
    qv = quantize_value(f, value(i), sc, zero, qmin, qmax)
    code = f.trunc(f.fptosi(f.add(qv, offf)), "i8")
    f.st("%codes", f.add(crow, i), code)
    f.end()
    f.if_(f.cmp("eq", tid, f.c(0, "i64")))
    gidx = f.add(f.mul(r, ngroups), gi)
    f.st("%scales", gidx, sc)
    zi = f.sel(issym, off, f.fptosi(zero))
    f.st("%zeros", gidx, zi)
    f.end()
    f.end()
    i, _, _ = f.for_(f.add("%k", tid), "%kpad", f.c(256, "i64"))
    f.st("%codes", f.add(crow, i), f.c(0, "i8"))
    f.end()
    return f


# -----------------------------------------------------------------------------
# fp32 / f16 / bf16 linear
# -----------------------------------------------------------------------------

def linear16():
    f = Fn("sq_linear16", [("out", P), ("x", P), ("w", P), ("bias", P), ("m", "i64"), ("k", "i64"), ("n", "i64"), ("storage", "i32")], 256, """sq_linear16(out, x, w, bias (0: none), m, k, n, storage): out = x w^T +
bias, w [n, k] fp32 (0), f16 (1), bf16 (2) widened exactly; fp32 products
and sums.
Thread mapping: grid (ceil(n / 8), m), block 256: warp w of block (bx, by)
computes out[by, 8 bx + w]; lane l sums k = l, l + 32, ... (coalesced rows
of x and w), then a warp butterfly reduction; lane 0 stores.""")
    tid = f.gpu_id("thread_id")
    lane = f.and_(tid, f.c(31, "i64"))
    warp = f.shr(tid, f.c(5, "i64"))
    j = f.add(f.mul(f.gpu_id("block_id", "x"), f.c(8, "i64")), warp)
    i = f.gpu_id("block_id", "y")
    f.if_(f.cmp("slt", j, "%n"))
    xb = f.mul(i, "%k")
    wb = f.mul(j, "%k")
    kk, (acc,), (s,) = f.for_(lane, "%k", f.c(32, "i64"), [f.c(0.0, "f32")])
    xv = f.ld("%x", f.add(xb, kk), "f32")
    wv = widen(f, "%w", f.add(wb, kk), "%storage")
    f.end([f.add(acc, f.mul(xv, wv))])
    (tot,) = f.warp_reduce([(s, "add")])
    f.if_(f.cmp("eq", lane, f.c(0, "i64")))
    bb = f.if_(f.nonnull("%bias"), ["f32"])
    bv = f.add(tot, f.ld("%bias", j, "f32"))
    f.else_([bv])
    f.end([tot])
    f.st("%out", f.add(f.mul(i, "%n"), j), bb[0])
    f.end()
    f.end()
    return f


# -----------------------------------------------------------------------------
# KV cache and attention
# -----------------------------------------------------------------------------

def kv_append():
    f = Fn("sq_kv_append", [("codes", P), ("scales", P), ("zeros", P), ("fp", P), ("rows", P), ("batch", "i64"), ("seq", "i64"), ("cached", "i64"), ("capacity", "i64"), ("features", "i64"), ("bits", "i32"), ("sym", "i32"), ("group", "i64"), ("clip", "f32")], 128, """sq_kv_append(codes, scales, zeros, fp, rows, batch, seq, cached, capacity,
features, bits, sym, group, clip): row t = b seq + s of rows [batch seq,
features] goes to cache row b capacity + cached + s: fp32 when bits == 0,
else per group SpinQuant's quantizer (scale and zero point fp32), codes
(+ 2^(bits-1) when symmetric) two per byte (element 2j low nibble) when
bits <= 4, else one per byte; as rt::KVStore::append.
Thread mapping: grid batch seq, block 128: block t handles row t. Phase 1:
groups one after the other (block min/max), thread 0 writes scale/zero;
barrier; phase 2: thread x writes bytes x, x + 128, ... of the row, each byte
from its one or two elements (so no two threads write one byte), reading
back the scales/zeros of phase 1.""")
    t = f.gpu_id("block_id")
    tid = f.gpu_id("thread_id")
    b = f.div(t, "%seq")
    sidx = f.rem(t, "%seq")
    row = f.add(f.add(f.mul(b, "%capacity"), "%cached"), sidx)
    xb = f.mul(t, "%features")
    isfp = f.cmp("eq", "%bits", f.c(0, "i32"))
    f.if_(isfp)
    c, _, _ = strided(f, tid, "%features", 128)
    f.st("%fp", f.add(f.mul(row, "%features"), c), f.ld("%rows", f.add(xb, c), "f32"))
    f.end()
    f.else_()
    gpos = f.cmp("sgt", "%group", f.c(0, "i64"))
    grp = f.sel(gpos, "%group", "%features")
    ngroups = f.div("%features", grp)
    g, _, _ = f.for_(f.c(0, "i64"), ngroups, f.c(1, "i64"))
    g0 = f.mul(g, grp)
    lo, hi = minmax_loop(f, tid, g0, f.add(g0, grp), 128, lambda i: f.ld("%rows", f.add(xb, i), "f32"))
    sc, zero, _, _ = group_scale(f, lo, hi, "%bits", "%sym", "%clip")
    f.if_(f.cmp("eq", tid, f.c(0, "i64")))
    gidx = f.add(f.mul(row, ngroups), g)
    f.st("%scales", gidx, sc)
    f.st("%zeros", gidx, zero)
    f.end()
    f.end()
    f.barrier()
    issym = f.cmp("ne", "%sym", f.c(0, "i32"))
    off = f.sel(issym, f.shl(f.c(1, "i32"), f.sub("%bits", f.c(1, "i32"))), f.c(0, "i32"))
    offf = f.sitofp(off, "f32")
    small = f.cmp("sle", "%bits", f.c(4, "i32"))
    rowbytes = f.sel(small, f.div(f.add("%features", f.c(1, "i64")), f.c(2, "i64")), "%features")
    per = f.sel(small, f.c(2, "i64"), f.c(1, "i64"))

    def code(c):
        gidx = f.add(f.mul(row, ngroups), f.div(c, grp))
        sc = f.ld("%scales", gidx, "f32")
        zero = f.ld("%zeros", gidx, "f32")
        _, _, qmin, qmax = group_scale(f, f.c(0.0, "f32"), f.c(0.0, "f32"), "%bits", "%sym", "%clip")
        q = quantize_value(f, f.ld("%rows", f.add(xb, c), "f32"), sc, zero, qmin, qmax)
        return f.fptosi(f.add(q, offf))

    j, _, _ = strided(f, tid, rowbytes, 128)
    c0 = f.mul(j, per)
    v0 = code(c0)
    c1 = f.add(c0, f.c(1, "i64"))
    two = f.op("arith.andi %s, %s : i1" % (small, f.cmp("slt", c1, "%features")), "i1")
    hv = f.if_(two, ["i32"])
    v1 = code(c1)
    f.else_([f.shl(v1, f.c(4, "i32"))])
    f.end([f.c(0, "i32")])
    f.st("%codes", f.add(f.mul(row, rowbytes), j), f.trunc(f.or_(v0, hv[0]), "i8"))
    f.end()
    f.end()
    return f


def kv_read(f, codes, scales, zeros, fp, row, c, feats, bits, sym, group):
    """Dequantized element c of cache row `row` ((u - offset - zero) scale),
    or the fp32 value when bits == 0 (rt::KVStore::read)."""
    r = f.if_(f.cmp("eq", bits, f.c(0, "i32")), ["f32"])
    v = f.ld(fp, f.add(f.mul(row, feats), c), "f32")
    f.else_([v])
    small = f.cmp("sle", bits, f.c(4, "i32"))
    rowbytes = f.sel(small, f.div(f.add(feats, f.c(1, "i64")), f.c(2, "i64")), feats)
    rb = f.mul(row, rowbytes)
    byte = f.zext(f.ld(codes, f.add(rb, f.sel(small, f.shr(c, f.c(1, "i64")), c)), "i8"), "i32")
    sh = f.trunc(f.shl(f.and_(c, f.c(1, "i64")), f.c(2, "i64")))
    nib = f.and_(f.shr(byte, sh), f.c(15, "i32"))
    u = f.sel(small, nib, byte)
    issym = f.cmp("ne", sym, f.c(0, "i32"))
    off = f.sel(issym, f.shl(f.c(1, "i32"), f.sub(bits, f.c(1, "i32"))), f.c(0, "i32"))
    gpos = f.cmp("sgt", group, f.c(0, "i64"))
    grp = f.sel(gpos, group, feats)
    gidx = f.add(f.mul(row, f.div(feats, grp)), f.div(c, grp))
    z = f.ld(zeros, gidx, "f32")
    s = f.ld(scales, gidx, "f32")
    dq = f.mul(f.sub(f.sitofp(f.sub(u, off), "f32"), z), s)
    f.end([dq])
    return r[0]


def attention():
    f = Fn("sq_attention", [("out", P), ("q", P), ("kcodes", P), ("kscales", P), ("kzeros", P), ("kfp", P), ("vcodes", P), ("vscales", P), ("vzeros", P), ("vfp", P), ("batch", "i64"), ("seq", "i64"), ("cached", "i64"), ("capacity", "i64"), ("heads", "i64"), ("kv_heads", "i64"), ("head_dim", "i64"), ("scale", "f32"), ("causal", "i32"), ("window", "i64"), ("kbits", "i32"), ("ksym", "i32"), ("kgroup", "i64"), ("vbits", "i32"), ("vsym", "i32"), ("vgroup", "i64")], 128, """sq_attention(out, q, k*, v*, batch, seq, cached, capacity, heads, kv_heads,
head_dim, scale, causal, window, kbits, ksym, kgroup, vbits, vsym, vgroup):
causal GQA of query i (of seq new ones) over keys 0 .. cached + i (all
cached + seq when causal == 0); with window > 0 (causal only) just the keys
cached + i - window + 1 .. cached + i (numerics::visibleKeys); keys/values
dequantized from the cache as KVStore::read.
As rt::attention: score_j = (sum_e q_e k_je, over e in order) * scale,
p_j = exp(score_j - max), out_e = sum_j (p_j * (1 / sum p)) v_je over j in
order; sum p is a block reduction (the CPU sums in order: rounding only).
Thread mapping: grid (batch heads, seq), block 128, dyn smem 4 (cached +
seq): block (b heads + h, i); phase 1 thread x computes scores of keys x,
x + 128, ... into shared memory; block max; phase 2 exponentials and block
sum; phase 3 thread x computes output features x, x + 128, ...""")
    tid = f.gpu_id("thread_id")
    bh = f.gpu_id("block_id", "x")
    i = f.gpu_id("block_id", "y")
    b = f.div(bh, "%heads")
    h = f.rem(bh, "%heads")
    d = "%head_dim"
    g = f.div(h, f.div("%heads", "%kv_heads"))
    total = f.add("%cached", "%seq")
    causal = f.cmp("ne", "%causal", f.c(0, "i32"))
    visible = f.sel(causal, f.smin(total, f.add(f.add("%cached", i), f.c(1, "i64"))), total)
    windowed = f.and_(causal, f.cmp("sgt", "%window", f.c(0, "i64")))
    wlo = f.smax(f.c(0, "i64"), f.add(f.sub(f.add("%cached", i), "%window"), f.c(1, "i64")))
    lo = f.sel(windowed, wlo, f.c(0, "i64"))
    kvf = f.mul("%kv_heads", d)
    qf = f.mul("%heads", d)
    qrow = f.add(f.mul(f.add(f.mul(b, "%seq"), i), qf), f.mul(h, d))
    cbase = f.mul(b, "%capacity")
    fo = f.mul(g, d)
    s = f.addr("sq_dyn_smem")
    ninf = f.c(float("-inf"), "f32")
    j, (mx,), (rmx,) = f.for_(f.add(lo, tid), visible, f.c(128, "i64"), [ninf])
    e, (acc,), (dot,) = f.for_(f.c(0, "i64"), d, f.c(1, "i64"), [f.c(0.0, "f32")])
    qe = f.ld("%q", f.add(qrow, e), "f32")
    ke = kv_read(f, "%kcodes", "%kscales", "%kzeros", "%kfp", f.add(cbase, j), f.add(fo, e), kvf, "%kbits", "%ksym", "%kgroup")
    f.end([f.add(acc, f.mul(qe, ke))])
    sc = f.mul(dot, "%scale")
    f.st(s, j, sc)
    f.end([f.op("arith.maximumf %s, %s : f32" % (mx, sc), "f32")])
    (gmax,) = f.block_reduce([(rmx, "max")], tid)
    j, (acc,), (rsum,) = f.for_(f.add(lo, tid), visible, f.c(128, "i64"), [f.c(0.0, "f32")])
    pj = f.gep(s, j, "f32")
    ex = f.math("exp", f.sub(f.load(pj, "f32"), gmax))
    f.store(ex, pj)
    f.end([f.add(acc, ex)])
    (tot,) = f.block_reduce([(rsum, "add")], tid)  # starts with a barrier
    inv = f.div(f.c(1.0, "f32"), tot)
    e, _, _ = strided(f, tid, d, 128)
    j, (acc,), (o,) = f.for_(lo, visible, f.c(1, "i64"), [f.c(0.0, "f32")])
    p = f.mul(f.ld(s, j, "f32"), inv)
    ve = kv_read(f, "%vcodes", "%vscales", "%vzeros", "%vfp", f.add(cbase, j), f.add(fo, e), kvf, "%vbits", "%vsym", "%vgroup")
    f.end([f.add(acc, f.mul(p, ve))])
    f.st("%out", f.add(qrow, e), o)
    f.end()
    return f


# -----------------------------------------------------------------------------
# Quantized GEMMs on tensor cores
# -----------------------------------------------------------------------------

FRAGMENTS = """Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k64" (.u4/.s4)
and "... mma.m16n8k32" (.u8/.s8)); lane = 4 gid + tig (gid = lane >> 2,
tig = lane & 3); the lowest-numbered element sits in the lowest bits of its
32-bit register:

  m16n8k64 u4 x s4 (8 nibbles per register)
    A (16 x 64, row)  a0..a31 in 4 regs: reg r holds 8 consecutive k
        reg0: row gid,     k = 8 tig .. 8 tig + 7
        reg1: row gid + 8, k = 8 tig .. 8 tig + 7
        reg2: row gid,     k = 32 + 8 tig .. + 7
        reg3: row gid + 8, k = 32 + 8 tig .. + 7
    B (64 x 8, col)   b0..b15 in 2 regs, column n = gid
        reg0: k = 8 tig .. 8 tig + 7;  reg1: k = 32 + 8 tig .. + 7
  m16n8k32 u8 x s8 (4 bytes per register)
    A (16 x 32, row)  reg0: row gid, k = 4 tig .. 4 tig + 3; reg1: row gid + 8,
        same k; reg2: row gid, k = 16 + 4 tig .. + 3; reg3: row gid + 8, same
    B (32 x 8, col)   column n = gid; reg0: k = 4 tig .. + 3; reg1: k = 16 +
        4 tig .. + 3
  C/D (16 x 8, s32, both shapes): c0, c1: row gid, columns 2 tig, 2 tig + 1;
        c2, c3: row gid + 8, same columns."""


def qgemm(bits):
    s4 = bits == 4
    name = "sq_qgemm_s4" if s4 else "sq_qgemm_s8"
    BK = 64 if s4 else 32                 # k values per stage (= mma k)
    ABYTES = BK                           # activation codes: one byte each
    BBYTES = BK // 2 if s4 else BK        # weight bytes per column per stage
    ASTR = ABYTES + 16                    # padded shared-memory row strides
    BSTR = BBYTES + 16
    ATILE, BTILE = 64 * ASTR, 64 * BSTR   # one stage
    f = Fn(name, [("out", P), ("codes", P), ("ascales", P), ("azeros", P), ("w", P), ("wscales", P), ("wsums", P), ("bias", P), ("m", "i64"), ("n", "i64"), ("kpad", "i64"), ("blockk", "i64"), ("ablocks", "i64"), ("wblocks", "i64")], 128, """%s(out, codes: u8*, ascales, azeros: i32*, w: %s, wscales, wsums: i32*,
bias (0: none), m, n, kpad, blockk, ablocks, wblocks):
  out[i, j] = sum over blocks b of blockk values (b < nb = kpad / blockk) of
    (float(sum_k codes[i,k] w[j,k] - azeros[i, b/ablocks] wsums[j, b])
       * wscales[j, b/wblocks]) * ascales[i, b/ablocks]
  (+ bias[j]), blocks added in order from 0.0 as rt::qgemm does; the
  integer sums are exact (s32 mma accumulators, one block at a time).
  Scale rows hold ceil(nb / ablocks) (ceil(nb / wblocks)) entries.
Tiling: block (bx, by) computes out[64 by .. +64, 64 bx .. +64]; 4 warps in
2 x 2, warp (wm, wn) = (warp >> 1, warp & 1) owns rows 32 wm .. +32 and
columns 32 wn .. +32 of the tile: 2 x 4 mma tiles m16n8k%d (%s), 32 s32
accumulators and 32 fp32 block sums per thread.
K is walked in stages of %d values (one mma k step), double-buffered in
shared memory and staged with cp.async.cg (16 bytes, commit/wait groups):
stage s+1 is in flight while stage s is multiplied. Per stage: the A tile
(64 rows x %d bytes of codes, padded rows of %d bytes) and the B tile (64
weight rows x %d bytes, rows of %d bytes); thread x copies 16-byte chunks x
(and x + 128). Rows (columns) past m (n) copy row m-1 (n-1) instead and
are never stored. %s
Requires kpad a multiple of blockk, blockk a multiple of %d, 16-byte aligned
rows (kpad a multiple of %d) and base pointers.""" % (
        name, "packed s4 (element 2j low nibble of byte j)" if s4 else "s8",
        BK, "u4 x s4" if s4 else "u8 x s8", BK, ABYTES, ASTR, BBYTES, BSTR,
        "The u4 A fragments are packed from the byte codes when they are read from shared memory (8 codes -> one register)." if s4 else "",
        BK, 32 if s4 else 16))
    tid = f.gpu_id("thread_id", ty="i32")
    lane = f.and_(tid, f.c(31, "i32"))
    warp = f.shr(tid, f.c(5, "i32"))
    gid = f.shr(lane, f.c(2, "i32"))
    tig = f.and_(lane, f.c(3, "i32"))
    wm = f.shr(warp, f.c(1, "i32"))
    wn = f.and_(warp, f.c(1, "i32"))
    row0 = f.mul(f.gpu_id("block_id", "y"), f.c(64, "i64"))
    col0 = f.mul(f.gpu_id("block_id", "x"), f.c(64, "i64"))
    m1 = f.sub("%m", f.c(1, "i64"))
    n1 = f.sub("%n", f.c(1, "i64"))
    sa = f.addr("sq_gemm_a")
    sb = f.addr("sq_gemm_b")
    gcodes = f.to_global("%codes")
    gw = f.to_global("%w")
    wrow = f.shr("%kpad", f.c(1, "i64")) if s4 else "%kpad"
    nstages = f.trunc(f.div("%kpad", f.c(BK, "i64")))
    spb = f.trunc(f.div("%blockk", f.c(BK, "i64")))
    nb = f.div("%kpad", "%blockk")
    nba = f.ceildiv(nb, "%ablocks")
    nbw = f.ceildiv(nb, "%wblocks")

    # Per-thread copy assignments (stage independent parts).
    def chunks(total, per_row):
        res = []
        for rep in range(total // 128):
            cidx = f.add(tid, f.c(128 * rep, "i32"))
            r = f.div(cidx, f.c(per_row, "i32"))
            part = f.rem(cidx, f.c(per_row, "i32"))
            res.append((r, part))
        return res

    a_chunks = []
    for r, part in chunks(64 * ABYTES // 16, ABYTES // 16):
        grow = f.smin(f.add(row0, f.sext(r)), m1)
        src = f.add(f.mul(grow, "%kpad"), f.sext(f.mul(part, f.c(16, "i32"))))
        dst = f.add(f.mul(r, f.c(ASTR, "i32")), f.mul(part, f.c(16, "i32")))
        a_chunks.append((src, dst))
    b_chunks = []
    for r, part in chunks(64 * BBYTES // 16, BBYTES // 16):
        gcol = f.smin(f.add(col0, f.sext(r)), n1)
        src = f.add(f.mul(gcol, wrow), f.sext(f.mul(part, f.c(16, "i32"))))
        dst = f.add(f.mul(r, f.c(BSTR, "i32")), f.mul(part, f.c(16, "i32")))
        b_chunks.append((src, dst))

    def issue(stage):
        buf = f.and_(stage, f.c(1, "i32"))
        s64 = f.sext(stage)
        aoff = f.mul(s64, f.c(ABYTES, "i64"))
        boff = f.mul(s64, f.c(BBYTES, "i64"))
        abuf = f.mul(buf, f.c(ATILE, "i32"))
        bbuf = f.mul(buf, f.c(BTILE, "i32"))
        for src, dst in a_chunks:
            gp = f.gep(gcodes, f.add(src, aoff), "i8")
            sp = f.gep(sa, f.add(abuf, dst), "i8")
            f.e("nvvm.cp.async.shared.global %s, %s, 16, cache = cg : !llvm.ptr<3>, !llvm.ptr<1>" % (sp, gp))
        for src, dst in b_chunks:
            gp = f.gep(gw, f.add(src, boff), "i8")
            sp = f.gep(sb, f.add(bbuf, dst), "i8")
            f.e("nvvm.cp.async.shared.global %s, %s, 16, cache = cg : !llvm.ptr<3>, !llvm.ptr<1>" % (sp, gp))
        f.e("nvvm.cp.async.commit.group")

    f.note("output rows/columns of this thread's accumulators (clamped for loads)")
    rowidx, colidx = {}, {}
    for mi in range(2):
        for h in range(2):
            r = f.add(f.add(row0, f.sext(f.add(f.mul(wm, f.c(32, "i32")), f.c(16 * mi + 8 * h, "i32")))), f.sext(gid))
            rowidx[(mi, h)] = (r, f.smin(r, m1))
    for ni in range(4):
        for e in range(2):
            cidx = f.add(f.add(col0, f.sext(f.add(f.mul(wn, f.c(32, "i32")), f.c(8 * ni + e, "i32")))), f.sext(f.mul(tig, f.c(2, "i32"))))
            colidx[(ni, e)] = (cidx, f.smin(cidx, n1))
    f.note("prologue: stage 0 in flight")
    issue(f.c(0, "i32"))
    zero32 = f.c(0, "i32")
    fzero = f.c(0.0, "f32")
    # accumulator index: (mi * 4 + ni) * 4 + c
    NACC = 32
    f.note("blocks of blockk values: fp32 block sums in registers")
    bi, facc, fres = f.for_(f.c(0, "i32"), f.trunc(nb), f.c(1, "i32"), [fzero] * NACC)
    f.note("stages of the block: s32 accumulators, restarted per block")
    si, iacc, ires = f.for_(zero32, spb, f.c(1, "i32"), [zero32] * NACC)
    gs = f.add(f.mul(bi, spb), si)
    nxt = f.add(gs, f.c(1, "i32"))
    f.if_(f.cmp("slt", nxt, nstages))
    issue(nxt)
    f.e("nvvm.cp.async.wait.group 1")
    f.else_()
    f.e("nvvm.cp.async.wait.group 0")
    f.end()
    f.barrier()
    buf = f.and_(gs, f.c(1, "i32"))
    abase = f.mul(buf, f.c(ATILE, "i32"))
    bbase = f.mul(buf, f.c(BTILE, "i32"))
    f.note("A fragments (2 m16 tiles), B fragments (4 n8 tiles), 8 mma")
    afr = []
    for mi in range(2):
        r = f.add(f.add(f.mul(wm, f.c(32, "i32")), f.c(16 * mi, "i32")), gid)
        regs = []
        for half, hk in ((0, 0), (8, 0), (0, 1), (8, 1)):
            rr = f.add(r, f.c(half, "i32"))
            if s4:
                # 8 codes (bytes, each < 16) at k = 32 hk + 8 tig -> 8 nibbles
                off = f.add(f.add(abase, f.mul(rr, f.c(ASTR, "i32"))), f.add(f.mul(tig, f.c(8, "i32")), f.c(32 * hk, "i32")))
                v = f.load(f.gep(sa, off, "i8"), "i64")
                lo = f.trunc(v)
                hi = f.trunc(f.shr(v, f.c(32, "i64")))

                def pack4(x):
                    t = f.or_(x, f.shr(x, f.c(4, "i32")))
                    return f.or_(f.and_(t, f.c(0xFF, "i32")), f.and_(f.shr(t, f.c(8, "i32")), f.c(0xFF00, "i32")))
                regs.append(f.or_(pack4(lo), f.shl(pack4(hi), f.c(16, "i32"))))
            else:
                off = f.add(f.add(abase, f.mul(rr, f.c(ASTR, "i32"))), f.add(f.mul(tig, f.c(4, "i32")), f.c(16 * hk, "i32")))
                regs.append(f.load(f.gep(sa, off, "i8"), "i32"))
        afr.append(regs)
    bfr = []
    for ni in range(4):
        cidx = f.add(f.add(f.mul(wn, f.c(32, "i32")), f.c(8 * ni, "i32")), gid)
        regs = []
        for hk in range(2):
            # s4: k = 32 hk + 8 tig -> byte 16 hk + 4 tig; s8: k = 16 hk + 4 tig
            off = f.add(f.add(bbase, f.mul(cidx, f.c(BSTR, "i32"))), f.add(f.mul(tig, f.c(4, "i32")), f.c(16 * hk, "i32")))
            regs.append(f.load(f.gep(sb, off, "i8"), "i32"))
        bfr.append(regs)
    st = "!llvm.struct<(i32, i32, i32, i32)>"
    new_iacc = list(iacc)
    for mi in range(2):
        for ni in range(4):
            base = (mi * 4 + ni) * 4
            cc = iacc[base:base + 4]
            r = f.op("nvvm.mma.sync A[%s] B[%s] C[%s] {layoutA = #nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>, "
                     "multiplicandAPtxType = #nvvm.mma_type<%s>, multiplicandBPtxType = #nvvm.mma_type<%s>, "
                     "intOverflowBehavior = #nvvm.mma_int_overflow<wrapped>, shape = #nvvm.shape<m = 16, n = 8, k = %d>} "
                     ": (i32, i32, i32) -> %s" % (", ".join(afr[mi]), ", ".join(bfr[ni]), ", ".join(cc),
                                                   "u4" if s4 else "u8", "s4" if s4 else "s8", BK, st), st)
            for c in range(4):
                new_iacc[base + c] = f.op("llvm.extractvalue %s[%d] : %s" % (r, c, st), "i32")
    f.barrier()
    f.end(new_iacc)
    f.note("block end: (float(I - za ws) * sw) * sa added to the block sums")
    b64 = f.sext(bi)
    ab = f.div(b64, "%ablocks")
    wbk = f.div(b64, "%wblocks")
    rows = {}
    for mi in range(2):
        for h in range(2):
            r, rc = rowidx[(mi, h)]
            ai = f.add(f.mul(rc, nba), ab)
            rows[(mi, h)] = (r, f.ld("%ascales", ai, "f32"), f.ld("%azeros", ai, "i32"))
    cols = {}
    for ni in range(4):
        for e in range(2):
            cidx, ccl = colidx[(ni, e)]
            sw = f.ld("%wscales", f.add(f.mul(ccl, nbw), wbk), "f32")
            ws = f.ld("%wsums", f.add(f.mul(ccl, nb), b64), "i32")
            cols[(ni, e)] = (cidx, sw, ws)
    new_facc = list(facc)
    for mi in range(2):
        for ni in range(4):
            for c in range(4):
                h, e = c // 2, c % 2
                idx = (mi * 4 + ni) * 4 + c
                _, sa_, za = rows[(mi, h)]
                _, sw, ws = cols[(ni, e)]
                ii = f.sub(ires[idx], f.mul(za, ws))
                v = f.mul(f.mul(f.sitofp(ii, "f32"), sw), sa_)
                new_facc[idx] = f.add(facc[idx], v)
    f.end(new_facc)
    f.note("store (+ bias) the valid part of the tile")
    hasb = f.nonnull("%bias")
    for ni in range(4):
        for e in range(2):
            cidx, _ = colidx[(ni, e)]
            cvalid = f.cmp("slt", cidx, "%n")
            f.if_(cvalid)
            bv = f.if_(hasb, ["f32"])
            bl = f.ld("%bias", cidx, "f32")
            f.else_([bl])
            f.end([fzero])
            for mi in range(2):
                for h in range(2):
                    r, _ = rowidx[(mi, h)]
                    idx = (mi * 4 + ni) * 4 + h * 2 + e
                    f.if_(f.cmp("slt", r, "%m"))
                    val = fres[idx]
                    val = f.sel(hasb, f.add(val, bv[0]), val)
                    f.st("%out", f.add(f.mul(r, "%n"), cidx), val)
                    f.end()
            f.end()
    return f


HEADER = """// Kernels.mlir - the GPU kernel library of a compiled model.
//
// GENERATED by gen_kernels.py (python3 gen_kernels.py > Kernels.mlir); edit
// the generator, not this file. The contract is lib/Runtime/CUDA/KernelABI.h:
// one gpu.func per kernel there, same names and parameters in order
// (pointers are generic !llvm.ptr, 0 = absent where allowed). Compile to PTX
// with emit_ptx.sh (README.md). The sm_80-only kernel (sq_qgemm_s4: int4
// mma does not exist on sm_90) is between the markers BEGIN/END sm80-only,
// which emit_ptx.sh drops for sm_90 and newer.
//
// Numerics follow the CPU runtime (lib/Runtime/CPU) and the executor:
// IEEE fp32 (div.rn, sqrt.rn, no fma contraction: LLVM emits mul.rn/add.rn),
// SpinQuant's quantizer in the same f64/f32 steps as numerics::groupScale,
// round-half-even (cvt.rni), libdevice for exp/cos/sin/pow (rounding may
// differ from glibc by an ulp).
//
"""


def main():
    sm90 = "--sm90" in sys.argv
    ks = [elementwise("sq_add", "add"), elementwise("sq_mul", "mul"), elementwise("sq_silu", "silu"),
          embedding(), rms_norm(), rope(), hadamard(), fake_quant(), quantize(), qgemm(8)]
    s4 = qgemm(4)
    tail = [linear16(), kv_append(), attention()]
    out = [HEADER]
    for l in FRAGMENTS.split("\n"):
        out.append("// " + l if l else "//")
    out.append("")
    out.append("module attributes {gpu.container_module} {")
    out.append("gpu.module @sq_kernels {")
    out.append("  // Dynamic shared memory (sq_hadamard, sq_quantize, sq_attention).")
    out.append("  llvm.mlir.global external @sq_dyn_smem() {addr_space = 3 : i32, alignment = 16 : i64} : !llvm.array<0 x i8>")
    out.append("  // Block reductions: 8 values x 8 warps, 8-byte slots.")
    out.append("  llvm.mlir.global internal @sq_red() {addr_space = 3 : i32, alignment = 8 : i64} : !llvm.array<512 x i8>")
    out.append("  // GEMM tiles, two stages each (sized for the larger s4 tiles).")
    out.append("  llvm.mlir.global internal @sq_gemm_a() {addr_space = 3 : i32, alignment = 16 : i64} : !llvm.array<%d x i8>" % (2 * 64 * 80))
    out.append("  llvm.mlir.global internal @sq_gemm_b() {addr_space = 3 : i32, alignment = 16 : i64} : !llvm.array<%d x i8>" % (2 * 64 * 48))
    out.append("")
    for k in ks:
        out.append(k.text())
        out.append("")
    out.append("  // BEGIN sm80-only")
    out.append(s4.text())
    out.append("  // END sm80-only")
    out.append("")
    for k in tail:
        out.append(k.text())
        out.append("")
    out.append("}")
    out.append("}")
    print("\n".join(out))


if __name__ == "__main__":
    main()
