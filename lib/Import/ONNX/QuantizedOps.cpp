//===- QuantizedOps.cpp - pre-quantized weights ---------------------------===//
//
// Files whose weights are already quantized, as the ONNX Runtime GenAI
// builder and Olive write them:
//
//  - com.microsoft MatMulNBits: Y = A x dequant(B)^T, B packed [N, blocks,
//    block_size * bits / 8] (codes low bits first along K), scales [N *
//    blocks], optional zero points (packed like B, [N * ceil(blocks * bits /
//    8)], default 2^(bits-1); or unpacked, of the scales' type);
//  - QDQ: DequantizeLinear of an int4/uint4/int8/uint8 initializer, per
//    tensor, per axis or blocked (opset 21 block_size), then MatMul, possibly
//    through a Transpose.
//
// The weights are dequantized exactly as onnxruntime computes them: the
// integer q - zp times the scale, rounded once to the scale's type (the
// product is exact in double); with float zero points (MatMulNBits),
// q * scale + (-scale * zp) in float32 steps. The result is an ordinary float
// weight: a MatMulNBits becomes an sq.linear of an sq.weight [N, K], a
// DequantizeLinear a Weight that the MatMul/Transpose/Gather handlers use as
// any initializer. The module gets `sq.prequantized` (what was found), from
// which importOnnxModel warns once that quantizing again compounds the errors.
//
//===----------------------------------------------------------------------===//

#include "Raiser.h"

#include "sq/Numerics/Float16.h"

#include <cstring>

using namespace mlir;

namespace sq {
namespace onnx_import {
namespace {

/// Records on the module, once, that the file's weights were quantized.
void notePrequantized(Raiser &raiser, const std::string &what) {
  if (!raiser.module->hasAttr("sq.prequantized"))
    raiser.module->setAttr("sq.prequantized",
                           raiser.builder.getStringAttr(what));
}

/// The raw bytes of a float value rounded to `dtype` (float32, float16,
/// bfloat16). `v` must be exact in float32 for the 16-bit types (it is: a
/// small integer times a 16-bit float) so that it is rounded once.
void appendFloat(std::string &out, double v, DType dtype) {
  if (dtype == DType::F32) {
    float f = static_cast<float>(v);
    out.append(reinterpret_cast<const char *>(&f), 4);
    return;
  }
  uint16_t h = dtype == DType::F16
                   ? numerics::floatToHalf(static_cast<float>(v))
                   : numerics::floatToBf16(static_cast<float>(v));
  out.append(reinterpret_cast<const char *>(&h), 2);
}

int onnxFloatType(DType dtype) {
  return dtype == DType::F32   ? onnx::TensorProto::FLOAT
         : dtype == DType::F16 ? onnx::TensorProto::FLOAT16
                               : onnx::TensorProto::BFLOAT16;
}

bool isFloat(DType d) {
  return d == DType::F32 || d == DType::F16 || d == DType::BF16;
}

/// A new initializer-like tensor that outlives the raise.
onnx::TensorProto &makeTensor(Raiser &raiser, const std::string &name,
                              DType dtype, llvm::ArrayRef<int64_t> dims) {
  raiser.madeTensors.push_back(std::make_unique<onnx::TensorProto>());
  onnx::TensorProto &t = *raiser.madeTensors.back();
  t.set_name(name);
  t.set_data_type(onnxFloatType(dtype));
  for (int64_t d : dims)
    t.add_dims(d);
  return t;
}

/// The bytes of a constant operand (an initializer or a large Constant).
bool constantBytes(Raiser &raiser, const AValRef &a, const char *what,
                   TensorBytes &bytes) {
  if (!a || a->kind != AVal::Weight)
    return raiser.fail(std::string(what) + " is " +
                       (a ? kindName(a->kind) : "missing") +
                       "; expected an initializer");
  return raiser.model.readTensor(*a->tensor, bytes, raiser.err);
}

std::string dimsStr(llvm::ArrayRef<int64_t> dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i)
    s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

/// Code `i` of `bits`-bit unsigned codes packed low bits first.
inline unsigned packedCode(const uint8_t *p, int64_t i, unsigned bits) {
  int64_t bit = i * bits;
  return (p[bit >> 3] >> (bit & 7)) & ((1u << bits) - 1);
}

/// com.microsoft MatMulNBits: an sq.linear of the dequantized [N, K] weight.
bool matMulNBits(Raiser &raiser, OpCall &call) {
  const onnx::NodeProto &node = call.node;
  int64_t K, N, block;
  if (!raiser.attrInt(node, "K", K) || !raiser.attrInt(node, "N", N) ||
      !raiser.attrInt(node, "block_size", block))
    return raiser.fail("MatMulNBits without its K, N and block_size "
                       "attributes");
  int64_t bits = raiser.attrIntOr(node, "bits", 4);
  if (bits != 2 && bits != 4 && bits != 8)
    return raiser.fail("MatMulNBits with bits=" + std::to_string(bits) +
                       ": expected 2, 4 or 8");
  if (K <= 0 || N <= 0 || K > (int64_t(1) << 30) || N > (int64_t(1) << 30) ||
      block < 16 || block > (int64_t(1) << 20) || (block & (block - 1)))
    return raiser.fail("MatMulNBits with K=" + std::to_string(K) +
                       ", N=" + std::to_string(N) +
                       ", block_size=" + std::to_string(block) +
                       ": expected K and N in [1, 2^30] and a power-of-two "
                       "block_size in [16, 2^20]");
  if (call.input(4))
    return raiser.fail("MatMulNBits with a g_idx input (act-order GPTQ "
                       "groups) is not supported; expected contiguous blocks "
                       "along K");
  if (call.input(5))
    return raiser.fail("MatMulNBits with a bias is not supported (linear "
                       "layers without bias expected)");
  AValRef x;
  if (!raiser.canonicalAct(call.input(0), x,
                           "the input A of MatMulNBits (a linear layer)"))
    return false;
  if (raiser.featureSize(x->view) != K)
    return raiser.fail(
        "MatMulNBits with K=" + std::to_string(K) + " but the activation has " +
        std::to_string(raiser.featureSize(x->view)) + " features");

  int64_t blocks = (K + block - 1) / block;
  int64_t blob = block * bits / 8;
  TensorBytes b, scales, zp;
  if (!constantBytes(raiser, call.input(1), "its weight B", b) ||
      !constantBytes(raiser, call.input(2), "its scales", scales))
    return false;
  const std::string &bName = call.input(1)->tensor->name();
  // [N, blocks, blob] (older files: the same bytes as [N, blocks * blob]).
  bool bShape =
      b.numElements() == N * blocks * blob &&
      (b.dims.size() != 3 || b.dims == std::vector<int64_t>{N, blocks, blob});
  if (b.dtype != DType::U8 || !bShape)
    return raiser.fail(
        "MatMulNBits weight '" + bName + "' is " + dtypeName(b.dtype) + " " +
        dimsStr(b.dims) + "; expected uint8 [" + std::to_string(N) + ", " +
        std::to_string(blocks) + ", " + std::to_string(blob) +
        "] for K=" + std::to_string(K) + ", bits=" + std::to_string(bits) +
        ", block_size=" + std::to_string(block));
  if (!isFloat(scales.dtype) || scales.numElements() != N * blocks)
    return raiser.fail(
        "MatMulNBits scales '" + call.input(2)->tensor->name() + "' are " +
        dtypeName(scales.dtype) + " " + dimsStr(scales.dims) + "; expected " +
        std::to_string(N * blocks) + " float32, float16 or bfloat16 values");
  bool hasZp = call.input(3) != nullptr, floatZp = false;
  int64_t zpRow = (blocks * bits + 7) / 8; // packed bytes per row
  if (hasZp) {
    if (!constantBytes(raiser, call.input(3), "its zero points", zp))
      return false;
    floatZp = zp.dtype == scales.dtype;
    if (!(floatZp && zp.numElements() == N * blocks) &&
        !(zp.dtype == DType::U8 && zp.numElements() == N * zpRow))
      return raiser.fail(
          "MatMulNBits zero points '" + call.input(3)->tensor->name() +
          "' are " + dtypeName(zp.dtype) + " " + dimsStr(zp.dims) +
          "; expected uint8 [" + std::to_string(N * zpRow) + "] (packed) or " +
          dtypeName(scales.dtype) + " [" + std::to_string(N * blocks) + "]");
  }

  // Dequantize into [N, K] of the scales' type.
  const auto *codes = reinterpret_cast<const uint8_t *>(b.bytes.data());
  const auto *zpBytes = reinterpret_cast<const uint8_t *>(zp.bytes.data());
  onnx::TensorProto &w = makeTensor(raiser, bName, scales.dtype, {N, K});
  std::string &raw = *w.mutable_raw_data();
  raw.reserve(tensorBytes(scales.dtype, N * K));
  double defaultZp = double(1 << (bits - 1));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      double scale = tensorElement(scales, n * blocks + blk);
      double z = defaultZp;
      if (floatZp)
        z = tensorElement(zp, n * blocks + blk);
      else if (hasZp)
        z = packedCode(zpBytes + n * zpRow, blk, bits);
      const uint8_t *row = codes + (n * blocks + blk) * blob;
      // Float zero points: onnxruntime computes q * scale + (-scale * zp) in
      // float32, each step rounded (the products are exact in double, and a
      // conversion between the steps keeps them from fusing into an FMA).
      float adjust = -static_cast<float>(scale * z);
      for (int64_t i = 0; i < block && blk * block + i < K; ++i) {
        unsigned q = packedCode(row, i, bits);
        if (floatZp)
          appendFloat(raw, static_cast<float>(q * scale) + adjust,
                      scales.dtype);
        else
          appendFloat(raw, (q - z) * scale, scales.dtype);
      }
    }
  notePrequantized(raiser, std::to_string(bits) +
                               "-bit (com.microsoft "
                               "MatMulNBits, block_size " +
                               std::to_string(block) + ")");
  Value weight;
  if (!raiser.weightValue(&w, /*transpose=*/false, weight))
    return false;
  // The dequantized copy now lives in the sq.weight: free this one (clear()
  // would keep its capacity).
  std::string().swap(*w.mutable_raw_data());
  auto op = LinearOp::create(raiser.builder, raiser.loc, x->v, weight);
  call.out() = raiser.act(op, raiser.flatView(N));
  return true;
}

/// The integer codes of a quantized constant.
bool integerCodes(Raiser &raiser, const AValRef &a, std::vector<int32_t> &q,
                  std::vector<int64_t> &dims, DType &dtype) {
  if (a->kind == AVal::Concrete) {
    dims = a->c.shape;
    dtype = DType::I32;
    q.assign(a->c.data.begin(), a->c.data.end());
    return true;
  }
  TensorBytes t;
  if (!constantBytes(raiser, a, "the quantized input", t))
    return false;
  if (isFloat(t.dtype) || t.dtype == DType::F64 || t.dtype == DType::Bool ||
      t.dtype == DType::I64)
    return raiser.fail("DequantizeLinear of " +
                       std::string(dtypeName(t.dtype)) + " '" +
                       a->tensor->name() +
                       "': expected int4, uint4, int8, uint8 or int32 codes");
  dims = t.dims;
  dtype = t.dtype;
  q.resize(t.numElements());
  for (int64_t i = 0; i < t.numElements(); ++i)
    q[i] = static_cast<int32_t>(tensorElement(t, i));
  return true;
}

/// DequantizeLinear of a constant: the dequantized weight.
bool dequantizeLinear(Raiser &raiser, OpCall &call) {
  const onnx::NodeProto &node = call.node;
  AValRef xa = call.input(0), sa = call.input(1), za = call.input(2);
  if (!xa || !sa)
    return raiser.fail("DequantizeLinear needs its x and x_scale inputs");
  if (xa->kind != AVal::Weight && xa->kind != AVal::Concrete)
    return raiser.fail(std::string("DequantizeLinear of ") +
                       kindName(xa->kind) +
                       ": only weights may be quantized (QDQ of "
                       "activations is not supported)");
  std::vector<int32_t> q;
  std::vector<int64_t> dims;
  DType qType;
  if (!integerCodes(raiser, xa, q, dims, qType))
    return false;
  // The scales (and zero points) as concrete tensors: they are small.
  CTensor scale, zero;
  TensorBytes scaleBytes;
  DType outType = DType::F32;
  if (sa->kind == AVal::Weight) {
    if (!raiser.model.readTensor(*sa->tensor, scaleBytes, raiser.err) ||
        !toConcrete(scaleBytes, scale, raiser.err))
      return false;
    outType = scaleBytes.dtype;
  } else if (!raiser.concreteOf(sa, scale)) {
    return raiser.fail(std::string("DequantizeLinear scale is ") +
                       kindName(sa->kind) + "; expected a constant");
  }
  if (!isFloat(outType))
    return raiser.fail(std::string("DequantizeLinear scale of type ") +
                       dtypeName(outType) +
                       ": expected float32, float16 or bfloat16");
  int64_t outputDtype = raiser.attrIntOr(node, "output_dtype", 0);
  if (outputDtype != 0) {
    DType requested;
    // A Constant node's scale arrives without its type: take the output's.
    if (sa->kind == AVal::Concrete &&
        toDType(static_cast<int>(outputDtype), requested) && isFloat(requested))
      outType = requested;
    if (!toDType(static_cast<int>(outputDtype), requested) ||
        requested != outType)
      return raiser.fail("DequantizeLinear output_dtype " +
                         onnxTypeName(static_cast<int>(outputDtype)) +
                         " differs from its scale's type " +
                         dtypeName(outType));
  }
  if (za && !raiser.concreteOf(za, zero))
    return raiser.fail(std::string("DequantizeLinear zero point is ") +
                       kindName(za->kind) + "; expected a constant");
  if (za && zero.numel() != scale.numel())
    return raiser.fail("DequantizeLinear zero point " + dimsStr(zero.shape) +
                       " and scale " + dimsStr(scale.shape) +
                       " differ in shape");

  // Which scale each element uses: per tensor, per axis or blocked.
  int64_t rank = static_cast<int64_t>(dims.size());
  int64_t axis = raiser.attrIntOr(node, "axis", 1);
  int64_t block = raiser.attrIntOr(node, "block_size", 0);
  if (axis < 0)
    axis += rank;
  int64_t numel = static_cast<int64_t>(q.size());
  bool perTensor = scale.numel() == 1 && block == 0;
  std::vector<int64_t> scaleDims = dims;
  if (!perTensor) {
    if (axis < 0 || axis >= rank)
      return raiser.fail("DequantizeLinear axis " +
                         std::to_string(raiser.attrIntOr(node, "axis", 1)) +
                         " outside the rank " + std::to_string(rank) +
                         " of its input");
    if (block > 0) {
      scaleDims[axis] = (dims[axis] + block - 1) / block;
      if (scale.shape != scaleDims)
        return raiser.fail("DequantizeLinear with block_size " +
                           std::to_string(block) + " on axis " +
                           std::to_string(axis) + " of " + dimsStr(dims) +
                           ": scale is " + dimsStr(scale.shape) +
                           ", expected " + dimsStr(scaleDims));
    } else if (scale.shape.size() != 1 || scale.shape[0] != dims[axis]) {
      return raiser.fail("DequantizeLinear scale " + dimsStr(scale.shape) +
                         " is neither one value nor one per index of axis " +
                         std::to_string(axis) + " of " + dimsStr(dims));
    }
  }
  // Element strides of the input and of the (blocked) scale.
  std::vector<int64_t> stride(rank, 1), scaleStride(rank, 1);
  for (int64_t d = rank - 2; d >= 0; --d) {
    stride[d] = stride[d + 1] * dims[d + 1];
    scaleStride[d] = scaleStride[d + 1] * scaleDims[d + 1];
  }
  std::string name =
      xa->kind == AVal::Weight ? xa->tensor->name() : node.output(0);
  onnx::TensorProto &w = makeTensor(raiser, name, outType, dims);
  std::string &raw = *w.mutable_raw_data();
  raw.reserve(tensorBytes(outType, numel));
  for (int64_t i = 0; i < numel; ++i) {
    int64_t s = 0;
    if (perTensor) {
      s = 0;
    } else if (block > 0) {
      for (int64_t d = 0; d < rank; ++d) {
        int64_t idx = (i / stride[d]) % dims[d];
        s += (d == axis ? idx / block : idx) * scaleStride[d];
      }
    } else {
      s = (i / stride[axis]) % dims[axis];
    }
    double z = za ? zero.data[s] : 0.0;
    appendFloat(raw, (q[i] - z) * scale.data[s], outType);
  }
  int bits = qType == DType::I4 || qType == DType::U4   ? 4
             : qType == DType::I8 || qType == DType::U8 ? 8
                                                        : 32;
  notePrequantized(
      raiser,
      std::to_string(bits) + "-bit (" +
          (qType == DType::I32 ? std::string("int") : dtypeName(qType)) +
          " DequantizeLinear, " +
          (perTensor   ? std::string("per tensor")
           : block > 0 ? "block_size " + std::to_string(block)
                       : "per axis " + std::to_string(axis)) +
          ")");
  AValRef out = AVal::make(AVal::Weight);
  out->tensor = &w;
  call.out() = out;
  return true;
}

} // namespace

void registerQuantizedOps(OpTable &t) {
  t.add("com.microsoft", "MatMulNBits", matMulNBits, OpTable::Fallback);
  // PreFold: its operands are all constants, and the result is a weight
  // (not a concrete value) whatever its size.
  t.add("", "DequantizeLinear", dequantizeLinear, OpTable::PreFold);
}

} // namespace onnx_import
} // namespace sq
