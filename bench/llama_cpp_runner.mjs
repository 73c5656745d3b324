// Decode speed of llama.cpp (through npm node-llama-cpp@3.22.1 and its
// prebuilt CPU binaries @node-llama-cpp/linux-x64) on a GGUF file, for
// bench/decode_ratios.sh.
//
//   node bench/llama_cpp_runner.mjs MODEL.gguf [--prompt 16] [--decode 32]
//        [--repeats 3] [--threads 2] [--node-modules DIR]
//
// Loads MODEL on the CPU (no GPU layers, mmap), one context of prompt +
// decode tokens (at least 512; batches of 512, llama.cpp's default micro-batch)
// with --threads threads, then per repeat: clears the sequence, evaluates a
// --prompt token prompt (seeded token ids, no text; the prompt's logits are
// computed but not sampled) with evaluateWithoutGeneratingNewTokens, and times
// --decode single-token steps of LlamaContextSequence.evaluate() (greedy:
// each step samples the next token from the logits and feeds it back, the way
// llama.cpp's own decode loop does). Prints JSON with the median of the
// repeats: decode tokens/s and ms/token (after the --prompt tokens: decode
// at that context), prompt (prefill) tokens/s, the seconds loadModel +
// createContext took (load_s), the process's peak RSS (peak_rss_bytes, node's
// own ~50 MB included), the CPU backend variant ggml loaded.
//
//   node bench/llama_cpp_runner.mjs MODEL.gguf --tokens T.bin --seqlen N --logits-out L.bin
// instead writes the logits of every one of the first N int32 token ids of
// T.bin (N x vocab float32) to L.bin: the input of `ort_runner.js compare`,
// which checks that llama.cpp and onnxruntime compute the same function from
// the files bench/make_q4_peers.py wrote.
// DIR (default: $SQ_PEERS_NODE_MODULES or build/bench-peers/npm/node_modules)
// holds node-llama-cpp, installed with `npm install --ignore-scripts`.
import path from 'node:path';
import {pathToFileURL} from 'node:url';

const argv = process.argv.slice(2);
const opt = {prompt: 16, decode: 32, repeats: 3, threads: 2,
             'node-modules': process.env.SQ_PEERS_NODE_MODULES ||
                             path.join(import.meta.dirname ?? path.dirname(new URL(import.meta.url).pathname),
                                       '../build/bench-peers/npm/node_modules')};
let model = null;
for (let i = 0; i < argv.length; ++i) {
  if (argv[i].startsWith('--')) opt[argv[i].slice(2)] = argv[++i];
  else model = argv[i];
}
if (!model) {
  console.error('usage: llama_cpp_runner.mjs MODEL.gguf [--prompt N] [--decode N] [--repeats N] [--threads N]');
  process.exit(2);
}
for (const k of ['prompt', 'decode', 'repeats', 'threads']) opt[k] = Number(opt[k]);

const {getLlama, LlamaLogLevel} = await import(
  pathToFileURL(path.join(path.resolve(opt['node-modules']), 'node-llama-cpp/dist/index.js')).href);

const logs = [];
const llama = await getLlama({
  gpu: false, build: 'never', usePrebuiltBinaries: true, skipDownload: true, progressLogs: false,
  logLevel: LlamaLogLevel.info,
  logger: (level, message) => { logs.push(message); },
});
const tLoad = process.hrtime.bigint();
const m = await llama.loadModel({modelPath: path.resolve(model), gpuLayers: 0, useMmap: true});
const contextSize = Math.max(512, Math.ceil((opt.prompt + opt.decode + 8) / 256) * 256);
const ctx = await m.createContext({contextSize, batchSize: 512, sequences: 1, threads: opt.threads});
const loadS = Number(process.hrtime.bigint() - tLoad) / 1e9;
const seq = ctx.getSequence();

if (opt['logits-out']) {
  const fs = await import('node:fs');
  const raw = fs.readFileSync(opt.tokens);
  const n = Number(opt.seqlen);
  const ids = Array.from({length: n}, (_, i) => raw.readInt32LE(4 * i));
  const res = await seq.controlledEvaluate(ids.map((t) => [t, {generateNext: {logits: true}}]));
  let nv = 0;  // (no spread: 128256 arguments overflow the stack)
  for (const r of res) for (const k of r.next.logits.keys()) if (k + 1 > nv) nv = k + 1;
  const out = new Float32Array(n * nv);
  res.forEach((r, i) => { for (const [k, v] of r.next.logits) out[i * nv + k] = v; });
  fs.writeFileSync(opt['logits-out'], Buffer.from(out.buffer));
  console.log(JSON.stringify({logits: opt['logits-out'], seqlen: n, vocab: nv}));
  await ctx.dispose(); await m.dispose(); await llama.dispose();
  process.exit(0);
}

let seed = 1;
const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) % 256) + 3;  // avoid <unk>,<s>,</s>
const prompt = [1, ...Array.from({length: opt.prompt - 1}, rand)];
const prefill = [], dec = [];
for (let r = 0; r < opt.repeats; ++r) {
  await seq.clearHistory();
  let t0 = process.hrtime.bigint();
  await seq.evaluateWithoutGeneratingNewTokens(prompt.slice(0, -1));
  prefill.push(Number(process.hrtime.bigint() - t0) / 1e9);
  // The generator evaluates its input (the prompt's last token), yields the
  // sampled token, and evaluates that token on the next iteration: `decode`
  // yields = `decode` single-token evaluations.
  let n = 0;
  t0 = process.hrtime.bigint();
  for await (const tok of seq.evaluate([prompt[prompt.length - 1]], {temperature: 0})) {
    void tok;
    if (++n >= opt.decode) break;
  }
  dec.push(Number(process.hrtime.bigint() - t0) / 1e9);
}
const median = (v) => v.slice().sort((a, b) => a - b)[Math.floor(v.length / 2)];
// Which of the per-CPU ggml builds (libggml-cpu-zen4.so, ...) ggml's loader picked.
const fs = await import('node:fs');
const cpuLib = [...new Set(fs.readFileSync('/proc/self/maps', 'utf8').split('\n')
  .map((l) => (l.match(/libggml-cpu[^/\s]*\.so/) || [])[0]).filter(Boolean))];
const backend = [...cpuLib, ...logs.filter((l) => /CPU_REPACK/.test(l)).map((l) => l.trim())];
const d = median(dec);
console.log(JSON.stringify({
  decode_tokens_per_s: opt.decode / d,
  ms_per_token: 1000 * d / opt.decode,
  prompt_tokens_per_s: (opt.prompt - 1) / median(prefill),
  load_s: loadS,
  peak_rss_bytes: process.resourceUsage().maxRSS * 1024,
  threads: ctx.currentThreads ?? opt.threads,
  prompt: opt.prompt, decode: opt.decode, repeats: opt.repeats,
  backend: backend.slice(0, 4),
  ...(process.env.LLAMA_RUNNER_LOGS ? {logs} : {}),
}));
await ctx.dispose();
await m.dispose();
await llama.dispose();
