/* STREAM-like memory bandwidth of this machine, for the decode bound of
 * bench/decode_ratios.sh (decode of an int4 model reads every weight once per
 * token, so tokens/s <= bandwidth / weight bytes per token).
 *
 *   bench/bandwidth [--mib N] [--threads T] [--repeats R] [--json]
 *
 * read:  sum of a N MiB buffer of uint64 (default 1024 MiB), read only;
 * triad: a[i] = b[i] + s * c[i] over three arrays of N/2 MiB each (doubles),
 *        counted as 3 x N/2 MiB moved (the STREAM convention: the
 *        write-allocate read of a[] is not counted).
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
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

enum { K_INIT_READ, K_INIT_TRIAD, K_READ, K_TRIAD };

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
static int g_quit;
static int g_active; /* threads taking part in this round */

static void slice(size_t n, int nt, int id, size_t *lo, size_t *hi) {
  size_t chunk = (n / nt) & ~(size_t)63;
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
        w->sum += read_sum(w->buf + lo, hi - lo);
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

int main(int argc, char **argv) {
  size_t mib = 1024;
  int threads = (int)sysconf(_SC_NPROCESSORS_ONLN), repeats = 5, json = 0;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--mib") && i + 1 < argc) mib = strtoul(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--repeats") && i + 1 < argc) repeats = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--json")) json = 1;
    else {
      fprintf(stderr, "usage: %s [--mib N] [--threads T] [--repeats R] [--json]\n", argv[0]);
      return 2;
    }
  }
  if (threads < 1) threads = 1;
  size_t bytes = mib << 20;
  uint64_t *buf = aligned_alloc(4096, bytes);
  size_t tbytes = (bytes / 2) & ~(size_t)4095;
  double *a = aligned_alloc(4096, tbytes), *b = aligned_alloc(4096, tbytes),
         *c = aligned_alloc(4096, tbytes);
  if (!buf || !a || !b || !c) {
    fprintf(stderr, "bandwidth: cannot allocate %zu MiB\n", mib * 5 / 2);
    return 1;
  }
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
  ROUND(K_INIT_TRIAD, threads);

  double best[2][2] = {{0, 0}, {0, 0}}; /* [kernel][1 thread, T threads] */
  int counts[2] = {1, threads};
  for (int ci = 0; ci < 2; ++ci) {
    for (int r = 0; r < repeats; ++r) {
      double t0 = now();
      ROUND(K_READ, counts[ci]);
      double dt = now() - t0;
      double gbs = bytes / dt / 1e9;
      if (gbs > best[0][ci]) best[0][ci] = gbs;
      t0 = now();
      ROUND(K_TRIAD, counts[ci]);
      dt = now() - t0;
      gbs = 3.0 * tbytes / dt / 1e9;
      if (gbs > best[1][ci]) best[1][ci] = gbs;
    }
  }
  g_quit = 1;
  pthread_barrier_wait(&start);
  uint64_t sum = 0;
  for (int t = 0; t < threads; ++t) {
    pthread_join(tid[t], NULL);
    sum += w[t].sum;
  }
  if (json) {
    printf("{\"buffer_mib\": %zu, \"threads\": %d, \"read_1t_gbs\": %.2f, \"read_nt_gbs\": %.2f, "
           "\"triad_1t_gbs\": %.2f, \"triad_nt_gbs\": %.2f, \"checksum\": %llu}\n",
           mib, threads, best[0][0], best[0][1], best[1][0], best[1][1],
           (unsigned long long)(sum & 0xffff));
  } else {
    printf("buffer %zu MiB (read), 3 x %zu MiB (triad), best of %d\n", mib, tbytes >> 20,
           repeats);
    printf("%-8s %12s %12s\n", "kernel", "1 thread", "threads");
    printf("%-8s %9.2f GB/s %6.2f GB/s (%d)\n", "read", best[0][0], best[0][1], threads);
    printf("%-8s %9.2f GB/s %6.2f GB/s (%d)\n", "triad", best[1][0], best[1][1], threads);
    if (a[1] != 7.0) printf("(triad check failed: %g)\n", a[1]);
  }
  free(buf); free(a); free(b); free(c); free(w); free(tid);
  return 0;
}
