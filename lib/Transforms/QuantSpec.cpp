//===- QuantSpec.cpp - the --quantize=SPEC language -----------------------===//

#include "sq/Transforms/QuantSpec.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <vector>

namespace sq {

const char *quantSpecHelp() {
  return "wXaY[kvZ | kZvW] (bits 2-8 or 16) followed by comma-separated "
         "options: wgroup=N, wsym|wasym, wclip, gptq, nsamples=N, damp=F, "
         "block=N, actorder, asym|sym, aclip=R, kgroup=N, vgroup=N, kclip=R, "
         "vclip=R, mode=fake|real, calib=FILE, tokenizer=byte|sp:PATH|hf:DIR, "
         "seqlen=N, head=8|16 (e.g. w4a4kv4,gptq,wgroup=128); none: the float "
         "model";
}

namespace {

bool parseInt(const std::string &s, int64_t &v) {
  if (s.empty() || s.size() > 12)
    return false;
  for (char c : s)
    if (c < '0' || c > '9')
      return false;
  v = std::strtoll(s.c_str(), nullptr, 10);
  return true;
}

bool parseReal(const std::string &s, double &v) {
  if (s.empty())
    return false;
  char *end = nullptr;
  errno = 0;
  v = std::strtod(s.c_str(), &end);
  return errno == 0 && end && *end == '\0' && std::isfinite(v);
}

bool validBits(int64_t b) { return (b >= 2 && b <= 8) || b == 16; }

/// Reads digits at text[pos...] into `bits`.
bool readBits(const std::string &text, size_t &pos, unsigned &bits) {
  size_t start = pos;
  while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9')
    ++pos;
  int64_t v;
  if (!parseInt(text.substr(start, pos - start), v) || !validBits(v))
    return false;
  bits = static_cast<unsigned>(v);
  return true;
}

} // namespace

bool parseQuantSpec(const std::string &text, QuantSpec &spec,
                    std::string &error) {
  spec = QuantSpec();
  std::vector<std::string> parts;
  std::string cur;
  for (char c : text) {
    if (c == ',') {
      parts.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  parts.push_back(cur);
  auto fail = [&](const std::string &what) {
    error = "bad quantization spec '" + text + "': " + what +
            "; accepted: " + quantSpecHelp();
    return false;
  };
  // "none": nothing quantized (the float model).
  if (text == "none") {
    spec = QuantSpec::none();
    return true;
  }
  // The bit widths.
  const std::string &bits = parts[0];
  size_t pos = 0;
  bool ok = pos < bits.size() && bits[pos++] == 'w' &&
            readBits(bits, pos, spec.wBits) && pos < bits.size() &&
            bits[pos++] == 'a' && readBits(bits, pos, spec.aBits);
  if (ok && pos < bits.size()) {
    if (bits.compare(pos, 2, "kv") == 0) {
      pos += 2;
      ok = readBits(bits, pos, spec.kBits);
      spec.vBits = spec.kBits;
    } else if (bits[pos] == 'k') {
      ++pos;
      ok = readBits(bits, pos, spec.kBits) && pos < bits.size() &&
           bits[pos++] == 'v' && readBits(bits, pos, spec.vBits);
    } else {
      ok = false;
    }
    ok = ok && pos == bits.size();
  }
  if (!ok)
    return fail("'" + bits +
                "' is not wXaY, wXaYkvZ or wXaYkZvW with bits "
                "2-8 or 16");
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string &p = parts[i];
    size_t eq = p.find('=');
    std::string key = p.substr(0, eq),
                value = eq == std::string::npos ? "" : p.substr(eq + 1);
    bool hasValue = eq != std::string::npos;
    auto flag = [&](bool &target, bool v) {
      if (hasValue)
        return fail("'" + key + "' takes no value");
      target = v;
      return true;
    };
    auto integer = [&](int64_t &target, int64_t min) {
      int64_t v;
      if (!parseInt(value, v) || v < min)
        return fail("'" + p + "' needs an integer >= " + std::to_string(min));
      target = v;
      return true;
    };
    auto ratio = [&](double &target, double lo, bool loOpen) {
      double v;
      if (!parseReal(value, v) || v > 1.0 || (loOpen ? v <= lo : v < lo))
        return fail("'" + p + "' needs a number in " +
                    std::string(loOpen ? "(" : "[") +
                    (lo == 0 ? "0" : std::to_string(lo)) + ", 1]");
      target = v;
      return true;
    };
    bool good;
    if (p.empty())
      good = fail("empty option (two commas in a row?)");
    else if (key == "wgroup")
      good = integer(spec.wGroup, 0);
    else if (key == "wsym")
      good = flag(spec.wSym, true);
    else if (key == "wasym")
      good = flag(spec.wSym, false);
    else if (key == "wclip")
      good = flag(spec.wClip, true);
    else if (key == "gptq")
      good = flag(spec.gptq, true);
    else if (key == "actorder")
      good = flag(spec.actOrder, true);
    else if (key == "nsamples")
      good = integer(spec.nsamples, 1);
    else if (key == "block")
      good = integer(spec.block, 1);
    else if (key == "damp")
      good = ratio(spec.damp, 0, true);
    else if (key == "asym")
      good = flag(spec.aSym, false);
    else if (key == "sym")
      good = flag(spec.aSym, true);
    else if (key == "aclip")
      good = ratio(spec.aClip, 0, true);
    else if (key == "kgroup")
      good = integer(spec.kGroup, 0);
    else if (key == "vgroup")
      good = integer(spec.vGroup, 0);
    else if (key == "kclip")
      good = ratio(spec.kClip, 0, true);
    else if (key == "vclip")
      good = ratio(spec.vClip, 0, true);
    else if (key == "seqlen")
      good = integer(spec.seqlen, 1);
    else if (key == "head") {
      good = value == "8" || value == "16";
      if (good)
        spec.headBits = value == "8" ? 8 : 16;
      else
        good = fail("'" + p +
                    "': head (the lm_head's bits) is 8 or 16 (16: float, "
                    "the default)");
    } else if (key == "mode") {
      good = value == "fake" || value == "real";
      spec.modeGiven = good;
      if (good)
        spec.real = value == "real";
      else
        good = fail("'" + p + "': mode is fake or real");
    } else if (key == "calib") {
      good = !value.empty() || fail("'calib=' needs a file");
      spec.calib = value;
    } else if (key == "tokenizer") {
      good = value == "byte" ||
             ((value.rfind("sp:", 0) == 0 || value.rfind("hf:", 0) == 0) &&
              value.size() > 3);
      if (good)
        spec.tokenizer = value;
      else
        good = fail("'" + p + "': tokenizer is byte, sp:PATH or hf:DIR");
    } else
      good = fail("unknown option '" + key + "'");
    if (!good)
      return false;
  }
  if (spec.real && spec.wBits != 4 && spec.wBits != 8 && spec.wBits != 16)
    return fail("mode=real packs 4- or 8-bit weights, not " +
                std::to_string(spec.wBits));
  if (spec.gptq && !spec.quantizesWeights())
    return fail("gptq needs quantized weights (w < 16)");
  return true;
}

/// The shortest decimal that parses back to `v` (a stream's default six
/// digits print aclip=0.99999999 as 1, which re-parses to no clip).
static std::string exact(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc() ? std::string(buf, end) : std::to_string(v);
}

std::string QuantSpec::str() const {
  std::ostringstream os;
  os << "w" << wBits << "a" << aBits;
  if (kBits == vBits)
    os << "kv" << kBits;
  else
    os << "k" << kBits << "v" << vBits;
  if (wGroup)
    os << ",wgroup=" << wGroup;
  if (!wSym)
    os << ",wasym";
  if (wClip)
    os << ",wclip";
  if (gptq)
    os << ",gptq,nsamples=" << nsamples << ",damp=" << exact(damp)
       << ",block=" << block << (actOrder ? ",actorder" : "");
  if (aSym)
    os << ",sym";
  if (aClip != 1.0)
    os << ",aclip=" << exact(aClip);
  if (kGroup)
    os << ",kgroup=" << kGroup;
  if (vGroup)
    os << ",vgroup=" << vGroup;
  if (kClip != 1.0)
    os << ",kclip=" << exact(kClip);
  if (vClip != 1.0)
    os << ",vclip=" << exact(vClip);
  if (real)
    os << ",mode=real";
  else if (modeGiven)
    os << ",mode=fake";
  if (!calib.empty())
    os << ",calib=" << calib << ",tokenizer=" << tokenizer;
  if (seqlen)
    os << ",seqlen=" << seqlen;
  if (headBits != 16)
    os << ",head=" << headBits;
  if (os.str() == "w16a16kv16")
    return "none";
  return os.str();
}

} // namespace sq
