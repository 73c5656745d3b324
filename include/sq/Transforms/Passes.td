//===- Passes.td - sq transformation passes -----------------*- tablegen -*-===//
//
// Every sq pass and its options are declared here; the C++ declarations,
// registration and the reference in docs/ are generated from this file.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_TRANSFORMS_PASSES_TD
#define SQ_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def SQWeightSummary : Pass<"sq-weight-summary", "::mlir::ModuleOp"> {
  let summary = "print a table of the model's weights: name, type, bytes, non-finite values";
  let description = [{
    Lists every `sq.weight` of the module with its logical type, its storage
    size in bytes and the number of NaN/Inf values it holds (float weights),
    then the totals. The table goes to stderr, or to `output=FILE`; the IR is
    left unchanged. Useful to see what an import produced and how much a
    quantization saved.

    ```
    sq-opt --sq-weight-summary model.mlir -o /dev/null
    ```
  }];
  let options = [
    Option<"output", "output", "std::string", /*default=*/"\"-\"",
           "where to write the table ('-' for stderr)">
  ];
}

def SQFuseNorms : Pass<"sq-fuse-norms", "::mlir::ModuleOp"> {
  let summary = "fold RMSNorm scales into the following linear layers";
  let description = [{
    `RMSNorm(x) * gamma` followed by `linear(W)` is `RMSNorm(x)` (weightless)
    followed by `linear(W * diag(gamma))`: every linear that reads a scaled
    `sq.rms_norm` (q/k/v, gate/up, lm_head) gets its columns multiplied by
    gamma and the norm loses its scale. The model computes the same
    function (up to float rounding), and a weightless RMSNorm commutes with
    an orthogonal rotation of the residual stream, which is what SpinQuant's
    R1 needs. Rewritten weights keep their type by default
    (`weight-type=keep`: an fp16/bf16 model keeps its size, one rounding to
    that type per rewrite, as the official implementation does);
    `weight-type=f32` stores them in fp32, exact at twice the size of an
    fp16 model (this and the next two passes take the option). A norm whose
    output feeds anything but linear layers is an error.

    `center-embeddings` also subtracts each embedding row's mean, as the
    official SpinQuant code does. That is exact only for LayerNorm models:
    on an RMSNorm model it changes the function, so it is off by default
    (use it to reproduce the official numbers).

    ```
    sq-opt --sq-fuse-norms model.mlir
    ```
  }];
  let options = [
    Option<"centerEmbeddings", "center-embeddings", "bool", /*default=*/"false",
           "subtract each embedding row's mean (official SpinQuant; not exact "
           "for RMSNorm models)">,
    Option<"weightType", "weight-type", "::sq::WeightStorage",
           /*default=*/"::sq::WeightStorage::Keep",
           "storage of rewritten weights: keep (the weight's own type: "
           "f16/bf16 models keep their size) or f32 (exact invariance for "
           "f16/bf16 models, twice their size)">
  ];
}

def SQSpinQuantRotate : Pass<"sq-spinquant-rotate", "::mlir::ModuleOp"> {
  let summary = "insert SpinQuant's rotations R1 and R2 and fold them into the weights";
  let description = [{
    (Named `spinquant-rotate` before the sq- prefix; that name stays an
    alias for one release.)

    R1 (hidden x hidden, one for the model) rotates the residual stream:
    the embedding and every linear that reads the stream (after a
    weightless RMSNorm: q, k, v, gate, up, lm_head) get `W <- W R1`, the
    linears that write it (o_proj, down_proj) get `W <- R1^T W`. R2
    (head_dim x head_dim, one per layer) rotates the values: every KV head's
    rows of v_proj get `R2^T`, every head's columns of o_proj get `R2`.
    Biases follow the outputs: a writer's bias gets `b <- R1^T b`, v_proj's
    (Qwen2) `R2^T` per KV head, and the biases of the other readers (q, k,
    gate, up) are left alone. The float model computes the same function;
    the rotated weights and activations have fewer outliers, which is what
    makes 4-bit quantization work.

    Modes: `learned`, the default (SpinQuant: R1/R2 learned by Cayley SGD
    from a randomized Hadamard initialization, as described below; the
    options marked "learned" apply; a model that is not
    byte-level needs `tokenizer=sp:PATH`, `tokenizer=hf:DIR` or pre-tokenized
    `data=`),
    `hadamard` (randomized Hadamard `diag(+-1) H / sqrt(n)`, sizes m * 2^k:
    QuaRot's rotations, no calibration), `random` (seeded random orthogonal
    matrices), `file` (read from `path`). `save=FILE` writes the rotations
    used.

    Rotation files are safetensors: tensors `R1` [hidden, hidden],
    `layers.N.R2` [head_dim, head_dim] and, for a learned R3, `layers.N.R3`
    [head_dim, head_dim] for every layer or none (float64 or float32; an R3
    replaces the online Hadamard on Q/K by `sq.rotate` by a weight
    `model.layers.N.self_attn.R3`), metadata
    `format = sq-rotations`, `version = 1`. Files with the official
    SpinQuant names `model.R1.weight` and
    `model.layers.N.self_attn.R2.weight` are read too. Every matrix must be
    orthogonal (to 1e-4).

    Learned mode, SpinQuant's core: R1 and every R2 are learned on
    calibration text while all weights stay frozen, then folded into the
    weights like the other rotations. Each step applies the current
    rotations (`apply`: with 16-bit weights, the default `w16a4kv4`, on the
    activations where they are quantized: `Q(x R1) R1^T` at the inputs of
    q/k/v and gate/up, `v R2` before the value cache's quantizer and
    `Q(a) R2^T` before o_proj, the residual stream and the weights
    untouched; with quantized weights, folded into a copy of the weights:
    `W R1`, `R1^T W`, R2 per head on v_proj/o_proj), runs the
    model with the fake quantization of `quant` (activations per token,
    KV cache; weights round-to-nearest when `quant` quantizes them) on
    `batch` windows, takes the next-token cross-entropy (`loss=ce`; or,
    beyond the paper, `loss=kl|kl-top`: the KL divergence from the float
    model's next-token distribution, see the option), backpropagates
    through the executor (straight-through estimator across the fake
    quantizers) to dL/dR1 and dL/dR2, and takes a Cayley SGD step on the
    Stiefel manifold (Li et al. 2020, the official optimizer: skew
    generator from gradient and momentum, step capped by its norm,
    fixed-point Cayley iteration, QR every 20 steps). R4 (the online
    Hadamard on down_proj's input, inserted before training) stays fixed.

    R3, the online rotation of Q and K after RoPE, is where SQ goes beyond
    the paper (which keeps it a Hadamard): it is the only rotation that
    reaches the key cache's quantization (R1 cancels in K, R2 acts on V/O),
    and the straight-through gradient does not see how it changes the keys'
    rounding. `r3=search` (the default) therefore picks it without
    gradients after the Cayley steps (against the final R1/R2): per layer,
    `r3-candidates` seeded signed permutations of the Hadamard matrix are
    tried against the current one on the forward loss of `r3-windows`
    fixed calibration windows (16), and the best replaces it only if its
    mean gain over the windows exceeds `r3-sigma` (2) standard errors of
    the paired per-window gains: a choice among many on few windows
    otherwise keeps noise. The result is an `sq.rotate` of Q and K by a
    head_dim x head_dim weight per layer, saved as `layers.N.R3`.
    `r3=cayley` trains R3 with R1/R2 on the straight-through gradient;
    `r3=hadamard` keeps the fixed Hadamard (SpinQuant exactly).

    The calibration text is `data=FILE` (tokenized with `tokenizer`, or
    int32 ids in a `.bin`), by default the WikiText-2 excerpt compiled into
    SQ; `samples` windows of `seqlen` tokens are drawn at offsets seeded by
    `seed`, `batch` per step. Deterministic for a given seed and thread
    count. On a terminal a line per step shows the loss and the step time;
    a summary follows in any case, with the time of the steps apart from
    that of the evaluations: the before/after loss on the first
    `eval-windows` windows (8; 0 skips it), the held-out validation and the
    R3 search.

    Data parallel: `mpirun -np P sq-opt ... --sq-spinquant-rotate=...`
    (a build with MPI, CMake `SQ_MPI`) splits each step's `batch` windows
    across the P processes (uneven splits weighted by their share), sums the
    loss and the rotation gradients (hidden^2 + layers x head_dim^2 values)
    with one all-reduce, splits the GPTQ Hessians' windows, the validation
    and the R3 search the same way, and gives the rotations a single
    process would learn with the same batch, to float rounding. Only rank
    0 prints and writes files (`-o`, `save=`). Give each process
    cores / P threads (`OPENBLAS_NUM_THREADS`); see docs/scale.md. `save=FILE` writes the learned
    rotations (the rotation file above), and
    `mode=file path=FILE` reapplies them.

    Learned clipping (`clip`, beyond SpinQuant; off by default): clip
    ratios trained by Adam (`clip-lr`) with the rotations, through a
    clip-aware straight-through estimator at those quantizers: `acts`, one
    per activation and KV-cache quantizer of the training model (from the
    spec's aclip/kclip/vclip); `weights`, one per output channel of every
    weight quantized round-to-nearest in the loop (`quant=wN...` without
    gptq); `learned`, both where the training quantizes (activations only
    under the default `w16a4kv4`: the GPTQ recipe keeps wclip's search for
    the weights). The learned ratios are stored on the model:
    `sq.input_clip` (f64) on each linear an activation quantizer feeds,
    `sq.key_clip` / `sq.value_clip` on each attention, `sq.weight_clip`
    (`tensor<rows x f32>`) on each linear; `--sq-quantize` uses them for
    those quantizers' clip ratios and for the weights' RTN and GPTQ scales.

    `scales=learned` (beyond the paper, as OSTQuant) also learns a
    diagonal scaling at every site where one folds exactly, with R1/R2 in
    the same loop (Adam on log s, `scales-lr`, on the schedule of `lr`;
    training folds them into the weight copies, so apply=weights): the
    normalized residual stream into q/k/v and into gate/up (after R1: the
    RMSNorm gets the weight s again, the readers' columns 1/s), one scale
    per RoPE pair of each KV head (k_proj rows and bias s, q_proj rows and
    bias of the group's query heads 1/s: RoPE's pair rotations commute
    with it and Q K^T is unchanged, while the key cache's quantizer sees
    the scaled keys), one per value dim of each KV head (v_proj rows,
    o_proj columns 1/s, in the heads' own basis, before R2: an outlier
    dimension is undone there, not spread) and one per intermediate
    channel (up_proj rows, down_proj columns 1/s, before R4). They start
    at 1, or (`scales-init=smooth`) balanced from the float model's
    statistics as SmoothQuant's (alpha 0.5), which undoes an outlier
    channel that a function-preserving rescaling put at the q/k, value or
    up site. While they train, every fake
    quantizer's gradient also differentiates its scale through its group's
    extremes (LSQ+-style; the plain straight-through estimator would make
    enlarging a channel look free). They are folded at the end (the
    float model is unchanged) and saved as `layers.L.{attn_input,qk,value,
    mlp_input,up}.scale` (1-D, the scales s) with the rotations; mode=file
    folds a file's scales too.

    By default the pass runs SpinQuant's whole rotation recipe: it folds
    RMSNorm scales first (a scaled RMSNorm does not commute with R1; as
    `--sq-fuse-norms`), and inserts the online Hadamards R3/R4 after R1/R2
    (as `--sq-online-hadamard`, which is idempotent). `fuse-norms=false`
    and `online-hadamard=false` turn the two steps off, e.g. to run
    `--sq-online-hadamard=r3=false` yourself.

    ```
    sq-opt --sq-spinquant-rotate --sq-quantize=w4a4kv4 model.mlir        # byte-level model
    sq-opt --sq-spinquant-rotate="tokenizer=sp:tokenizer.model quant=w4a4kv4" --sq-quantize=w4a4kv4 model.mlir
    sq-opt --sq-spinquant-rotate="mode=random seed=3 online-hadamard=false" model.mlir
    sq-opt --sq-spinquant-rotate="mode=learned steps=50 data=calib.txt tokenizer=sp:tok.model" model.mlir
    ```
  }];
  let options = [
    Option<"mode", "mode", "::sq::RotationMode",
           /*default=*/"::sq::RotationMode::Learned",
           "learned (SpinQuant, the default) | hadamard | random | file">,
    Option<"seed", "seed", "uint64_t", /*default=*/"0",
           "seed of the random rotations and Hadamard signs">,
    Option<"path", "path", "std::string", /*default=*/"\"\"",
           "rotation file for mode=file (safetensors)">,
    Option<"save", "save", "std::string", /*default=*/"\"\"",
           "write the rotations used to this safetensors file">,
    Option<"data", "data", "std::string", /*default=*/"\"\"",
           "learned: calibration text (or pre-tokenized int32 ids, .bin); "
           "default: the WikiText-2 excerpt embedded in SQ">,
    Option<"tokenizer", "tokenizer", "std::string", /*default=*/"\"\"",
           "learned: tokenizer of the calibration text: byte, sp:PATH or "
           "hf:DIR (default: byte for byte-level models, vocabulary 256; "
           "others need sp:PATH, hf:DIR or pre-tokenized data)">,
    Option<"samples", "samples", "int64_t", /*default=*/"128",
           "learned: calibration windows drawn from the text">,
    Option<"seqlen", "seqlen", "int64_t", /*default=*/"0",
           "learned: tokens per window (0: the model's context, at most "
           "2048; 512 when the model does not record it)">,
    Option<"batch", "batch", "int64_t", /*default=*/"4",
           "learned: windows per step">,
    Option<"validate", "validate", "int64_t", /*default=*/"0",
           "learned: windows held out from the end of the text; their loss "
           "is measured every validate-every steps and the best rotations "
           "(the initialization included) are kept (0: off, keep the last)">,
    Option<"validateEvery", "validate-every", "int64_t", /*default=*/"10",
           "learned: steps between two held-out evaluations">,
    Option<"steps", "steps", "int64_t", /*default=*/"100",
           "learned: Cayley SGD steps">,
    Option<"lr", "lr", "double", /*default=*/"1.5",
           "learned: learning rate (the step is also capped by the size of "
           "the Riemannian gradient)">,
    Option<"schedule", "schedule", "::sq::LRSchedule",
           /*default=*/"::sq::LRSchedule::Cosine",
           "learned: learning-rate schedule: cosine or constant">,
    Option<"momentum", "momentum", "double", /*default=*/"0.0",
           "learned: Cayley SGD momentum (0 in the official runs)">,
    Option<"quant", "quant", "::sq::QuantSpec",
           /*default=*/"::sq::QuantSpec::bits(16, 4, 4, 4)",
           "learned: the quantization trained under, in --sq-quantize's "
           "language (w16a4kv4: the official recipe before GPTQ; w4a4kv4: "
           "round-to-nearest weights; w4a4kv4,gptq: GPTQ weights under the "
           "float model's Hessians, recomputed every step; head=8 is "
           "accepted and ignored: lm_head stays float while training)">,
    Option<"apply", "apply", "::sq::RotationApply",
           /*default=*/"::sq::RotationApply::Auto",
           "learned: where R1/R2 act while training: weights (folded into a "
           "copy of every rotated weight at each step, with gradients of "
           "every weight), activations (on the activations where they are "
           "quantized: x -> Q(x R1) R1^T at the inputs of q/k/v and "
           "gate/up, v -> v R2 before the value cache and a -> Q(a) R2^T "
           "before o_proj; no weight copies or weight gradients; needs 16-bit "
           "weights) or auto (activations when quant keeps 16-bit weights, "
           "weights otherwise). Both give the same loss and Riemannian "
           "gradient up to float rounding">,
    Option<"precision", "precision", "::sq::CalibPrecision",
           /*default=*/"::sq::CalibPrecision::Auto",
           "learned: arithmetic of the training products with the frozen "
           "weights and of the rotations: fp32 (OpenBLAS), bf16 (weights "
           "stored once in bf16, products on AMX / AVX-512 BF16 with fp32 "
           "sums: several times faster), or auto (bf16 when the linear "
           "weights are stored in 16 bits and the CPU has AMX, or AVX-512 "
           "BF16 on AMD; fp32 otherwise)">,
    Option<"init", "init", "::sq::RotationInit",
           /*default=*/"::sq::RotationInit::Hadamard",
           "learned: initial rotations: hadamard or random">,
    Option<"r3", "r3", "::sq::R3Mode", /*default=*/"::sq::R3Mode::Search",
           "learned: R3, the online rotation of Q and K after RoPE (the one "
           "rotation that reaches the key cache's rounding): search (the "
           "default, beyond the paper: per layer, the best of "
           "r3-candidates seeded signed permutations of the Hadamard matrix "
           "on the calibration loss, stored as a head_dim x head_dim "
           "sq.rotate), cayley (Cayley SGD with R1/R2), or hadamard (fixed, "
           "as SpinQuant)">,
    Option<"r3Candidates", "r3-candidates", "int64_t", /*default=*/"16",
           "learned, r3=search: candidates tried per layer">,
    Option<"r3Windows", "r3-windows", "int64_t", /*default=*/"16",
           "learned, r3=search: calibration windows the candidates are "
           "scored on (the first of the training windows)">,
    Option<"r3Sigma", "r3-sigma", "double", /*default=*/"2.0",
           "learned, r3=search: a layer's best candidate is kept only if its "
           "mean loss improvement over those windows exceeds this many "
           "standard errors and 1e-5 of the loss, below which rounding "
           "decides (0: whenever it is lower)">,
    Option<"evalWindows", "eval-windows", "int64_t", /*default=*/"8",
           "learned: the summary's before/after loss on the first N "
           "calibration windows (a forward of each, before and after "
           "training; the after one reuses the R3 search's when it covered "
           "them); 0: skip it">,
    Option<"fuseNorms", "fuse-norms", "bool", /*default=*/"true",
           "fold RMSNorm scales into the following linears first "
           "(--sq-fuse-norms with its defaults)">,
    Option<"onlineHadamard", "online-hadamard", "bool", /*default=*/"true",
           "then insert the online Hadamards R3 and R4 "
           "(--sq-online-hadamard; use it separately for r3/r4 options)">,
    Option<"weightType", "weight-type", "::sq::WeightStorage",
           /*default=*/"::sq::WeightStorage::Keep",
           "storage of rewritten weights: keep (the weight's own type: "
           "f16/bf16 models keep their size) or f32 (exact invariance for "
           "f16/bf16 models, twice their size)">,
    Option<"clip", "clip", "::sq::ClipLearning",
           /*default=*/"::sq::ClipLearning::None",
           "learned: learned clipping, trained by Adam with the rotations: "
           "none (the spec's aclip/kclip/vclip and wclip), acts (the clip "
           "ratio of every activation and KV-cache quantizer), weights (one "
           "ratio per output channel of every weight quantized "
           "round-to-nearest in the loop: quant=wN... without gptq), learned "
           "(both where the training quantizes). The ratios are stored on "
           "the model (sq.input_clip, sq.key_clip, sq.value_clip, "
           "sq.weight_clip) for --sq-quantize">,
    Option<"clipLr", "clip-lr", "double", /*default=*/"0.005",
           "learned, clip: Adam's learning rate for the clip ratios (on the "
           "rotations' schedule)">,
    Option<"loss", "loss", "::sq::CalibLoss",
           /*default=*/"::sq::CalibLoss::CrossEntropy",
           "learned: the loss of the steps, the validation and the R3 "
           "search: ce (next-token cross-entropy on the text, SpinQuant), "
           "kl (KL divergence of the quantized model's next-token "
           "distribution from the float model's, whole vocabulary) or "
           "kl-top (the same over the float model's kl-top-k most likely "
           "tokens, both renormalized over them: OSTQuant's KL-Top). The "
           "float model's log-probabilities are computed once per window "
           "and cached">,
    Option<"klTopK", "kl-top-k", "int64_t", /*default=*/"64",
           "learned, loss=kl-top: tokens per position (the whole vocabulary "
           "when it has no more)">,
    Option<"klCacheMB", "kl-cache-mb", "int64_t", /*default=*/"4096",
           "learned, loss=kl|kl-top: refuse a cache of the float model's "
           "log-probabilities that could exceed this many MiB (kl: windows "
           "x seqlen x vocabulary x 4 bytes; kl-top: x k x 8 bytes)">,
    Option<"checkpoint", "checkpoint", "::sq::Checkpointing",
           /*default=*/"::sq::Checkpointing::Auto",
           "learned: activation checkpointing of each step's backward: on "
           "(the forward keeps only the residual stream between transformer "
           "blocks, the backward recomputes one block's forward at a time: "
           "memory of one block's activations instead of all, one more "
           "forward per step, the same gradients bit for bit), off, or auto "
           "(on when all blocks' activations would exceed a quarter of the machine's memory, at least 2 GiB)">,
    Option<"microBatch", "micro-batch", "int64_t", /*default=*/"0",
           "learned: windows per forward and backward within a step "
           "(gradient accumulation: activation memory of that many windows "
           "instead of the whole batch, the same step to float rounding; "
           "0: the whole batch at once). Under mpirun, when every process's "
           "share is a whole number of micro-batches, they are also summed "
           "in window order on rank 0: the same rotations as one process "
           "with the same micro-batch, bit for bit (batch / N times the "
           "gradient traffic)">,
    Option<"scales", "scales", "::sq::ScaleMode",
           /*default=*/"::sq::ScaleMode::None",
           "learned: diagonal scalings at every exactly foldable site, "
           "trained with R1/R2 (Adam on their logarithm) and folded at the "
           "end: none (SpinQuant) or learned (the norm outputs into q/k/v "
           "and gate/up, one per RoPE pair of each KV head between q_proj "
           "and k_proj, one per value dim between v_proj and o_proj, one "
           "per channel between up_proj and down_proj; needs apply=weights "
           "or auto, and no gptq in quant)">,
    Option<"scalesLr", "scales-lr", "double", /*default=*/"0.01",
           "learned, scales=learned: Adam's learning rate for the "
           "log-scales (on the schedule of lr)">,
    Option<"scalesInit", "scales-init", "::sq::ScaleInit",
           /*default=*/"::sq::ScaleInit::Smooth",
           "learned, scales=learned: where the scales start: smooth "
           "(default; SmoothQuant's balance, alpha 0.5, from the float "
           "model over the calibration windows: at the q/k, value and up "
           "sites s = sqrt(m- / m+), m+ the RMS of k_proj's, v_proj's, "
           "up_proj's outputs, m- of q_proj's outputs and of o_proj's and "
           "down_proj's weight columns; the norm sites start at 1; a "
           "function-preserving rescaling of those sites, an outlier "
           "channel, is undone by it) or ones (s = 1)">
  ];
}

def SQOnlineHadamard : Pass<"sq-online-hadamard", "::mlir::ModuleOp"> {
  let summary = "SpinQuant's online Hadamards: R4 before down_proj, R3 on Q/K after RoPE";
  let description = [{
    R4: an `sq.hadamard` over the whole intermediate dimension is inserted
    on down_proj's input and folded into down_proj's columns
    (`W <- W H`, H orthonormal), so `(x H)(W H)^T = x W^T`. R3: an
    `sq.hadamard` of size head_dim is inserted on the queries and keys
    after RoPE; it cancels in `Q K^T` and matters once K is quantized.
    The float model computes the same function. Hadamard matrices exist here for
    n = m * 2^k, m in 1, 12, 20, 28, 36, 40, 44, 52, 60, 108, 140, 156, 172
    (LLaMA-2-7B's 11008 = 172 * 64). A size without one (Qwen2.5's
    29568 = 231 * 2^7) gets a seeded random orthogonal block times the 2^k butterflies instead,
    with a remark; the `seed` is recorded on the sq.hadamard ops.

    ```
    sq-opt --sq-fuse-norms --sq-spinquant-rotate --sq-online-hadamard model.mlir
    ```
  }];
  let options = [
    Option<"r3", "r3", "bool", /*default=*/"true",
           "rotate queries and keys after RoPE (for a quantized KV cache)">,
    Option<"r4", "r4", "bool", /*default=*/"true",
           "rotate down_proj's input and fold the rotation into down_proj">,
    Option<"seed", "seed", "uint64_t", /*default=*/"0",
           "seed of the random orthogonal fallback for sizes without a "
           "Hadamard matrix">,
    Option<"weightType", "weight-type", "::sq::WeightStorage",
           /*default=*/"::sq::WeightStorage::Keep",
           "storage of rewritten weights: keep (the weight's own type: "
           "f16/bf16 models keep their size) or f32 (exact invariance for "
           "f16/bf16 models, twice their size)">
  ];
}

def SQQuantize : Pass<"sq-quantize", "::mlir::ModuleOp"> {
  let summary = "quantize weights, activations and the KV cache (--sq-quantize=SPEC)";
  let description = [{
    `--sq-quantize=SPEC` turns a (rotated) float model into a quantized one
    (`--quantize`, its name before the sq- prefix, stays an alias for one
    release).
    SPEC is `wXaYkvZ` or `wXaYkZvW` (bits of weights, activations, keys and
    values, 2-8 or 16 for "not quantized"; the KV part may be left out),
    then comma-separated options mirroring the official SpinQuant flags:

    | option | meaning (default) |
    |---|---|
    | `wgroup=N` | weight group size; 0 = per output channel (0) |
    | `wsym` / `wasym` | symmetric or asymmetric weights (wsym) |
    | `wclip` | MSE clip search for weight scales: shrink 1.00, 0.99, ... 80 steps, error norm 2.4 (off) |
    | `gptq`, `nsamples=N`, `damp=F`, `block=N`, `actorder` | GPTQ instead of round-to-nearest (128, 0.01, 128, off) |
    | `calib=FILE`, `tokenizer=byte\|sp:PATH\|hf:DIR`, `seqlen=N` | GPTQ calibration text (required with gptq; byte; the model's context, at most 2048) |
    | `asym` / `sym`, `aclip=R` | activations, per token, dynamic (asym, 1.0) |
    | `kgroup=N`, `vgroup=N`, `kclip=R`, `vclip=R` | KV cache, asymmetric (groups of head_dim, 1.0) |
    | `mode=fake` / `mode=real` | fake: float weights through quantize-dequantize; real: `sq.qlinear` with packed int4/int8 weights (fake) |
    | `head=8` / `head=16` | lm_head: 8 quantizes it too, int8 symmetric per-output-channel weights (RTN, or GPTQ with `gptq`, last) and its input 8-bit per token (the spec's `asym`/`sym`, no clip), so a compiled model reads 1 byte per head weight on the integer path; 16 keeps it in float, as SpinQuant does (16) |

    What is quantized: the weights of every linear layer but lm_head; the
    input of every such linear (per token; o_proj's input in groups of
    head_dim), with an `sq.fake_quant` (or `sq.qlinear`'s `act_quant`);
    the keys (after R3) and values entering each attention. lm_head and
    its input stay in float unless `head=8` (a head tied to the embedding
    then gets its own int8 copy, `lm_head.weight.qweight`; the embedding
    keeps the float table). GPTQ runs layer by layer: layer N's Hessians
    come from the calibration text run through the model whose earlier
    layers are already quantized (activations in float); group scales are
    fixed from the unmodified weight before the column updates (the
    official code's `static_groups`, which act-order needs). Weight scales
    are fp32. The executor runs both modes, and they give the same logits.
    Learned clip ratios on the model (from `--sq-spinquant-rotate=...
    clip=learned|acts|weights`) take precedence: `sq.input_clip` on a
    linear sets its input quantizer's clip (instead of `aclip`),
    `sq.key_clip` / `sq.value_clip` on an attention the KV cache's (instead
    of `kclip` / `vclip`), and `sq.weight_clip` (one ratio per output
    channel) the weight's RTN or GPTQ scales (instead of `wclip`'s search);
    the pass removes them once used.
    Limits today: GPTQ runs the reference executor, which widens every
    weight to fp32, so it needs about 4 bytes per parameter of memory (a 7B
    model does not fit a 24 GB machine yet).

    ```
    sq-opt --sq-spinquant-rotate --sq-quantize=w4a4kv4 model.mlir
    sq-opt --sq-quantize=w4a16,wgroup=128,mode=real model.mlir
    sq-opt --sq-quantize=w4a4kv4,gptq,calib=wiki.valid.txt model.mlir
    sq-opt --sq-quantize=w4a4kv4,head=8,mode=real model.mlir    # 8-bit lm_head
    ```
  }];
}

#endif // SQ_TRANSFORMS_PASSES_TD
