//===- StaticCache.cpp - static KV caches and explicit attention masks ----===//
//
// ONNX Runtime's opset-24 builders write the KV cache as a static buffer of
// max_seq slots per layer (graph inputs key_cache.N / value_cache.N), updated
// in place by TensorScatter(cache, new, write_indices) and read whole by
// Attention, whose mask (computed from write_indices, nonpad_kv_seqlen and
// the slot numbers) hides the slots not yet written, future positions and,
// for Mistral, keys outside a sliding window.
//
// SQ imports such a graph into its usual growing-cache signature: the
// probe binds write_indices to the past length and nonpad_kv_seqlen to past
// + seq, so that the first past + seq slots of the updated cache are
// exactly past ++ new (the KVCat of a Concat cache). The mask is checked by
// value: at the probe, and again with the cache full (write_indices =
// max_seq - seq), which shows a sliding window the probe is too short to
// show. Also RotaryEmbedding with cos/sin already gathered at the positions.
//
//===----------------------------------------------------------------------===//

#include "Raiser.h"

#include <cmath>
#include <set>

using namespace mlir;

namespace sq {
namespace onnx_import {

bool Raiser::reevaluate(const std::string &name,
                        const std::map<std::string, AValRef> &rebind,
                        CTensor &out) {
  std::string why;
  if (!probeValue(name, options.probeSeq, options.probePast, out, why, &rebind))
    return fail("evaluating '" + name + "' with the static cache full: " + why);
  return true;
}

namespace {

/// Which keys each query of a mask sees: `vis` [planes, seq, cols] from a
/// boolean (true: attend) or additive float mask (0: attend, very negative:
/// masked) whose last two axes are [seq, cols].
bool visibility(Raiser &raiser, const CTensor &mask, int64_t seq, int64_t &cols,
                std::vector<char> &vis) {
  if (mask.rank() < 2 || mask.shape[mask.rank() - 2] != seq)
    return raiser.fail("Attention's attn_mask is not [..., seq, keys] at the "
                       "probe (seq " +
                       std::to_string(seq) + ")");
  cols = mask.shape.back();
  vis.resize(mask.data.size());
  for (size_t i = 0; i < mask.data.size(); ++i) {
    double m = mask.data[i];
    if (mask.kind == CTensor::Bool)
      vis[i] = m != 0;
    else if (m == 0.0)
      vis[i] = 1;
    else if (m <= -1e4)
      vis[i] = 0;
    else
      return raiser.fail("Attention's attn_mask holds " + std::to_string(m) +
                         ": expected an additive mask of 0 and very negative "
                         "values (or a boolean one)");
  }
  return true;
}

/// The sliding window the mask of a full static cache shows: every row
/// (query at slot `first + i`) sees a run of keys ending at its own slot;
/// 0 when no row's run is cut short.
bool windowOf(Raiser &raiser, const std::vector<char> &vis, int64_t seq,
              int64_t cols, int64_t first, int64_t &window) {
  window = 0;
  int64_t atLeast = 0;
  for (size_t p = 0; p < vis.size() / (seq * cols); ++p)
    for (int64_t i = 0; i < seq; ++i) {
      const char *row = vis.data() + (p * seq + i) * cols;
      int64_t pos = first + i, lo = pos;
      while (lo > 0 && row[lo - 1])
        --lo;
      bool ok = row[pos];
      for (int64_t j = 0; j < cols && ok; ++j)
        ok = row[j] == (j >= lo && j <= pos);
      if (!ok)
        return raiser.fail(
            "with the static cache full (write_indices " +
            std::to_string(first) + ", nonpad_kv_seqlen " +
            std::to_string(cols) + "), the attention mask of the query at " +
            std::to_string(pos) +
            " is not one run of keys ending at its own position: expected a "
            "causal mask, possibly with a sliding window");
      int64_t w = pos - lo + 1;
      if (lo > 0) {
        if (window && window != w)
          return raiser.fail("the attention mask's sliding window differs "
                             "between queries (" +
                             std::to_string(window) + " and " +
                             std::to_string(w) + ")");
        window = w;
      } else {
        atLeast = std::max(atLeast, w);
      }
    }
  if (window && window < atLeast)
    return raiser.fail("the attention mask's sliding window of " +
                       std::to_string(window) +
                       " keys is longer for other queries");
  return true;
}

} // namespace

bool attentionMask(Raiser &raiser, OpCall &call, int64_t totalKeys,
                   int64_t &window) {
  window = 0;
  CTensor mask;
  if (!raiser.concreteOf(call.input(3), mask))
    return raiser.fail("Attention's attn_mask is not a constant at the probe "
                       "(a mask computed from activations): expected a causal "
                       "mask");
  int64_t seq = raiser.options.probeSeq, first = totalKeys - seq, cols;
  std::vector<char> vis;
  if (!visibility(raiser, mask, seq, cols, vis))
    return false;
  if (first < 0 || cols < totalKeys)
    return raiser.fail("Attention's attn_mask covers " + std::to_string(cols) +
                       " keys at the probe, fewer than the " +
                       std::to_string(totalKeys) + " keys attended to" +
                       (raiser.staticCache
                            ? std::string(" (a static cache shorter than the "
                                          "importer's probe, past + seq "
                                          "tokens, is not supported)")
                            : std::string()));
  if (raiser.staticCache) {
    // The mask again with every slot but the last seq written: a sliding
    // window shorter than the cache shows there.
    int64_t batch = raiser.options.probeBatch, start = cols - seq;
    auto ints = [&](std::vector<int64_t> shape, auto value) {
      AValRef c = AVal::make(AVal::Concrete);
      c->c.kind = CTensor::Int;
      c->c.shape = shape;
      for (int64_t i = 0; i < c->c.numel(); ++i)
        c->c.data.push_back(value(i));
      return c;
    };
    std::map<std::string, AValRef> rebind = {
        {"write_indices", ints({batch}, [&](int64_t) { return start; })},
        {"nonpad_kv_seqlen", ints({batch}, [&](int64_t) { return cols; })},
        {"position_ids",
         ints({batch, seq}, [&](int64_t i) { return start + i % seq; })}};
    CTensor full;
    std::vector<char> fullVis;
    int64_t fullCols;
    if (!raiser.reevaluate(call.node.input(3), rebind, full) ||
        !visibility(raiser, full, seq, fullCols, fullVis))
      return false;
    if (full.shape != mask.shape)
      return raiser.fail("Attention's attn_mask changes shape with the static "
                         "cache full");
    if (!windowOf(raiser, fullVis, seq, cols, start, window))
      return false;
  }
  // At the probe: causal (within the window) over the keys attended to;
  // the slots past them (a static cache's unwritten ones) masked.
  for (size_t p = 0; p < vis.size() / (seq * cols); ++p)
    for (int64_t i = 0; i < seq; ++i)
      for (int64_t j = 0; j < cols; ++j) {
        int64_t pos = first + i;
        bool want = j <= pos && (window == 0 || j > pos - window);
        if (vis[(p * seq + i) * cols + j] != want)
          return raiser.fail(
              "Attention's attn_mask " + std::string(want ? "hides" : "shows") +
              " key " + std::to_string(j) + " to the query at position " +
              std::to_string(pos) + " at the probe: expected a causal mask" +
              (window ? " with a sliding window of " + std::to_string(window)
                      : std::string()) +
              (raiser.staticCache
                   ? ""
                   : " (a sliding window is recognized with static caches "
                     "only)"));
      }
  return true;
}

bool checkNonpad(Raiser &raiser, OpCall &call, int64_t totalKeys) {
  CTensor n;
  bool ok = raiser.concreteOf(call.input(6), n) &&
            n.numel() == raiser.options.probeBatch;
  for (size_t i = 0; ok && i < n.data.size(); ++i)
    ok = n.intAt(i) == totalKeys;
  if (!ok)
    return raiser.fail("Attention's nonpad_kv_seqlen is not past + seq (" +
                       std::to_string(totalKeys) +
                       ") for every sequence at the probe: expected the graph "
                       "input nonpad_kv_seqlen (padding is not supported)");
  return true;
}

bool ropeFromGathered(Raiser &raiser, const AValRef &x, const AValRef &cosIn,
                      const AValRef &sinIn, bool interleaved, int64_t heads,
                      AValRef &out) {
  CTensor c, s;
  int64_t batch = raiser.options.probeBatch, seq = raiser.options.probeSeq;
  if (!cosIn || !sinIn || !raiser.concreteOf(cosIn, c) ||
      !raiser.concreteOf(sinIn, s) || c.rank() != 3 || c.shape != s.shape ||
      c.shape[1] != seq || (c.shape[0] != 1 && c.shape[0] != batch))
    return raiser.fail("RotaryEmbedding without position_ids needs cos/sin "
                       "gathered at the positions, constant at the probe: "
                       "[batch, seq, rotary_dim/2]");
  int64_t half = c.shape[2];
  int64_t plane = seq * half;
  // One table for every sequence (all are at positions past + i).
  for (int64_t i = plane; i < c.numel(); ++i)
    if (std::fabs(c.data[i] - c.data[i % plane]) > 1e-6 ||
        std::fabs(s.data[i] - s.data[i % plane]) > 1e-6)
      return raiser.fail("RotaryEmbedding's gathered cos/sin differ between "
                         "sequences at the same positions");
  // The rows are the probe's positions past + i (the first sequence's).
  return ropeFromHalfTables(raiser, x, c.data, s.data, seq, half, interleaved,
                            heads, out);
}

namespace {

/// TensorScatter(cache, update, write_indices): the new keys/values written
/// into a static cache at the past length; the first past + seq slots of
/// the result are past ++ new.
bool tensorScatter(Raiser &raiser, OpCall &call) {
  for (const auto &a : call.node.attribute())
    if (a.name() == "mode" && a.s() != "linear")
      return raiser.fail("TensorScatter with mode '" + a.s() +
                         "' (a ring buffer) is not supported: expected "
                         "mode 'linear'");
  AValRef cache = call.input(0), update;
  if (cache->kind != AVal::Act || cache->kv || !cache->v ||
      !isa<BlockArgument>(cache->v) || !raiser.staticCache)
    return raiser.fail(std::string("TensorScatter into ") +
                       kindName(cache->kind) +
                       ": expected a static KV cache, a graph input "
                       "key_cache.* or value_cache.*");
  if (!raiser.asAct(call.input(1), update,
                    "the new keys/values of TensorScatter"))
    return false;
  if (update->kv)
    return raiser.fail("TensorScatter of keys/values already in a cache");
  CTensor idx;
  if (!call.input(2))
    return raiser.fail("TensorScatter without write_indices writes at slot "
                       "0: expected write_indices (the past length)");
  bool ok = raiser.concreteOf(call.input(2), idx) &&
            idx.numel() == raiser.options.probeBatch;
  for (size_t i = 0; ok && i < idx.data.size(); ++i)
    ok = idx.intAt(i) == raiser.positionStart;
  if (!ok)
    return raiser.fail("TensorScatter's write_indices are not the past "
                       "length at the probe: expected the graph input "
                       "write_indices");
  int64_t rank = static_cast<int64_t>(cache->view.size());
  int64_t axis = raiser.attrIntOr(call.node, "axis", -2);
  if (axis < 0)
    axis += rank;
  bool layoutOk = axis >= 0 && axis < rank &&
                  static_cast<int64_t>(update->view.size()) == rank;
  for (int64_t i = 0; layoutOk && i < rank; ++i) {
    const Axis &c = cache->view[i], &u = update->view[i];
    if (i == axis)
      layoutOk = c.size() == 1 && c[0].kind == AK::P && u.size() == 1 &&
                 u[0].kind == AK::S;
    else
      layoutOk = c.size() == u.size() &&
                 std::equal(c.begin(), c.end(), u.begin(),
                            [](const Atom &a, const Atom &b) {
                              return a.kind == b.kind && a.size == b.size;
                            });
  }
  if (!layoutOk)
    return raiser.fail("TensorScatter of " + viewStr(update->view) +
                       " into the cache " + viewStr(cache->view) +
                       " along axis " + std::to_string(axis) +
                       ": expected the new keys/values written along the "
                       "cache's sequence axis");
  AValRef &out = call.out();
  out = raiser.act(Value(), update->view);
  out->view[axis][0] = {AK::T,
                        raiser.options.probePast + raiser.options.probeSeq};
  out->kv = std::make_shared<KVCat>();
  out->kv->past = cache->v;
  out->kvNew = update->v;
  return true;
}

} // namespace

void registerStaticCacheOps(OpTable &t) {
  t.add("", "TensorScatter", tensorScatter, OpTable::Fallback);
}

} // namespace onnx_import
} // namespace sq
