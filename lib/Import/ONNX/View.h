//===- View.h - how an activation's atoms lie in an ONNX tensor -*- C++ -*-===//
//
// Internal to lib/Import/ONNX. An activation's view says which atoms (batch,
// sequence, heads, head_dim, features, repeat, ...) make up each axis of the
// ONNX tensor. Reshape, Transpose, Unsqueeze and Expand rewrite the view and
// never produce an op; the handlers check views to tell a LLaMA's layouts
// from anything else.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_IMPORT_ONNX_VIEW_H
#define SQ_LIB_IMPORT_ONNX_VIEW_H

#include <cstdint>
#include <string>
#include <vector>

namespace sq {
namespace onnx_import {

/// Atom kinds: batch, seq, past, total_seq (past + seq), heads, repeat (of
/// KV heads), head_dim, features, a unit axis, head_dim/2 pairs and the 2 of
/// a pair.
enum class AK { B, S, P, T, N, R, D, F, One, DP, Two };

struct Atom {
  AK kind;
  int64_t size;
};
using Axis = std::vector<Atom>;
using View = std::vector<Axis>;

bool isSeq(AK k);
bool isFeature(AK k);
/// Interleaved RoPE splits head_dim into (head_dim/2 pairs, 2).
bool isPairSplit(const Axis &a, const Axis &b);
int64_t axisSize(const Axis &axis);
std::vector<int64_t> viewShape(const View &view);
/// The atoms of all axes in order, unit atoms dropped.
std::vector<Atom> realAtoms(const View &view);
/// [[B],[seq],[features...]]: the layout of the backing sq value.
bool isCanonical(const View &view);
/// "[batch(3), seq(5), heads(4)*head_dim(8)]", for messages.
std::string viewStr(const View &view);
/// Regroups the atoms of `view` into the axes of `target` (row-major
/// reshape). A plain feature atom may split into heads x head_dim.
bool reshapeView(const View &view, const std::vector<int64_t> &target,
                 View &out, std::string &error);

} // namespace onnx_import
} // namespace sq

#endif // SQ_LIB_IMPORT_ONNX_VIEW_H
