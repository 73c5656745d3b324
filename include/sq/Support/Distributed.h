//===- Distributed.h - data-parallel processes (MPI or one process) -*- C++
//-*-//
//
// The one place SQ talks to MPI: the calibration splits its windows across
// processes and sums what they computed (the loss, the rotation gradients,
// GPTQ's Hessians, per-window losses) with these calls. Built with MPI
// (CMake SQ_MPI, lib/Support/Distributed.cpp), a process started by mpirun
// (or srun, or any launcher that sets OMPI_COMM_WORLD_SIZE, PMIX_RANK or
// PMI_SIZE) joins MPI_COMM_WORLD at the first call and leaves it at exit; a
// process started alone never touches MPI and is rank 0 of 1. Built without
// MPI every call is that of one process, and nothing needs libmpi. (The
// environment variable SQ_MPI=0 keeps a launched process out of MPI, SQ_MPI=1
// joins without a launcher. A process that was launched as one of several
// but does not join computes alone, warns, and only the launcher's rank 0
// writes: rank() is the launcher's rank there, size() is 1.)
//
// Every process must make the same calls in the same order (collectives);
// only rank 0 prints progress and writes output files.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_SUPPORT_DISTRIBUTED_H
#define SQ_SUPPORT_DISTRIBUTED_H

#include <cstddef>
#include <cstdint>
#include <utility>

namespace sq::distributed {

/// This process's rank, 0 .. size() - 1.
int rank();
/// The number of processes (1 without a launcher or without MPI).
int size();
/// Whether this build can run several processes (compiled with MPI).
bool available();

/// In place, on every process: the element-wise sum over all processes.
/// No-ops in a single process (the values stay bit for bit as they are).
void allReduceSum(double *data, size_t count);
void allReduceSum(float *data, size_t count);
void allReduceSum(int64_t *data, size_t count);
/// On `root` only: the element-wise sum over all processes (the others'
/// `data` is left unspecified). Half the traffic of allReduceSum.
void reduceSum(double *data, size_t count, int root = 0);
/// Rank `root`'s values to every process.
void broadcast(double *data, size_t count, int root = 0);
/// Rank `root`'s `bytes` bytes at `data` to every process.
void broadcastBytes(void *data, size_t bytes, int root);
void barrier();

/// A tool's exit status, returned from main: a process that fails while
/// others run aborts them all (MPI_Abort: the others may be waiting in a
/// collective this one will never reach); otherwise `code` itself.
int exitCode(int code);

/// The half-open range [begin, end) of `count` items (windows) that this
/// process takes: contiguous blocks whose sizes differ by at most one, the
/// first `count % size()` processes taking one more. A process may get
/// none (count < size()).
std::pair<int64_t, int64_t> share(int64_t count);
/// The same for process `rank` of `size`.
std::pair<int64_t, int64_t> share(int64_t count, int rank, int size);

} // namespace sq::distributed

#endif // SQ_SUPPORT_DISTRIBUTED_H
