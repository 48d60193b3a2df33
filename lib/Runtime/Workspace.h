//===- Workspace.h - The compiled code's allocator ------------------------===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//
//
// The compiled code allocates its buffers through _mlir_memref_to_llvm_alloc
// and _mlir_memref_to_llvm_free (Workspace.cpp). No LLVM headers here: test
// harnesses link Workspace.cpp's object alone.
//
//===----------------------------------------------------------------------===//

#ifndef SWITCHYARD_RUNTIME_WORKSPACE_H
#define SWITCHYARD_RUNTIME_WORKSPACE_H

namespace switchyard::runtime {

/// Frees what the compiled code allocated.
void freeCompiled(void *p);

/// Calls a compiled entry point `fn(args)`. Returns 0, or, when an allocation
/// of the compiled code failed on this thread outside any parallel region,
/// the size it asked for: the call is abandoned there (what it had allocated
/// before stays allocated), instead of the code writing through a null
/// pointer. An allocation that fails inside a parallel region, where the
/// call cannot be abandoned, prints its size and aborts.
unsigned long long callCompiled(void (*fn)(void **), void **args);

} // namespace switchyard::runtime

#endif // SWITCHYARD_RUNTIME_WORKSPACE_H
