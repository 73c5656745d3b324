//===- FileSizeSignal.h - write errors instead of SIGXFSZ --------*- C++
//-*-===//
//
// Under a file size limit (ulimit -f, RLIMIT_FSIZE) a write past the limit
// raises SIGXFSZ, whose default action kills the process (with a core)
// before it can remove its temporaries or say what happened. The tools
// block it first thing in main: the write then fails with EFBIG and is
// reported like a full disk. Blocking (not only ignoring) keeps it away
// from the signal handlers LLVM installs later; child processes (the
// linker sq-compile runs) inherit the mask.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_SUPPORT_FILESIZESIGNAL_H
#define SQ_SUPPORT_FILESIZESIGNAL_H

#include <csignal>

namespace sq {

inline void blockFileSizeSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGXFSZ);
  sigprocmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGXFSZ, SIG_IGN);
}

} // namespace sq

#endif // SQ_SUPPORT_FILESIZESIGNAL_H
