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
/// passes free one weight-sized buffer and allocate the next) and training
/// steps (each step frees its tape, up to several GB, and the next one
/// allocates the same sizes again).
///
/// Freed mappings are all kept (up to kMaxEntries), which costs no memory by
/// itself: their pages were resident while in use. Memory grows only when an
/// allocation finds no fit and maps fresh pages; before that, the oldest
/// cached mappings are unmapped until at most kSlackBytes stay cached. So
/// the resident memory stays within the peak of the live buffers plus
/// kSlackBytes, while a step that allocates what the previous one freed
/// reuses all of it.
struct MappingCache {
  static constexpr size_t kMaxEntries = 256;
  static constexpr size_t kSlackBytes = size_t(1) << 30;
  std::mutex mutex;
  std::vector<std::pair<void *, size_t>>
      free; // (mapping, its size), oldest first
  size_t freeBytes = 0;
  std::unordered_map<void *, size_t> capacity; // live mapping -> its size

  void evictOldest() {
    freeBytes -= free.front().second;
    munmap(free.front().first, free.front().second);
    free.erase(free.begin());
  }
  /// A cached mapping of at least `bytes` (and at most twice that), or
  /// nullptr after trimming the cache to kSlackBytes.
  void *take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex);
    size_t best = free.size();
    for (size_t i = 0; i < free.size(); ++i)
      if (free[i].second >= bytes && free[i].second <= 2 * bytes &&
          (best == free.size() || free[i].second < free[best].second))
        best = i;
    if (best == free.size()) {
      while (!free.empty() && freeBytes > kSlackBytes)
        evictOldest();
      return nullptr;
    }
    auto [p, size] = free[best];
    free.erase(free.begin() + best);
    freeBytes -= size;
    capacity[p] = size;
    return p;
  }
  void record(void *p, size_t size) {
    std::lock_guard<std::mutex> lock(mutex);
    capacity[p] = size;
  }
  void give(void *p) {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = capacity.find(p);
    size_t size = it->second;
    capacity.erase(it);
    if (free.size() >= kMaxEntries)
      evictOldest();
    free.push_back({p, size});
    freeBytes += size;
  }
  void clear() {
    std::lock_guard<std::mutex> lock(mutex);
    while (!free.empty())
      evictOldest();
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
  mappings().clear();
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
