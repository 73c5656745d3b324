//===- CpuFeatures.cpp - run-time CPU feature checks ----------------------===//

#include "sq/Numerics/CpuFeatures.h"

#if defined(__x86_64__) || defined(__i386__)
#include <sys/syscall.h>
#include <unistd.h>
#define SQ_X86 1
#else
#define SQ_X86 0
#endif

namespace sq {
namespace numerics {

#if SQ_X86
namespace {
/// CPUID leaf 7, sub-leaf 0, EDX.
unsigned leaf7Edx() {
  static const unsigned edx = [] {
    unsigned a, b, c, d;
    __asm__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0), "c"(0));
    if (a < 7)
      return 0u;
    __asm__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
    return d;
  }();
  return edx;
}
} // namespace

bool cpuHasAmxBf16() { return leaf7Edx() & (1u << 22); }
bool cpuIsAmd() {
  unsigned a, b, c, d;
  __asm__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0), "c"(0));
  // "AuthenticAMD" in EBX, EDX, ECX.
  return b == 0x68747541u && d == 0x69746e65u && c == 0x444d4163u;
}
bool cpuHasAmxInt8() { return leaf7Edx() & (1u << 25); }

bool amxTileUsable() {
  static const bool usable = [] {
    if (!(leaf7Edx() & (1u << 24))) // AMX-TILE
      return false;
#if defined(__linux__)
    // ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA: without it the first tile
    // instruction faults (SIGILL).
    constexpr long kReqXcompPerm = 0x1023, kXtileData = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
#else
    return false;
#endif
  }();
  return usable;
}
#else
bool cpuHasAmxBf16() { return false; }
bool cpuIsAmd() { return false; }
bool cpuHasAmxInt8() { return false; }
bool amxTileUsable() { return false; }
#endif

} // namespace numerics
} // namespace sq
