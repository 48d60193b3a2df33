//===- Importer.cpp - Model descriptions to the moe dialect ---------------===//
//
// Part of Switchyard.
//
//===----------------------------------------------------------------------===//

#include "switchyard/Frontend/Importer.h"
#include "switchyard/Support/EntryFunction.h"

#include "switchyard/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/Interfaces/CallInterfaces.h"
#include "mlir/Interfaces/LoopLikeInterface.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MathExtras.h"

using namespace mlir;
using namespace switchyard;

static Type elementType(MLIRContext *ctx, llvm::StringRef dtype) {
  if (dtype == "bf16")
    return BFloat16Type::get(ctx);
  if (dtype == "f16")
    return Float16Type::get(ctx);
  return Float32Type::get(ctx);
}

namespace {
/// The statistics results of each routed layer, in the layer op's result
/// order (result 0, y, is the block output).
const char *const kTokenChoiceStats[] = {"aux_loss", "z_loss", "expert_counts",
                                         "dropped", "unrouted", "capacity"};
const char *const kExpertChoiceStats[] = {"z_loss", "expert_counts",
                                          "unrouted", "capacity"};
} // namespace

OwningOpRef<ModuleOp> switchyard::importModel(const ModelDescription &model,
                                              MLIRContext *ctx,
                                              llvm::StringRef bufferName) {
  ctx->loadDialect<func::FuncDialect, moe::MoEDialect>();
  OpBuilder b(ctx);
  Location fileLoc = FileLineColLoc::get(ctx, bufferName, 1, 1);
  OwningOpRef<ModuleOp> module = ModuleOp::create(fileLoc);
  (*module)->setAttr(kModelNameAttrName, b.getStringAttr(model.name));

  Type elt = elementType(ctx, model.dtype);
  auto xType = RankedTensorType::get(
      {ShapedType::kDynamic, model.seqLen, model.dModel}, elt);
  std::vector<WeightSpec> specs = getWeightSpecs(model);
  SmallVector<Type> argTypes{xType};
  for (const WeightSpec &w : specs)
    argTypes.push_back(
        RankedTensorType::get(w.shape, elementType(ctx, w.dtype)));

  // The function type's results are known only once the blocks are built;
  // start with none and fix the type at the end.
  b.setInsertionPointToEnd(module->getBody());
  auto fn = func::FuncOp::create(b, fileLoc, "forward",
                                 b.getFunctionType(argTypes, {}));
  fn->setAttr("llvm.emit_c_interface", b.getUnitAttr());
  for (auto [i, w] : llvm::enumerate(specs))
    fn.setArgAttr(i + 1, kWeightAttrName, b.getStringAttr(w.name));
  Block *body = fn.addEntryBlock();
  b.setInsertionPointToStart(body);

  llvm::StringMap<Value> weights;
  for (auto [i, w] : llvm::enumerate(specs))
    weights[w.name] = body->getArgument(i + 1);

  Value x = body->getArgument(0);
  SmallVector<Value> results{Value()};
  SmallVector<std::string> resultNames{"y"};
  auto f64 = [&](double v) { return b.getF64FloatAttr(v); };
  for (auto [i, block] : llvm::enumerate(model.blocks)) {
    Location loc =
        FileLineColLoc::get(ctx, bufferName, block.line, block.column);
    std::string prefix = "blocks." + std::to_string(i) + ".";
    auto weight = [&](llvm::StringRef name) -> Value {
      return weights.lookup(prefix + name.str());
    };
    Value h = x;
    if (block.norm != "none") {
      auto kind = *moe::symbolizeNormKind(block.norm);
      h = moe::NormOp::create(b, loc, xType, kind, h, weight("norm.weight"),
                              weight("norm.bias"));
    }
    auto act = moe::ActivationAttr::get(
        ctx, *moe::symbolizeActivation(block.activation));
    auto group = moe::GroupingAttr::get(ctx, *moe::symbolizeGrouping(block.group));
    llvm::StringRef mlp = block.layer == "ffn" ? "ffn." : "experts.";
    Value w1 = weight(mlp.str() + "w1"), wg = weight(mlp.str() + "wg"),
          w2 = weight(mlp.str() + "w2"), b1 = weight(mlp.str() + "b1"),
          b2 = weight(mlp.str() + "b2");
    auto i64 = [&](int64_t v) { return b.getI64IntegerAttr(v); };
    // An explicit capacity overrides the factor (SEMANTICS.md, section 3).
    FloatAttr cf = block.capacityFactor && !block.expertCapacity
                       ? f64(*block.capacityFactor)
                       : FloatAttr();
    IntegerAttr capacity =
        block.expertCapacity ? i64(*block.expertCapacity) : IntegerAttr();
    Value y;
    ArrayRef<const char *> statNames;
    Operation *layer = nullptr;
    if (block.layer == "moe") {
      auto scalarF32 = RankedTensorType::get({}, b.getF32Type());
      auto scalarI64 = RankedTensorType::get({}, b.getI64Type());
      auto counts = RankedTensorType::get({block.experts}, b.getI64Type());
      auto op = moe::TokenChoiceOp::create(
          b, loc, xType, scalarF32, scalarF32, counts, scalarI64, scalarI64,
          scalarI64, h, weight("router.weight"), weight("router.bias"), w1,
          wg, w2, b1, b2, act, i64(block.topK), cf, capacity,
          i64(block.minCapacity),
          block.normalizeGates ? b.getUnitAttr() : UnitAttr(),
          moe::PriorityAttr::get(ctx, *moe::symbolizePriority(block.priority)),
          block.rerouteDropped ? b.getUnitAttr() : UnitAttr(), group,
          f64(block.auxLossWeight), f64(block.zLossWeight), f64(0.0));
      layer = op;
      statNames = kTokenChoiceStats;
    } else if (block.layer == "expert_choice") {
      auto scalarF32 = RankedTensorType::get({}, b.getF32Type());
      auto scalarI64 = RankedTensorType::get({}, b.getI64Type());
      auto counts = RankedTensorType::get({block.experts}, b.getI64Type());
      // The factor attribute is required; with an explicit capacity it is
      // unused, so keep the default.
      auto op = moe::ExpertChoiceOp::create(
          b, loc, xType, scalarF32, counts, scalarI64, scalarI64, h,
          weight("router.weight"), weight("router.bias"), w1, wg, w2, b1, b2,
          act, cf ? cf : FloatAttr(), capacity, i64(block.minCapacity), group,
          f64(block.zLossWeight), f64(0.0));
      layer = op;
      statNames = kExpertChoiceStats;
    } else if (block.layer == "soft_moe") {
      layer = moe::SoftMoEOp::create(
          b, loc, xType, h, weight("soft.phi"), weight("soft.scale"), w1, wg,
          w2, b1, b2, act, i64(block.slotsPerExpert),
          b.getBoolAttr(block.normalize), group, f64(0.0));
    } else {
      layer = moe::FFNOp::create(b, loc, xType, h, w1, wg, w2, b1, b2, act);
    }
    y = layer->getResult(0);
    for (auto [j, name] : llvm::enumerate(statNames)) {
      results.push_back(layer->getResult(j + 1));
      resultNames.push_back(prefix + name);
    }
    x = block.residual ? moe::ResidualOp::create(b, loc, x, y).getResult() : y;
  }
  results[0] = x;
  func::ReturnOp::create(b, fileLoc, results);
  fn.setType(b.getFunctionType(argTypes, ValueRange(results).getTypes()));
  for (auto [i, name] : llvm::enumerate(resultNames))
    fn.setResultAttr(i, kResultAttrName, b.getStringAttr(name));
  return module;
}

func::FuncOp switchyard::getEntryFunction(ModuleOp module) {
  func::FuncOp entry = findEntryFunction(module);
  if (!entry) {
    unsigned publicCount =
        llvm::count_if(module.getOps<func::FuncOp>(), [](func::FuncOp fn) {
          return fn.isPublic() && !fn.isExternal();
        });
    module.emitError("no entry function: expected a function named 'forward' "
                     "or exactly one public function (found ")
        << publicCount << ")";
    return nullptr;
  }
  // The artifact calls it from outside; the pipeline would drop a private
  // function that nothing in the module calls.
  if (!entry.isPublic()) {
    entry.emitError("the entry function '")
        << entry.getName() << "' is private: make it public";
    return nullptr;
  }
  return entry;
}

static std::string dtypeName(Type t) {
  if (t.isF32())
    return "f32";
  if (t.isBF16())
    return "bf16";
  if (t.isF16())
    return "f16";
  if (t.isInteger(64))
    return "i64";
  return "";
}

FailureOr<std::string> switchyard::buildManifest(func::FuncOp entry) {
  FunctionType type = entry.getFunctionType();
  auto fail = [&](const Twine &msg) -> FailureOr<std::string> {
    entry.emitError("cannot build an artifact from '")
        << entry.getName() << "': " << msg;
    return failure();
  };
  if (type.getNumInputs() < 1 || type.getNumResults() < 1)
    return fail("it must take the input x and return the output y first");
  auto xType = dyn_cast<RankedTensorType>(type.getInput(0));
  if (!xType || xType.getRank() != 3 || xType.isDynamicDim(1) ||
      xType.isDynamicDim(2) || dtypeName(xType.getElementType()).empty() ||
      xType.getElementType().isInteger(64))
    return fail("argument 0 must be a float tensor<BxSxD> with static S and D");
  if (type.getResult(0) != xType)
    return fail("result 0 must have the type of argument 0");

  llvm::json::Array weights;
  llvm::StringSet<> weightNames;
  for (unsigned i = 1; i < type.getNumInputs(); ++i) {
    auto t = dyn_cast<RankedTensorType>(type.getInput(i));
    if (!t || !t.hasStaticShape() || dtypeName(t.getElementType()).empty() ||
        t.getElementType().isInteger(64))
      return fail("argument " + Twine(i) +
                  " must be a statically shaped f32, bf16 or f16 tensor");
    auto nameAttr = entry.getArgAttrOfType<StringAttr>(i, kWeightAttrName);
    std::string name = nameAttr ? nameAttr.str() : "arg" + std::to_string(i);
    // Safetensors files hold one tensor a name.
    if (!weightNames.insert(name).second)
      return fail("argument " + Twine(i) + " is named '" + name +
                  "' like an earlier weight; weight names must be unique");
    llvm::json::Array shape;
    for (int64_t d : t.getShape())
      shape.push_back(d);
    weights.push_back(
        llvm::json::Object{{"name", name},
                           {"shape", std::move(shape)},
                           {"dtype", dtypeName(t.getElementType())}});
  }

  // Blocks are the layer ops in program order, each with the number of
  // times a call runs it: through calls and loops with constant bounds, or
  // -1 when that depends on the input (a branch, a loop with bounds known
  // only at run time, a recursive call).
  llvm::DenseMap<Operation *, unsigned> blockIndex;
  llvm::json::Array blocks;
  auto describe = [&](Operation *op, llvm::StringRef kind, Value w1, Value wg,
                      int64_t experts, int64_t slots, llvm::StringRef group) {
    auto w1Type = cast<RankedTensorType>(w1.getType());
    blockIndex[op] = blocks.size();
    blocks.push_back(llvm::json::Object{{"kind", kind},
                                        {"d_ff", w1Type.getShape().back()},
                                        {"experts", experts},
                                        {"slots_per_expert", slots},
                                        {"gated", static_cast<bool>(wg)},
                                        {"group", group}});
  };
  // How many times one call of a function runs each layer op it reaches
  // (through loops with constant bounds and calls), in program order; -1
  // where that depends on the input. Each function is counted once, so a
  // function called from many places costs one walk.
  using Counts = llvm::MapVector<Operation *, int64_t>;
  auto add = [](int64_t &count, int64_t times) {
    if (count < 0 || times < 0 || llvm::AddOverflow(count, times, count))
      count = -1;
  };
  auto multiply = [](int64_t a, int64_t b) {
    int64_t product;
    if (a < 0 || b < 0 || llvm::MulOverflow(a, b, product))
      return int64_t(-1);
    return product;
  };
  // The trip count of a loop with constant bounds, or -1.
  auto tripCount = [](LoopLikeOpInterface loop) -> int64_t {
    std::optional<APInt> trips = loop.getStaticTripCount();
    if (!trips || trips->getActiveBits() > 62)
      return -1;
    return trips->getZExtValue();
  };
  SymbolTableCollection symbols;
  // The function a call runs, when it has a body here.
  auto calleeOf = [&](CallOpInterface call) -> func::FuncOp {
    auto callee =
        dyn_cast_or_null<func::FuncOp>(call.resolveCallableInTable(&symbols));
    return callee && !callee.isExternal() ? callee : nullptr;
  };
  SmallVector<Operation *> callStack;
  // Counts of functions outside any recursion (those depend on the path).
  llvm::DenseMap<Operation *, std::unique_ptr<Counts>> memo;
  std::function<Counts(func::FuncOp, bool &)> countsOf =
      [&](func::FuncOp fn, bool &recursive) -> Counts {
    Counts counts;
    std::function<void(Region &, int64_t)> visit = [&](Region &region,
                                                       int64_t times) {
      region.walk<WalkOrder::PreOrder>([&](Operation *op) {
        if (moe::isLayerOp(op)) {
          add(counts[op], times);
          return WalkResult::skip();
        }
        if (auto call = dyn_cast<CallOpInterface>(op)) {
          func::FuncOp callee = calleeOf(call);
          if (!callee)
            return WalkResult::advance();
          if (llvm::is_contained(callStack, callee)) {
            // A recursive call: how often the layers it reaches run, through
            // its calls too, is up to the input.
            recursive = true;
            llvm::SmallPtrSet<Operation *, 8> seen;
            std::function<void(func::FuncOp)> unknown = [&](func::FuncOp fn) {
              if (!seen.insert(fn).second)
                return;
              fn.walk([&](Operation *inner) {
                if (moe::isLayerOp(inner))
                  add(counts[inner], -1);
                else if (auto call = dyn_cast<CallOpInterface>(inner))
                  if (func::FuncOp next = calleeOf(call))
                    unknown(next);
              });
            };
            unknown(callee);
            return WalkResult::advance();
          }
          const Counts *inner;
          Counts fresh;
          if (auto it = memo.find(callee); it != memo.end()) {
            inner = it->second.get();
          } else {
            bool innerRecursive = false;
            callStack.push_back(callee);
            fresh = countsOf(callee, innerRecursive);
            callStack.pop_back();
            recursive |= innerRecursive;
            if (!innerRecursive) {
              memo[callee] = std::make_unique<Counts>(std::move(fresh));
              inner = memo[callee].get();
            } else {
              inner = &fresh;
            }
          }
          for (auto [layer, count] : *inner)
            add(counts[layer], multiply(times, count));
          return WalkResult::advance();
        }
        if (op->getNumRegions() == 0)
          return WalkResult::advance();
        int64_t inner = -1;
        if (auto loop = dyn_cast<LoopLikeOpInterface>(op))
          inner = tripCount(loop);
        else if (isa<scf::ExecuteRegionOp>(op))
          inner = 1;
        for (Region &r : op->getRegions())
          visit(r, multiply(times, inner));
        return WalkResult::skip();
      });
    };
    visit(fn.getBody(), 1);
    return counts;
  };
  callStack.push_back(entry);
  bool recursive = false;
  for (auto [op, count] : countsOf(entry, recursive)) {
    llvm::TypeSwitch<Operation *>(op)
        .Case([&](moe::TokenChoiceOp op) {
          describe(op, "moe", op.getW1(), op.getWg(),
                   op.getRouterWeight().getType().getShape()[1], 1,
                   moe::stringifyGrouping(op.getGroup()));
          blocks.back().getAsObject()->insert({"top_k", op.getTopK()});
        })
        .Case([&](moe::ExpertChoiceOp op) {
          describe(op, "expert_choice", op.getW1(), op.getWg(),
                   op.getRouterWeight().getType().getShape()[1], 1,
                   moe::stringifyGrouping(op.getGroup()));
        })
        .Case([&](moe::SoftMoEOp op) {
          int64_t slots = op.getSlotsPerExpert();
          int64_t n = op.getPhi().getType().getShape()[1] / slots;
          describe(op, "soft_moe", op.getW1(), op.getWg(), n, slots,
                   moe::stringifyGrouping(op.getGroup()));
        })
        .Case([&](moe::FFNOp op) {
          describe(op, "ffn", op.getW1(), op.getWg(), 1, 1, "sequence");
        });
    blocks.back().getAsObject()->insert({"runs", count});
  }

  llvm::json::Array results;
  // The value every return of `fn` (a body of several blocks may have more
  // than one) returns as result `i`, or null: a result is a statistic of a
  // layer when that value is one of the layer's results.
  auto returnedBy = [](func::FuncOp fn, unsigned i) -> Value {
    Value value;
    for (Block &block : fn.getBody()) {
      auto ret = block.mightHaveTerminator()
                     ? dyn_cast<func::ReturnOp>(block.getTerminator())
                     : nullptr;
      if (!ret)
        continue;
      if (value && ret.getOperand(i) != value)
        return nullptr;
      value = ret.getOperand(i);
    }
    return value;
  };
  for (unsigned i = 0; i < type.getNumResults(); ++i) {
    auto t = dyn_cast<RankedTensorType>(type.getResult(i));
    if (!t || dtypeName(t.getElementType()).empty() ||
        (i > 0 && !t.hasStaticShape()))
      return fail("result " + Twine(i) +
                  " must be a ranked tensor of f32, bf16, f16 or i64");
    llvm::json::Object result{{"rank", t.getRank()},
                              {"dtype", dtypeName(t.getElementType())}};
    std::string name = i == 0 ? "y" : "result" + std::to_string(i);
    if (auto attr = entry.getResultAttrOfType<StringAttr>(i, kResultAttrName))
      name = attr.str();
    // Statistics of a layer: name them after the layer op's result.
    if (i > 0) {
      // Through calls too, to the callee's returned value, when the layer
      // runs once a run (else the value would be one of several runs').
      Value value = returnedBy(entry, i);
      bool throughCall = false;
      llvm::SmallPtrSet<Operation *, 4> visited;
      while (auto call =
                 value ? value.getDefiningOp<func::CallOp>() : nullptr) {
        func::FuncOp callee = calleeOf(call);
        if (!callee || !visited.insert(callee).second)
          break;
        Value inner =
            returnedBy(callee, cast<OpResult>(value).getResultNumber());
        if (!inner)
          break;
        value = inner;
        throughCall = true;
      }
      auto layerResult = dyn_cast_or_null<OpResult>(value);
      Operation *def = layerResult ? layerResult.getOwner() : nullptr;
      if (def && blockIndex.count(def) && throughCall &&
          *blocks[blockIndex[def]].getAsObject()->getInteger("runs") != 1)
        def = nullptr;
      if (def && blockIndex.count(def) && layerResult.getResultNumber() > 0) {
        unsigned index = layerResult.getResultNumber();
        llvm::StringRef stat =
            isa<moe::TokenChoiceOp>(def)
                ? llvm::ArrayRef(kTokenChoiceStats)[index - 1]
                : llvm::ArrayRef(kExpertChoiceStats)[index - 1];
        result.insert({"block", blockIndex[def]});
        result.insert({"stat", stat});
        name = "blocks." + std::to_string(blockIndex[def]) + "." + stat.str();
      } else {
        entry.emitWarning("result ")
            << i
            << " is not a statistic of a layer op: the artifact does not "
               "report it";
      }
    }
    result.insert({"name", name});
    llvm::json::Array shape;
    for (int64_t d : t.getShape())
      shape.push_back(ShapedType::isDynamic(d) ? int64_t(-1) : d);
    result.insert({"shape", std::move(shape)});
    results.push_back(std::move(result));
  }

  auto module = entry->getParentOfType<ModuleOp>();
  auto modelName = module->getAttrOfType<StringAttr>(kModelNameAttrName);
  llvm::json::Object manifest{
      {"format", 1},
      {"name", modelName ? modelName.str() : entry.getName().str()},
      {"entry", entry.getName()},
      {"dtype", dtypeName(xType.getElementType())},
      {"seq_len", xType.getDimSize(1)},
      {"d_model", xType.getDimSize(2)},
      {"batch", xType.isDynamicDim(0) ? int64_t(-1) : xType.getDimSize(0)},
      {"weights", std::move(weights)},
      {"results", std::move(results)},
      {"blocks", std::move(blocks)}};
  std::string text;
  llvm::raw_string_ostream os(text);
  os << llvm::json::Value(std::move(manifest));
  return text;
}
