//===- Buffer.h - large float buffers backed by huge pages -------*- C++
//-*-===//
//
// Weight-sized scratch and result buffers. Large ones are anonymous mappings
// advised as transparent huge pages: a 2.6 GB rewrite of a 7B layer set
// otherwise costs hundreds of thousands of 4 KiB page faults. Plain C++.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_NUMERICS_BUFFER_H
#define SQ_NUMERICS_BUFFER_H

#include <cstddef>
#include <cstdint>

namespace sq {
namespace numerics {

/// Allocates `bytes` (64-byte aligned, uninitialized); large sizes come
/// from an anonymous mapping with MADV_HUGEPAGE. Returns null when a large
/// mapping fails (out of address space).
void *allocateLarge(size_t bytes);
/// Frees what allocateLarge(bytes) returned (same `bytes`).
void freeLarge(void *data, size_t bytes);
/// Returns the mappings freeLarge keeps for reuse to the system: call when a
/// phase that rewrites many large buffers is over. (freeLarge keeps every
/// large mapping; an allocation that reuses none first unmaps the oldest
/// until at most 1 GiB stays cached, so resident memory stays within the
/// peak of the live buffers plus 1 GiB.)
void releaseCachedBuffers();

/// A move-only array of fp32 values allocated with allocateLarge.
class FloatBuffer {
public:
  FloatBuffer() = default;
  /// `count` uninitialized values; size() is 0 when allocation failed.
  explicit FloatBuffer(int64_t count);
  FloatBuffer(FloatBuffer &&other) noexcept;
  FloatBuffer &operator=(FloatBuffer &&other) noexcept;
  FloatBuffer(const FloatBuffer &) = delete;
  FloatBuffer &operator=(const FloatBuffer &) = delete;
  ~FloatBuffer();

  float *data() { return values; }
  const float *data() const { return values; }
  int64_t size() const { return count; }
  float &operator[](int64_t i) { return values[i]; }
  float operator[](int64_t i) const { return values[i]; }
  float *begin() { return values; }
  float *end() { return values + count; }
  void swap(FloatBuffer &other);
  /// Gives up ownership: the caller frees with freeLarge(p, size() * 4).
  float *release();

private:
  float *values = nullptr;
  int64_t count = 0;
};

} // namespace numerics
} // namespace sq

#endif // SQ_NUMERICS_BUFFER_H
