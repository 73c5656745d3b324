/* STREAM-like memory bandwidth of this machine, for the decode bound of
 * bench/decode_ratios.sh and bench/ratios.sh (decode of an int4 model reads
 * every weight once per token, so tokens/s <= bandwidth / weight bytes per
 * token).
 *
 *   bench/bandwidth [--mib N] [--threads T] [--repeats R] [--no-thp] [--json]
 *
 * read:  sum of a N MiB buffer (default 2048 MiB, several times any L3 so
 *        that it measures DRAM: this machine's L3 is 300 MB), read only, by
 *        several kernels; the best is the read bandwidth, and the output
 *        names the variant that won:
 *          scalar8    eight uint64 accumulators over one stream per thread
 *                     (the compiler vectorizes it; the kernel of old)
 *          streamsS   S = 1, 2, 4, 8 independent streams per thread (the
 *                     thread's slice cut in S parts read in lockstep), two
 *                     64-byte loads per stream and step into separate
 *                     accumulators: more memory-level parallelism, more
 *                     hardware-prefetcher streams in flight
 *          streamsS+pf the same with a software prefetch 1 KiB ahead in
 *                     each stream
 *        (the 64-byte loads are AVX-512 when compiled with it, else AVX2
 *        pairs, else uint64). The buffer asks for transparent huge pages
 *        (madvise; --no-thp: 4 KiB pages, as the kernel of old had), so TLB
 *        misses do not limit the read.
 * triad: a[i] = b[i] + s * c[i] over three arrays of N/3 MiB each (doubles,
 *        carved from the same buffer), counted as 3 x N/3 MiB moved (the
 *        STREAM convention: the write-allocate read of a[] is not counted).
 * Each kernel runs with 1 thread and with T threads (default: the online
 * core count), pthreads, every thread on its own contiguous slice that it
 * first-touched; the best of R repeats (default 5) is printed, in GB/s (1e9).
 *
 * Build: clang-22 -O3 -march=native -pthread bench/bandwidth.c -o bandwidth
 * (bench/decode_ratios.sh does this into build/bench-peers/).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

enum { K_INIT_READ, K_INIT_TRIAD, K_READ, K_TRIAD };

/* Read variants: 0 = scalar8, then streams S without and with prefetch. */
static const int kStreams[] = {1, 2, 4, 8};
#define NSTREAMS ((int)(sizeof(kStreams) / sizeof(kStreams[0])))
#define NVARIANTS (1 + 2 * NSTREAMS)
static void variant_name(int v, char *out, size_t n) {
  if (v == 0) snprintf(out, n, "scalar8");
  else snprintf(out, n, "streams%d%s", kStreams[(v - 1) % NSTREAMS], v > NSTREAMS ? "+pf" : "");
}

typedef struct {
  pthread_barrier_t *start, *stop;
  int kernel_op, nthreads, id, quit;
  uint64_t *buf;
  size_t nread; /* uint64 elements of buf */
  double *a, *b, *c;
  size_t ntriad; /* doubles per triad array */
  uint64_t sum;
} worker;

static int g_kernel;
static int g_variant;
static int g_quit;
static int g_active; /* threads taking part in this round */

static void slice(size_t n, int nt, int id, size_t *lo, size_t *hi) {
  /* Multiples of 128 elements (1 KiB): every stream of every variant gets
   * whole 128-byte steps and stays 64-byte aligned. */
  size_t chunk = (n / nt) & ~(size_t)1023;
  *lo = chunk * id;
  *hi = id == nt - 1 ? n : *lo + chunk;
}

__attribute__((noinline)) static uint64_t read_sum(const uint64_t *p, size_t n) {
  /* Eight independent accumulators; clang vectorizes this to 512-bit adds. */
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    s0 += p[i]; s1 += p[i + 1]; s2 += p[i + 2]; s3 += p[i + 3];
    s4 += p[i + 4]; s5 += p[i + 5]; s6 += p[i + 6]; s7 += p[i + 7];
  }
  for (; i < n; ++i) s0 += p[i];
  return s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
}

/* One 64-byte line: a vector of 64 bytes (or the uint64 sum of it). */
#if defined(__AVX512F__)
typedef __m512i line_t;
#define LINE_ZERO() _mm512_setzero_si512()
#define LINE_LOAD(p) _mm512_load_si512((const void *)(p))
#define LINE_ADD(a, b) _mm512_add_epi64(a, b)
static uint64_t line_sum(line_t x) { return (uint64_t)_mm512_reduce_add_epi64(x); }
#elif defined(__AVX2__)
typedef struct { __m256i a, b; } line_t;
static line_t line_zero(void) { line_t r = {_mm256_setzero_si256(), _mm256_setzero_si256()}; return r; }
static line_t line_load(const uint64_t *p) {
  line_t r = {_mm256_load_si256((const __m256i *)p), _mm256_load_si256((const __m256i *)(p + 4))};
  return r;
}
static line_t line_add(line_t x, line_t y) {
  line_t r = {_mm256_add_epi64(x.a, y.a), _mm256_add_epi64(x.b, y.b)};
  return r;
}
static uint64_t line_sum(line_t x) {
  uint64_t t[4];
  _mm256_storeu_si256((__m256i *)t, _mm256_add_epi64(x.a, x.b));
  return t[0] + t[1] + t[2] + t[3];
}
#define LINE_ZERO() line_zero()
#define LINE_LOAD(p) line_load(p)
#define LINE_ADD(a, b) line_add(a, b)
#else
typedef uint64_t line_t;
#define LINE_ZERO() 0
#define LINE_LOAD(p) ((p)[0] + (p)[1] + (p)[2] + (p)[3] + (p)[4] + (p)[5] + (p)[6] + (p)[7])
#define LINE_ADD(a, b) ((a) + (b))
static uint64_t line_sum(line_t x) { return x; }
#endif

/* S streams of n / S uint64 each (n a multiple of 16 * S), read in lockstep,
 * two lines per stream and step, each into its own accumulator. */
#define READ_STREAMS(S, PF)                                                                       \
  __attribute__((noinline)) static uint64_t read_streams##S##PF(const uint64_t *p, size_t n) {   \
    size_t len = n / S;                                                                           \
    line_t acc[2 * S];                                                                            \
    for (int s = 0; s < 2 * S; ++s) acc[s] = LINE_ZERO();                                         \
    for (size_t i = 0; i < len; i += 16) {                                                        \
      for (int s = 0; s < S; ++s) {                                                               \
        const uint64_t *q = p + (size_t)s * len + i;                                              \
        if (PF) __builtin_prefetch(q + 128, 0, 0);                                                \
        acc[2 * s] = LINE_ADD(acc[2 * s], LINE_LOAD(q));                                          \
        acc[2 * s + 1] = LINE_ADD(acc[2 * s + 1], LINE_LOAD(q + 8));                              \
      }                                                                                           \
    }                                                                                             \
    uint64_t sum = 0;                                                                             \
    for (int s = 0; s < 2 * S; ++s) sum += line_sum(acc[s]);                                      \
    return sum;                                                                                   \
  }
READ_STREAMS(1, 0)
READ_STREAMS(2, 0)
READ_STREAMS(4, 0)
READ_STREAMS(8, 0)
READ_STREAMS(1, 1)
READ_STREAMS(2, 1)
READ_STREAMS(4, 1)
READ_STREAMS(8, 1)
typedef uint64_t (*read_fn)(const uint64_t *, size_t);
static const read_fn kRead[NVARIANTS] = {read_sum,          read_streams10, read_streams20,
                                         read_streams40,    read_streams80, read_streams11,
                                         read_streams21,    read_streams41, read_streams81};

__attribute__((noinline)) static void triad(double *restrict a, const double *restrict b,
                                            const double *restrict c, double s, size_t n) {
  for (size_t i = 0; i < n; ++i) a[i] = b[i] + s * c[i];
}

static void *run(void *arg) {
  worker *w = arg;
  for (;;) {
    pthread_barrier_wait(w->start);
    if (g_quit) return NULL;
    if (w->id < g_active) {
      size_t lo, hi;
      switch (g_kernel) {
      case K_INIT_READ:
        slice(w->nread, g_active, w->id, &lo, &hi);
        for (size_t i = lo; i < hi; ++i) w->buf[i] = i;
        break;
      case K_INIT_TRIAD:
        slice(w->ntriad, g_active, w->id, &lo, &hi);
        for (size_t i = lo; i < hi; ++i) { w->a[i] = 0; w->b[i] = 1; w->c[i] = 2; }
        break;
      case K_READ:
        slice(w->nread, g_active, w->id, &lo, &hi);
        /* the last thread's slice may have a tail; the read covers
         * (hi - lo) rounded down to 1024 elements; the byte count below
         * uses the same rounding. */
        w->sum += kRead[g_variant](w->buf + lo, (hi - lo) & ~(size_t)1023);
        break;
      case K_TRIAD:
        slice(w->ntriad, g_active, w->id, &lo, &hi);
        triad(w->a + lo, w->b + lo, w->c + lo, 3.0, hi - lo);
        break;
      }
    }
    pthread_barrier_wait(w->stop);
  }
}

/* Bytes the read kernels cover with `active` threads (the slices' tails
 * rounded down as in run()). */
static size_t read_bytes(size_t n, int active) {
  size_t total = 0;
  for (int id = 0; id < active; ++id) {
    size_t lo, hi;
    slice(n, active, id, &lo, &hi);
    total += (hi - lo) & ~(size_t)1023;
  }
  return total * 8;
}

int main(int argc, char **argv) {
  size_t mib = 2048;
  int threads = (int)sysconf(_SC_NPROCESSORS_ONLN), repeats = 5, json = 0, thp = 1;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--mib") && i + 1 < argc) mib = strtoul(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--repeats") && i + 1 < argc) repeats = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--no-thp")) thp = 0;
    else if (!strcmp(argv[i], "--json")) json = 1;
    else {
      fprintf(stderr, "usage: %s [--mib N] [--threads T] [--repeats R] [--no-thp] [--json]\n",
              argv[0]);
      return 2;
    }
  }
  if (threads < 1) threads = 1;
  if (repeats < 1) repeats = 1;
  if (mib < 16) mib = 16;
  size_t bytes = mib << 20;
  uint64_t *buf = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (buf == MAP_FAILED) {
    fprintf(stderr, "bandwidth: cannot allocate %zu MiB\n", mib);
    return 1;
  }
#if defined(MADV_HUGEPAGE) && defined(MADV_NOHUGEPAGE)
  madvise(buf, bytes, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
#endif
  size_t tbytes = (bytes / 3) & ~(size_t)4095;
  double *a = (double *)buf, *b = (double *)((char *)buf + tbytes),
         *c = (double *)((char *)buf + 2 * tbytes);
  pthread_barrier_t start, stop;
  pthread_barrier_init(&start, NULL, threads + 1);
  pthread_barrier_init(&stop, NULL, threads + 1);
  worker *w = calloc(threads, sizeof(worker));
  pthread_t *tid = calloc(threads, sizeof(pthread_t));
  for (int t = 0; t < threads; ++t) {
    w[t] = (worker){&start, &stop, 0, threads, t, 0, buf, bytes / 8, a, b, c, tbytes / 8, 0};
    pthread_create(&tid[t], NULL, run, &w[t]);
  }
#define ROUND(k, active)                                                                          \
  do {                                                                                            \
    g_kernel = (k);                                                                               \
    g_active = (active);                                                                          \
    pthread_barrier_wait(&start);                                                                 \
    pthread_barrier_wait(&stop);                                                                  \
  } while (0)
  /* First touch by all threads (pages spread over the threads' slices). */
  ROUND(K_INIT_READ, threads);

  double read[NVARIANTS][2] = {{0}}; /* [variant][1 thread, T threads] */
  double triad_best[2] = {0, 0};
  int counts[2] = {1, threads};
  for (int ci = 0; ci < 2; ++ci) {
    size_t rb = read_bytes(bytes / 8, counts[ci]);
    /* Repeats outermost, so that a burst of load from other processes hits
     * one repeat of every variant rather than every repeat of one. */
    for (int r = 0; r < repeats; ++r)
      for (int v = 0; v < NVARIANTS; ++v) {
        g_variant = v;
        double t0 = now();
        ROUND(K_READ, counts[ci]);
        double gbs = rb / (now() - t0) / 1e9;
        if (gbs > read[v][ci]) read[v][ci] = gbs;
      }
  }
  ROUND(K_INIT_TRIAD, threads); /* overwrites the read buffer */
  for (int ci = 0; ci < 2; ++ci)
    for (int r = 0; r < repeats; ++r) {
      double t0 = now();
      ROUND(K_TRIAD, counts[ci]);
      double gbs = 3.0 * tbytes / (now() - t0) / 1e9;
      if (gbs > triad_best[ci]) triad_best[ci] = gbs;
    }
  g_quit = 1;
  pthread_barrier_wait(&start);
  uint64_t sum = 0;
  for (int t = 0; t < threads; ++t) {
    pthread_join(tid[t], NULL);
    sum += w[t].sum;
  }
  int win[2] = {0, 0};
  for (int ci = 0; ci < 2; ++ci)
    for (int v = 1; v < NVARIANTS; ++v)
      if (read[v][ci] > read[win[ci]][ci]) win[ci] = v;
  char name[2][32];
  variant_name(win[0], name[0], sizeof name[0]);
  variant_name(win[1], name[1], sizeof name[1]);
  if (json) {
    printf("{\"buffer_mib\": %zu, \"huge_pages\": %s, \"threads\": %d, \"read_1t_gbs\": %.2f, \"read_nt_gbs\": %.2f, "
           "\"read_1t_variant\": \"%s\", \"read_nt_variant\": \"%s\", "
           "\"read_scalar8_1t_gbs\": %.2f, \"read_scalar8_nt_gbs\": %.2f, "
           "\"triad_1t_gbs\": %.2f, \"triad_nt_gbs\": %.2f, \"variants\": {",
           mib, thp ? "true" : "false", threads, read[win[0]][0], read[win[1]][1], name[0], name[1], read[0][0],
           read[0][1], triad_best[0], triad_best[1]);
    for (int v = 0; v < NVARIANTS; ++v) {
      char n[32];
      variant_name(v, n, sizeof n);
      printf("%s\"%s\": [%.2f, %.2f]", v ? ", " : "", n, read[v][0], read[v][1]);
    }
    printf("}, \"checksum\": %llu}\n", (unsigned long long)(sum & 0xffff));
  } else {
    printf("buffer %zu MiB (read), 3 x %zu MiB (triad), %s pages, best of %d\n", mib,
           tbytes >> 20, thp ? "huge" : "4 KiB", repeats);
    printf("%-12s %12s %12s\n", "kernel", "1 thread", "threads");
    for (int v = 0; v < NVARIANTS; ++v) {
      char n[32];
      variant_name(v, n, sizeof n);
      printf("read %-7s %9.2f GB/s %6.2f GB/s (%d)\n", n, read[v][0], read[v][1], threads);
    }
    printf("%-12s %9.2f GB/s %6.2f GB/s (%d)   best: %s (1 thread), %s (%d threads)\n", "read",
           read[win[0]][0], read[win[1]][1], threads, name[0], name[1], threads);
    printf("%-12s %9.2f GB/s %6.2f GB/s (%d)\n", "triad", triad_best[0], triad_best[1], threads);
    if (a[1] != 7.0) printf("(triad check failed: %g)\n", a[1]);
  }
  munmap(buf, bytes);
  free(w);
  free(tid);
  return 0;
}
