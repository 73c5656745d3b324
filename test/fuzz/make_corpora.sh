#!/usr/bin/env bash
# Fills the seed corpora of the fuzz targets from the repository's fixtures:
#   make_corpora.sh [BUILD_DIR]     (default build-fuzz)
# into BUILD_DIR/fuzz/corpus/<target>/. Idempotent (files are named by
# content). test/fuzz/regressions/<target>/ (inputs that once crashed) are
# copied in too. A compiled model's manifest and .weights come from
# build/bin/sq-compile when it exists (SQ_COMPILE=... to choose another);
# rotation files from sq-translate and sq-opt next to it (SQ_TOOLS=DIR).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${1:-build-fuzz}
OUT=$BUILD_DIR/fuzz/corpus
SQ_COMPILE=${SQ_COMPILE:-build/bin/sq-compile}
SQ_TOOLS=${SQ_TOOLS:-$(dirname "$SQ_COMPILE")}
TARGETS=(manifest weights quantspec onnx mlir tokenizer rotation safetensors hftokenizer)
for t in "${TARGETS[@]}"; do mkdir -p "$OUT/$t"; done

# add TARGET FILE...: copy each file under its content hash.
add() {
  local target=$1
  shift
  for f in "$@"; do
    [ -f "$f" ] || continue
    cp "$f" "$OUT/$target/$(sha1sum "$f" | cut -c1-16)"
  done
}
# addtext TARGET TEXT: one seed from a string (no trailing newline).
addtext() {
  local tmp
  tmp=$(mktemp)
  printf '%s' "$2" >"$tmp"
  add "$1" "$tmp"
  rm -f "$tmp"
}

# onnx: every fixture, broken ones included, and the real exports of
# test/Import/real (external data: the .onnx only;
# the fuzzer's directory holds the data files of test/Import/Inputs/external*
# and a weights.bin).
mapfile -t onnx < <(find test/Import/Inputs test/Import/real -name '*.onnx' | sort)
add onnx "${onnx[@]}"

# mlir: every .mlir under test/, split at `// -----` like -split-input-file.
while IFS= read -r f; do
  add mlir "$f"
  if grep -q '^// -----' "$f"; then
    tmpd=$(mktemp -d)
    awk -v d="$tmpd" 'BEGIN{n=0} /^\/\/ -----/{n++; next} {print > (d "/" n ".mlir")}' "$f"
    add mlir "$tmpd"/*.mlir
    rm -rf "$tmpd"
  fi
done < <(find test -name '*.mlir' -not -path 'test/fuzz/*' | sort)

# quantspec: the specs named in tests and docs, plus the unit tests' cases.
{
  grep -rhoE -- '(--quantize|quant)=[a-z0-9][^ "'\''`)]*' test docs README.md |
    sed -E 's/^[^=]*=//'
  grep -ohE '"w[0-9]+a[0-9][^"]*"' unittests/Quant/QuantTest.cpp | tr -d '"'
  printf '%s\n' none w4a4kv4 w4a8k4v8,wgroup=128,wasym,wclip,gptq,nsamples=64 \
    w4a4kv4,gptq,calib=wiki.txt,tokenizer=sp:tok.model,seqlen=256,damp=0.1 \
    w4a4,asym,aclip=0.9,kgroup=64,vgroup=64,kclip=0.95,vclip=0.95,mode=fake
} | sort -u | while IFS= read -r spec; do
  [ -n "$spec" ] && addtext quantspec "$spec"
done

# tokenizer: a few texts, UTF-8 and binary.
addtext tokenizer "Once upon a time"
tmp=$(mktemp)
printf 'h\xc3\xa9llo \xe2\x82\xac \x00\x01\xff' >"$tmp"
add tokenizer "$tmp"
rm -f "$tmp"
add tokenizer data/calibration/README.md

# hftokenizer: byte 0x00 + a tokenizer.json (the small ones of the bad-input
# catalogue), byte 0x01 + text (the stress text, invalid UTF-8).
tmpd=$(mktemp -d)
python3 test/errors/Inputs/make_bad_tokenizer.py "$tmpd" >/dev/null 2>&1 || true
for f in "$tmpd"/*/tokenizer.json; do
  [ -f "$f" ] || continue
  { printf '\000'; cat "$f"; } >"$tmpd/seed"
  add hftokenizer "$tmpd/seed"
done
{ printf '\001'; cat test/Tokenizers/Inputs/stress.txt; } >"$tmpd/seed"
add hftokenizer "$tmpd/seed"
printf '\001bad \377 byte \342\202 cut \355\240\200 surrogate' >"$tmpd/seed"
add hftokenizer "$tmpd/seed"
rm -rf "$tmpd"

# manifest + weights: a model compiled with build/bin/sq-compile (the float
# model, hadamard rotations and w4a4kv4: three manifests).
if [ -x "$SQ_COMPILE" ]; then
  tmpd=$(mktemp -d)
  for q in none w4a4kv4 w4a8,wgroup=8,wasym; do
    rot=hadamard
    [ "$q" = none ] && rot=none
    if "$SQ_COMPILE" test/Import/Inputs/gqa-opset17.onnx -o "$tmpd/m.so" \
      --rotate=$rot --quantize=$q >/dev/null 2>&1; then
      strings -n 1 "$tmpd/m.so" | sed -n '/^sq-model 2$/,/^end$/p' >"$tmpd/manifest"
      add manifest "$tmpd/manifest"
      # The sidecar's header (hash mismatch against the fuzzer's manifest,
      # but real structure) and the first KB.
      head -c 1024 "$tmpd/m.so.weights" >"$tmpd/w"
      add weights "$tmpd/w"
    fi
  done
  rm -rf "$tmpd"
else
  echo "make_corpora: $SQ_COMPILE not found, no compiled-model seeds" >&2
fi
addtext manifest "$(printf 'sq-model 2\nconfig vocab=256 hidden=64 heads=4 kv_heads=2\ndescription a model\nslots 2\nweight 0 0 1 256 64 0 embed\nweight 1 4 0 64 64 32 l0.q\nqlinear 1 -1 -1 -1 64 64 4:sym:0:1 4:asym:32:0.9\nattention 4 2 16 0.25 1 4:asym:16:1 none\nend\n')"

# weights: the fuzzer writes its valid sidecar and damaged ones.
if [ -x "$BUILD_DIR/fuzz/sq-fuzz-weights" ]; then
  tmpd=$(mktemp -d)
  SQ_FUZZ_WRITE_SEEDS=$tmpd "$BUILD_DIR/fuzz/sq-fuzz-weights" -runs=0 >/dev/null 2>&1 || true
  add weights "$tmpd"/*
  rm -rf "$tmpd"
fi

# rotation: what --spinquant-rotate save=FILE writes (random and Hadamard
# rotations of the test model), the files rotation-file.test writes
# (SpinQuant's key names, broken ones), and the fuzzer's own valid/damaged
# files (SQ_FUZZ_WRITE_SEEDS).
if [ -x "$SQ_TOOLS/sq-opt" ] && [ -x "$SQ_TOOLS/sq-translate" ]; then
  tmpd=$(mktemp -d)
  if "$SQ_TOOLS/sq-translate" --import-onnx test/Import/Inputs/gqa-opset17.onnx \
    -o "$tmpd/model.mlir" 2>/dev/null; then
    for mode in random hadamard; do
      "$SQ_TOOLS/sq-opt" "$tmpd/model.mlir" --sq-fuse-norms \
        --spinquant-rotate="mode=$mode seed=3 save=$tmpd/$mode.safetensors" \
        -o /dev/null 2>/dev/null || true
    done
  fi
  python3 test/Transforms/Inputs/make_rotation_file.py "$tmpd" 2>/dev/null || true
  add rotation "$tmpd"/*.safetensors
  rm -rf "$tmpd"
else
  echo "make_corpora: $SQ_TOOLS/sq-opt not found, no saved rotation seeds" >&2
fi
if [ -x "$BUILD_DIR/fuzz/sq-fuzz-rotation" ]; then
  tmpd=$(mktemp -d)
  SQ_FUZZ_WRITE_SEEDS=$tmpd "$BUILD_DIR/fuzz/sq-fuzz-rotation" -runs=0 >/dev/null 2>&1 || true
  add rotation "$tmpd"/*
  rm -rf "$tmpd"
fi

# safetensors: the first byte picks the reader (even: a safetensors file,
# odd: a config.json). Small valid files of every float dtype written here,
# the rotation files above, and the config.json files of the small Hugging
# Face folders (test/HF/make_hf_checkpoints.py; needs /usr/bin/python3 with
# numpy) with the headers of their weights (cut after the header).
tmpd=$(mktemp -d)
/usr/bin/python3 - "$tmpd" <<'PY' || true
import json, struct, sys
out = sys.argv[1]
def st(tensors, name):
    header, body = {"__metadata__": {"format": "pt"}}, b""
    for tname, dtype, shape, raw in tensors:
        header[tname] = {"dtype": dtype, "shape": shape,
                         "data_offsets": [len(body), len(body) + len(raw)]}
        body += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open("%s/%s" % (out, name), "wb") as f:
        f.write(b"\0" + struct.pack("<Q", len(text)) + text + body)
st([("a", "F32", [2, 2], struct.pack("<4f", 1, -2, 3.5, 0)),
    ("b", "F16", [3], struct.pack("<3H", 0x3C00, 0x7C00, 0x8001)),
    ("c", "BF16", [2, 1], struct.pack("<2H", 0x3F80, 0x7FC0)),
    ("d", "I8", [0, 4], b"")], "mixed.seed")
st([("model.embed_tokens.weight", "BF16", [4, 2], bytes(16)),
    ("model.norm.weight", "F32", [2], struct.pack("<2f", 1, 1))], "names.seed")
PY
for f in "$tmpd"/*.seed; do [ -f "$f" ] && add safetensors "$f"; done
for f in $(ls "$OUT/rotation" 2>/dev/null | head -20); do
  { printf '\0'; cat "$OUT/rotation/$f"; } >"$tmpd/rot-$f"
  add safetensors "$tmpd/rot-$f"
done
if /usr/bin/python3 test/HF/make_hf_checkpoints.py "$tmpd/hf" \
  --only tiny-llama2 tiny-llama3 tiny-qwen2 tiny-mistral tiny-sharded >/dev/null 2>&1; then
  for d in "$tmpd"/hf/*/; do
    n=$(basename "$d")
    { printf '\1'; cat "$d/config.json"; } >"$tmpd/$n.config"
    add safetensors "$tmpd/$n.config"
    for w in "$d"*.safetensors; do
      len=$(od -An -tu8 -N8 "$w" | tr -d ' ')
      { printf '\0'; head -c $((8 + len)) "$w"; } >"$tmpd/$n-$(basename "$w").head"
      add safetensors "$tmpd/$n-$(basename "$w").head"
    done
  done
else
  echo "make_corpora: no Hugging Face folders (needs /usr/bin/python3 with numpy)" >&2
fi
rm -rf "$tmpd"

# Regression inputs.
for d in test/fuzz/regressions/*/; do
  [ -d "$d" ] || continue
  t=$(basename "$d")
  mkdir -p "$OUT/$t"
  add "$t" "$d"*
done

for t in "${TARGETS[@]}"; do
  echo "make_corpora: $t: $(ls "$OUT/$t" | wc -l) seeds"
done
