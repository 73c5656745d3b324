//===- ThreadPool.h - the kernels' small persistent thread pool -*- C++ -*-===//
//
// One pool for the CPU runtime's kernels (lib/Runtime/CPU) and the numerics
// library's GEMM (sq/Numerics/Gemm.h), so that they never compete with two
// sets of spinning workers. Plain C++.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_NUMERICS_THREADPOOL_H
#define SQ_NUMERICS_THREADPOOL_H

#include <cstdint>
#include <type_traits>

namespace sq {
namespace numerics {

/// A small pool: parallelFor(n, fn) runs fn(begin, end) over [0, n) split
/// in chunks, the caller taking part. Size: SQ_NUM_THREADS or the core
/// count. Calls from several threads are serialized; a call made from inside
/// a job runs inline on the calling thread.
class ThreadPool {
public:
  explicit ThreadPool(int threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool &) = delete;
  ThreadPool &operator=(const ThreadPool &) = delete;
  int size() const;
  template <typename F> void parallelFor(int64_t n, F &&fn) {
    using Fn = std::remove_reference_t<F>; // F is a reference for lvalues
    run(
        n, [](void *f, int64_t b, int64_t e) { (*static_cast<Fn *>(f))(b, e); },
        const_cast<void *>(static_cast<const void *>(&fn)));
  }
  static ThreadPool &global();

private:
  void run(int64_t n, void (*fn)(void *, int64_t, int64_t), void *arg);
  struct Impl;
  Impl *impl;
};

} // namespace numerics
} // namespace sq

#endif // SQ_NUMERICS_THREADPOOL_H
