// Runs a graph with static KV caches (ONNX Runtime's opset-24 builders:
// inputs key_cache.N / value_cache.N [batch, max_seq, ...] updated in place
// by TensorScatter at write_indices, nonpad_kv_seqlen valid slots; outputs
// updated_*) with onnxruntime (npm onnxruntime-node), as the numeric oracle
// for SQ's import of such graphs (test/Import/real-static-cache.test).
//
//   node bench/ort_static_cache.js full MODEL TOKENS.bin SEQLEN OUT.bin
//       logits [SEQLEN, vocab] of the whole prompt in one run: zero caches,
//       write_indices 0, nonpad_kv_seqlen SEQLEN
//   node bench/ort_static_cache.js cached MODEL TOKENS.bin SEQLEN PREFILL OUT.bin
//       the same logits with the cache: PREFILL tokens in one run, then one
//       token per run, each fed the updated caches, write_indices = tokens
//       so far and nonpad_kv_seqlen = tokens so far + 1
//   node bench/ort_static_cache.js compare A.bin B.bin TOLERANCE
//       max |a - b| / max |b| of two float32 files; exit 1 above TOLERANCE
// Tokens are int32 (as sq-run --tokens reads them); logits are float32.
'use strict';
const fs = require('fs');

function readInts(file, n) {
  const raw = fs.readFileSync(file);
  if (raw.length < 4 * n) throw new Error(`${file} holds fewer than ${n} tokens`);
  return Array.from({length: n}, (_, i) => raw.readInt32LE(4 * i));
}

function readFloats(file) {
  const b = fs.readFileSync(file);
  return Float32Array.from({length: b.length / 4}, (_, i) => b.readFloatLE(4 * i));
}

function toFloat32(t) {
  if (t.type === 'float32') return t.data;
  const h = t.data, f = new Float32Array(h.length);
  for (let i = 0; i < h.length; ++i) {  // fp16 -> fp32
    const x = h[i], sign = x & 0x8000 ? -1 : 1, exp = (x >> 10) & 0x1f, mant = x & 0x3ff;
    f[i] = exp === 0 ? sign * mant * Math.pow(2, -24)
         : exp === 31 ? (mant ? NaN : sign * Infinity)
         : sign * (1 + mant / 1024) * Math.pow(2, exp - 15);
  }
  return f;
}

/// The static caches' shapes with batch 1; max_seq from the graph input.
function cacheShapes(session) {
  const shapes = {};
  for (const meta of session.inputMetadata)
    if (/^(key|value)_cache/.test(meta.name)) {
      const dims = meta.shape.map((d, i) => (i === 0 ? 1 : d));
      if (dims.some((d) => typeof d !== 'number'))
        throw new Error(`static cache ${meta.name} has a dynamic dimension: ${meta.shape}`);
      shapes[meta.name] = {dims, type: meta.type};
    }
  return shapes;
}

/// One run over `ids` at positions start.., writing the caches at `start`.
async function step(ort, session, ids, start, caches) {
  const f = {}, s = ids.length, i64 = (v, dims) => new ort.Tensor('int64', BigInt64Array.from(v.map(BigInt)), dims);
  for (const meta of session.inputMetadata) {
    const n = meta.name;
    if (n === 'input_ids') f[n] = i64(ids, [1, s]);
    else if (n === 'position_ids') f[n] = i64(ids.map((_, i) => start + i), [1, s]);
    else if (n === 'write_indices') f[n] = i64([start], [1]);
    else if (n === 'nonpad_kv_seqlen') f[n] = i64([start + s], [1]);
    else if (caches[n]) f[n] = caches[n];
    else throw new Error('unknown model input ' + n);
  }
  const out = await session.run(f);
  const next = {};
  for (const name of Object.keys(caches))
    next[name] = out['updated_' + name];
  return {logits: toFloat32(out[session.outputNames[0]]), caches: next};
}

function zeroCaches(ort, session) {
  const caches = {};
  for (const [name, {dims, type}] of Object.entries(cacheShapes(session))) {
    const n = dims.reduce((a, b) => a * b, 1);
    caches[name] = new ort.Tensor(type, type === 'float16' ? new Uint16Array(n) : new Float32Array(n), dims);
  }
  return caches;
}

function write(file, chunks) {
  const total = chunks.reduce((a, c) => a + c.length, 0), buf = Buffer.alloc(4 * total);
  let o = 0;
  for (const c of chunks) for (const v of c) buf.writeFloatLE(v, 4 * o++);
  fs.writeFileSync(file, buf);
}

async function main() {
  const [mode, ...rest] = process.argv.slice(2);
  if (mode === 'compare') {
    const [a, b, tol] = rest;
    const x = readFloats(a), y = readFloats(b);
    if (x.length !== y.length) throw new Error(`sizes differ: ${x.length} and ${y.length} floats`);
    let diff = 0, scale = 0;
    for (let i = 0; i < y.length; ++i) {
      diff = Math.max(diff, Math.abs(x[i] - y[i]));
      scale = Math.max(scale, Math.abs(y[i]));
    }
    const rel = diff / scale, ok = rel <= Number(tol);
    console.log(JSON.stringify({max_abs_diff: diff, rel_max_error: rel, tolerance: Number(tol), ok}));
    if (!ok) process.exit(1);
    return;
  }
  const ort = require('onnxruntime-node');
  const [model, tokens, seqlen] = rest;
  const session = await ort.InferenceSession.create(model, {intraOpNumThreads: 1, logSeverityLevel: 3});
  const ids = readInts(tokens, Number(seqlen));
  if (mode === 'full') {
    const r = await step(ort, session, ids, 0, zeroCaches(ort, session));
    write(rest[3], [r.logits]);
  } else if (mode === 'cached') {
    const prefill = Number(rest[3]);
    if (!(prefill >= 1 && prefill <= ids.length)) throw new Error('PREFILL must be in [1, SEQLEN]');
    let r = await step(ort, session, ids.slice(0, prefill), 0, zeroCaches(ort, session));
    const chunks = [r.logits];
    for (let t = prefill; t < ids.length; ++t) {
      r = await step(ort, session, [ids[t]], t, r.caches);
      chunks.push(r.logits);
    }
    write(rest[4], chunks);
  } else {
    throw new Error('usage: ort_static_cache.js full|cached|compare ...');
  }
}
main().catch((e) => { console.error('ort_static_cache: ' + e.message); process.exit(1); });
