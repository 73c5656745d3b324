//===- Buffer.cpp - large float buffers backed by huge pages --------------===//

#include "sq/Numerics/Buffer.h"

#include <cstdlib>
#include <mutex>
#include <new>
#include <unordered_map>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace sq {
namespace numerics {

namespace {
// Below this, the C++ heap (and its page reuse) is the better allocator.
constexpr size_t kLargeBytes = size_t(4) << 20;

#if defined(__linux__)
/// Recently freed large mappings, kept for reuse: a fresh mapping costs the
/// kernel a zeroing of every page, which dominated weight rewrites (the
/// passes free one weight-sized buffer and allocate the next). Bounded.
struct MappingCache {
  // Enough entries for one transformer block's activations of a training
  // step (a few dozen buffers), bounded in bytes.
  static constexpr size_t kMaxEntries = 64;
  static constexpr size_t kMaxBytes = size_t(1) << 30;
  std::mutex mutex;
  std::vector<std::pair<void *, size_t>> free; // (mapping, its size)
  std::unordered_map<void *, size_t> capacity; // live mapping -> its size

  void *take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex);
    size_t best = free.size();
    for (size_t i = 0; i < free.size(); ++i)
      if (free[i].second >= bytes && free[i].second <= 2 * bytes &&
          (best == free.size() || free[i].second < free[best].second))
        best = i;
    if (best == free.size())
      return nullptr;
    auto [p, size] = free[best];
    free.erase(free.begin() + best);
    capacity[p] = size;
    return p;
  }
  void record(void *p, size_t size) {
    std::lock_guard<std::mutex> lock(mutex);
    capacity[p] = size;
  }
  void give(void *p) {
    std::unique_lock<std::mutex> lock(mutex);
    auto it = capacity.find(p);
    size_t size = it->second;
    capacity.erase(it);
    size_t cached = size;
    for (auto &e : free)
      cached += e.second;
    if (size > kMaxBytes || cached > kMaxBytes || free.size() >= kMaxEntries) {
      // Evict the oldest entries to make room, or drop this one.
      while (!free.empty() &&
             (free.size() >= kMaxEntries || cached > kMaxBytes)) {
        cached -= free.front().second;
        munmap(free.front().first, free.front().second);
        free.erase(free.begin());
      }
      if (cached > kMaxBytes) {
        munmap(p, size);
        return;
      }
    }
    free.push_back({p, size});
  }
};

MappingCache &mappings() {
  static MappingCache *cache = new MappingCache; // outlives static dtors
  return *cache;
}
#endif
} // namespace

void *allocateLarge(size_t bytes) {
  if (bytes == 0)
    return nullptr;
#if defined(__linux__)
  if (bytes >= kLargeBytes) {
    if (void *reused = mappings().take(bytes))
      return reused;
    void *p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
      return nullptr;
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE);
#endif
    mappings().record(p, bytes);
    return p;
  }
#endif
  return ::operator new(bytes, std::align_val_t(64));
}

void freeLarge(void *data, size_t bytes) {
  if (!data)
    return;
#if defined(__linux__)
  if (bytes >= kLargeBytes) {
    mappings().give(data);
    return;
  }
#endif
  ::operator delete(data, std::align_val_t(64));
}

void releaseCachedBuffers() {
#if defined(__linux__)
  MappingCache &cache = mappings();
  std::lock_guard<std::mutex> lock(cache.mutex);
  for (auto &[p, size] : cache.free)
    munmap(p, size);
  cache.free.clear();
#endif
}

FloatBuffer::FloatBuffer(int64_t n)
    : values(static_cast<float *>(allocateLarge(size_t(n) * sizeof(float)))),
      count(values ? n : 0) {}

FloatBuffer::FloatBuffer(FloatBuffer &&other) noexcept
    : values(other.values), count(other.count) {
  other.values = nullptr;
  other.count = 0;
}

FloatBuffer &FloatBuffer::operator=(FloatBuffer &&other) noexcept {
  if (this != &other) {
    FloatBuffer gone(std::move(*this));
    swap(other);
  }
  return *this;
}

FloatBuffer::~FloatBuffer() {
  freeLarge(values, size_t(count) * sizeof(float));
}

void FloatBuffer::swap(FloatBuffer &other) {
  std::swap(values, other.values);
  std::swap(count, other.count);
}

float *FloatBuffer::release() {
  float *p = values;
  values = nullptr;
  count = 0;
  return p;
}

} // namespace numerics
} // namespace sq
