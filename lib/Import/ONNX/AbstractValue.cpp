//===- AbstractValue.cpp - what the raiser knows about an ONNX value ------===//
//
// See AbstractValue.h: the names of the abstract kinds for messages and the
// scalar test the handlers share.
//
//===----------------------------------------------------------------------===//

#include "AbstractValue.h"

namespace sq {
namespace onnx_import {

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

bool isScalar(const AValRef &a, double &v) {
  if (!a || a->kind != AVal::Concrete || a->c.numel() != 1 ||
      a->c.data.size() != 1)
    return false;
  v = a->c.data[0];
  return true;
}

} // namespace onnx_import
} // namespace sq
