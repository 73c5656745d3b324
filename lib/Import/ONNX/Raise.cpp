//===- Raise.cpp - raising an ONNX LLaMA graph into sq ops ----------------===//
//
// See Raise.h. The transfer function of each ONNX op looks at the abstract
// kinds of its operands: concrete tensors are evaluated (Concrete.cpp),
// activations are reshaped/transposed as views or turned into sq ops, and
// the partial patterns of RMSNorm, RoPE and attention advance one step.
// Anything else is reported with the node and the LLaMA component that was
// expected there.
//
//===----------------------------------------------------------------------===//

#include "Raise.h"
#include "Concrete.h"

#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Numerics/Float16.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinDialect.h"
#include "mlir/IR/DialectResourceBlobManager.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/Parallel.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <sys/mman.h>
#include <unistd.h>

using namespace mlir;

namespace sq {
namespace onnx_import {
namespace {

//===----------------------------------------------------------------------===//
// Views: how an activation's atoms (batch, sequence, heads, head_dim, ...)
// are arranged in the axes of the ONNX tensor.
//===----------------------------------------------------------------------===//

enum class AK { B, S, P, T, N, R, D, F, One, DP, Two };

struct Atom {
  AK kind;
  int64_t size;
};
using Axis = std::vector<Atom>;
using View = std::vector<Axis>;

bool isSeq(AK k) { return k == AK::S || k == AK::P || k == AK::T; }
bool isFeature(AK k) { return k == AK::N || k == AK::D || k == AK::F; }

/// Interleaved RoPE splits head_dim into (head_dim/2 pairs, 2).
bool isPairSplit(const Axis &a, const Axis &b) {
  return a.size() == 1 && a[0].kind == AK::DP && b.size() == 1 &&
         b[0].kind == AK::Two;
}

int64_t axisSize(const Axis &axis) {
  int64_t n = 1;
  for (const Atom &a : axis)
    n *= a.size;
  return n;
}

std::vector<int64_t> viewShape(const View &view) {
  std::vector<int64_t> shape;
  for (const Axis &axis : view)
    shape.push_back(axisSize(axis));
  return shape;
}

std::vector<Atom> realAtoms(const View &view) {
  std::vector<Atom> atoms;
  for (const Axis &axis : view)
    for (const Atom &a : axis)
      if (a.kind != AK::One)
        atoms.push_back(a);
  return atoms;
}

/// [[B],[seq],[features...]]: the layout of the backing sq value.
bool isCanonical(const View &view) {
  std::vector<Axis> axes;
  for (const Axis &axis : view) {
    Axis real;
    for (const Atom &a : axis)
      if (a.kind != AK::One)
        real.push_back(a);
    if (!real.empty())
      axes.push_back(real);
  }
  if (axes.size() != 3 || axes[0].size() != 1 || axes[0][0].kind != AK::B ||
      axes[1].size() != 1 || !isSeq(axes[1][0].kind) || view.size() != 3)
    return false;
  for (const Atom &a : axes[2])
    if (!isFeature(a.kind))
      return false;
  return true;
}

std::string viewStr(const View &view) {
  static const char *names[] = {"batch",     "seq",      "past",
                                "total_seq", "heads",    "repeat",
                                "head_dim",  "features", "1"};
  std::string s = "[";
  for (size_t i = 0; i < view.size(); ++i) {
    if (i)
      s += ", ";
    for (size_t j = 0; j < view[i].size(); ++j) {
      if (j)
        s += "*";
      s += names[static_cast<int>(view[i][j].kind)];
      s += "(" + std::to_string(view[i][j].size) + ")";
    }
    if (view[i].empty())
      s += "()";
  }
  return s + "]";
}

/// Regroups the atoms of `view` into the axes of `target` (row-major
/// reshape). A plain feature atom may split into heads x head_dim.
bool reshapeView(const View &view, const std::vector<int64_t> &target,
                 View &out, std::string &error) {
  std::vector<Atom> atoms = realAtoms(view);
  out.clear();
  size_t i = 0;
  for (int64_t t : target) {
    Axis axis;
    if (t == 1) {
      if (i < atoms.size() && atoms[i].size == 1)
        axis.push_back(atoms[i++]);
      else
        axis.push_back({AK::One, 1});
      out.push_back(axis);
      continue;
    }
    int64_t prod = 1;
    while (prod < t) {
      if (i >= atoms.size())
        break;
      Atom a = atoms[i];
      if (t % (prod * a.size) == 0) {
        axis.push_back(a);
        prod *= a.size;
        ++i;
      } else if (a.kind == AK::F && prod == 1 && a.size % t == 0) {
        axis.push_back({AK::N, t});
        atoms[i] = {AK::D, a.size / t};
        prod = t;
      } else if (a.kind == AK::D && prod == 1 && t * 2 == a.size) {
        axis.push_back({AK::DP, t});
        atoms[i] = {AK::Two, 2};
        prod = t;
      } else {
        break;
      }
    }
    // (pairs, 2) flattened back into one axis is head_dim again.
    if (axis.size() == 2 && axis[0].kind == AK::DP && axis[1].kind == AK::Two)
      axis = {{AK::D, axis[0].size * 2}};
    if (prod != t) {
      error = "reshape of an activation " + viewStr(view) + " to [" +
              [&] {
                std::string s;
                for (size_t k = 0; k < target.size(); ++k)
                  s += (k ? ", " : "") + std::to_string(target[k]);
                return s;
              }() +
              "] does not split or merge its dimensions as a LLaMA layer "
              "does (batch, sequence, heads x head_dim)";
      return false;
    }
    out.push_back(axis);
  }
  for (; i < atoms.size(); ++i)
    if (atoms[i].size != 1) {
      error =
          "reshape of an activation " + viewStr(view) + " drops a dimension";
      return false;
    }
  return true;
}

//===----------------------------------------------------------------------===//
// Abstract values
//===----------------------------------------------------------------------===//

struct KVCat {
  Value past;       // function argument [B, P, K*D]
  Value presentOut; // the sq.attention present result, once built
};

struct AVal;
using AValRef = std::shared_ptr<AVal>;

struct AVal {
  enum Kind {
    Concrete, // shape computations, masks, tables
    Weight,   // an initializer or large constant
    WeightT,  // Transpose of a 2-D weight
    Ids,      // the token ids input
    Act,      // an activation: backing flat value + view
    // RMSNorm pieces
    Sq,
    MeanSq,
    MeanSqEps,
    Rms,
    InvRms,
    Normed,
    // SwiGLU
    Sig,
    // RoPE pieces
    TableMul,
    Half,
    NegHalf,
    RotHalf,
    RotTableMul,
    // interleaved RoPE pieces: x = (r, i) pairs
    PairPart,
    PairMul,
    PairRot,
    PairRope,
    // attention pieces
    Scores,
    Probs
  } kind;

  CTensor c;                                 // Concrete; TableMul tables
  const onnx::TensorProto *tensor = nullptr; // Weight, WeightT
  Value v;                                   // Act backing, Ids
  View view;                                 // Act
  std::shared_ptr<KVCat> kv; // Act: keys/values after a cache concat
  Value kvNew;               // Act with kv: the new part
  AValRef x, y;              // the activations a pattern is about
  double eps = 0, scale = 1;
  bool hi = false, causal = false;
  int part =
      0; // PairPart/PairMul: 0 real, 1 imaginary; PairRot: 0 r*c-i*s, 1 r*s+i*c
  bool unsq = false; // PairRot: unsqueezed for the stack
  CTensor c2;        // PairRot/PairRope: the second table

  static AValRef make(Kind kind) {
    auto a = std::make_shared<AVal>();
    a->kind = kind;
    return a;
  }
};

const char *kindName(AVal::Kind k) {
  switch (k) {
  case AVal::Concrete:
    return "a constant";
  case AVal::Weight:
  case AVal::WeightT:
    return "a weight";
  case AVal::Ids:
    return "the token ids";
  case AVal::Act:
    return "an activation";
  case AVal::Sq:
    return "x^2 of an RMSNorm";
  case AVal::MeanSq:
    return "mean(x^2) of an RMSNorm";
  case AVal::MeanSqEps:
    return "mean(x^2)+eps of an RMSNorm";
  case AVal::Rms:
    return "sqrt(mean(x^2)+eps) of an RMSNorm";
  case AVal::InvRms:
    return "1/rms of an RMSNorm";
  case AVal::Normed:
    return "a normalized activation";
  case AVal::Sig:
    return "sigmoid(gate) of SwiGLU";
  case AVal::TableMul:
    return "x*cos of RoPE";
  case AVal::Half:
    return "a half of a head (RoPE rotate_half)";
  case AVal::NegHalf:
    return "-x2 of RoPE rotate_half";
  case AVal::RotHalf:
    return "rotate_half(x) of RoPE";
  case AVal::RotTableMul:
    return "rotate_half(x)*sin of RoPE";
  case AVal::PairPart:
    return "one element of RoPE's (real, imaginary) pairs";
  case AVal::PairMul:
    return "a pair element times a cos/sin table";
  case AVal::PairRot:
    return "a rotated pair element of interleaved RoPE";
  case AVal::PairRope:
    return "the stacked pairs of interleaved RoPE";
  case AVal::Scores:
    return "attention scores";
  case AVal::Probs:
    return "attention probabilities";
  }
  return "?";
}

//===----------------------------------------------------------------------===//
// Element decoding
//===----------------------------------------------------------------------===//

double elementAt(const TensorBytes &t, int64_t i) {
  const char *p = t.bytes.data() + i * dtypeSize(t.dtype);
  switch (t.dtype) {
  case DType::F32: {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  case DType::F64: {
    double d;
    std::memcpy(&d, p, 8);
    return d;
  }
  case DType::F16: {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return numerics::halfToFloat(h);
  }
  case DType::BF16: {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return numerics::bf16ToFloat(h);
  }
  case DType::I64: {
    int64_t v;
    std::memcpy(&v, p, 8);
    return static_cast<double>(v);
  }
  case DType::I32: {
    int32_t v;
    std::memcpy(&v, p, 4);
    return v;
  }
  case DType::I8:
    return static_cast<int8_t>(*p);
  case DType::U8:
  case DType::Bool:
    return static_cast<uint8_t>(*p);
  }
  return 0;
}

bool toConcrete(const TensorBytes &t, CTensor &c, std::string &error) {
  if (t.numElements() > kMaxConcreteElements) {
    error = "a weight is used in a shape computation";
    return false;
  }
  c.shape = t.dims;
  switch (t.dtype) {
  case DType::F32:
  case DType::F16:
  case DType::BF16:
  case DType::F64:
    c.kind = CTensor::Float;
    break;
  case DType::Bool:
    c.kind = CTensor::Bool;
    break;
  default:
    c.kind = CTensor::Int;
  }
  c.data.resize(t.numElements());
  for (int64_t i = 0; i < t.numElements(); ++i)
    c.data[i] = elementAt(t, i);
  return true;
}

/// dst[c][r] = src[r][c] for a rows x cols matrix of `elem`-byte elements,
/// in 64x64 tiles so that both sides stream through the cache.
void transposeTiled(const char *src, char *dst, int64_t rows, int64_t cols,
                    size_t elem) {
  constexpr int64_t tile = 64;
  auto run = [&](auto zero) {
    using T = decltype(zero);
    // Byte offsets, not T pointers: external data may sit at any offset of
    // its file, so `src` need not be aligned for T.
    constexpr int64_t n = sizeof(T);
    // Column tiles are independent: spread them over the cores (this also
    // overlaps the page faults that read the mapped file).
    int64_t colTiles = (cols + tile - 1) / tile;
    llvm::parallelFor(0, colTiles, [&](size_t tileIndex) {
      int64_t c0 = static_cast<int64_t>(tileIndex) * tile;
      for (int64_t r0 = 0; r0 < rows; r0 += tile)
        for (int64_t c = c0; c < std::min(cols, c0 + tile); ++c)
          for (int64_t r = r0; r < std::min(rows, r0 + tile); ++r) {
            std::memcpy(dst + (c * rows + r) * n, src + (r * cols + c) * n, n);
          }
    });
  };
  switch (elem) {
  case 2:
    run(uint16_t());
    break;
  case 4:
    run(uint32_t());
    break;
  default:
    run(uint64_t());
    break;
  }
}

/// Drops the pages of a read-only file mapping from this process (they are
/// read again from the file if touched).
/// The index of the first NaN/Inf in float32/float16/bfloat16 data, or -1.
int64_t firstNonFinite(ArrayRef<char> data, DType dtype) {
  if (dtype == DType::F32) {
    for (size_t i = 0; i + 4 <= data.size(); i += 4) {
      uint32_t bits;
      std::memcpy(&bits, data.data() + i, 4);
      if ((bits & 0x7F800000u) == 0x7F800000u)
        return static_cast<int64_t>(i / 4);
    }
  } else if (dtype == DType::F16 || dtype == DType::BF16) {
    uint16_t mask = dtype == DType::F16 ? 0x7C00u : 0x7F80u;
    for (size_t i = 0; i + 2 <= data.size(); i += 2) {
      uint16_t bits;
      std::memcpy(&bits, data.data() + i, 2);
      if ((bits & mask) == mask)
        return static_cast<int64_t>(i / 2);
    }
  }
  return -1;
}

void releaseMapped(ArrayRef<char> bytes) {
  uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  uintptr_t begin = reinterpret_cast<uintptr_t>(bytes.data());
  uintptr_t end = begin + bytes.size();
  begin = (begin + page - 1) & ~(page - 1); // only whole pages of this range
  end &= ~(page - 1);
  if (end > begin)
    madvise(reinterpret_cast<void *>(begin), end - begin, MADV_DONTNEED);
}

//===----------------------------------------------------------------------===//
// The raiser
//===----------------------------------------------------------------------===//

bool isScalar(const AValRef &a, double &v);
double roundAsFloat32(double v);

class Raiser {
public:
  Raiser(OnnxModel &model, ModuleOp module, const OnnxImportOptions &options)
      : model(model), module(module), options(options),
        builder(module.getContext()), loc(builder.getUnknownLoc()) {}

  bool run(std::string &error);

private:
  // Node-level helpers.
  bool fail(const std::string &msg) {
    err = msg;
    return false;
  }
  bool evalNode(const onnx::NodeProto &node, std::vector<AValRef> &outs);
  bool attrInt(const onnx::NodeProto &node, const char *name, int64_t &v);
  bool attrInts(const onnx::NodeProto &node, const char *name,
                std::vector<int64_t> &v);
  bool concreteOf(const AValRef &a, CTensor &c);
  bool constantAttr(const onnx::NodeProto &node, AValRef &out);

  // Activations.
  AValRef act(Value v, View view) {
    AValRef a = AVal::make(AVal::Act);
    a->v = v;
    a->view = std::move(view);
    return a;
  }
  bool asAct(const AValRef &a, AValRef &out, const char *expected);
  bool canonicalAct(const AValRef &a, AValRef &out, const char *expected);
  View flatView(int64_t features, AK seq = AK::S) {
    return {{{AK::B, options.probeBatch}},
            {{seq, seq == AK::S ? options.probeSeq : options.probePast}},
            {{AK::F, features}}};
  }
  RankedTensorType actType(int64_t features) {
    return RankedTensorType::get(
        {ShapedType::kDynamic, ShapedType::kDynamic, features},
        builder.getF32Type());
  }
  int64_t featureSize(const View &view) { return axisSize(view.back()); }

  // Weights.
  bool weightValue(const onnx::TensorProto *tensor, bool transpose, Value &out);

  // Ops by family.
  bool opMatMul(const AValRef &a, const AValRef &b, AValRef &out);
  bool opMul(const AValRef &a, const AValRef &b, AValRef &out);
  bool opAdd(const AValRef &a, const AValRef &b, AValRef &out);
  bool opDiv(const AValRef &a, const AValRef &b, AValRef &out);
  bool makeRope(const AValRef &cosTerm, const AValRef &sinTerm, AValRef &out);
  bool extractTable(const View &view, const CTensor &table,
                    std::vector<double> &t2, int64_t &rows, int64_t &cols);
  bool finishRope(const AValRef &x, const View &resultView,
                  const std::vector<double> &cosT,
                  const std::vector<double> &sinT, int64_t rows, int64_t cols,
                  RopeLayout layout, AValRef &out, int64_t heads = 0,
                  int64_t firstPosition = -1);
  bool buildAttention(const std::string &op, const AValRef &q, const AValRef &k,
                      const AValRef &v, const AValRef &pastK,
                      const AValRef &pastV, int64_t heads, int64_t kvHeads,
                      int64_t headDim, double scale,
                      const onnx::NodeProto &node, std::vector<AValRef> &outs);
  bool opContrib(const std::string &op, const std::vector<AValRef> &in,
                 const onnx::NodeProto &node, std::vector<AValRef> &outs,
                 bool &handled);
  bool ropeFromCaches(const AValRef &x, const AValRef &cosCache,
                      const AValRef &sinCache, bool interleaved, int64_t heads,
                      AValRef &out);
  bool opPair(const std::string &op, const std::vector<AValRef> &in,
              const onnx::NodeProto &node, std::vector<AValRef> &outs,
              bool &handled);
  bool isCausalMask(const CTensor &mask, const AValRef &scores);

  OnnxModel &model;
  ModuleOp module;
  OnnxImportOptions options;
  OpBuilder builder;
  Location loc;
  std::string err;

  std::map<std::string, AValRef> values;
  llvm::StringMap<const onnx::TensorProto *> initializers;
  std::map<std::pair<const onnx::TensorProto *, bool>, int> weightUses;
  Value positions;
  bool hasCache = false;
  int64_t positionStart = 0;
};

bool Raiser::attrInt(const onnx::NodeProto &node, const char *name,
                     int64_t &v) {
  for (const auto &a : node.attribute())
    if (a.name() == name) {
      v = a.i();
      return true;
    }
  return false;
}

bool Raiser::attrInts(const onnx::NodeProto &node, const char *name,
                      std::vector<int64_t> &v) {
  for (const auto &a : node.attribute())
    if (a.name() == name) {
      v.assign(a.ints().begin(), a.ints().end());
      return true;
    }
  return false;
}

bool Raiser::concreteOf(const AValRef &a, CTensor &c) {
  if (a->kind == AVal::Concrete) {
    c = a->c;
    return true;
  }
  if (a->kind == AVal::Weight) {
    TensorBytes bytes;
    if (!model.readTensor(*a->tensor, bytes, err))
      return false;
    return toConcrete(bytes, c, err);
  }
  return false;
}

bool Raiser::constantAttr(const onnx::NodeProto &node, AValRef &out) {
  for (const auto &a : node.attribute()) {
    if (a.name() == "value") {
      TensorBytes bytes;
      if (!model.readTensor(a.t(), bytes, err))
        return false;
      if (bytes.numElements() > 4096) {
        out = AVal::make(AVal::Weight);
        out->tensor = &a.t();
        return true;
      }
      out = AVal::make(AVal::Concrete);
      return toConcrete(bytes, out->c, err);
    }
    out = AVal::make(AVal::Concrete);
    if (a.name() == "value_float") {
      out->c = CTensor::scalar(a.f(), CTensor::Float);
      return true;
    }
    if (a.name() == "value_int") {
      out->c = CTensor::scalar(static_cast<double>(a.i()), CTensor::Int);
      return true;
    }
    if (a.name() == "value_ints") {
      out->c = CTensor::vector(
          std::vector<int64_t>(a.ints().begin(), a.ints().end()));
      return true;
    }
    if (a.name() == "value_floats") {
      out->c.kind = CTensor::Float;
      out->c.shape = {a.floats_size()};
      out->c.data.assign(a.floats().begin(), a.floats().end());
      return true;
    }
  }
  return fail("Constant without a supported value attribute");
}

bool Raiser::asAct(const AValRef &a, AValRef &out, const char *expected) {
  if (a->kind == AVal::Act) {
    out = a;
    return true;
  }
  if (a->kind == AVal::Normed) {
    // A weightless RMSNorm (its scale, if any, was not found next to it).
    auto op = RMSNormOp::create(builder, loc, a->x->v, Value(),
                                builder.getF64FloatAttr(a->eps));
    out = act(op, a->x->view);
    return true;
  }
  return fail(std::string("found ") + kindName(a->kind) + " where " + expected +
              " was expected");
}

bool Raiser::canonicalAct(const AValRef &a, AValRef &out,
                          const char *expected) {
  if (!asAct(a, out, expected))
    return false;
  if (out->kv || !isCanonical(out->view))
    return fail(std::string("activation laid out as ") + viewStr(out->view) +
                " where " + expected + " [batch, seq, features] was expected");
  return true;
}

bool Raiser::weightValue(const onnx::TensorProto *tensor, bool transpose,
                         Value &out) {
  TensorBytes bytes;
  if (!model.readTensor(*tensor, bytes, err))
    return false;
  Type elementType;
  switch (bytes.dtype) {
  case DType::F32:
    elementType = builder.getF32Type();
    break;
  case DType::F16:
    elementType = builder.getF16Type();
    break;
  case DType::BF16:
    elementType = builder.getBF16Type();
    break;
  default:
    return fail("weight '" + tensor->name() + "' has element type " +
                dtypeName(bytes.dtype) +
                "; weights must be float32, float16 or bfloat16");
  }
  // A NaN or Inf weight is a corrupt model (a bad export or download):
  // every later stage would compute garbage from it.
  int64_t bad = firstNonFinite(bytes.bytes, bytes.dtype);
  if (bad >= 0)
    return fail("weight '" + tensor->name() +
                "' holds a non-finite value (NaN or Inf) at element " +
                std::to_string(bad) + ": the model's weights are corrupt");
  std::vector<int64_t> dims = bytes.dims;
  size_t elem = dtypeSize(bytes.dtype);
  std::unique_ptr<AsmResourceBlob> blob;
  if (transpose) {
    if (dims.size() != 2)
      return fail("weight '" + tensor->name() + "' is not 2-D");
    auto heap = HeapAsmResourceBlob::allocate(bytes.bytes.size(), elem,
                                              /*dataIsMutable=*/true);
    transposeTiled(bytes.bytes.data(), heap.getMutableData().data(), dims[0],
                   dims[1], elem);
    blob = std::make_unique<AsmResourceBlob>(std::move(heap));
    std::swap(dims[0], dims[1]);
  } else {
    blob = std::make_unique<AsmResourceBlob>(
        HeapAsmResourceBlob::allocateAndCopyWithAlign(bytes.bytes, elem));
  }
  // The bytes are copied: give the mapped pages of external data back, so
  // that a large import holds about one copy of the weights.
  if (bytes.keepAlive)
    releaseMapped(bytes.bytes);
  auto type = RankedTensorType::get(dims, elementType);
  std::string name = tensor->name().empty() ? "weight" : tensor->name();
  auto attr = DenseResourceElementsAttr::get(type, name, std::move(*blob));
  out = WeightOp::create(builder, loc, cast<ElementsAttr>(attr));
  return true;
}

//===----------------------------------------------------------------------===//
// MatMul: linear layers, attention scores, attention output
//===----------------------------------------------------------------------===//

bool Raiser::opMatMul(const AValRef &a, const AValRef &b, AValRef &out) {
  // Linear layer: activation x weight [in, out] (or Transpose of [out, in]).
  if (b->kind == AVal::Weight || b->kind == AVal::WeightT) {
    AValRef x;
    if (!canonicalAct(a, x,
                      "the input of a linear layer (MatMul with a "
                      "weight)"))
      return false;
    const auto &dims = b->tensor->dims();
    if (dims.size() != 2)
      return fail("MatMul with a " + std::to_string(dims.size()) +
                  "-D weight: expected a 2-D linear weight");
    bool transposedInOnnx = b->kind == AVal::WeightT;
    int64_t in = transposedInOnnx ? dims[1] : dims[0];
    int64_t outF = transposedInOnnx ? dims[0] : dims[1];
    if (in != featureSize(x->view))
      return fail("linear weight '" + b->tensor->name() + "' has " +
                  std::to_string(in) + " input features but the activation " +
                  "has " + std::to_string(featureSize(x->view)));
    Value w;
    if (!weightValue(b->tensor, /*transpose=*/!transposedInOnnx, w))
      return false;
    auto op = LinearOp::create(builder, loc, x->v, w);
    out = act(op, flatView(outF));
    return true;
  }

  // Attention output: probabilities x values.
  if (a->kind == AVal::Probs) {
    AValRef scores = a->x;
    AValRef v;
    if (!asAct(b, v, "the values of attention"))
      return false;
    AValRef q = scores->x, k = scores->y;
    // Values: [..batch.., kv_seq, head_dim] with the key's batch layout.
    if (v->view.size() < 2 || v->view.back().size() != 1 ||
        v->view.back()[0].kind != AK::D)
      return fail("attention values laid out as " + viewStr(v->view) +
                  ": expected [..., kv_seq, head_dim]");
    if (static_cast<bool>(v->kv) != static_cast<bool>(k->kv))
      return fail("keys and values of attention differ in KV-cache use");
    int64_t heads = scores->c.intAt(0), kvHeads = scores->c.intAt(1);
    auto qType = cast<RankedTensorType>(q->v.getType());
    Value keyNew = k->kv ? k->kvNew : k->v;
    Value valueNew = v->kv ? v->kvNew : v->v;
    FloatAttr scaleAttr;
    int64_t headDim = scores->c.data[2];
    double defaultScale = 1.0 / std::sqrt(static_cast<double>(headDim));
    if (std::fabs(scores->scale - defaultScale) > 1e-6 * defaultScale)
      scaleAttr = builder.getF64FloatAttr(scores->scale);
    SmallVector<Type> presentTypes;
    Value pastK, pastV;
    if (k->kv) {
      pastK = k->kv->past;
      pastV = v->kv->past;
      presentTypes = {pastK.getType(), pastV.getType()};
    }
    auto op = AttentionOp::create(builder, loc, qType, presentTypes, q->v,
                                  keyNew, valueNew, pastK, pastV, heads,
                                  kvHeads, scaleAttr, scores->causal);
    if (k->kv) {
      k->kv->presentOut = op.getPresent()[0];
      v->kv->presentOut = op.getPresent()[1];
    }
    // The result has the query's layout.
    View view = q->view;
    out = act(op.getOutput(), view);
    return true;
  }

  // Attention scores: queries x transposed keys.
  AValRef q, kt;
  if (!asAct(a, q, "the queries of attention (MatMul of two activations)") ||
      !asAct(b, kt, "the transposed keys of attention"))
    return false;
  const View &qv = q->view, &kv = kt->view;
  if (qv.size() < 3 || kv.size() != qv.size() || qv.back().size() != 1 ||
      qv.back()[0].kind != AK::D || kv[kv.size() - 2].size() != 1 ||
      kv[kv.size() - 2][0].kind != AK::D || qv[qv.size() - 2].size() != 1 ||
      !isSeq(qv[qv.size() - 2][0].kind) || kv.back().size() != 1 ||
      !isSeq(kv.back()[0].kind))
    return fail("MatMul of activations laid out as " + viewStr(qv) + " and " +
                viewStr(kv) +
                ": expected attention scores, [..., seq, head_dim] x "
                "[..., head_dim, kv_seq]");
  // Batch atoms: queries [B, N(h)], keys [B, N(k)] or [B, N(k), R(r)].
  auto batchAtoms = [](const View &v) {
    std::vector<Atom> atoms;
    for (size_t i = 0; i + 2 < v.size(); ++i)
      for (const Atom &a : v[i])
        if (a.kind != AK::One)
          atoms.push_back(a);
    return atoms;
  };
  std::vector<Atom> qb = batchAtoms(qv), kb = batchAtoms(kv);
  int64_t heads = 0, kvHeads = 0, rep = 1;
  bool ok = qb.size() == 2 && qb[0].kind == AK::B && qb[1].kind == AK::N &&
            (kb.size() == 2 || kb.size() == 3) && kb[0].kind == AK::B &&
            kb[1].kind == AK::N;
  if (ok) {
    heads = qb[1].size;
    kvHeads = kb[1].size;
    if (kb.size() == 3) {
      ok = kb[2].kind == AK::R;
      rep = kb[2].size;
    }
  }
  if (!ok || kvHeads * rep != heads)
    return fail("attention scores over queries " + viewStr(qv) + " and keys " +
                viewStr(kv) +
                ": expected every query head to read one key/value head "
                "(grouped-query attention)");
  AValRef s = AVal::make(AVal::Scores);
  s->x = q;
  s->y = kt;
  s->c.data = {static_cast<double>(heads), static_cast<double>(kvHeads),
               static_cast<double>(qv.back()[0].size)};
  s->scale = 1.0;
  out = s;
  return true;
}

//===----------------------------------------------------------------------===//
// RoPE tables
//===----------------------------------------------------------------------===//

/// Extracts the [seq, head_dim] table that `table` broadcasts onto `x`. Other
/// dimensions must be 1, or match the activation's and hold the same table
/// everywhere (tables gathered by position_ids are [batch, 1, seq, dim]).
bool Raiser::extractTable(const View &view, const CTensor &table,
                          std::vector<double> &t2, int64_t &rows,
                          int64_t &cols) {
  int64_t rank = static_cast<int64_t>(view.size());
  if (table.rank() > rank || table.rank() < 2 || view.back().size() != 1 ||
      (view.back()[0].kind != AK::D && view.back()[0].kind != AK::DP))
    return false;
  int64_t seqAxis = -1;
  for (int64_t i = 0; i < rank; ++i)
    if (view[i].size() == 1 && view[i][0].kind == AK::S)
      seqAxis = i;
  if (seqAxis < 0)
    return false;
  int64_t shift = rank - table.rank();
  rows = axisSize(view[seqAxis]);
  cols = axisSize(view.back());
  int64_t tRowAxis = seqAxis - shift, tColAxis = table.rank() - 1;
  if (tRowAxis < 0)
    return false;
  for (int64_t j = 0; j < table.rank(); ++j) {
    int64_t d = table.shape[j];
    if (j == tColAxis
            ? d != cols
            : (j == tRowAxis ? d != rows
                             : d != 1 && d != axisSize(view[j + shift])))
      return false;
  }
  // Read the [rows, cols] plane at index 0 of the other dimensions, then
  // check that every other index holds the same plane.
  std::vector<int64_t> strides(table.rank(), 1);
  for (int64_t j = table.rank() - 2; j >= 0; --j)
    strides[j] = strides[j + 1] * table.shape[j + 1];
  t2.assign(rows * cols, 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      t2[r * cols + c] =
          table.data[r * strides[tRowAxis] + c * strides[tColAxis]];
  std::vector<int64_t> idx(table.rank(), 0);
  for (int64_t i = 0; i < table.numel(); ++i) {
    if (std::fabs(table.data[i] - t2[idx[tRowAxis] * cols + idx[tColAxis]]) >
        1e-6)
      return false;
    for (int64_t j = table.rank() - 1; j >= 0; --j) {
      if (++idx[j] < table.shape[j])
        break;
      idx[j] = 0;
    }
  }
  return true;
}

bool Raiser::makeRope(const AValRef &cosTerm, const AValRef &sinTerm,
                      AValRef &out) {
  AValRef x = cosTerm->x;
  if (sinTerm->x->v != x->v || viewStr(sinTerm->x->view) != viewStr(x->view))
    return fail("RoPE adds x*cos and rotate_half(y)*sin of different "
                "activations");
  std::vector<double> cosT, sinT;
  int64_t rows, cols, rows2, cols2;
  if (!extractTable(x->view, cosTerm->c, cosT, rows, cols) ||
      !extractTable(x->view, sinTerm->c, sinT, rows2, cols2))
    return fail("RoPE tables do not broadcast as [seq, head_dim] onto the "
                "heads " +
                viewStr(x->view));
  return finishRope(x, x->view, cosT, sinT, rows, cols, RopeLayout::RotateHalf,
                    out);
}

/// Checks that the tables are cos/sin(position * theta^(-2i/head_dim)) at
/// positions firstPosition + row, recovers theta and builds sq.rope. For
/// rotate_half the tables have head_dim columns (frequency i at columns i
/// and i + head_dim/2); for interleaved, head_dim/2 (one per pair).
/// firstPosition < 0 means positionStart (the probe's past length).
bool Raiser::finishRope(const AValRef &x, const View &resultView,
                        const std::vector<double> &cosT,
                        const std::vector<double> &sinT, int64_t rows,
                        int64_t cols, RopeLayout layout, AValRef &out,
                        int64_t heads, int64_t firstPosition) {
  if (firstPosition < 0)
    firstPosition = positionStart;
  bool halves = layout == RopeLayout::RotateHalf;
  int64_t headDim = halves ? cols : 2 * cols;
  auto freqIndex = [&](int64_t d) { return halves ? d % (cols / 2) : d; };
  if (rows < 2 || (halves && cols % 2) || cols < 2)
    return fail("RoPE needs an even head_dim and at least two positions");
  // The frequency of column 1 from its phase, unwrapped over all rows
  // (fp16 tables are too coarse for a two-row difference).
  double phase = 0;
  for (int64_t r = 1; r < rows; ++r) {
    double c0 = cosT[(r - 1) * cols + 1], s0 = sinT[(r - 1) * cols + 1],
           c1 = cosT[r * cols + 1], s1 = sinT[r * cols + 1];
    phase += std::atan2(s1 * c0 - c1 * s0, c1 * c0 + s1 * s0);
  }
  double f1 = phase / static_cast<double>(rows - 1);
  if (!(f1 > 0 && f1 < 1))
    return fail("cannot read a RoPE frequency from the cos/sin tables");
  double estimate = std::pow(f1, -static_cast<double>(headDim) / 2.0);
  // Prefer the estimate rounded to two significant digits (10000, 500000,
  // 1e6, ...) when it reproduces the tables.
  double magnitude = std::pow(10.0, std::floor(std::log10(estimate)) - 1);
  double candidates[] = {std::round(estimate / magnitude) * magnitude,
                         estimate};
  std::string mismatch;
  for (double theta : candidates) {
    mismatch.clear();
    for (int64_t r = 0; r < rows && mismatch.empty(); ++r)
      for (int64_t d = 0; d < cols; ++d) {
        double angle = (firstPosition + r) *
                       std::pow(theta, -2.0 * freqIndex(d) / headDim);
        if (std::fabs(cosT[r * cols + d] - std::cos(angle)) > 2e-3 ||
            std::fabs(sinT[r * cols + d] - std::sin(angle)) > 2e-3) {
          mismatch = "row " + std::to_string(r) + ", column " +
                     std::to_string(d) + ": cos " +
                     std::to_string(cosT[r * cols + d]) + ", expected " +
                     std::to_string(std::cos(angle));
          break;
        }
      }
    if (mismatch.empty()) {
      estimate = theta;
      break;
    }
  }
  if (!mismatch.empty())
    return fail(std::string("the cos/sin tables are not ") +
                (halves ? "rotate-half" : "interleaved") +
                " RoPE tables at positions past_length + i for any theta "
                "(best estimate " +
                std::to_string(estimate) + "; " + mismatch + ")");
  double theta = estimate;
  for (const Axis &axis : x->view)
    for (const Atom &a : axis)
      if (a.kind == AK::N && !heads)
        heads = a.size;
  if (!heads)
    return fail("RoPE on an activation without heads " + viewStr(x->view));
  auto op = RopeOp::create(builder, loc, x->v, positions, heads,
                           builder.getF64FloatAttr(theta).getValue(), layout);
  out = act(op, resultView);
  return true;
}

//===----------------------------------------------------------------------===//
// ONNX Runtime contrib ops (the GenAI model builder's form)
//===----------------------------------------------------------------------===//

/// RoPE from cos/sin caches [max_positions, rotary_dim/2] (RotaryEmbedding,
/// GroupQueryAttention with do_rotary): rows at the probe positions.
bool Raiser::ropeFromCaches(const AValRef &x, const AValRef &cosCache,
                            const AValRef &sinCache, bool interleaved,
                            int64_t heads, AValRef &out) {
  CTensor c, s;
  if (!cosCache || !sinCache || !concreteOf(cosCache, c) ||
      !concreteOf(sinCache, s) || c.rank() != 2 || c.shape != s.shape)
    return fail("RoPE needs constant cos/sin caches [max_positions, "
                "rotary_dim/2]");
  // The whole cache, positions 0..max_positions-1.
  int64_t rows = c.shape[0], half = c.shape[1];
  if (positionStart + options.probeSeq > rows)
    return fail("the cos/sin caches are shorter than the probe positions");
  int64_t cols = interleaved ? half : 2 * half;
  std::vector<double> cosT(rows * cols), sinT(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = 0; d < cols; ++d) {
      int64_t src = r * half + (d % half);
      cosT[r * cols + d] = c.data[src];
      sinT[r * cols + d] = s.data[src];
    }
  if (heads * cols != featureSize(x->view))
    return fail("RoPE over " + std::to_string(heads) + " heads of " +
                std::to_string(cols) + " does not cover the " +
                std::to_string(featureSize(x->view)) +
                " features (partial rotary is not supported)");
  return finishRope(x, x->view, cosT, sinT, rows, cols,
                    interleaved ? RopeLayout::Interleaved
                                : RopeLayout::RotateHalf,
                    out, heads, /*firstPosition=*/0);
}

/// The sq.attention of a fused attention op (GroupQueryAttention,
/// MultiHeadAttention, ONNX Attention): outputs are (output, present_key,
/// present_value); caches must be graph inputs. `scale` 0 means default.
bool Raiser::buildAttention(const std::string &op, const AValRef &q,
                            const AValRef &k, const AValRef &v,
                            const AValRef &pastK, const AValRef &pastV,
                            int64_t heads, int64_t kvHeads, int64_t headDim,
                            double scale, const onnx::NodeProto &node,
                            std::vector<AValRef> &outs) {
  if (static_cast<bool>(pastK) != static_cast<bool>(pastV) ||
      (pastK && (pastK->kind != AVal::Act || !isa<BlockArgument>(pastK->v))))
    return fail(op + " past_key/past_value must both be graph inputs");
  FloatAttr scaleAttr;
  if (scale != 0.0 &&
      std::fabs(scale - 1.0 / std::sqrt(double(headDim))) > 1e-6 * scale)
    scaleAttr = builder.getF64FloatAttr(scale);
  SmallVector<Type> presentTypes;
  Value pk, pv;
  if (pastK) {
    pk = pastK->v;
    pv = pastV->v;
    presentTypes = {pk.getType(), pv.getType()};
  }
  auto attn = AttentionOp::create(
      builder, loc, cast<RankedTensorType>(q->v.getType()), presentTypes, q->v,
      k->v, v->v, pk, pv, heads, kvHeads, scaleAttr, true);
  outs.assign(std::max(3, node.output_size()), nullptr);
  outs[0] = act(attn.getOutput(), q->view);
  if (pastK)
    for (int i = 0; i < 2; ++i) {
      AValRef present = act(Value(), pastK->view);
      present->kv = std::make_shared<KVCat>();
      present->kv->past = i ? pv : pk;
      present->kv->presentOut = attn.getPresent()[i];
      outs[1 + i] = present;
    }
  return true;
}

bool Raiser::opContrib(const std::string &op, const std::vector<AValRef> &in,
                       const onnx::NodeProto &node, std::vector<AValRef> &outs,
                       bool &handled) {
  handled = true;
  auto input = [&](size_t i) -> AValRef {
    return i < in.size() ? in[i] : nullptr;
  };
  auto attr = [&](const char *name, int64_t def) {
    int64_t v = def;
    attrInt(node, name, v);
    return v;
  };
  auto attrF = [&](const char *name, double def) {
    for (const auto &at : node.attribute())
      if (at.name() == name)
        return static_cast<double>(at.f());
    return def;
  };
  if (op == "SkipSimplifiedLayerNormalization") {
    AValRef x, skip;
    if (!canonicalAct(input(0), x, "the input of SkipSimplifiedLayerNorm") ||
        !canonicalAct(input(1), skip, "the skip of SkipSimplifiedLayerNorm"))
      return false;
    if (!input(2) || input(2)->kind != AVal::Weight)
      return fail("SkipSimplifiedLayerNormalization without a scale weight");
    if (input(3))
      return fail("SkipSimplifiedLayerNormalization with a bias: LLaMA "
                  "layers have none");
    auto sum = AddOp::create(builder, loc, x->v, skip->v);
    Value gamma;
    if (!weightValue(input(2)->tensor, false, gamma))
      return false;
    auto norm = RMSNormOp::create(
        builder, loc, sum, gamma,
        builder.getF64FloatAttr(roundAsFloat32(attrF("epsilon", 1e-5))));
    outs.assign(std::max(4, node.output_size()), nullptr);
    outs[0] = act(norm, x->view);
    outs[3] = act(sum, x->view);
    return true;
  }
  if (op == "RotaryEmbedding") {
    AValRef x;
    if (!asAct(input(0), x, "the input of RotaryEmbedding"))
      return false;
    // com.microsoft: (input, position_ids, cos_cache, sin_cache); ONNX
    // opset 23: (X, cos_cache, sin_cache, position_ids).
    AValRef cosIn = input(2), sinIn = input(3);
    if (node.domain().empty() || node.domain() == "ai.onnx") {
      if (!input(3))
        return fail("RotaryEmbedding without position_ids (pre-gathered "
                    "caches) is not supported");
      cosIn = input(1);
      sinIn = input(2);
    }
    if (attr("rotary_embedding_dim", 0) != 0)
      return fail("partial rotary (rotary_embedding_dim) is not supported");
    CTensor c;
    if (!cosIn || !concreteOf(cosIn, c) || c.rank() != 2)
      return fail("RotaryEmbedding needs a constant cos_cache");
    int64_t headDim = 2 * c.shape[1];
    int64_t heads = attr("num_heads", 0);
    if (!heads)
      heads = featureSize(x->view) / headDim;
    AValRef out;
    if (!isCanonical(x->view))
      return fail("RotaryEmbedding on 4-D [batch, heads, seq, head_dim] "
                  "input is not supported; expected [batch, seq, hidden]");
    if (!ropeFromCaches(x, cosIn, sinIn, attr("interleaved", 0) != 0, heads,
                        out))
      return false;
    outs = {out};
    return true;
  }
  if (op == "GroupQueryAttention" || op == "MultiHeadAttention") {
    bool gqa = op == "GroupQueryAttention";
    AValRef q, k, v;
    if (!input(1) || !input(2))
      return fail(op + " with packed QKV (empty key/value inputs) is not "
                       "supported; export q, k and v separately");
    if (!canonicalAct(input(0), q, "the query of attention") ||
        !canonicalAct(input(1), k, "the key of attention") ||
        !canonicalAct(input(2), v, "the value of attention"))
      return false;
    int64_t heads = attr("num_heads", 0);
    int64_t kvHeads = gqa ? attr("kv_num_heads", 0) : heads;
    if (heads <= 0 || kvHeads <= 0)
      return fail(op + " needs num_heads" +
                  (gqa ? std::string(" and kv_num_heads") : ""));
    int64_t headDim = featureSize(q->view) / heads;
    size_t pastIdx = gqa ? 3 : 6;
    if (!gqa) {
      if (attr("unidirectional", 0) != 1)
        return fail("MultiHeadAttention without unidirectional=1 is not "
                    "causal: expected a decoder's causal self-attention");
      for (size_t i = 3; i < 6; ++i)
        if (input(i))
          return fail("MultiHeadAttention with bias or masks is not "
                      "supported");
    }
    if (gqa && attr("do_rotary", 0)) {
      AValRef qr, kr;
      bool inter = attr("rotary_interleaved", 0) != 0;
      if (!ropeFromCaches(q, input(7), input(8), inter, heads, qr) ||
          !ropeFromCaches(k, input(7), input(8), inter, kvHeads, kr))
        return false;
      q = qr;
      k = kr;
    }
    return buildAttention(op, q, k, v, input(pastIdx), input(pastIdx + 1),
                          heads, kvHeads, headDim, attrF("scale", 0.0), node,
                          outs);
  }
  if (op == "Attention" && node.domain().empty()) {
    // ONNX Attention (opset 23): Q/K/V as [batch, seq, heads*head_dim] with
    // q_num_heads/kv_num_heads, or [batch, heads, seq, head_dim].
    AValRef q, k, v;
    if (!asAct(input(0), q, "the query of Attention") ||
        !asAct(input(1), k, "the key of Attention") ||
        !asAct(input(2), v, "the value of Attention"))
      return false;
    if (input(3))
      return fail("Attention with an explicit attn_mask: expected is_causal=1 "
                  "(a decoder's causal self-attention)");
    if (attr("is_causal", 0) != 1)
      return fail("Attention without is_causal=1: expected a decoder's causal "
                  "self-attention");
    if (attr("softcap", 0) != 0 || attr("qk_matmul_output_mode", 0) != 0)
      return fail("Attention with softcap or qk_matmul_output_mode is not "
                  "supported");
    auto headsOf = [](const View &view) -> int64_t {
      if (view.size() == 4 && view[1].size() == 1 && view[1][0].kind == AK::N)
        return view[1][0].size;
      return 0;
    };
    bool fourD = q->view.size() == 4;
    int64_t heads = fourD ? headsOf(q->view) : attr("q_num_heads", 0);
    int64_t kvHeads = fourD ? headsOf(k->view) : attr("kv_num_heads", 0);
    auto bnsh = [](const View &view) {
      return view.size() == 4 && view[0].size() == 1 &&
             view[0][0].kind == AK::B && view[1].size() == 1 &&
             view[1][0].kind == AK::N && view[2].size() == 1 &&
             isSeq(view[2][0].kind) && view[3].size() == 1 &&
             view[3][0].kind == AK::D;
    };
    bool layoutOk = fourD ? bnsh(q->view) && bnsh(k->view) && bnsh(v->view)
                          : isCanonical(q->view) && isCanonical(k->view) &&
                                isCanonical(v->view);
    if (!layoutOk || heads <= 0 || kvHeads <= 0 || k->kv || v->kv)
      return fail("Attention inputs laid out as " + viewStr(q->view) + ", " +
                  viewStr(k->view) +
                  ": expected [batch, seq, heads*head_dim] with "
                  "q_num_heads/kv_num_heads, or [batch, heads, seq, head_dim]");
    int64_t headDim = featureSize(q->view) / (fourD ? 1 : heads);
    return buildAttention(op, q, k, v, input(4), input(5), heads, kvHeads,
                          headDim, attrF("scale", 0.0), node, outs);
  }
  handled = false;
  return true;
}

/// Interleaved RoPE (llama2.c / Meta): x viewed as (r, i) pairs,
/// out = stack(r*cos - i*sin, r*sin + i*cos).
bool Raiser::opPair(const std::string &op, const std::vector<AValRef> &in,
                    const onnx::NodeProto &node, std::vector<AValRef> &outs,
                    bool &handled) {
  handled = true;
  AValRef a = in.empty() ? nullptr : in[0];
  AValRef b = in.size() > 1 ? in[1] : nullptr;
  auto pairView = [](const View &v) {
    return v.size() >= 2 && isPairSplit(v[v.size() - 2], v.back());
  };
  auto partOf = [&](const AValRef &x, int part, bool keepAxis) {
    AValRef p = AVal::make(AVal::PairPart);
    p->x = x;
    p->part = part;
    p->view = x->view;
    if (keepAxis)
      p->view.back() = Axis{{AK::One, 1}};
    else
      p->view.pop_back();
    return p;
  };
  // Unbind the pair axis: Split, Gather or Slice over the last axis.
  if (a && a->kind == AVal::Act && pairView(a->view)) {
    int64_t rank = static_cast<int64_t>(a->view.size());
    int64_t axis = -1;
    for (const auto &at : node.attribute())
      if (at.name() == "axis")
        axis = at.i();
    if (axis < 0)
      axis += rank;
    if (op == "Split" && axis == rank - 1 && node.output_size() == 2) {
      outs = {partOf(a, 0, true), partOf(a, 1, true)};
      return true;
    }
    CTensor c;
    if (op == "Gather" && axis == rank - 1 && b && concreteOf(b, c) &&
        c.numel() == 1) {
      outs = {partOf(a, static_cast<int>(c.intAt(0) & 1), false)};
      return true;
    }
    if (op == "Slice" && in.size() >= 3) {
      CTensor st, en, ax;
      if (concreteOf(in[1], st) && concreteOf(in[2], en) &&
          (in.size() < 4 || !in[3] ||
           (concreteOf(in[3], ax) &&
            (ax.intAt(0) == -1 || ax.intAt(0) == rank - 1)))) {
        int64_t start = st.intAt(0);
        outs = {partOf(a, start == 1 ? 1 : 0, true)};
        return true;
      }
    }
  }
  if (a && a->kind == AVal::PairPart && (op == "Squeeze")) {
    outs = {std::make_shared<AVal>(*a)};
    if (outs[0]->view.back().size() == 1 &&
        outs[0]->view.back()[0].kind == AK::One)
      outs[0]->view.pop_back();
    return true;
  }
  if (a && a->kind == AVal::PairRot && op == "Unsqueeze") {
    outs = {std::make_shared<AVal>(*a)};
    outs[0]->unsq = true;
    return true;
  }
  if (op == "Mul" && a && b) {
    for (int swap = 0; swap < 2; ++swap) {
      const AValRef &p = swap ? b : a, &t = swap ? a : b;
      double sc;
      if (p->kind == AVal::PairPart && t->kind == AVal::Concrete &&
          !isScalar(t, sc)) {
        AValRef m = AVal::make(AVal::PairMul);
        m->x = p->x;
        m->part = p->part;
        m->view = p->view;
        m->c = t->c;
        outs = {m};
        return true;
      }
    }
  }
  if ((op == "Sub" || op == "Add") && a && b && a->kind == AVal::PairMul &&
      b->kind == AVal::PairMul && a->x == b->x) {
    AValRef r = AVal::make(AVal::PairRot);
    r->x = a->x;
    r->view = a->view;
    if (op == "Sub" && a->part == 0 && b->part == 1) {
      r->part = 0; // r*cos - i*sin
      r->c = a->c;
      r->c2 = b->c;
    } else if (op == "Add" && a->part != b->part) {
      r->part = 1; // r*sin + i*cos
      const AValRef &re = a->part == 0 ? a : b, &im = a->part == 0 ? b : a;
      r->c = re->c;  // sin
      r->c2 = im->c; // cos
    } else {
      return fail("RoPE pair arithmetic that is not a rotation");
    }
    outs = {r};
    return true;
  }
  if (op == "Concat" && in.size() == 2 && a && b && a->kind == AVal::PairRot &&
      b->kind == AVal::PairRot && a->part == 0 && b->part == 1 &&
      a->x == b->x && a->unsq && b->unsq) {
    // Tables: a = (cos, sin), b = (sin, cos).
    AValRef x = a->x;
    std::vector<double> cosT, sinT, sin2, cos2;
    int64_t rows, cols, r2, c2;
    if (!extractTable(a->view, a->c, cosT, rows, cols) ||
        !extractTable(a->view, a->c2, sinT, r2, c2) ||
        !extractTable(a->view, b->c, sin2, r2, c2) ||
        !extractTable(a->view, b->c2, cos2, r2, c2) || cosT != cos2 ||
        sinT != sin2)
      return fail("interleaved RoPE with tables that do not broadcast as "
                  "[seq, head_dim/2] or differ between the two halves");
    AValRef r = AVal::make(AVal::PairRope);
    r->x = x;
    r->c.data = cosT;
    r->c2.data = sinT;
    r->c.shape = {rows, cols};
    outs = {r};
    return true;
  }
  if (op == "Reshape" && a && a->kind == AVal::PairRope && b) {
    CTensor target;
    if (!concreteOf(b, target))
      return fail("Reshape of interleaved RoPE with a non-constant shape");
    std::vector<int64_t> resolved;
    if (!resolveReshape(viewShape(a->x->view), target.asInts(), false, resolved,
                        err))
      return false;
    View view;
    if (!reshapeView(a->x->view, resolved, view, err))
      return false;
    AValRef out;
    if (!finishRope(a->x, view, a->c.data, a->c2.data, a->c.shape[0],
                    a->c.shape[1], RopeLayout::Interleaved, out))
      return false;
    outs = {out};
    return true;
  }
  handled = false;
  return true;
}

bool Raiser::isCausalMask(const CTensor &mask, const AValRef &scores) {
  // Scores are [..., seq, kv_seq]; the mask broadcasts onto them.
  const View &kv = scores->y->view;
  int64_t rows = options.probeSeq, cols = axisSize(kv.back());
  if (mask.rank() < 2 || mask.shape[mask.rank() - 2] != rows ||
      mask.shape[mask.rank() - 1] != cols)
    return false;
  int64_t offset = cols - rows;
  int64_t plane = rows * cols;
  for (int64_t p = 0; p < mask.numel() / plane; ++p)
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) {
        double m = mask.data[p * plane + i * cols + j];
        bool visible = j <= i + offset;
        if (visible ? m != 0.0 : m > -1e4)
          return false;
      }
  return true;
}

//===----------------------------------------------------------------------===//
// Elementwise ops: where most patterns advance
//===----------------------------------------------------------------------===//

/// Exported constants are float32: 1e-5 arrives as 9.99999974e-06. Returns
/// the shortest decimal that rounds to the same float32.
double roundAsFloat32(double v) {
  float f = static_cast<float>(v);
  for (int precision = 1; precision <= 9; ++precision) {
    char text[32];
    std::snprintf(text, sizeof(text), "%.*g", precision, v);
    double d = std::strtod(text, nullptr);
    if (static_cast<float>(d) == f)
      return d;
  }
  return v;
}

bool isScalar(const AValRef &a, double &v) {
  if (a->kind != AVal::Concrete || a->c.numel() != 1)
    return false;
  v = a->c.data[0];
  return true;
}

bool Raiser::opMul(const AValRef &a0, const AValRef &b0, AValRef &out) {
  for (int swap = 0; swap < 2; ++swap) {
    const AValRef &a = swap ? b0 : a0, &b = swap ? a0 : b0;
    double s;
    // RMSNorm: x * (1/rms(x)), then * gamma.
    if (a->kind == AVal::InvRms && (b->kind == AVal::Act) && b->v == a->x->v) {
      out = AVal::make(AVal::Normed);
      out->x = a->x;
      out->eps = a->eps;
      return true;
    }
    if (a->kind == AVal::Normed && b->kind == AVal::Weight) {
      const auto &dims = b->tensor->dims();
      int64_t f = featureSize(a->x->view);
      if (dims.size() != 1 || dims[0] != f)
        return fail("RMSNorm scale '" + b->tensor->name() +
                    "' must be 1-D with " + std::to_string(f) + " entries");
      Value gamma;
      if (!weightValue(b->tensor, false, gamma))
        return false;
      auto op = RMSNormOp::create(builder, loc, a->x->v, gamma,
                                  builder.getF64FloatAttr(a->eps));
      out = act(op, a->x->view);
      return true;
    }
    // SwiGLU: gate * sigmoid(gate).
    if (a->kind == AVal::Sig && b->kind == AVal::Act && b->v == a->x->v) {
      auto op = SiluOp::create(builder, loc, b->v);
      out = act(op, b->view);
      return true;
    }
    // x * x (an RMSNorm square written as Mul).
    // RoPE: x * cos, rotate_half(x) * sin.
    if ((a->kind == AVal::Act || a->kind == AVal::RotHalf) &&
        b->kind == AVal::Concrete && !isScalar(b, s)) {
      out =
          AVal::make(a->kind == AVal::Act ? AVal::TableMul : AVal::RotTableMul);
      out->x = a->kind == AVal::Act ? a : a->x;
      out->c = b->c;
      return true;
    }
    // Attention scale.
    if (a->kind == AVal::Scores && isScalar(b, s)) {
      out = std::make_shared<AVal>(*a);
      out->scale *= s;
      return true;
    }
  }
  if (a0->kind == AVal::Act && b0->kind == AVal::Act && a0->v == b0->v &&
      viewStr(a0->view) == viewStr(b0->view)) {
    out = AVal::make(AVal::Sq);
    out->x = a0;
    return true;
  }
  // Two activations: the SwiGLU product silu(gate) * up.
  AValRef x, y;
  if (!canonicalAct(a0, x, "an operand of an elementwise product") ||
      !canonicalAct(b0, y, "an operand of an elementwise product"))
    return false;
  if (x->v.getType() != y->v.getType())
    return fail("elementwise product of activations of different shapes");
  auto op = MulOp::create(builder, loc, x->v, y->v);
  out = act(op, x->view);
  return true;
}

bool Raiser::opAdd(const AValRef &a0, const AValRef &b0, AValRef &out) {
  for (int swap = 0; swap < 2; ++swap) {
    const AValRef &a = swap ? b0 : a0, &b = swap ? a0 : b0;
    double s;
    if (a->kind == AVal::MeanSq && isScalar(b, s)) {
      out = AVal::make(AVal::MeanSqEps);
      out->x = a->x;
      out->eps = roundAsFloat32(s);
      return true;
    }
    if (a->kind == AVal::TableMul && b->kind == AVal::RotTableMul)
      return makeRope(a, b, out);
    if (a->kind == AVal::Scores && b->kind == AVal::Concrete) {
      if (!isCausalMask(b->c, a))
        return fail("attention scores plus a mask that is not causal "
                    "(expected 0 where a query may see a key and a large "
                    "negative value elsewhere)");
      out = std::make_shared<AVal>(*a);
      out->causal = true;
      return true;
    }
  }
  AValRef x, y;
  if (!canonicalAct(a0, x, "an operand of a residual addition") ||
      !canonicalAct(b0, y, "an operand of a residual addition"))
    return false;
  if (x->v.getType() != y->v.getType())
    return fail("residual addition of activations of different shapes");
  auto op = AddOp::create(builder, loc, x->v, y->v);
  out = act(op, x->view);
  return true;
}

bool Raiser::opDiv(const AValRef &a, const AValRef &b, AValRef &out) {
  double s;
  if (b->kind == AVal::Rms && isScalar(a, s) && s == 1.0) {
    out = AVal::make(AVal::InvRms);
    out->x = b->x;
    out->eps = b->eps;
    return true;
  }
  if (b->kind == AVal::Rms && a->kind == AVal::Act && a->v == b->x->v) {
    out = AVal::make(AVal::Normed);
    out->x = b->x;
    out->eps = b->eps;
    return true;
  }
  if (a->kind == AVal::Scores && isScalar(b, s)) {
    out = std::make_shared<AVal>(*a);
    out->scale /= s;
    return true;
  }
  return fail(std::string("division of ") + kindName(a->kind) + " by " +
              kindName(b->kind) +
              ": expected 1/sqrt(mean(x^2)+eps) of an RMSNorm or the "
              "attention scale");
}

//===----------------------------------------------------------------------===//
// One node
//===----------------------------------------------------------------------===//

bool Raiser::evalNode(const onnx::NodeProto &node, std::vector<AValRef> &outs) {
  const std::string &op = node.op_type();
  std::vector<AValRef> in;
  for (const std::string &name : node.input()) {
    if (name.empty()) {
      in.push_back(nullptr);
      continue;
    }
    auto it = values.find(name);
    if (it != values.end()) {
      in.push_back(it->second);
      continue;
    }
    auto init = initializers.find(name);
    if (init != initializers.end()) {
      AValRef w = AVal::make(AVal::Weight);
      w->tensor = init->second;
      values[name] = w;
      in.push_back(w);
      continue;
    }
    return fail("input '" + name +
                "' is not produced by an earlier node, an initializer or a "
                "graph input (the graph is not topologically sorted, or has "
                "a cycle)");
  }
  auto input = [&](size_t i) -> AValRef {
    return i < in.size() ? in[i] : nullptr;
  };
  outs.assign(std::max(1, node.output_size()), nullptr);
  AValRef &out = outs[0];

  if (op == "Constant")
    return constantAttr(node, out);

  // Fully concrete operands: evaluate. Small weights count as constants
  // when they meet a constant (an index, a cos cache gathered at positions);
  // weights alone stay weights (a transposed lm_head, a cast table).
  bool allConcrete = !in.empty(), anyConcrete = false;
  for (const AValRef &a : in) {
    if (!a)
      continue;
    if (a->kind == AVal::Concrete) {
      anyConcrete = true;
      continue;
    }
    // Declared dims are not validated yet (readTensor does that): a product
    // past int64 (2^40 x 2^40) is large, not signed overflow.
    int64_t numel = 1;
    bool overflow = false;
    if (a->kind == AVal::Weight)
      for (int64_t d : a->tensor->dims())
        overflow |= __builtin_mul_overflow(numel, d, &numel);
    if (a->kind != AVal::Weight || overflow || numel > (int64_t(1) << 20))
      allConcrete = false;
  }
  if (!anyConcrete)
    allConcrete = false;
  if (op == "Shape") {
    AValRef a = input(0);
    if (!a)
      return fail("Shape without input");
    std::vector<int64_t> shape;
    if (a->kind == AVal::Act)
      shape = viewShape(a->view);
    else if (a->kind == AVal::PairPart || a->kind == AVal::PairMul ||
             a->kind == AVal::PairRot) {
      shape = viewShape(a->view);
      if (a->unsq)
        shape.push_back(1);
    } else if (a->kind == AVal::PairRope || a->kind == AVal::Normed ||
               a->kind == AVal::Sq || a->kind == AVal::Sig ||
               a->kind == AVal::TableMul || a->kind == AVal::RotTableMul ||
               a->kind == AVal::RotHalf)
      shape = viewShape(a->x->view);
    else if (a->kind == AVal::MeanSq || a->kind == AVal::MeanSqEps ||
             a->kind == AVal::Rms || a->kind == AVal::InvRms) {
      shape = viewShape(a->x->view);
      shape.back() = 1;
    } else if (a->kind == AVal::Half || a->kind == AVal::NegHalf) {
      shape = viewShape(a->x->view);
      shape.back() /= 2;
    } else if (a->kind == AVal::Ids)
      shape = {options.probeBatch, options.probeSeq};
    else if (a->kind == AVal::Concrete)
      shape = a->c.shape;
    else if (a->kind == AVal::Weight)
      shape.assign(a->tensor->dims().begin(), a->tensor->dims().end());
    else
      return fail(std::string("Shape of ") + kindName(a->kind));
    CTensor shapeT;
    shapeT.shape = shape;
    shapeT.data.assign(1, 0);
    ConcreteAttrs attrs;
    attrs.hasStart = attrInt(node, "start", attrs.start);
    attrs.hasEnd = attrInt(node, "end", attrs.end);
    std::vector<CTensor> r;
    CTensor dummy;
    dummy.shape = shape;
    dummy.data.assign(1, 0); // only the shape is read
    if (!evalConcrete("Shape", {dummy}, attrs, r, err))
      return false;
    out = AVal::make(AVal::Concrete);
    out->c = r[0];
    return true;
  }
  if (allConcrete) {
    std::vector<CTensor> cin;
    for (const AValRef &a : in) {
      CTensor c;
      if (a && !concreteOf(a, c))
        return false;
      cin.push_back(c);
    }
    ConcreteAttrs attrs;
    attrs.hasAxis = attrInt(node, "axis", attrs.axis);
    attrs.hasAxes = attrInts(node, "axes", attrs.axes);
    attrs.hasPerm = attrInts(node, "perm", attrs.perm);
    attrInt(node, "to", attrs.to);
    attrInt(node, "upper", attrs.upper);
    attrInt(node, "keepdims", attrs.keepdims);
    attrInt(node, "allowzero", attrs.allowzero);
    CTensor value;
    for (const auto &a : node.attribute())
      if (a.name() == "value" && op == "ConstantOfShape") {
        TensorBytes bytes;
        if (!model.readTensor(a.t(), bytes, err) ||
            !toConcrete(bytes, value, err))
          return false;
        attrs.value = &value;
      }
    std::vector<CTensor> r;
    if (!evalConcrete(op, cin, attrs, r, err)) {
      if (err.find("is not evaluated on constants") != std::string::npos)
        err = "unsupported op '" + op +
              "' in a shape computation; expected the shape, mask or RoPE "
              "table computations of a LLaMA export";
      return false;
    }
    out = AVal::make(AVal::Concrete);
    out->c = r[0];
    return true;
  }

  // Ops on activations and patterns.
  AValRef a = input(0), b = input(1);
  if (!a)
    return fail("missing first input");
  bool handled = false;
  if (!opPair(op, in, node, outs, handled))
    return false;
  if (handled)
    return true;
  if (!opContrib(op, in, node, outs, handled))
    return false;
  if (handled)
    return true;
  if (op == "Identity" || op == "Cast") {
    int64_t to = 1;
    attrInt(node, "to", to);
    if (op == "Cast" && a->kind != AVal::Ids && to != 1 && to != 10 &&
        to != 16 && to != 11)
      return fail("Cast of " + std::string(kindName(a->kind)) +
                  " to a non-float type");
    out = a;
    return true;
  }
  if (op == "Gather") {
    int64_t axis = 0;
    attrInt(node, "axis", axis);
    if (a->kind == AVal::Weight && b && b->kind == AVal::Ids && axis == 0) {
      const auto &dims = a->tensor->dims();
      if (dims.size() != 2)
        return fail("embedding table '" + a->tensor->name() + "' is not 2-D");
      Value table;
      if (!weightValue(a->tensor, false, table))
        return false;
      auto resultType = actType(dims[1]);
      auto opE = EmbeddingOp::create(builder, loc, resultType, table, b->v);
      out = act(opE, flatView(dims[1]));
      return true;
    }
    return fail(std::string("Gather from ") + kindName(a->kind) + " at " +
                (b ? kindName(b->kind) : "?") +
                ": expected the embedding lookup (Gather of the token ids "
                "from a [vocab, hidden] weight)");
  }
  if (op == "MatMul")
    return b ? opMatMul(a, b, out) : fail("MatMul needs two inputs");
  if (op == "Mul")
    return b ? opMul(a, b, out) : fail("Mul needs two inputs");
  if (op == "Add")
    return b ? opAdd(a, b, out) : fail("Add needs two inputs");
  if (op == "Div")
    return b ? opDiv(a, b, out) : fail("Div needs two inputs");
  if (op == "Pow") {
    double e;
    if (a->kind == AVal::Act && b && isScalar(b, e) && e == 2.0) {
      out = AVal::make(AVal::Sq);
      out->x = a;
      return true;
    }
    if (a->kind == AVal::MeanSqEps && b && isScalar(b, e) && e == -0.5) {
      out = AVal::make(AVal::InvRms);
      out->x = a->x;
      out->eps = a->eps;
      return true;
    }
    return fail(std::string("Pow of ") + kindName(a->kind) +
                ": expected x^2 of an RMSNorm");
  }
  if (op == "ReduceMean") {
    std::vector<int64_t> axes;
    if (!attrInts(node, "axes", axes) && b) {
      CTensor c;
      if (concreteOf(b, c))
        axes = c.asInts();
    }
    int64_t keepdims = 1;
    attrInt(node, "keepdims", keepdims);
    if (a->kind == AVal::Sq) {
      int64_t rank = static_cast<int64_t>(a->x->view.size());
      if (axes.size() != 1 || (axes[0] != -1 && axes[0] != rank - 1) ||
          !keepdims)
        return fail("mean of x^2 not over the last axis (keepdims): expected "
                    "the RMSNorm mean over the hidden features");
      out = AVal::make(AVal::MeanSq);
      out->x = a->x;
      return true;
    }
    if (a->kind == AVal::Act)
      return fail("ReduceMean of an activation itself (not of its square), "
                  "as LayerNorm computes its mean: expected an RMSNorm "
                  "(mean of x^2); SQ imports LLaMA-family models");
    return fail(std::string("ReduceMean of ") + kindName(a->kind) +
                ": expected the mean of x^2 of an RMSNorm");
  }
  if (op == "Sqrt") {
    if (a->kind != AVal::MeanSqEps)
      return fail(std::string("Sqrt of ") + kindName(a->kind) +
                  ": expected sqrt(mean(x^2) + eps) of an RMSNorm");
    out = AVal::make(AVal::Rms);
    out->x = a->x;
    out->eps = a->eps;
    return true;
  }
  if (op == "Reciprocal") {
    if (a->kind != AVal::Rms)
      return fail(std::string("Reciprocal of ") + kindName(a->kind) +
                  ": expected 1/sqrt(mean(x^2) + eps) of an RMSNorm");
    out = AVal::make(AVal::InvRms);
    out->x = a->x;
    out->eps = a->eps;
    return true;
  }
  if (op == "Sigmoid") {
    AValRef x;
    if (!canonicalAct(a, x, "the gate of a SwiGLU MLP"))
      return false;
    out = AVal::make(AVal::Sig);
    out->x = x;
    return true;
  }
  if (op == "Softmax") {
    int64_t axis = -1;
    attrInt(node, "axis", axis);
    if (a->kind != AVal::Scores)
      return fail(std::string("Softmax of ") + kindName(a->kind) +
                  ": expected the softmax of attention scores");
    int64_t rank = static_cast<int64_t>(a->x->view.size());
    if (axis != -1 && axis != rank - 1)
      return fail("attention softmax not over the key axis");
    out = AVal::make(AVal::Probs);
    out->x = a;
    return true;
  }
  if (op == "Neg") {
    if (a->kind != AVal::Half || !a->hi)
      return fail(std::string("Neg of ") + kindName(a->kind) +
                  ": expected -x2 in RoPE's rotate_half");
    out = AVal::make(AVal::NegHalf);
    out->x = a->x;
    return true;
  }
  if (op == "Slice") {
    if (a->kind != AVal::Act)
      return fail(std::string("Slice of ") + kindName(a->kind));
    CTensor starts, ends, axes, steps;
    if (!b || !concreteOf(b, starts) || !input(2) ||
        !concreteOf(input(2), ends))
      return fail("Slice of an activation with non-constant bounds");
    int64_t rank = static_cast<int64_t>(a->view.size());
    int64_t axis = rank - 1;
    if (input(3)) {
      if (!concreteOf(input(3), axes) || axes.numel() != 1)
        return fail("Slice of an activation over several axes");
      axis = axes.intAt(0);
      if (axis < 0)
        axis += rank;
    }
    if (input(4) && (!concreteOf(input(4), steps) || steps.intAt(0) != 1))
      return fail("strided Slice of an activation");
    if (axis != rank - 1 || a->view.back().size() != 1 ||
        a->view.back()[0].kind != AK::D)
      return fail("Slice of an activation laid out as " + viewStr(a->view) +
                  ": expected RoPE's rotate_half over head_dim");
    int64_t d = a->view.back()[0].size;
    int64_t s = std::max<int64_t>(starts.intAt(0), -(int64_t(1) << 50)),
            e = std::clamp<int64_t>(ends.intAt(0), -(int64_t(1) << 50),
                                    int64_t(1) << 50);
    if (s < 0)
      s += d;
    if (e < 0)
      e += d;
    e = std::min(e, d);
    if (!((s == 0 && e == d / 2) || (s == d / 2 && e == d)))
      return fail("Slice [" + std::to_string(s) + ", " + std::to_string(e) +
                  ") of head_dim " + std::to_string(d) +
                  ": expected the halves of RoPE's rotate_half");
    out = AVal::make(AVal::Half);
    out->x = a;
    out->hi = s != 0;
    return true;
  }
  if (op == "Concat") {
    int64_t axis = 0;
    attrInt(node, "axis", axis);
    if (in.size() == 2 && a->kind == AVal::NegHalf && b &&
        b->kind == AVal::Half && !b->hi && b->x->v == a->x->v) {
      out = AVal::make(AVal::RotHalf);
      out->x = a->x;
      return true;
    }
    // KV cache: past ++ new along the sequence axis.
    if (in.size() == 2 && a->kind == AVal::Act && b && b->kind == AVal::Act) {
      int64_t rank = static_cast<int64_t>(a->view.size());
      if (axis < 0)
        axis += rank;
      bool pastIsArg = isa<BlockArgument>(a->v);
      if (pastIsArg && rank == static_cast<int64_t>(b->view.size()) &&
          axis >= 0 && axis < rank && a->view[axis].size() == 1 &&
          a->view[axis][0].kind == AK::P && b->view[axis].size() == 1 &&
          b->view[axis][0].kind == AK::S) {
        out = act(Value(), b->view);
        out->view[axis][0] = {AK::T, options.probePast + options.probeSeq};
        out->kv = std::make_shared<KVCat>();
        out->kv->past = a->v;
        out->kvNew = b->v;
        return true;
      }
    }
    return fail(std::string("Concat of ") + kindName(a->kind) +
                (b ? std::string(" and ") + kindName(b->kind) : "") +
                ": expected RoPE's rotate_half (Concat(-x2, x1)) or the "
                "KV-cache concatenation past ++ new");
  }
  if (op == "Transpose") {
    std::vector<int64_t> perm;
    bool hasPerm = attrInts(node, "perm", perm);
    if (a->kind == AVal::Weight) {
      if (a->tensor->dims_size() != 2 ||
          (hasPerm && (perm.size() != 2 || perm[0] != 1)))
        return fail("Transpose of a weight that is not a 2-D matrix");
      out = AVal::make(AVal::WeightT);
      out->tensor = a->tensor;
      return true;
    }
    AValRef x;
    if (!asAct(a, x, "an activation to transpose"))
      return false;
    size_t rank = x->view.size();
    if (!hasPerm)
      for (size_t i = 0; i < rank; ++i)
        perm.push_back(static_cast<int64_t>(rank - 1 - i));
    std::string permError;
    if (!checkPermutation(perm, static_cast<int64_t>(rank), permError))
      return fail(permError);
    out = std::make_shared<AVal>(*x);
    for (size_t i = 0; i < rank; ++i)
      out->view[i] = x->view[perm[i]];
    return true;
  }
  if (op == "Reshape" || op == "Unsqueeze" || op == "Squeeze" ||
      op == "Expand" || op == "Tile") {
    AValRef x;
    if (!asAct(a, x, "an activation to reshape"))
      return false;
    std::vector<int64_t> shape = viewShape(x->view);
    CTensor arg;
    if (b && !concreteOf(b, arg))
      return fail(op + " of an activation with a non-constant shape");
    out = std::make_shared<AVal>(*x);
    if (op == "Reshape") {
      int64_t allowzero = 0;
      attrInt(node, "allowzero", allowzero);
      std::vector<int64_t> target;
      if (!resolveReshape(shape, arg.asInts(), allowzero != 0, target, err))
        return false;
      return reshapeView(x->view, target, out->view, err);
    }
    if (op == "Unsqueeze" || op == "Squeeze") {
      std::vector<int64_t> axes = b ? arg.asInts() : std::vector<int64_t>();
      if (!b)
        attrInts(node, "axes", axes);
      int64_t rank = static_cast<int64_t>(shape.size());
      if (op == "Unsqueeze") {
        std::string axesError;
        if (!unsqueezeAxes(axes, rank, axesError))
          return fail(axesError);
        for (int64_t ax : axes)
          out->view.insert(out->view.begin() + ax, Axis{{AK::One, 1}});
      } else {
        View view;
        for (int64_t i = 0; i < rank; ++i) {
          bool drop = axes.empty() ? shape[i] == 1
                                   : std::find(axes.begin(), axes.end(), i) !=
                                             axes.end() ||
                                         std::find(axes.begin(), axes.end(),
                                                   i - rank) != axes.end();
          if (drop && shape[i] != 1)
            return fail("Squeeze of a dimension that is not 1");
          if (!drop)
            view.push_back(x->view[i]);
        }
        out->view = view;
      }
      return true;
    }
    if (op == "Tile") {
      // Tiling a size-1 axis is Expand; tiling the heads axis itself would
      // pair query head h with key/value head h mod kv_heads.
      std::vector<int64_t> repeats = arg.asInts();
      if (repeats.size() != shape.size())
        return fail("Tile repeats do not match the rank");
      for (size_t i = 0; i < repeats.size(); ++i) {
        if (repeats[i] == 1)
          continue;
        if (shape[i] != 1)
          return fail("Tile repeats a non-unit axis " + viewStr(x->view) +
                      ": that pairs query head h with key/value head h mod "
                      "kv_heads, not LLaMA's repeat_kv (h / group)");
        out->view[i] = Axis{{AK::R, repeats[i]}};
      }
      return true;
    }
    // Expand: size-1 axes become repeats (GQA's repeat of K/V heads).
    std::vector<int64_t> target = arg.asInts();
    if (target.size() != shape.size())
      return fail("Expand that changes the rank of an activation");
    for (size_t i = 0; i < target.size(); ++i) {
      if (target[i] == shape[i] || target[i] == 1)
        continue;
      if (shape[i] != 1)
        return fail("Expand of a non-unit dimension of an activation");
      out->view[i] = Axis{{AK::R, target[i]}};
    }
    return true;
  }
  if (op == "Where" && in.size() == 3 && a->kind == AVal::Concrete &&
      (b->kind == AVal::Scores || input(2)->kind == AVal::Scores)) {
    // masked_fill: where(cond, -inf, scores) or where(cond, scores, -inf).
    bool scoresWhenTrue = b->kind == AVal::Scores;
    AValRef scores = scoresWhenTrue ? b : input(2);
    AValRef fill = scoresWhenTrue ? input(2) : b;
    double value;
    if (!isScalar(fill, value) || value > -1e4)
      return fail("attention scores masked with a value that is not very "
                  "negative: expected a causal mask");
    CTensor mask = a->c;
    for (double &m : mask.data)
      m = ((m != 0) == scoresWhenTrue) ? 0.0 : value;
    if (!isCausalMask(mask, scores))
      return fail("attention scores masked by a pattern that is not causal");
    out = std::make_shared<AVal>(*scores);
    out->causal = true;
    return true;
  }
  if (op == "SimplifiedLayerNormalization" || op == "RMSNormalization") {
    AValRef x;
    if (!canonicalAct(a, x, "the input of an RMSNorm"))
      return false;
    float eps = 1e-5f;
    for (const auto &at : node.attribute())
      if (at.name() == "epsilon")
        eps = at.f();
    if (!b || b->kind != AVal::Weight)
      return fail("RMSNorm without a scale weight");
    Value gamma;
    if (!weightValue(b->tensor, false, gamma))
      return false;
    auto opN = RMSNormOp::create(builder, loc, x->v, gamma,
                                 builder.getF64FloatAttr(roundAsFloat32(eps)));
    out = act(opN, x->view);
    return true;
  }
  if (op == "LayerNormalization")
    return fail("unsupported op 'LayerNormalization': LLaMA-family models "
                "normalize with RMSNorm (expected Pow/ReduceMean/Add/Sqrt/"
                "Div/Mul, SimplifiedLayerNormalization or RMSNormalization)");
  return fail("unsupported op '" + op + "' on " + kindName(a->kind) +
              ": expected part of a LLaMA layer (RMSNorm, RoPE, "
              "attention, SwiGLU MLP) or a shape computation");
}

//===----------------------------------------------------------------------===//
// The graph
//===----------------------------------------------------------------------===//

bool Raiser::run(std::string &error) {
  const onnx::GraphProto &graph = model.graph();
  // Errors before the nodes name no node: they go to `error` directly.
  auto failRun = [&](const std::string &msg) {
    error = msg;
    return false;
  };
  for (const auto &init : graph.initializer())
    initializers[init.name()] = &init;

  // Function arguments from the graph inputs.
  MLIRContext *ctx = module.getContext();
  SmallVector<Type> argTypes;
  SmallVector<std::string> argNames;
  struct PendingInput {
    std::string name;
    int kind; // 0 ids, 1 positions, 2 past
  };
  std::vector<PendingInput> pending;
  bool hasPositionIds = false;
  int64_t kvFeatures = 0;
  for (const auto &input : graph.input()) {
    if (initializers.count(input.name()))
      continue; // old-style graphs list initializers as inputs
    const std::string &name = input.name();
    const auto &type = input.type().tensor_type();
    int rank = type.shape().dim_size();
    if (name.find("past_key_values") == 0 || name.find("past_key") == 0 ||
        name.find("past.") == 0) {
      if (rank != 4)
        return failRun(
            "graph input '" + name +
            "' is a KV cache but not 4-D [batch, kv_heads, past_seq, "
            "head_dim]");
      const auto &d = type.shape().dim();
      if (!d[1].has_dim_value() || !d[3].has_dim_value() ||
          d[1].dim_value() <= 0 || d[3].dim_value() <= 0)
        return failRun("graph input '" + name +
                       "' needs static kv_heads and head_dim");
      if (d[1].dim_value() > (int64_t(1) << 31) / d[3].dim_value())
        return failRun("graph input '" + name +
                       "' declares an absurdly large KV cache (kv_heads " +
                       std::to_string(d[1].dim_value()) + " x head_dim " +
                       std::to_string(d[3].dim_value()) + ")");
      kvFeatures = d[1].dim_value() * d[3].dim_value();
      hasCache = true;
      pending.push_back({name, 2});
    } else if (name == "input_ids") {
      pending.push_back({name, 0});
    } else if (name == "position_ids") {
      hasPositionIds = true;
      pending.push_back({name, 1});
    } else if (name == "attention_mask") {
      pending.push_back({name, 3});
    } else {
      return failRun("graph input '" + name +
                     "' is not one a LLaMA export has (input_ids, "
                     "position_ids, attention_mask, past_key_values.*)");
    }
  }
  positionStart = hasCache ? options.probePast : 0;

  // Signature: input_ids, positions, then the caches.
  auto i64 = builder.getI64Type();
  auto idsType =
      RankedTensorType::get({ShapedType::kDynamic, ShapedType::kDynamic}, i64);
  argTypes = {idsType, idsType};
  argNames = {"input_ids", "positions"};
  for (const PendingInput &p : pending)
    if (p.kind == 2) {
      argTypes.push_back(actType(kvFeatures));
      argNames.push_back(p.name);
    }
  builder.setInsertionPointToEnd(module.getBody());
  auto func = func::FuncOp::create(builder, loc, "forward",
                                   builder.getFunctionType(argTypes, {}));
  Block *body = func.addEntryBlock();
  for (size_t i = 0; i < argNames.size(); ++i) {
    func.setArgAttr(i, "sq.name", builder.getStringAttr(argNames[i]));
    // ONNX caches are [batch, kv_heads, past_seq, head_dim]; here they are
    // [batch, past_seq, kv_heads * head_dim].
    if (i >= 2)
      func.setArgAttr(i, "sq.onnx_layout",
                      builder.getStringAttr("batch,heads,seq,head_dim"));
  }
  builder.setInsertionPointToStart(body);
  positions = body->getArgument(1);
  size_t cacheArg = 2;
  bool sawIds = false;
  for (const PendingInput &p : pending) {
    if (p.kind == 0) {
      AValRef ids = AVal::make(AVal::Ids);
      ids->v = body->getArgument(0);
      values[p.name] = ids;
      sawIds = true;
    } else if (p.kind == 1) {
      AValRef c = AVal::make(AVal::Concrete);
      c->c.kind = CTensor::Int;
      c->c.shape = {options.probeBatch, options.probeSeq};
      for (int64_t bI = 0; bI < options.probeBatch; ++bI)
        for (int64_t s = 0; s < options.probeSeq; ++s)
          c->c.data.push_back(positionStart + s);
      values[p.name] = c;
    } else if (p.kind == 3) {
      AValRef c = AVal::make(AVal::Concrete);
      c->c.kind = CTensor::Int;
      int64_t total = positionStart + options.probeSeq;
      c->c.shape = {options.probeBatch, total};
      c->c.data.assign(options.probeBatch * total, 1.0);
      values[p.name] = c;
    } else {
      // [B, K, P, D] in ONNX; [B, P, K*D] here.
      const auto &d = [&]() -> const onnx::TensorShapeProto & {
        for (const auto &in : graph.input())
          if (in.name() == p.name)
            return in.type().tensor_type().shape();
        return graph.input(0).type().tensor_type().shape();
      }();
      int64_t heads = d.dim(1).dim_value(), headDim = d.dim(3).dim_value();
      View view = {{{AK::B, options.probeBatch}},
                   {{AK::N, heads}},
                   {{AK::P, options.probePast}},
                   {{AK::D, headDim}}};
      values[p.name] = act(body->getArgument(cacheArg++), view);
    }
  }
  if (!sawIds)
    return failRun("the graph has no 'input_ids' input");
  (void)hasPositionIds;
  (void)ctx;

  // Nodes in order.
  int index = 0;
  for (const auto &node : graph.node()) {
    std::vector<AValRef> outs;
    if (!evalNode(node, outs)) {
      error = "node '" + node.name() + "' (" + node.op_type() + ", #" +
              std::to_string(index) + "): " + err;
      return false;
    }
    for (int i = 0; i < node.output_size(); ++i)
      if (!node.output(i).empty())
        values[node.output(i)] =
            i < static_cast<int>(outs.size()) ? outs[i] : nullptr;
    ++index;
  }

  // Results.
  SmallVector<Value> results;
  SmallVector<std::string> resultNames;
  for (const auto &output : graph.output()) {
    auto it = values.find(output.name());
    if (it == values.end() || !it->second) {
      error = "graph output '" + output.name() + "' is not computed";
      return false;
    }
    AValRef a = it->second;
    if (a->kind == AVal::Act && a->kv) {
      if (!a->kv->presentOut) {
        error = "graph output '" + output.name() +
                "' is a KV cache that no attention reads";
        return false;
      }
      results.push_back(a->kv->presentOut);
    } else {
      AValRef x;
      if (!canonicalAct(a, x, "the logits")) {
        error = "graph output '" + output.name() + "': " + err;
        return false;
      }
      results.push_back(x->v);
    }
    resultNames.push_back(output.name());
  }
  func::ReturnOp::create(builder, loc, results);
  SmallVector<Type> resultTypes;
  for (Value v : results)
    resultTypes.push_back(v.getType());
  func.setFunctionType(builder.getFunctionType(argTypes, resultTypes));
  for (size_t i = 0; i < resultNames.size(); ++i) {
    func.setResultAttr(i, "sq.name", builder.getStringAttr(resultNames[i]));
    if (i > 0)
      func.setResultAttr(i, "sq.onnx_layout",
                         builder.getStringAttr("batch,heads,seq,head_dim"));
  }

  // Drop what no result uses (dead shape patterns left no ops, but e.g. a
  // weightless norm materialized for an unused branch could).
  bool changed = true;
  while (changed) {
    changed = false;
    for (Operation &op : llvm::make_early_inc_range(llvm::reverse(*body)))
      if (!isa<func::ReturnOp>(op) && op.use_empty()) {
        op.erase();
        changed = true;
      }
  }
  return true;
}

} // namespace

bool raiseGraph(OnnxModel &model, ModuleOp module,
                const OnnxImportOptions &options, std::string &error) {
  Raiser raiser(model, module, options);
  return raiser.run(error);
}

} // namespace onnx_import
} // namespace sq
