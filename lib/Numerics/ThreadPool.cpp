//===- ThreadPool.cpp - the kernels' small persistent thread pool ---------===//
//
// size() - 1 worker threads plus the caller. A call publishes one job (a
// function over [0, n) cut in chunks), wakes the workers (they spin briefly
// after each job, then sleep on a condition variable), takes chunks itself,
// and returns when every chunk is done: a worker that is late (descheduled
// by another process) is not waited for unless it holds a chunk. Chunks are
// claimed with a CAS on one 64-bit ticket (job number, chunk count, next
// chunk), so a late worker cannot take a chunk of a finished job. Calls are
// serialized by a mutex; a call made from inside a job runs inline.
//
//===----------------------------------------------------------------------===//

#include "sq/Numerics/ThreadPool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SQ_PAUSE() _mm_pause()
#else
#define SQ_PAUSE() std::this_thread::yield()
#endif

namespace sq {
namespace numerics {

namespace {
thread_local bool insideJob = false;
constexpr int kSpin = 20000; // pause iterations before sleeping (~0.1 ms)
} // namespace

struct ThreadPool::Impl {
  int size = 1;
  std::vector<std::thread> workers;
  std::mutex callMutex; // one run() at a time

  std::mutex mutex;
  std::condition_variable wake, done;
  bool stop = false;
  // Job number (high 32 bits), chunk count (16 bits), next chunk (16 bits).
  std::atomic<uint64_t> ticket{0};
  std::atomic<int64_t> remaining{0}; // chunks not finished

  // The current job, written before the ticket is published and valid
  // until its last chunk is finished.
  void (*fn)(void *, int64_t, int64_t) = nullptr;
  void *arg = nullptr;
  int64_t n = 0, chunk = 1;

  static uint32_t jobOf(uint64_t t) { return uint32_t(t >> 32); }

  /// Runs chunks of job `job` until none is left.
  void work(uint32_t job) {
    insideJob = true;
    uint64_t t = ticket.load(std::memory_order_acquire);
    for (;;) {
      uint64_t chunks = (t >> 16) & 0xFFFF, next = t & 0xFFFF;
      if (jobOf(t) != job || next >= chunks)
        break;
      if (!ticket.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel,
                                        std::memory_order_acquire))
        continue;
      int64_t begin = int64_t(next) * chunk;
      fn(arg, begin, std::min(n, begin + chunk));
      if (remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mutex);
        done.notify_one();
      }
      t = ticket.load(std::memory_order_acquire);
    }
    insideJob = false;
  }

  void workerLoop() {
    uint32_t seen = 0;
    for (;;) {
      uint32_t job = jobOf(ticket.load(std::memory_order_acquire));
      for (int i = 0; i < kSpin && job == seen; ++i) {
        SQ_PAUSE();
        job = jobOf(ticket.load(std::memory_order_acquire));
      }
      if (job == seen) {
        std::unique_lock<std::mutex> lock(mutex);
        wake.wait(lock, [&] {
          return stop || jobOf(ticket.load(std::memory_order_acquire)) != seen;
        });
        if (stop)
          return;
        job = jobOf(ticket.load(std::memory_order_acquire));
      }
      seen = job;
      work(job);
    }
  }
};

ThreadPool::ThreadPool(int threads) : impl(new Impl) {
  if (threads <= 0) {
    if (const char *env = std::getenv("SQ_NUM_THREADS"))
      threads = std::atoi(env);
    if (threads <= 0)
      threads = static_cast<int>(std::thread::hardware_concurrency());
    if (threads <= 0)
      threads = 1;
  }
  impl->size = threads;
  for (int i = 1; i < threads; ++i)
    impl->workers.emplace_back([this] { impl->workerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(impl->mutex);
    impl->stop = true;
  }
  impl->wake.notify_all();
  for (std::thread &t : impl->workers)
    t.join();
  delete impl;
}

int ThreadPool::size() const { return impl->size; }

ThreadPool &ThreadPool::global() {
  static ThreadPool pool;
  return pool;
}

void ThreadPool::run(int64_t n, void (*fn)(void *, int64_t, int64_t),
                     void *arg) {
  if (n <= 0)
    return;
  if (impl->workers.empty() || n == 1 || insideJob) {
    fn(arg, 0, n);
    return;
  }
  std::lock_guard<std::mutex> call(impl->callMutex);
  Impl &s = *impl;
  // A few chunks per thread balance uneven progress (another process on a
  // core) without much contention on the ticket.
  int64_t chunks = std::min<int64_t>({n, int64_t(s.size) * 4, 0xFFFF});
  s.chunk = (n + chunks - 1) / chunks;
  chunks = (n + s.chunk - 1) / s.chunk;
  s.fn = fn;
  s.arg = arg;
  s.n = n;
  s.remaining.store(chunks, std::memory_order_relaxed);
  uint32_t job = Impl::jobOf(s.ticket.load(std::memory_order_relaxed)) + 1;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    s.ticket.store(uint64_t(job) << 32 | uint64_t(chunks) << 16,
                   std::memory_order_release);
  }
  s.wake.notify_all();
  s.work(job);
  for (int i = 0; i < kSpin && s.remaining.load(std::memory_order_acquire) != 0;
       ++i)
    SQ_PAUSE();
  if (s.remaining.load(std::memory_order_acquire) != 0) {
    std::unique_lock<std::mutex> lock(s.mutex);
    s.done.wait(
        lock, [&] { return s.remaining.load(std::memory_order_acquire) == 0; });
  }
}

} // namespace numerics
} // namespace sq
