//===- View.cpp - how an activation's atoms lie in an ONNX tensor ---------===//
//
// See View.h: the view helpers and reshapeView, which follows a Reshape of an
// activation atom by atom.
//
//===----------------------------------------------------------------------===//

#include "View.h"

namespace sq {
namespace onnx_import {

bool isSeq(AK k) { return k == AK::S || k == AK::P || k == AK::T; }
bool isFeature(AK k) { return k == AK::N || k == AK::D || k == AK::F; }

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
  // One name per AK, in its order.
  static const char *names[] = {"batch", "seq",    "past",     "total_seq",
                                "heads", "repeat", "head_dim", "features",
                                "1",     "pairs",  "2"};
  static_assert(sizeof(names) / sizeof(names[0]) ==
                    static_cast<size_t>(AK::Two) + 1,
                "one name per atom kind");
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

} // namespace onnx_import
} // namespace sq
