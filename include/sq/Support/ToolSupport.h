//===- ToolSupport.h - the common start and error path of SQ's tools -*- C++
//-*-===//
//
// What every SQ tool (sq-opt, sq-translate, sq-compile, sq-run) does the
// same way: the prologue of main, a one-line error, and output files that
// appear whole or not at all.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_SUPPORT_TOOLSUPPORT_H
#define SQ_SUPPORT_TOOLSUPPORT_H

#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/raw_ostream.h"

#include <string>

namespace sq {

/// The prologue of a tool's main, kept alive for the whole of main (like the
/// InitLLVM it holds): LLVM's process setup, write errors instead of SIGXFSZ
/// (sq/Support/FileSizeSignal.h), only `category`'s options in --help, then
/// the command line parsed with `overview` as the --help text.
class InitTool {
public:
  InitTool(int &argc, char **&argv, llvm::cl::OptionCategory &category,
           llvm::StringRef overview);

private:
  llvm::InitLLVM init;
};

/// OpenBLAS 0.3.21 (Debian 12) does not know CPUs newer than its release
/// (Sapphire/Emerald Rapids, Zen 4) and falls back to its Prescott kernels,
/// half the dgemm/sgemm rate of its SkylakeX ones, for the executor, GPTQ and
/// the Cayley steps. It picks its kernels when it is loaded, before main, from
/// OPENBLAS_CORETYPE: so when that variable is unset, the loaded OpenBLAS
/// reports the Prescott fallback and the CPU has AVX-512 (AVX2 + FMA), this
/// sets OPENBLAS_CORETYPE=SkylakeX (Haswell) and executes the tool again with
/// the same arguments. Does nothing otherwise (another BLAS, a CPU OpenBLAS
/// knows, a user's own OPENBLAS_CORETYPE: set it to keep OpenBLAS's choice).
/// Called first by InitTool and by sq-opt's main.
void preferFastBlasKernels(char **argv);

/// Prints "TOOL: error: MESSAGE" on stderr (coloured on a terminal) and
/// returns 1, the exit code of a failed tool: `return fail(tool, "...")`.
int fail(llvm::StringRef tool, const llvm::Twine &message);

/// False with `error` ("PATH: not a regular file") when `path` is a device
/// or a pipe (/dev/zero), which would be read without end. A missing file
/// or a directory passes: the reader reports those.
bool checkRegularFile(llvm::StringRef path, std::string &error);

/// How writeFileAtomically ended.
enum class WriteStatus {
  Written,      ///< `path` holds what `write` wrote
  IOError,      ///< creating, writing or renaming failed (`error`: the
                ///< system's words, e.g. "No such file or directory")
  WriterFailed, ///< `write` gave up (`error`: its own message)
};

/// Writes `path` through `write` into the temporary `path.sqtmpPID` next to
/// it, then renames the temporary onto `path`. On any failure the temporary
/// is removed and `path` is left as it was: a failed write (no space, a file
/// size limit, a writer error) leaves neither a partial file nor the
/// temporary. `write` returns false, with its message in `error`, to give up.
/// A `path` that is a device, FIFO or socket (/dev/null, /dev/stdout) is
/// written directly, never replaced.
WriteStatus writeFileAtomically(
    llvm::StringRef path,
    llvm::function_ref<bool(llvm::raw_ostream &os, std::string &error)> write,
    std::string &error);

} // namespace sq

#endif // SQ_SUPPORT_TOOLSUPPORT_H
