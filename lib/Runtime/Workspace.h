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

} // namespace switchyard::runtime

#endif // SWITCHYARD_RUNTIME_WORKSPACE_H
