// Runs an ONNX model with onnxruntime (npm onnxruntime-node) for
// bench/vs_onnxruntime.sh: the numeric cross-check and the speed baseline.
//
//   node bench/ort_runner.js compare MODEL TOKENS.bin SEQLEN SQ_LOGITS.bin [PREFILL]
//       logits of the first SEQLEN tokens vs SQ's (--logits-out); prints JSON.
//       With PREFILL (a model with a KV cache): the first PREFILL tokens in
//       one run, then one token a run, feeding the present caches back
//   node bench/ort_runner.js bench MODEL PROMPT_LEN DECODE REPEATS
//       prefill PROMPT_LEN seeded tokens, then DECODE single-token steps
//       with the model's own KV cache when it has one (decode after a
//       PROMPT_LEN context); prints JSON: prefill and decode tokens/s (median),
//       decode ms/token, load_s (InferenceSession.create), peak_rss_bytes
//       (the process's, node's own ~50 MB included)
// ORT_NUM_THREADS sets intra-op threads (default 0: onnxruntime's choice);
// ORT_OPT_LEVEL the graph optimizations (default all; 'basic' keeps
// DequantizeLinear -> MatMul in float instead of quantized kernels).
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

function feeds(session, ids, pastLen, past) {
  const f = {};
  const s = ids.length;
  for (const meta of session.inputMetadata) {
    const n = meta.name;
    if (n === 'input_ids') {
      f[n] = new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, s]);
    } else if (n === 'attention_mask') {
      f[n] = new ort.Tensor('int64', new BigInt64Array(pastLen + s).fill(1n), [1, pastLen + s]);
    } else if (n === 'position_ids') {
      const p = Array.from({length: s}, (_, i) => BigInt(pastLen + i));
      f[n] = new ort.Tensor('int64', BigInt64Array.from(p), [1, s]);
    } else if (n.startsWith('past')) {
      if (past && past[n]) {
        f[n] = past[n];
      } else {
        const dims = meta.shape.map((d, i) => (i === 0 ? 1 : i === 2 ? 0 : d));
        const data = meta.type === 'float16' ? new Uint16Array(0) : new Float32Array(0);
        f[n] = new ort.Tensor(meta.type, data, dims);
      }
    } else {
      throw new Error('unknown model input ' + n);
    }
  }
  return f;
}

function nextPast(session, out) {
  const past = {};
  for (const name of session.outputNames)
    if (name.startsWith('present'))
      past[name.replace('present', 'past_key_values')] = out[name];
  return Object.keys(past).length ? past : null;
}

function toFloat32(t) {
  if (t.type === 'float32') return t.data;
  const h = t.data, f = new Float32Array(h.length);
  const buf = new DataView(new ArrayBuffer(4));
  for (let i = 0; i < h.length; ++i) {  // fp16 -> fp32
    const x = h[i], sign = (x & 0x8000) << 16, exp = (x >> 10) & 0x1f, mant = x & 0x3ff;
    let bits;
    if (exp === 0) bits = sign | (mant ? 0 : 0);
    else if (exp === 31) bits = sign | 0x7f800000 | (mant << 13);
    else bits = sign | ((exp + 112) << 23) | (mant << 13);
    buf.setUint32(0, bits >>> 0);
    f[i] = exp === 0 && mant ? (sign ? -1 : 1) * mant * Math.pow(2, -24) : buf.getFloat32(0);
  }
  return f;
}

async function main() {
  const [mode, model, ...rest] = process.argv.slice(2);
  const tLoad = process.hrtime.bigint();
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: Number(process.env.ORT_NUM_THREADS || 0),
    graphOptimizationLevel: process.env.ORT_OPT_LEVEL || 'all'});
  const loadS = Number(process.hrtime.bigint() - tLoad) / 1e9;
  if (mode === 'compare') {
    const [tokensFile, seqlen, sqFile, prefillArg] = rest;
    const raw = fs.readFileSync(tokensFile);
    const ids = Array.from({length: Number(seqlen)}, (_, i) => raw.readInt32LE(4 * i));
    let ref;
    const prefill = Number(prefillArg || 0);
    if (prefill > 0) {
      if (!session.inputNames.some((n) => n.startsWith('past')))
        throw new Error('PREFILL needs a model with past_key_values inputs');
      const parts = [];
      let past = null;
      for (let done = 0; done < ids.length;) {
        const n = done === 0 ? prefill : 1;
        const out = await session.run(feeds(session, ids.slice(done, done + n), done, past));
        parts.push(toFloat32(out[session.outputNames[0]]));
        past = nextPast(session, out);
        done += n;
      }
      ref = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
      let at = 0;
      for (const p of parts) { ref.set(p, at); at += p.length; }
    } else {
      const out = await session.run(feeds(session, ids, 0, null));
      ref = toFloat32(out[session.outputNames[0]]);
    }
    const b = fs.readFileSync(sqFile);
    const sq = Float32Array.from({length: b.length / 4}, (_, i) => b.readFloatLE(4 * i));
    if (sq.length !== ref.length) throw new Error(`sizes differ: sq ${sq.length}, ort ${ref.length}`);
    let diff = 0, scale = 0;
    for (let i = 0; i < ref.length; ++i) {
      diff = Math.max(diff, Math.abs(sq[i] - ref[i]));
      scale = Math.max(scale, Math.abs(ref[i]));
    }
    console.log(JSON.stringify({max_abs_diff: diff, rel_max_error: diff / scale}));
  } else if (mode === 'bench') {
    const [promptLen, decode, repeats] = rest.map(Number);
    const vocab = 256;
    let seed = 1;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) % vocab);
    const prompt = Array.from({length: promptLen}, rand);
    const hasCache = session.inputNames.some((n) => n.startsWith('past'));
    const prefill = [], dec = [];
    for (let r = 0; r < repeats; ++r) {
      let t0 = process.hrtime.bigint();
      let out = await session.run(feeds(session, prompt, 0, null));
      prefill.push(Number(process.hrtime.bigint() - t0) / 1e9);
      if (!hasCache) continue;
      let past = nextPast(session, out), len = promptLen;
      t0 = process.hrtime.bigint();
      for (let i = 0; i < decode; ++i) {
        out = await session.run(feeds(session, [rand()], len, past));
        past = nextPast(session, out);
        len += 1;
      }
      dec.push(Number(process.hrtime.bigint() - t0) / 1e9);
    }
    const median = (v) => v.slice().sort((a, b) => a - b)[Math.floor(v.length / 2)];
    const p = median(prefill);
    console.log(JSON.stringify({
      prefill_tokens_per_s: promptLen / p,
      decode_tokens_per_s: hasCache ? decode / median(dec) : null,
      ms_per_token: hasCache ? 1000 * median(dec) / decode : null,
      load_s: loadS,
      peak_rss_bytes: process.resourceUsage().maxRSS * 1024,
      prompt: promptLen, decode, repeats,
    }));
  } else {
    throw new Error('usage: ort_runner.js compare|bench ...');
  }
}
main().catch((e) => { console.error('ort_runner: ' + e.message); process.exit(1); });
