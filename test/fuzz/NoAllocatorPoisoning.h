//===- NoAllocatorPoisoning.h - force-included in ASan builds -------------===//
//
// LLVM's BumpPtrAllocator (inline, in headers) poisons slabs with ASan when
// the includer is instrumented, but libMLIR.so/libLLVM.so are not: memory
// that our inlined code poisons and the library's copy hands out unpoisoned
// gives false use-after-poison reports. Turn the annotations off (in the
// fuzz build and in the sanitizer suite's, CMakeLists.txt).
//
//===----------------------------------------------------------------------===//

#ifndef SQ_FUZZ_NOALLOCATORPOISONING_H
#define SQ_FUZZ_NOALLOCATORPOISONING_H
#ifdef __cplusplus
#include "llvm/Support/Compiler.h"
#undef __asan_poison_memory_region
#undef __asan_unpoison_memory_region
#define __asan_poison_memory_region(p, size) ((void)(p), (void)(size))
#define __asan_unpoison_memory_region(p, size) ((void)(p), (void)(size))
#endif
#endif
