//===- ToolSupport.cpp - the common start and error path of SQ's tools ----===//

#include "sq/Support/ToolSupport.h"
#include "sq/Support/FileSizeSignal.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/WithColor.h"

using namespace llvm;

#include <cstdlib>
#include <cstring>
#if defined(__linux__)
#include <dlfcn.h>
#include <unistd.h>
#endif

namespace sq {

void preferFastBlasKernels(char **argv) {
#if defined(__linux__) && defined(__x86_64__)
  if (std::getenv("OPENBLAS_CORETYPE"))
    return;
  using CoreName = char *(*)();
  auto coreName =
      reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  const char *name = coreName ? coreName() : nullptr;
  if (!name || std::strcmp(name, "Prescott") != 0)
    return;
  const char *better = nullptr;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512cd"))
    better = "SkylakeX";
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    better = "Haswell";
  if (!better || setenv("OPENBLAS_CORETYPE", better, 1) != 0)
    return;
  execv("/proc/self/exe", argv);
  // The new image did not start: go on with the kernels already loaded.
  unsetenv("OPENBLAS_CORETYPE");
#else
  (void)argv;
#endif
}

static char **preferFastBlasKernelsFirst(char **argv) {
  preferFastBlasKernels(argv);
  return argv;
}

InitTool::InitTool(int &argc, char **&argv, cl::OptionCategory &category,
                   StringRef overview)
    : init(argc, (argv = preferFastBlasKernelsFirst(argv))) {
  blockFileSizeSignal(); // write errors, not SIGXFSZ (ulimit -f)
  cl::HideUnrelatedOptions(category);
  cl::ParseCommandLineOptions(argc, argv, overview);
}

int fail(StringRef tool, const Twine &message) {
  WithColor::error(errs(), tool) << message << "\n";
  return 1;
}

bool checkRegularFile(StringRef path, std::string &error) {
  sys::fs::file_status status;
  if (sys::fs::status(path, status) || !sys::fs::exists(status) ||
      sys::fs::is_regular_file(status) || sys::fs::is_directory(status))
    return true;
  error = path.str() + ": not a regular file";
  return false;
}

WriteStatus
writeFileAtomically(StringRef path,
                    function_ref<bool(raw_ostream &, std::string &)> write,
                    std::string &error) {
  // A device, FIFO or socket (/dev/null, /dev/stdout, a pipe) is written
  // directly: renaming a temporary onto it would replace the node itself
  // (for root, /dev/null would become a regular file).
  sys::fs::file_status target;
  if (!sys::fs::status(path, target) && sys::fs::exists(target) &&
      !sys::fs::is_regular_file(target) && !sys::fs::is_directory(target)) {
    std::error_code ec;
    raw_fd_ostream os(path, ec);
    if (ec) {
      error = ec.message();
      return WriteStatus::IOError;
    }
    if (!write(os, error)) {
      os.close();
      os.clear_error();
      return WriteStatus::WriterFailed;
    }
    os.close();
    if (os.has_error()) {
      error = os.error().message();
      os.clear_error();
      return WriteStatus::IOError;
    }
    return WriteStatus::Written;
  }
  std::string temp =
      (path + ".sqtmp" + Twine(sys::Process::getProcessId())).str();
  int fd;
  if (std::error_code ec =
          sys::fs::openFileForWrite(temp, fd, sys::fs::CD_CreateAlways)) {
    error = ec.message();
    return WriteStatus::IOError;
  }
  WriteStatus status = WriteStatus::Written;
  {
    raw_fd_ostream os(fd, /*shouldClose=*/true);
    if (!write(os, error))
      status = WriteStatus::WriterFailed;
    os.close();
    if (os.has_error()) {
      if (status == WriteStatus::Written) {
        error = os.error().message();
        status = WriteStatus::IOError;
      }
      os.clear_error();
    }
  }
  if (status == WriteStatus::Written)
    if (std::error_code ec = sys::fs::rename(temp, path)) {
      error = ec.message();
      status = WriteStatus::IOError;
    }
  if (status != WriteStatus::Written)
    sys::fs::remove(temp);
  return status;
}

} // namespace sq
