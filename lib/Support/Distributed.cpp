//===- Distributed.cpp - data-parallel processes (MPI or one process) -----===//
//
// See sq/Support/Distributed.h. All of SQ's MPI calls are here; without
// SQ_HAVE_MPI this is the single-process implementation.
//
//===----------------------------------------------------------------------===//

#include "sq/Support/Distributed.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>

#if SQ_HAVE_MPI
#include <mpi.h>
#endif

namespace sq::distributed {

namespace {

struct World {
  int rank = 0, size = 1;
  bool joined = false;
};

/// The rank and size a launcher gave this process (mpirun: OMPI_*, PMIx,
/// PMI), -1 without one.
int launcherVariable(const char *const *names) {
  for (const char *const *n = names; *n; ++n)
    if (const char *v = std::getenv(*n))
      return std::atoi(v);
  return -1;
}
int launcherRank() {
  static const char *const names[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK",
                                      "PMI_RANK", nullptr};
  return launcherVariable(names);
}
int launcherSize() {
  static const char *const names[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE",
                                      nullptr};
  return launcherVariable(names);
}

/// A process that does not join MPI but was started as one of several (a
/// build without MPI under mpirun, or SQ_MPI=0): it computes alone, as
/// rank 0 of 1, but only the launcher's rank 0 reports and writes files,
/// so that the copies do not race on the same outputs.
World alone() {
  World w;
  int r = launcherRank(), n = launcherSize();
  if (r > 0)
    w.rank = r;
  if (r <= 0 && n > 1)
    std::fprintf(stderr,
                 "sq: started as one of %d processes, but %s: every process "
                 "runs the whole calibration alone (rank 0 writes)\n",
                 n,
                 available() ? "SQ_MPI=0 keeps them out of MPI"
                             : "this build has no MPI (CMake SQ_MPI)");
  return w;
}

} // namespace

#if SQ_HAVE_MPI
namespace {

/// Started by a launcher: OpenMPI's mpirun, PMIx (OpenMPI 5, Slurm
/// --mpi=pmix) or PMI (MPICH's hydra, Slurm). SQ_MPI=0 keeps a process out
/// of MPI even then, SQ_MPI=1 joins (as a singleton) without a launcher.
bool launched() {
  if (const char *forced = std::getenv("SQ_MPI"))
    return forced[0] == '1';
  for (const char *var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"})
    if (std::getenv(var))
      return true;
  return false;
}

void leave() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized)
    MPI_Finalize();
}

World &world() {
  static World w = [] {
    if (!launched())
      return alone();
    World w;
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      // One thread at a time calls MPI (the calibration's loop); the
      // compute threads (BLAS, the executor) never do.
      int provided = 0;
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
      std::atexit(leave);
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &w.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &w.size);
    w.joined = true;
    return w;
  }();
  return w;
}

/// MPI counts are int: large arrays go in chunks.
template <typename T, typename Fn> void chunked(T *data, size_t count, Fn fn) {
  const size_t most = size_t(INT_MAX) / 2;
  for (size_t i = 0; i < count; i += most)
    fn(data + i, int(std::min(most, count - i)));
}

template <typename T> void allReduce(T *data, size_t count, MPI_Datatype type) {
  if (world().size == 1 || !count)
    return;
  chunked(data, count, [&](T *p, int n) {
    MPI_Allreduce(MPI_IN_PLACE, p, n, type, MPI_SUM, MPI_COMM_WORLD);
  });
}

} // namespace

int rank() { return world().rank; }
int size() { return world().size; }
bool available() { return true; }
void allReduceSum(double *data, size_t count) {
  allReduce(data, count, MPI_DOUBLE);
}
void allReduceSum(float *data, size_t count) {
  allReduce(data, count, MPI_FLOAT);
}
void allReduceSum(int64_t *data, size_t count) {
  allReduce(data, count, MPI_INT64_T);
}
void reduceSum(double *data, size_t count, int root) {
  if (world().size == 1 || !count)
    return;
  bool atRoot = world().rank == root;
  chunked(data, count, [&](double *p, int n) {
    MPI_Reduce(atRoot ? MPI_IN_PLACE : p, atRoot ? p : nullptr, n, MPI_DOUBLE,
               MPI_SUM, root, MPI_COMM_WORLD);
  });
}
void broadcast(double *data, size_t count, int root) {
  if (world().size == 1 || !count)
    return;
  chunked(data, count, [&](double *p, int n) {
    MPI_Bcast(p, n, MPI_DOUBLE, root, MPI_COMM_WORLD);
  });
}
void broadcastBytes(void *data, size_t bytes, int root) {
  if (world().size == 1 || !bytes)
    return;
  chunked(static_cast<char *>(data), bytes, [&](char *p, int n) {
    MPI_Bcast(p, n, MPI_BYTE, root, MPI_COMM_WORLD);
  });
}
void barrier() {
  if (world().size > 1)
    MPI_Barrier(MPI_COMM_WORLD);
}
int exitCode(int code) {
  if (code != 0 && world().size > 1)
    MPI_Abort(MPI_COMM_WORLD, code);
  return code;
}

#else // one process

namespace {
World &world() {
  static World w = alone();
  return w;
}
} // namespace

// rank(): 0, or the launcher's rank when several copies run (see alone()).
int rank() { return world().rank; }
int size() { return 1; }
bool available() { return false; }
void allReduceSum(double *, size_t) {}
void allReduceSum(float *, size_t) {}
void allReduceSum(int64_t *, size_t) {}
void reduceSum(double *, size_t, int) {}
void broadcast(double *, size_t, int) {}
void broadcastBytes(void *, size_t, int) {}
void barrier() {}
int exitCode(int code) { return code; }

#endif

std::pair<int64_t, int64_t> share(int64_t count, int rank, int size) {
  int64_t p = size, r = rank;
  int64_t base = count / p, extra = count % p;
  int64_t begin = r * base + std::min(r, extra);
  return {begin, begin + base + (r < extra ? 1 : 0)};
}

std::pair<int64_t, int64_t> share(int64_t count) {
  // (A copy that computes alone takes everything, whatever its rank.)
  return size() == 1 ? std::pair<int64_t, int64_t>{0, count}
                     : share(count, rank(), size());
}

} // namespace sq::distributed
