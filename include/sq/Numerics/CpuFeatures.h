//===- CpuFeatures.h - run-time CPU feature checks -----------------*- C++
//-*-===//
//
// What the kernels of lib/Numerics and lib/Runtime/CPU ask before choosing
// an instruction path. Plain C++.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_NUMERICS_CPUFEATURES_H
#define SQ_NUMERICS_CPUFEATURES_H

namespace sq {
namespace numerics {

/// Whether the CPU has AMX tiles (AMX-TILE) and the OS lets this process use
/// the tile data: on Linux, the first call asks for it with
/// arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) (once per process;
/// the answer is cached). False on other architectures.
bool amxTileUsable();
/// CPUID leaf 7: AMX-INT8 (TDPBUSD...) and AMX-BF16 (TDPBF16PS). They say
/// nothing about the OS permission: use them with amxTileUsable().
bool cpuHasAmxInt8();
bool cpuHasAmxBf16();
/// Whether the CPU's vendor string is AMD's ("AuthenticAMD").
bool cpuIsAmd();

} // namespace numerics
} // namespace sq

#endif // SQ_NUMERICS_CPUFEATURES_H
