//===- HFTokenizerSupport.cpp - UTF-8, PCRE2, tokenizer.json reading ------===//
//
// What every part of the hf: tokenizer uses (HFTokenizerParts.h): the UTF-8
// repair of the input, PCRE2 regexes (PCRE2_UTF | PCRE2_UCP, JIT when
// available: the Unicode classes \p{L}, \p{N}, \s come from PCRE2's tables)
// and the JSON reader whose messages name the file and the entry's path.
//
//===----------------------------------------------------------------------===//

#include "HFTokenizerParts.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

using namespace llvm;

namespace sq {
namespace hftok {

//===----------------------------------------------------------------------===//
// UTF-8
//===----------------------------------------------------------------------===//

std::string toValidUtf8(StringRef s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0, n = s.size();
  while (i < n) {
    unsigned char b = s[i];
    if (b < 0x80) {
      out.push_back(char(b));
      ++i;
      continue;
    }
    int need = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF)
      need = 1;
    else if (b == 0xE0)
      need = 2, lo = 0xA0;
    else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF)
      need = 2;
    else if (b == 0xED)
      need = 2, hi = 0x9F;
    else if (b == 0xF0)
      need = 3, lo = 0x90;
    else if (b >= 0xF1 && b <= 0xF3)
      need = 3;
    else if (b == 0xF4)
      need = 3, hi = 0x8F;
    else {
      out += kReplacementChar;
      ++i;
      continue;
    }
    size_t j = i + 1;
    bool ok = true;
    for (int k = 0; k < need; ++k, ++j) {
      if (j >= n || (unsigned char)s[j] < lo || (unsigned char)s[j] > hi) {
        ok = false;
        break;
      }
      lo = 0x80, hi = 0xBF;
    }
    if (ok)
      out.append(s.data() + i, j - i);
    else
      out += kReplacementChar;
    i = j;
  }
  return out;
}

//===----------------------------------------------------------------------===//
// PCRE2
//===----------------------------------------------------------------------===//

Regex::~Regex() {
  if (code)
    pcre2_code_free(code);
}

std::unique_ptr<Regex> Regex::compile(StringRef pattern, std::string &error) {
  int code = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code *re = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()),
                                 pattern.size(), PCRE2_UTF | PCRE2_UCP, &code,
                                 &offset, nullptr);
  if (!re) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(code, message, sizeof(message));
    error = "regex '" + pattern.str() + "' at offset " +
            std::to_string(offset) + ": " +
            reinterpret_cast<const char *>(message);
    return nullptr;
  }
  pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); // the interpreter otherwise
  auto r = std::unique_ptr<Regex>(new Regex());
  r->code = re;
  return r;
}

void Regex::findAll(StringRef text,
                    std::vector<std::pair<size_t, size_t>> &matches) const {
  matches.clear();
  pcre2_match_data *md = pcre2_match_data_create_from_pattern(code, nullptr);
  size_t start = 0;
  while (start <= text.size()) {
    int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()),
                         text.size(), start, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH)
      // The JIT's stack ran out (a pathological subject): the interpreter
      // keeps its backtracking on the heap.
      rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()),
                       text.size(), start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                       md, nullptr);
    if (rc < 0)
      break;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    matches.emplace_back(ov[0], ov[1]);
    if (ov[1] > ov[0])
      start = ov[1];
    else if (ov[1] >= text.size())
      break;
    else
      start = ov[1] + utf8Length(text[ov[1]]);
  }
  pcre2_match_data_free(md);
}

bool Regex::matchesAt(StringRef text, size_t at) const {
  pcre2_match_data *md = pcre2_match_data_create_from_pattern(code, nullptr);
  int rc =
      pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(),
                  at, PCRE2_NO_UTF_CHECK | PCRE2_ANCHORED, md, nullptr);
  pcre2_match_data_free(md);
  return rc >= 0;
}

void Pattern::findAll(StringRef text,
                      std::vector<std::pair<size_t, size_t>> &matches) const {
  if (regex)
    return regex->findAll(text, matches);
  matches.clear();
  if (literal.empty())
    return;
  for (size_t at = text.find(literal); at != StringRef::npos;
       at = text.find(literal, at + literal.size()))
    matches.emplace_back(at, at + literal.size());
}

void replaceAll(std::string &s, const Pattern &pattern, StringRef content) {
  std::vector<std::pair<size_t, size_t>> m;
  pattern.findAll(s, m);
  if (m.empty())
    return;
  std::string out;
  size_t prev = 0;
  for (auto [b, e] : m) {
    out.append(s, prev, b - prev);
    out += content;
    prev = e;
  }
  out.append(s, prev, std::string::npos);
  s = std::move(out);
}

//===----------------------------------------------------------------------===//
// JSON reading with paths for the messages
//===----------------------------------------------------------------------===//

bool Reader::fail(const std::string &path, const Twine &what) {
  if (error.empty())
    error = file + ": " + path + ": " + what.str();
  return false;
}

const json::Object *Reader::object(const json::Value *v,
                                   const std::string &path) {
  const json::Object *o = v ? v->getAsObject() : nullptr;
  if (!o)
    fail(path, "expected an object");
  return o;
}

const json::Object *Reader::component(const json::Value *v,
                                      const std::string &path,
                                      std::string &type) {
  const json::Object *o = object(v, path);
  if (!o || !string(*o, path, "type", type))
    return nullptr;
  return o;
}

bool Reader::unsupported(const std::string &path, StringRef kind,
                         StringRef type, StringRef known) {
  return fail(at(path, "type"), "unsupported " + kind + " '" + type +
                                    "' (SQ reads " + known + ")");
}

bool Reader::forEach(
    const json::Object &o, const std::string &path, StringRef key,
    function_ref<bool(const json::Value &, const std::string &)> each) {
  std::string p = at(path, key);
  const json::Array *a = o.getArray(key);
  if (!a)
    return fail(p, "expected an array");
  for (size_t i = 0; i < a->size(); ++i)
    if (!each((*a)[i], at(p, i)))
      return false;
  return true;
}

bool Reader::string(const json::Object &o, const std::string &path,
                    StringRef key, std::string &out, bool required) {
  const json::Value *v = o.get(key);
  if (!v || v->kind() == json::Value::Null) {
    if (required)
      return fail(at(path, key), "missing");
    return true;
  }
  std::optional<StringRef> s = v->getAsString();
  if (!s)
    return fail(at(path, key), "expected a string");
  out = s->str();
  return true;
}

/// An optional scalar o[key] read with `get` (absent or null: `out`
/// unchanged); `expected` names the kind in the message.
template <typename T>
static bool optionalScalar(Reader &r, const json::Object &o,
                           const std::string &path, StringRef key, T &out,
                           std::optional<T> (json::Value::*get)() const,
                           StringRef expected) {
  const json::Value *v = o.get(key);
  if (!v || v->kind() == json::Value::Null)
    return true;
  std::optional<T> x = (v->*get)();
  if (!x)
    return r.fail(Reader::at(path, key), "expected " + expected);
  out = *x;
  return true;
}

bool Reader::boolean(const json::Object &o, const std::string &path,
                     StringRef key, bool &out) {
  return optionalScalar(*this, o, path, key, out, &json::Value::getAsBoolean,
                        "true or false");
}

bool Reader::integer(const json::Object &o, const std::string &path,
                     StringRef key, int64_t &out) {
  return optionalScalar(*this, o, path, key, out, &json::Value::getAsInteger,
                        "an integer");
}

bool Reader::pattern(const json::Object &o, const std::string &path,
                     Pattern &out) {
  std::string p = at(path, "pattern");
  const json::Object *po = object(o.get("pattern"), p);
  if (!po)
    return false;
  if (po->get("String"))
    return string(*po, p, "String", out.literal);
  std::string regex;
  if (!po->get("Regex"))
    return fail(p, "expected {\"String\": ...} or {\"Regex\": ...}");
  if (!string(*po, p, "Regex", regex))
    return false;
  std::string why;
  if (!(out.regex = Regex::compile(regex, why)))
    return fail(at(p, "Regex"), why);
  return true;
}

} // namespace hftok
} // namespace sq
