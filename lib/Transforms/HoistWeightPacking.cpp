//===- HoistWeightPacking.cpp - Pack weights once, at load time -----------===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
// The packed products read each weight [E, K, N] as [E, N/32, K, 32]. The
// weights do not change between runs, so packing them on every run would
// move the whole model through memory for nothing. This pass moves the
// packing out of the entry function into `<entry>_prepack`, which the
// runtime calls once when weights are bound; the entry function then takes
// the packed weights. The module records which weights are packed, and
// their packed shapes, in `switchyard.prepack` for the artifact's manifest.
//
//===----------------------------------------------------------------------===//

#include "switchyard/Transforms/Passes.h"

#include "switchyard/Support/EntryFunction.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/SetVector.h"

namespace switchyard {
#define GEN_PASS_DEF_SWITCHYARDHOISTWEIGHTPACKING
#include "switchyard/Transforms/Passes.h.inc"
} // namespace switchyard

using namespace mlir;

namespace {

constexpr llvm::StringLiteral kPackWeight = "switchyard.pack_weight";
constexpr llvm::StringLiteral kPrepack = "switchyard.prepack";

/// The packing of weight argument `arg`: an expand_shape whose uses are all
/// marked transposes with one result type, when every use of `arg` is such
/// an expand_shape. Returns the transposes.
std::optional<SmallVector<linalg::TransposeOp>> packingOf(BlockArgument arg) {
  SmallVector<linalg::TransposeOp> packs;
  if (arg.use_empty())
    return std::nullopt;
  for (Operation *user : arg.getUsers()) {
    auto expand = dyn_cast<tensor::ExpandShapeOp>(user);
    if (!expand || expand.getResult().use_empty())
      return std::nullopt;
    for (Operation *expandUser : expand.getResult().getUsers()) {
      auto transpose = dyn_cast<linalg::TransposeOp>(expandUser);
      if (!transpose || !transpose->hasAttr(kPackWeight) ||
          transpose.getInput() != expand.getResult())
        return std::nullopt;
      if (!packs.empty() &&
          (transpose.getResult()[0].getType() !=
               packs.front().getResult()[0].getType() ||
           transpose.getPermutation() != packs.front().getPermutation()))
        return std::nullopt;
      packs.push_back(transpose);
    }
  }
  return packs;
}

struct HoistWeightPackingPass
    : switchyard::impl::SwitchyardHoistWeightPackingBase<
          HoistWeightPackingPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    // The first module pass of the CPU pipeline after the lowering to
    // linalg, whose function passes reach the module's own functions only:
    // a moe op left anywhere (a function in a nested module) would reach
    // the LLVM dialect untouched.
    WalkResult left = module->walk([](Operation *op) {
      if (op->getDialect() && op->getDialect()->getNamespace() == "moe") {
        op->emitError("'")
            << op->getName()
            << "' was not lowered: the CPU pipeline lowers the functions at "
               "the top level of the module";
        return WalkResult::interrupt();
      }
      return WalkResult::advance();
    });
    if (left.wasInterrupted())
      return signalPassFailure();
    // The entry's weights only: those the runtime binds, in the manifest's
    // order. Another function keeps packing its own (the pipeline has
    // inlined the calls it can).
    func::FuncOp entry = switchyard::findEntryFunction(module);
    if (!entry)
      return;
    SmallVector<Attribute> records;
    if (failed(hoist(entry, records)))
      return signalPassFailure();
    if (!records.empty())
      module->setAttr(kPrepack, ArrayAttr::get(&getContext(), records));
  }

  LogicalResult hoist(func::FuncOp func, SmallVector<Attribute> &records) {
    // No weights without arguments after x.
    if (func.isExternal() || func.getNumArguments() < 2)
      return success();
    MLIRContext *ctx = &getContext();
    // Weight arguments in order; their index among the weights is their
    // index in the manifest.
    struct Packed {
      unsigned argIndex;
      int64_t weightIndex;
      SmallVector<linalg::TransposeOp> packs;
    };
    // Every argument after the input x is a weight, named
    // (`switchyard.weight`) or not, as the manifest numbers them.
    SmallVector<Packed> packed;
    for (BlockArgument arg : func.getArguments().drop_front())
      if (std::optional<SmallVector<linalg::TransposeOp>> packs =
              packingOf(arg))
        packed.push_back({arg.getArgNumber(), arg.getArgNumber() - 1, *packs});
    if (packed.empty())
      return success();
    // A function that is called keeps packing its weights: its callers pass
    // them as they are.
    auto module = func->getParentOfType<ModuleOp>();
    if (!SymbolTable::symbolKnownUseEmpty(func, module))
      return success();
    std::string prepackName = (func.getName() + "_prepack").str();
    if (SymbolTable::lookupSymbolIn(module, prepackName))
      return func.emitError("cannot hoist the weight packing into '")
             << prepackName
             << "': the module already has a symbol of that name";

    // <entry>_prepack(weights) -> packed weights, with the entry's C
    // interface.
    SmallVector<Type> inputs, results;
    for (Packed &p : packed) {
      inputs.push_back(func.getArgument(p.argIndex).getType());
      results.push_back(p.packs.front().getResult()[0].getType());
    }
    OpBuilder b(func);
    auto prepack = func::FuncOp::create(b, func.getLoc(), prepackName,
                                        b.getFunctionType(inputs, results));
    prepack->setAttr("llvm.emit_c_interface", UnitAttr::get(ctx));
    Block *body = prepack.addEntryBlock();
    b.setInsertionPointToStart(body);
    SmallVector<Value> packedValues;
    for (auto [i, p] : llvm::enumerate(packed)) {
      linalg::TransposeOp pack = p.packs.front();
      IRMapping mapping;
      mapping.map(func.getArgument(p.argIndex), body->getArgument(i));
      auto expand = pack.getInput().getDefiningOp<tensor::ExpandShapeOp>();
      Operation *init = pack.getInit().getDefiningOp();
      if (!init || init->getNumOperands() != 0)
        return pack.emitError("the packed weight's destination is not a "
                              "static tensor.empty");
      b.clone(*expand, mapping);
      b.clone(*init, mapping);
      Operation *clone = b.clone(*pack, mapping);
      clone->removeAttr(kPackWeight);
      packedValues.push_back(clone->getResult(0));
      records.push_back(DictionaryAttr::get(
          ctx, {b.getNamedAttr("weight", b.getI64IntegerAttr(p.weightIndex)),
                b.getNamedAttr(
                    "shape",
                    b.getDenseI64ArrayAttr(
                        cast<ShapedType>(results[i]).getShape()))}));
    }
    func::ReturnOp::create(b, func.getLoc(), packedValues);

    // The entry now takes the packed weights.
    for (auto [i, p] : llvm::enumerate(packed)) {
      BlockArgument arg = func.getArgument(p.argIndex);
      // The packings go first; then their expand_shapes and destinations,
      // each once (packings may share them), when nothing else uses them.
      llvm::SetVector<Operation *> producers;
      for (linalg::TransposeOp pack : p.packs) {
        producers.insert(pack.getInput().getDefiningOp());
        if (Operation *init = pack.getInit().getDefiningOp())
          producers.insert(init);
      }
      arg.setType(results[i]);
      for (linalg::TransposeOp pack : p.packs) {
        pack.getResult()[0].replaceAllUsesWith(arg);
        pack.erase();
      }
      for (Operation *op : producers)
        if (op->use_empty())
          op->erase();
      func.setArgAttr(p.argIndex, "switchyard.packed", UnitAttr::get(ctx));
    }
    SmallVector<Type> argTypes(func.getBody().front().getArgumentTypes());
    func.setFunctionType(
        FunctionType::get(ctx, argTypes, func.getResultTypes()));
    return success();
  }
};

} // namespace
