//===- QuantizeCalibration.cpp - GPTQ Hessians from calibration text ------===//
//
// Runs the reference executor over calibration windows and accumulates,
// for the requested linear layers, the Hessian (2/n) X^T X of their inputs.
//
//===----------------------------------------------------------------------===//

#include "QuantizeCalibration.h"
#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Exec/Executor.h"
#include "sq/Exec/TokenLoader.h"
#include "sq/Support/Distributed.h"
#include "sq/Transforms/GPTQ.h"
#include "sq/Transforms/QuantSpec.h"

#include "mlir/IR/BuiltinOps.h"

#include <map>
#include <random>

using namespace mlir;

namespace sq {

/// `nsamples` windows of `seqlen` tokens at seeded random offsets of the
/// tokenized calibration text (the official loader's sampling).
LogicalResult loadCalibrationSamples(ModuleOp module, const QuantSpec &spec,
                                     int64_t maxPositions,
                                     std::vector<std::vector<int64_t>> &out) {
  if (spec.calib.empty())
    return emitError(module.getLoc())
           << "quantize: gptq needs calibration text: add "
              "calib=FILE[,tokenizer=byte|sp:PATH|hf:DIR] to the spec";
  TokenSource source;
  source.path = spec.calib;
  source.name = "calibration text '" + spec.calib + "'";
  source.format = TokenSource::Format::Text;
  source.tokenizerSpec = spec.tokenizer;
  std::vector<int64_t> tokens;
  std::string error;
  if (!loadTokens(source, tokens, error))
    return emitError(module.getLoc()) << "quantize: " << error;
  int64_t seqlen = spec.seqlen;
  if (!seqlen)
    seqlen = maxPositions > 0 ? std::min<int64_t>(maxPositions, 2048) : 2048;
  if (int64_t(tokens.size()) <= seqlen)
    return emitError(module.getLoc())
           << "quantize: calibration text '" << spec.calib << "' has "
           << tokens.size() << " tokens, fewer than seqlen " << seqlen;
  std::mt19937_64 rng(0);
  std::uniform_int_distribution<int64_t> start(0, tokens.size() - seqlen - 1);
  out.clear();
  for (int64_t i = 0; i < spec.nsamples; ++i) {
    int64_t s = start(rng);
    out.emplace_back(tokens.begin() + s, tokens.begin() + s + seqlen);
  }
  return success();
}

/// Hessians of the inputs of `ops` (sq.linear / sq.qlinear of `module`)
/// over `samples`, one forward per sample.
LogicalResult collectHessians(ModuleOp module,
                              const std::vector<std::vector<int64_t>> &samples,
                              ArrayRef<Operation *> ops,
                              std::map<Operation *, HessianAccumulator> &out) {
  std::string error;
  auto executor = Executor::create(module, error);
  if (!executor)
    return emitError(module.getLoc()) << "quantize: " << error;
  // Linears sharing an input (q/k/v, gate/up) share one accumulator.
  std::map<Operation *, Operation *> owner;
  std::map<const void *, Operation *> byInput;
  for (Operation *op : ops) {
    Value in = op->getOperand(0);
    auto [it, fresh] = byInput.insert({in.getAsOpaquePointer(), op});
    owner[op] = it->second;
    if (fresh) {
      int64_t cols = cast<ShapedType>(in.getType()).getShape().back();
      out.erase(op);
      out.emplace(op, HessianAccumulator(cols));
    }
  }
  executor->setLinearObserver(
      [&](Operation *op, const float *x, int64_t rows, int64_t cols) {
        auto it = owner.find(op);
        if (it != owner.end() && it->second == op)
          out[op].add(x, rows);
      });
  // Data parallel (mpirun): each process takes its share of the samples and
  // the Hessians are summed with their token counts (H = sum_p n_p H_p /
  // sum_p n_p); one process runs them all, in order, as before.
  std::vector<float> logits;
  auto [first, last] = distributed::share(samples.size());
  for (int64_t i = first; i < last; ++i) {
    const std::vector<int64_t> &sample = samples[i];
    executor->reset();
    if (!executor->forward(sample, 1, sample.size(), logits, error))
      return emitError(module.getLoc()) << "quantize: " << error;
  }
  if (distributed::size() > 1)
    for (Operation *op : ops) { // the same order on every process
      if (owner[op] != op)
        continue;
      HessianAccumulator &acc = out.at(op);
      std::vector<double> sum = acc.hessian();
      int64_t n = acc.samples();
      for (double &v : sum)
        v *= double(n);
      distributed::allReduceSum(sum.data(), sum.size());
      distributed::allReduceSum(&n, 1);
      acc.assign(std::move(sum), n);
    }
  for (Operation *op : ops)
    if (owner[op] != op) {
      HessianAccumulator copy = out.at(owner[op]);
      out.erase(op);
      out.emplace(op, std::move(copy));
    }
  return success();
}

bool quantizeWeight(const float *w, int64_t rows, int64_t cols,
                    const QuantSpec &spec, const std::vector<double> *hessian,
                    numerics::QuantizedWeight &out, std::string &error,
                    const float *rowClips) {
  numerics::QuantGrid grid;
  grid.bits = spec.wBits;
  grid.symmetric = spec.wSym;
  grid.group = spec.wGroup;
  if (!spec.gptq)
    return numerics::quantizeRTN(w, rows, cols, grid, spec.wClip && !rowClips,
                                 out, error, rowClips);
  if (!hessian) {
    error = "no GPTQ Hessian";
    return false;
  }
  GPTQOptions options;
  options.damp = spec.damp;
  options.block = spec.block;
  options.actOrder = spec.actOrder;
  options.clipSearch = spec.wClip && !rowClips;
  options.rowClips = rowClips;
  return quantizeGPTQ(w, rows, cols, *hessian, grid, options, out, error);
}

} // namespace sq
