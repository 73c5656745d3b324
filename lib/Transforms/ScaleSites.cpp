//===- ScaleSites.cpp - the exactly foldable diagonal scalings ------------===//
//
// See ScaleSites.h.
//
//===----------------------------------------------------------------------===//

#include "ScaleSites.h"
#include "WeightAccess.h"
#include "sq/Numerics/Hadamard.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>

using namespace mlir;

namespace sq {

std::string ScaleSite::name() const {
  static const char *kinds[] = {"attn_input", "qk", "value", "mlp_input", "up"};
  return "layers." + std::to_string(layer) + "." + kinds[int(kind)] + ".scale";
}

/// `v` without the fake quantizers and online rotations on its way.
static Value skipOnline(Value v) {
  while (Operation *def = v.getDefiningOp()) {
    if (auto fq = dyn_cast<FakeQuantOp>(def))
      v = fq.getInput();
    else if (auto h = dyn_cast<HadamardOp>(def))
      v = h.getInput();
    else if (auto r = dyn_cast<RotateOp>(def))
      v = r.getInput();
    else
      break;
  }
  return v;
}

static std::string weightName(Value v) {
  if (auto w = v ? v.getDefiningOp<WeightOp>() : WeightOp())
    return w.getName().str();
  return "";
}

/// The linears reading `v` (directly or through its fake quantizers) as
/// their input.
static void readersOf(Value v, SmallVectorImpl<LinearOp> &out) {
  for (OpOperand &use : v.getUses()) {
    if (auto fq = dyn_cast<FakeQuantOp>(use.getOwner()))
      readersOf(fq.getOutput(), out);
    else if (auto l = dyn_cast<LinearOp>(use.getOwner()))
      if (use.getOperandNumber() == 0)
        out.push_back(l);
  }
}

bool findScaleSites(ModuleOp module, std::vector<ScaleSite> &sites,
                    std::string &error) {
  sites.clear();
  SmallVector<AttentionOp> attentions;
  SmallVector<MulOp> muls;
  module.walk([&](Operation *op) {
    if (auto a = dyn_cast<AttentionOp>(op))
      attentions.push_back(a);
    else if (auto m = dyn_cast<MulOp>(op))
      muls.push_back(m);
  });
  if (muls.size() != attentions.size()) {
    error = "scales: " + std::to_string(attentions.size()) +
            " attentions but " + std::to_string(muls.size()) +
            " gated MLPs (silu(gate) * up)";
    return false;
  }
  auto fail = [&](Operation *op, const Twine &msg) {
    error = ("scales: " + op->getName().getStringRef() + ": " + msg).str();
    return false;
  };
  auto addUse = [&](ScaleSite &site, LinearOp l, bool bias, bool columns,
                    int sign, std::vector<int64_t> index) -> bool {
    Value w = bias ? l.getBias() : l.getWeight();
    if (!w)
      return true;
    ScaleUse u;
    u.name = weightName(w);
    if (u.name.empty())
      return fail(l, "weight must be an sq.weight");
    u.user = l;
    u.bias = bias;
    u.columns = columns;
    u.sign = sign;
    u.index = std::move(index);
    site.uses.push_back(std::move(u));
    return true;
  };
  auto iota = [](int64_t n) {
    std::vector<int64_t> v(n);
    for (int64_t i = 0; i < n; ++i)
      v[i] = i;
    return v;
  };
  // The norm site feeding `first` (a reader): the norm, and every reader's
  // columns by 1/s.
  auto normSite = [&](ScaleKind kind, int64_t layer, LinearOp first,
                      ScaleSite &site) -> bool {
    auto norm = skipOnline(first.getInput()).getDefiningOp<RMSNormOp>();
    if (!norm || (first.getInput() != norm.getOutput() &&
                  !first.getInput().getDefiningOp<FakeQuantOp>()))
      return fail(first, "the input must be an RMSNorm (through its "
                         "quantizer only)");
    if (norm.getScale())
      return fail(norm, "has a scale (run --sq-fuse-norms first)");
    site.kind = kind;
    site.layer = layer;
    site.norm = norm;
    site.size = cast<ShapedType>(norm.getType()).getShape().back();
    SmallVector<LinearOp> readers;
    readersOf(norm.getOutput(), readers);
    for (LinearOp r : readers)
      if (!addUse(site, r, false, true, -1, iota(site.size)))
        return false;
    return true;
  };
  for (auto [layer, attn] : llvm::enumerate(attentions)) {
    int64_t l = layer;
    auto qRope = skipOnline(attn.getQuery()).getDefiningOp<RopeOp>();
    auto kRope = skipOnline(attn.getKey()).getDefiningOp<RopeOp>();
    auto q = qRope ? qRope.getInput().getDefiningOp<LinearOp>() : LinearOp();
    auto k = kRope ? kRope.getInput().getDefiningOp<LinearOp>() : LinearOp();
    auto v = skipOnline(attn.getValue()).getDefiningOp<LinearOp>();
    LinearOp o;
    Value out = attn.getOutput();
    while (out.hasOneUse()) {
      Operation *u = *out.getUsers().begin();
      if (auto fq = dyn_cast<FakeQuantOp>(u))
        out = fq.getOutput();
      else if (auto r = dyn_cast<RotateOp>(u))
        out = r.getOutput();
      else {
        o = dyn_cast<LinearOp>(u);
        break;
      }
    }
    if (!q || !k || !v || !o)
      return fail(attn, "the scales need q/k projections through RoPE, a "
                        "value projection and one o_proj");
    int64_t d = attn.getHeadDim(), heads = attn.getNumHeads(),
            kvHeads = attn.getNumKvHeads();
    if (d % 2 || heads % kvHeads ||
        q.getWeight().getType().getDimSize(0) != heads * d ||
        k.getWeight().getType().getDimSize(0) != kvHeads * d ||
        v.getWeight().getType().getDimSize(0) != kvHeads * d ||
        o.getWeight().getType().getDimSize(1) != heads * d)
      return fail(attn, "q/k/v/o_proj do not match the heads");
    int64_t group = heads / kvHeads;
    // attn-input.
    ScaleSite in;
    if (!normSite(ScaleKind::AttnInput, l, q, in))
      return false;
    sites.push_back(std::move(in));
    // qk: the pair of each dimension.
    bool interleaved = kRope.getLayout() == RopeLayout::Interleaved;
    if ((qRope.getLayout() == RopeLayout::Interleaved) != interleaved)
      return fail(attn, "q and k have different RoPE layouts");
    ScaleSite qk;
    qk.kind = ScaleKind::QK;
    qk.layer = l;
    qk.size = kvHeads * d / 2;
    auto pairIndex = [&](int64_t rows, int64_t perKv) {
      std::vector<int64_t> idx(rows);
      for (int64_t r = 0; r < rows; ++r) {
        int64_t head = r / d, i = r % d;
        int64_t pair = interleaved ? i / 2 : i % (d / 2);
        idx[r] = head / perKv * (d / 2) + pair;
      }
      return idx;
    };
    for (bool bias : {false, true})
      if (!addUse(qk, k, bias, false, +1, pairIndex(kvHeads * d, 1)) ||
          !addUse(qk, q, bias, false, -1, pairIndex(heads * d, group)))
        return false;
    sites.push_back(std::move(qk));
    // value: after R2 on v_proj's rows, before it on o_proj's columns.
    ScaleSite value;
    value.kind = ScaleKind::Value;
    value.layer = l;
    value.size = kvHeads * d;
    std::vector<int64_t> oIndex(heads * d);
    for (int64_t c = 0; c < heads * d; ++c)
      oIndex[c] = c / d / group * d + c % d;
    if (!addUse(value, v, false, false, +1, iota(kvHeads * d)) ||
        !addUse(value, v, true, false, +1, iota(kvHeads * d)) ||
        !addUse(value, o, false, true, -1, oIndex))
      return false;
    sites.push_back(std::move(value));
    // mlp-input and up.
    MulOp mul = muls[layer];
    auto silu = mul.getLhs().getDefiningOp<SiluOp>();
    auto up = mul.getRhs().getDefiningOp<LinearOp>();
    auto gate = silu ? silu.getInput().getDefiningOp<LinearOp>() : LinearOp();
    if (!gate || !up || !mul.getOutput().hasOneUse())
      return fail(mul, "the MLP must be silu(gate_proj) * up_proj, read once");
    Value toDown = mul.getOutput();
    HadamardOp r4;
    LinearOp down;
    while (toDown.hasOneUse()) {
      Operation *u = *toDown.getUsers().begin();
      if (auto fq = dyn_cast<FakeQuantOp>(u))
        toDown = fq.getOutput();
      else if (auto h = dyn_cast<HadamardOp>(u)) {
        if (r4)
          break;
        r4 = h;
        toDown = h.getOutput();
      } else {
        down = dyn_cast<LinearOp>(u);
        break;
      }
    }
    if (!down)
      return fail(mul, "silu(gate) * up must feed one down_proj");
    int64_t inter = up.getWeight().getType().getDimSize(0);
    if (down.getWeight().getType().getDimSize(1) != inter)
      return fail(down, "down_proj does not read up_proj's channels");
    if (r4 && r4.getSize() && int64_t(*r4.getSize()) != inter)
      return fail(r4, "the online Hadamard before down_proj must span its "
                      "whole input for the up/down scale");
    ScaleSite mlpIn;
    if (!normSite(ScaleKind::MlpInput, l, gate, mlpIn))
      return false;
    sites.push_back(std::move(mlpIn));
    ScaleSite upSite;
    upSite.kind = ScaleKind::Up;
    upSite.layer = l;
    upSite.size = inter;
    if (!addUse(upSite, up, false, false, +1, iota(inter)) ||
        !addUse(upSite, up, true, false, +1, iota(inter)) ||
        !addUse(upSite, down, false, true, -1, iota(inter)))
      return false;
    if (r4) {
      upSite.uses.back().transformed = true;
      upSite.uses.back().seed = r4.getSeed() ? *r4.getSeed() : 0;
    }
    sites.push_back(std::move(upSite));
  }
  return true;
}

std::vector<double> scaleFactors(const ScaleUse &use,
                                 const std::vector<double> &logScales) {
  std::vector<double> f(use.index.size());
  for (size_t i = 0; i < f.size(); ++i)
    f[i] = std::exp(use.sign * logScales[use.index[i]]);
  return f;
}

void transformRows(float *w, int64_t rows, int64_t n, uint64_t seed,
                   bool transpose) {
  if (numerics::preferDenseTransform(n)) {
    const std::vector<float> &t = numerics::denseTransform(n, seed);
    std::vector<float> out(rows * n);
    cblas_sgemm(CblasRowMajor, CblasNoTrans,
                transpose ? CblasTrans : CblasNoTrans, rows, n, n, 1.0f, w, n,
                t.data(), n, 0.0f, out.data(), n);
    std::copy(out.begin(), out.end(), w);
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    if (transpose)
      numerics::orthogonalTransformTransposeInPlace(w + r * n, n, seed);
    else
      numerics::orthogonalTransformInPlace(w + r * n, n, seed);
  }
}

void applyScale(const ScaleUse &use, const std::vector<double> &factors,
                float *w, int64_t rows, int64_t cols) {
  if (!use.columns) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        w[r * cols + c] = float(w[r * cols + c] * factors[r]);
    return;
  }
  if (use.transformed)
    transformRows(w, rows, cols, use.seed, /*transpose=*/true);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      w[r * cols + c] = float(w[r * cols + c] * factors[c]);
  if (use.transformed)
    transformRows(w, rows, cols, use.seed, /*transpose=*/false);
}

LogicalResult foldScales(ModuleOp module, const std::vector<ScaleSite> &sites,
                         const std::vector<std::vector<double>> &logScales,
                         WeightStorage storage) {
  if (logScales.size() != sites.size())
    return module.emitError()
           << "scales: " << logScales.size() << " learned scales for "
           << sites.size() << " sites";
  auto forward = module.lookupSymbol<func::FuncOp>("forward");
  OpBuilder b(module.getContext());
  for (auto [site, u] : llvm::zip(sites, logScales)) {
    if (int64_t(u.size()) != site.size)
      return module.emitError() << "scales: '" << site.name() << "' has "
                                << u.size() << " values, not " << site.size;
    for (const ScaleUse &use : site.uses) {
      LinearOp user = use.user;
      Value wv = use.bias ? user.getBias() : user.getWeight();
      auto weight = wv.getDefiningOp<WeightOp>();
      numerics::FloatBuffer w;
      if (!weight || !readWeightValues(weight, w))
        return user.emitOpError()
               << "weight must be a float sq.weight with data";
      weight = unshareWeight(weight, user);
      auto shape = cast<ShapedType>(wv.getType()).getShape();
      int64_t rows = shape[0], cols = shape.size() > 1 ? shape[1] : 1;
      applyScale(use, scaleFactors(use, u), w.data(), rows, cols);
      writeWeightValues(weight, std::move(w), storage);
    }
    if (site.norm) {
      std::vector<float> s(u.size());
      for (size_t i = 0; i < s.size(); ++i)
        s[i] = float(std::exp(u[i]));
      auto type = RankedTensorType::get({int64_t(s.size())}, b.getF32Type());
      if (forward)
        b.setInsertionPointToStart(&forward.getBody().front());
      else
        b.setInsertionPoint(site.norm);
      std::string name = "model.layers." + std::to_string(site.layer) +
                         (site.kind == ScaleKind::AttnInput
                              ? ".input_layernorm.weight"
                              : ".post_attention_layernorm.weight");
      RMSNormOp norm = site.norm;
      WeightOp w =
          makeWeight(b, norm.getLoc(), name, type, type,
                     ArrayRef<char>(reinterpret_cast<const char *>(s.data()),
                                    s.size() * sizeof(float)));
      norm.getScaleMutable().assign(w);
    }
  }
  return success();
}

} // namespace sq
