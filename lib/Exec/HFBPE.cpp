//===- HFBPE.cpp - the BPE model of a tokenizer.json ----------------------===//
//
// model  BPE: vocab, merges ("a b" strings or [a, b] pairs), unk_token,
//        fuse_unk, byte_fallback, ignore_merges, continuing_subword_prefix,
//        end_of_word_suffix
//
//===----------------------------------------------------------------------===//

#include "HFTokenizerParts.h"

#include <cstdio>
#include <queue>

using namespace llvm;

namespace sq {
namespace hftok {

void BPE::encodeWord(StringRef word, std::vector<int32_t> &out) const {
  if (word.empty())
    return;
  if (ignoreMerges) {
    auto it = vocab.find(word);
    if (it != vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    bool alive;
  };
  std::vector<Symbol> sym;
  sym.reserve(word.size());
  auto add = [&](int32_t id) {
    int32_t i = sym.size();
    sym.push_back({id, i - 1, -1, true});
    if (i > 0)
      sym[i - 1].next = i;
  };
  int32_t pendingUnk = -1; // an unknown run not yet added (fuse_unk)
  std::string scratch;
  for (size_t i = 0; i < word.size();) {
    size_t len = std::min(utf8Length(word[i]), word.size() - i);
    StringRef ch = word.substr(i, len);
    bool first = i == 0, last = i + len == word.size();
    i += len;
    StringRef s = ch;
    if ((!first && !prefix.empty()) || (last && !suffix.empty())) {
      scratch =
          ((!first ? prefix : std::string()) + ch + (last ? suffix : "")).str();
      s = scratch;
    }
    auto it = vocab.find(s);
    if (it != vocab.end()) {
      if (pendingUnk >= 0)
        add(pendingUnk), pendingUnk = -1;
      add(it->second);
      continue;
    }
    if (byteFallback) {
      bool all = true;
      for (unsigned char c : s)
        all &= byteIds[c] >= 0;
      if (all) {
        if (pendingUnk >= 0)
          add(pendingUnk), pendingUnk = -1;
        for (unsigned char c : s)
          add(byteIds[c]);
        continue;
      }
    }
    if (unk < 0)
      continue; // tokenizers fails (MissingUnkToken); the char is dropped
    if (pendingUnk >= 0 && !fuseUnk)
      add(pendingUnk);
    pendingUnk = unk;
  }
  if (pendingUnk >= 0)
    add(pendingUnk);

  // Merge: lowest rank first, then leftmost (tokenizers' Word::merge_all).
  struct Merge {
    int32_t rank, pos, id;
    bool operator>(const Merge &o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Merge, std::vector<Merge>, std::greater<Merge>> queue;
  auto consider = [&](int32_t pos) {
    int32_t next = sym[pos].next;
    if (next < 0)
      return;
    auto it = merges.find(key(sym[pos].id, sym[next].id));
    if (it != merges.end())
      queue.push({it->second.first, pos, it->second.second});
  };
  for (int32_t p = 0; p + 1 < int32_t(sym.size()); ++p)
    consider(p);
  while (!queue.empty()) {
    Merge top = queue.top();
    queue.pop();
    Symbol &left = sym[top.pos];
    if (!left.alive || left.next < 0)
      continue;
    Symbol &right = sym[left.next];
    auto it = merges.find(key(left.id, right.id));
    if (it == merges.end() || it->second.second != top.id)
      continue; // stale
    left.id = top.id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0)
      sym[right.next].prev = top.pos;
    if (left.prev >= 0)
      consider(left.prev);
    consider(top.pos);
  }
  for (const Symbol &s : sym)
    if (s.alive)
      out.push_back(s.id);
}

bool readBPE(Reader &r, const json::Object &model, BPE &bpe,
             std::vector<std::string> &idToToken) {
  const std::string path = "model";
  const json::Object *vocab = model.getObject("vocab");
  if (!vocab)
    return r.fail("model.vocab", "expected an object of token -> id");
  for (const auto &[k, v] : *vocab) {
    std::optional<int64_t> id = v.getAsInteger();
    if (!id || *id < 0 || *id >= (int64_t(1) << 30))
      return r.fail("model.vocab." + k.str(), "expected an id in [0, 2^30)");
    bpe.vocab[k.str()] = int32_t(*id);
    if (size_t(*id) >= idToToken.size())
      idToToken.resize(*id + 1);
    idToToken[*id] = k.str();
  }
  const json::Array *merges = model.getArray("merges");
  if (!merges)
    return r.fail("model.merges", "expected an array");
  bpe.merges.reserve(merges->size());
  for (size_t i = 0; i < merges->size(); ++i) {
    const json::Value &m = (*merges)[i];
    std::string a, b;
    if (std::optional<StringRef> s = m.getAsString()) {
      auto [l, rr] = s->split(' ');
      if (rr.empty() && !s->contains(' '))
        return r.fail(Reader::at("model.merges", i),
                      "'" + *s + "' is not two tokens separated by a space");
      a = l.str(), b = rr.str();
    } else if (const json::Array *pair = m.getAsArray();
               pair && pair->size() == 2 && (*pair)[0].getAsString() &&
               (*pair)[1].getAsString()) {
      a = (*pair)[0].getAsString()->str();
      b = (*pair)[1].getAsString()->str();
    } else {
      return r.fail(Reader::at("model.merges", i),
                    "expected \"A B\" or [\"A\", \"B\"]");
    }
    auto ia = bpe.vocab.find(a), ib = bpe.vocab.find(b),
         iab = bpe.vocab.find(a + b);
    if (ia == bpe.vocab.end() || ib == bpe.vocab.end() ||
        iab == bpe.vocab.end())
      return r.fail(Reader::at("model.merges", i),
                    "'" + a + "' + '" + b + "': " +
                        (ia == bpe.vocab.end()   ? "'" + a + "'"
                         : ib == bpe.vocab.end() ? "'" + b + "'"
                                                 : "'" + a + b + "'") +
                        " is not in the vocabulary");
    // The first of duplicate merges wins (its rank is the lower).
    bpe.merges.try_emplace(BPE::key(ia->second, ib->second), int32_t(i),
                           iab->second);
  }
  std::string unk;
  if (!r.string(model, path, "unk_token", unk, false) ||
      !r.boolean(model, path, "fuse_unk", bpe.fuseUnk) ||
      !r.boolean(model, path, "byte_fallback", bpe.byteFallback) ||
      !r.boolean(model, path, "ignore_merges", bpe.ignoreMerges) ||
      !r.string(model, path, "continuing_subword_prefix", bpe.prefix, false) ||
      !r.string(model, path, "end_of_word_suffix", bpe.suffix, false))
    return false;
  if (const json::Value *d = model.get("dropout");
      d && d->kind() != json::Value::Null && d->getAsNumber() &&
      *d->getAsNumber() != 0.0)
    return r.fail("model.dropout",
                  "BPE dropout is for training; SQ encodes without it");
  if (!unk.empty()) {
    auto it = bpe.vocab.find(unk);
    if (it == bpe.vocab.end())
      return r.fail("model.unk_token",
                    "'" + unk + "' is not in the vocabulary");
    bpe.unk = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    auto it = bpe.vocab.find(name);
    bpe.byteIds[b] = it == bpe.vocab.end() ? -1 : it->second;
  }
  return true;
}

} // namespace hftok
} // namespace sq
