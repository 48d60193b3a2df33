//===- BF16VectorsThroughMemory.cpp - bf16 vector memory accesses as i16 --===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//
//
// LLVM 22's x86 back end fails on loads and stores of bf16 vectors of 9, 17,
// 25, ... elements when the host has AVX-512 BF16; this pass moves bf16
// vectors whose width is not a power of two through memory as i16 vectors
// (see the pass description in Passes.td).
//
//===----------------------------------------------------------------------===//

#include "switchyard/Transforms/Passes.h"

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/IR/Builders.h"
#include "llvm/Support/MathExtras.h"

namespace switchyard {
#define GEN_PASS_DEF_SWITCHYARDBF16VECTORSTHROUGHMEMORYASI16
#include "switchyard/Transforms/Passes.h.inc"
} // namespace switchyard

using namespace mlir;

namespace {

/// The i16 vector of the same shape, when `type` is a bf16 vector whose
/// width is not a power of two; else null.
VectorType asI16(Type type) {
  auto vector = dyn_cast<VectorType>(type);
  if (!vector || !vector.getElementType().isBF16() || vector.isScalable() ||
      llvm::isPowerOf2_64(vector.getNumElements()))
    return nullptr;
  return vector.clone(IntegerType::get(type.getContext(), 16));
}

struct BF16VectorsThroughMemoryPass
    : switchyard::impl::SwitchyardBF16VectorsThroughMemoryAsI16Base<
          BF16VectorsThroughMemoryPass> {
  void runOnOperation() override {
    SmallVector<LLVM::LoadOp> loads;
    SmallVector<LLVM::StoreOp> stores;
    getOperation().walk([&](Operation *op) {
      if (auto load = dyn_cast<LLVM::LoadOp>(op); load && asI16(load.getType()))
        loads.push_back(load);
      else if (auto store = dyn_cast<LLVM::StoreOp>(op);
               store && asI16(store.getValue().getType()))
        stores.push_back(store);
    });
    OpBuilder b(&getContext());
    for (LLVM::LoadOp load : loads) {
      b.setInsertionPoint(load);
      // The same access (alignment, volatility, nontemporal and invariant
      // flags, ordering, alias information) of the i16 type.
      Operation *wide = b.clone(*load.getOperation());
      wide->getResult(0).setType(asI16(load.getType()));
      b.setInsertionPointAfter(wide);
      Value bf16 = LLVM::BitcastOp::create(b, load.getLoc(), load.getType(),
                                           wide->getResult(0));
      load.replaceAllUsesWith(bf16);
      load.erase();
    }
    for (LLVM::StoreOp store : stores) {
      b.setInsertionPoint(store);
      Value i16 =
          LLVM::BitcastOp::create(b, store.getLoc(),
                                  asI16(store.getValue().getType()),
                                  store.getValue());
      store.getValueMutable().assign(i16);
    }
  }
};

} // namespace
