//===- ModelFormat.cpp - manifest and sidecar of a compiled model ---------===//

#include "sq/Runtime/ModelFormat.h"
#include "sq/Numerics/Pack.h"
#include "sq/Runtime/KernelLayout.h"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <sstream>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace sq {
namespace rt {

uint64_t WeightDesc::bytes() const {
  if (packedBits && kernelBlock)
    return kernelLayoutBytes(rows, cols, packedBits, kernelBlock);
  if (packedBits)
    return uint64_t(rows) * numerics::packedBytes(cols, packedBits);
  return uint64_t(rows) * uint64_t(cols) *
         (storage == FloatStorage::F32 ? 4 : 2);
}

uint64_t fnv1a(const void *data, size_t size) {
  const unsigned char *p = static_cast<const unsigned char *>(data);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < size; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

static std::string quantText(const QuantDesc &q) {
  if (!q.bits)
    return "none";
  std::ostringstream os;
  os.precision(17);
  os << q.bits << ":" << (q.symmetric ? "sym" : "asym") << ":" << q.group << ":"
     << q.clip;
  return os.str();
}

static bool parseQuant(const std::string &text, QuantDesc &q) {
  q = QuantDesc();
  if (text == "none")
    return true;
  char sym[8] = {0};
  long long group;
  double clip;
  unsigned bits;
  if (std::sscanf(text.c_str(), "%u:%4[a-z]:%lld:%lf", &bits, sym, &group,
                  &clip) != 4)
    return false;
  if (bits < 2 || bits > 8 || group < 0 || !(clip > 0 && clip <= 1))
    return false;
  q.bits = bits;
  q.symmetric = std::strcmp(sym, "sym") == 0;
  if (!q.symmetric && std::strcmp(sym, "asym") != 0)
    return false;
  q.group = group;
  q.clip = clip;
  return true;
}

std::string Manifest::serialize() const {
  std::ostringstream os;
  os.precision(17);
  os << "sq-model " << kManifestVersion << "\n";
  os << "config vocab=" << vocabSize << " hidden=" << hiddenSize
     << " intermediate=" << intermediateSize << " layers=" << numLayers
     << " heads=" << numHeads << " kv_heads=" << numKvHeads
     << " head_dim=" << headDim << " max_positions=" << maxPositions
     << " bos=" << bosTokenId << " eos=" << eosTokenId << "\n";
  std::string desc = description;
  for (char &c : desc)
    if (c == '\n' || c == '\r')
      c = ' ';
  os << "description " << desc << "\n";
  os << "slots " << numSlots << "\n";
  for (const WeightDesc &w : weights)
    os << "weight " << w.slot << " " << w.packedBits << " " << int(w.storage)
       << " " << w.rows << " " << w.cols << " " << w.kernelBlock << " "
       << w.name << "\n";
  for (const QLinearDesc &q : qlinears)
    os << "qlinear " << q.weight << " " << q.scales << " " << q.zeros << " "
       << q.bias << " " << q.n << " " << q.k << " " << quantText(q.weightQuant)
       << " " << quantText(q.actQuant) << "\n";
  for (const AttentionDesc &a : attentions) {
    os << "attention " << a.heads << " " << a.kvHeads << " " << a.headDim << " "
       << a.scale << " " << (a.causal ? 1 : 0) << " " << quantText(a.keyQuant)
       << " " << quantText(a.valueQuant);
    // Written only when set: manifests without it stay as they were.
    if (a.window)
      os << " window " << a.window;
    os << "\n";
  }
  os << "end\n";
  return os.str();
}

bool Manifest::parse(const std::string &text, Manifest &m, std::string &error) {
  m = Manifest();
  std::istringstream in(text);
  std::string line;
  int lineNo = 0;
  bool ended = false, sawSlots = false;
  auto bad = [&](const std::string &what) {
    error = "manifest line " + std::to_string(lineNo) + ": " + what;
    return false;
  };
  while (std::getline(in, line)) {
    ++lineNo;
    std::istringstream ls(line);
    std::string key;
    ls >> key;
    if (lineNo == 1) {
      int version = 0;
      if (key != "sq-model" || !(ls >> version))
        return bad("not an SQ model manifest");
      if (version != kManifestVersion)
        return bad("manifest version " + std::to_string(version) +
                   ", this runtime reads version " +
                   std::to_string(kManifestVersion));
      continue;
    }
    if (key == "config") {
      std::string kv;
      while (ls >> kv) {
        size_t eq = kv.find('=');
        if (eq == std::string::npos)
          return bad("expected key=value, got '" + kv + "'");
        std::string k = kv.substr(0, eq);
        long long v = std::atoll(kv.c_str() + eq + 1);
        if (k == "vocab")
          m.vocabSize = v;
        else if (k == "hidden")
          m.hiddenSize = v;
        else if (k == "intermediate")
          m.intermediateSize = v;
        else if (k == "layers")
          m.numLayers = v;
        else if (k == "heads")
          m.numHeads = v;
        else if (k == "kv_heads")
          m.numKvHeads = v;
        else if (k == "head_dim")
          m.headDim = v;
        else if (k == "max_positions")
          m.maxPositions = v;
        else if (k == "bos")
          m.bosTokenId = int32_t(v);
        else if (k == "eos")
          m.eosTokenId = int32_t(v);
      }
    } else if (key == "description") {
      m.description = line.size() > 12 ? line.substr(12) : "";
    } else if (key == "slots") {
      // Once: a second count could drop below slots already listed.
      if (sawSlots)
        return bad("duplicate slot count");
      sawSlots = true;
      if (!(ls >> m.numSlots) || m.numSlots < 0)
        return bad("bad slot count");
    } else if (key == "weight") {
      WeightDesc w;
      int storage = 0;
      if (!(ls >> w.slot >> w.packedBits >> storage >> w.rows >> w.cols >>
            w.kernelBlock) ||
          storage < 0 || storage > 2)
        return bad("bad weight entry");
      w.storage = FloatStorage(storage);
      ls >> std::ws;
      std::getline(ls, w.name);
      if (w.slot < 0 || w.slot >= m.numSlots || w.rows <= 0 || w.cols <= 0 ||
          (w.packedBits != 0 && w.packedBits != 4 && w.packedBits != 8))
        return bad("bad weight entry");
      // Sizes whose byte counts could overflow the sidecar's arithmetic
      // (2^46 values: 64 Ti elements, far beyond any model) are refused.
      const int64_t limit = int64_t(1) << 46;
      if (w.rows > limit || w.cols > limit || w.rows > limit / w.cols)
        return bad("weight '" + w.name + "' of " + std::to_string(w.rows) +
                   " x " + std::to_string(w.cols) + " values is too large");
      // A kernel layout: packed, in blocks that divide K.
      if (w.kernelBlock < 0 ||
          (w.kernelBlock &&
           (!w.packedBits || w.kernelBlock > w.cols || w.cols % w.kernelBlock)))
        return bad("weight '" + w.name + "' has a bad kernel block " +
                   std::to_string(w.kernelBlock));
      m.weights.push_back(w);
    } else if (key == "qlinear") {
      QLinearDesc q;
      std::string wq, aq;
      if (!(ls >> q.weight >> q.scales >> q.zeros >> q.bias >> q.n >> q.k >>
            wq >> aq) ||
          !parseQuant(wq, q.weightQuant) || !parseQuant(aq, q.actQuant) ||
          q.n <= 0 || q.k <= 0)
        return bad("bad qlinear entry");
      m.qlinears.push_back(q);
    } else if (key == "attention") {
      AttentionDesc a;
      int causal = 0;
      std::string kq, vq;
      if (!(ls >> a.heads >> a.kvHeads >> a.headDim >> a.scale >> causal >>
            kq >> vq) ||
          !parseQuant(kq, a.keyQuant) || !parseQuant(vq, a.valueQuant) ||
          a.heads <= 0 || a.kvHeads <= 0 || a.headDim <= 0 ||
          a.heads % a.kvHeads)
        return bad("bad attention entry");
      a.causal = causal != 0;
      std::string extra;
      if (ls >> extra) {
        if (extra != "window" || !(ls >> a.window) || a.window <= 0 ||
            !a.causal || (ls >> extra))
          return bad("bad attention entry");
      }
      m.attentions.push_back(a);
    } else if (key == "end") {
      ended = true;
      break;
    } else if (!key.empty()) {
      return bad("unknown entry '" + key + "'");
    }
  }
  if (lineNo == 0)
    return bad("empty");
  if (!ended)
    return bad("missing 'end' (truncated manifest)");
  return true;
}

void planSidecar(const Manifest &m, uint64_t &headerBytes,
                 std::vector<uint64_t> &offsets, uint64_t &totalBytes) {
  auto align = [](uint64_t v) {
    return (v + kSidecarAlign - 1) / kSidecarAlign * kSidecarAlign;
  };
  headerBytes = align(8 + 4 + 4 + 8 + 8 + 16 * m.weights.size());
  offsets.clear();
  uint64_t at = headerBytes;
  for (const WeightDesc &w : m.weights) {
    offsets.push_back(at);
    at = align(at + w.bytes());
  }
  totalBytes = at;
}

static void put32(std::string &s, uint32_t v) {
  for (int i = 0; i < 4; ++i)
    s.push_back(char((v >> (8 * i)) & 0xFF));
}
static void put64(std::string &s, uint64_t v) {
  for (int i = 0; i < 8; ++i)
    s.push_back(char((v >> (8 * i)) & 0xFF));
}

std::string sidecarHeader(const Manifest &m, uint64_t manifestHash) {
  uint64_t headerBytes, total;
  std::vector<uint64_t> offsets;
  planSidecar(m, headerBytes, offsets, total);
  std::string s(kSidecarMagic, 8);
  put32(s, kSidecarVersion);
  put32(s, uint32_t(m.weights.size()));
  put64(s, manifestHash);
  put64(s, headerBytes);
  for (size_t i = 0; i < m.weights.size(); ++i) {
    put64(s, offsets[i]);
    put64(s, m.weights[i].bytes());
  }
  s.resize(headerBytes, '\0');
  return s;
}

static uint64_t get64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i)
    v = (v << 8) | p[i];
  return v;
}
static uint32_t get32(const uint8_t *p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 |
         uint32_t(p[3]) << 24;
}

void WeightsFile::release(int slot, uint64_t bytes) {
  uint64_t page = uint64_t(sysconf(_SC_PAGESIZE));
  uint64_t begin = uint64_t(weights[slot] - static_cast<uint8_t *>(map));
  uint64_t first = (begin + page - 1) / page * page;
  uint64_t last = (begin + bytes) / page * page;
  if (last > first)
    madvise(static_cast<uint8_t *>(map) + first, last - first, MADV_DONTNEED);
}

WeightsFile::~WeightsFile() {
  if (map)
    munmap(map, mapBytes);
}

bool WeightsFile::open(const std::string &file, const Manifest &m,
                       const std::string &manifestText, std::string &error,
                       bool &io) {
  io = true;
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    error = file + ": cannot open the model's weights: " + std::strerror(errno);
    return false;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    error = file + ": " + std::strerror(errno);
    ::close(fd);
    return false;
  }
  io = false;
  size_t size = size_t(st.st_size);
  uint64_t headerBytes, total;
  std::vector<uint64_t> offsets;
  planSidecar(m, headerBytes, offsets, total);
  if (size < 32) {
    ::close(fd);
    error = file + ": " + std::to_string(size) +
            " bytes, too small for an SQ weights file";
    return false;
  }
  void *p0 = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (p0 == MAP_FAILED) {
    io = true;
    error = file + ": cannot map: " + std::strerror(errno);
    return false;
  }
  map = p0;
  mapBytes = size;
  const uint8_t *p = static_cast<const uint8_t *>(p0);
  if (std::memcmp(p, kSidecarMagic, 8) != 0) {
    error = file + ": not an SQ weights file (bad magic)";
    return false;
  }
  if (get32(p + 8) != kSidecarVersion) {
    error = file + ": weights file version " + std::to_string(get32(p + 8)) +
            ", expected " + std::to_string(kSidecarVersion) +
            " (recompile the model)";
    return false;
  }
  if (get32(p + 12) != m.weights.size() ||
      get64(p + 16) != fnv1a(manifestText.data(), manifestText.size())) {
    error = file + ": these weights belong to another compilation of the "
                   "model (manifest hash mismatch); recompile or copy the "
                   "matching .weights file";
    return false;
  }
  if (size < total) {
    error = file + ": truncated: " + std::to_string(size) +
            " bytes, expected " + std::to_string(total);
    return false;
  }
  if (get64(p + 24) != headerBytes || size < 32 + 16 * offsets.size()) {
    error = file + ": corrupt header";
    return false;
  }
  weights.assign(m.weights.size(), nullptr);
  for (size_t i = 0; i < offsets.size(); ++i) {
    const WeightDesc &w = m.weights[i];
    uint64_t off = get64(p + 32 + 16 * i), bytes = get64(p + 40 + 16 * i);
    if (off != offsets[i] || bytes != w.bytes() || w.slot != int(i)) {
      error = file + ": corrupt entry for weight '" + w.name + "'";
      return false;
    }
    weights[i] = p + off;
  }
  return true;
}

} // namespace rt
} // namespace sq
