//===- MoEOps.cpp - Verifiers and folders of the moe dialect --------------===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
// Every verifier checks the static shape relations of SEMANTICS.md and says
// what it expected and what it found. Dynamic dimensions match anything.
//
//===----------------------------------------------------------------------===//

#include "switchyard/Dialect/MoE/IR/MoEOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>

using namespace mlir;
using namespace switchyard::moe;

bool switchyard::moe::isGated(Activation activation) {
  return activation == Activation::swiglu || activation == Activation::geglu;
}

//===----------------------------------------------------------------------===//
// Shared checks
//===----------------------------------------------------------------------===//

static constexpr int64_t kAny = ShapedType::kDynamic;

static ArrayRef<int64_t> shapeOf(Value value) {
  return cast<RankedTensorType>(value.getType()).getShape();
}

static int64_t dimOf(Value value, unsigned dim) { return shapeOf(value)[dim]; }

static Type elementTypeOf(Value value) {
  return cast<RankedTensorType>(value.getType()).getElementType();
}

static void printShape(llvm::raw_ostream &os, ArrayRef<int64_t> shape) {
  os << "[";
  llvm::interleaveComma(shape, os, [&](int64_t d) {
    if (ShapedType::isDynamic(d))
      os << "?";
    else
      os << d;
  });
  os << "]";
}

/// Checks `value` against `expected` dimension by dimension; a dynamic size on
/// either side matches anything. `dimNames` names the dimensions in the
/// message, e.g. "[E, D, F]".
static LogicalResult verifyShape(Operation *op, StringRef name, Value value,
                                 ArrayRef<int64_t> expected,
                                 StringRef dimNames) {
  ArrayRef<int64_t> actual = shapeOf(value);
  bool matches = actual.size() == expected.size();
  for (auto [a, e] : llvm::zip(actual, expected))
    if (!ShapedType::isDynamic(a) && !ShapedType::isDynamic(e) && a != e)
      matches = false;
  if (matches)
    return success();
  InFlightDiagnostic diag = op->emitOpError("expected ");
  diag << name << " of shape " << dimNames << " = ";
  std::string text;
  llvm::raw_string_ostream os(text);
  printShape(os, expected);
  os << ", but found ";
  printShape(os, actual);
  diag << text;
  return diag;
}

static LogicalResult verifyElementType(Operation *op, StringRef name,
                                       Value value, Type expected,
                                       StringRef why) {
  Type actual = elementTypeOf(value);
  if (actual == expected)
    return success();
  return op->emitOpError("expected ")
         << name << " to have element type " << expected << " (" << why
         << "), but found " << actual;
}

/// Verifies the expert MLP weights of SEMANTICS.md section 1. With
/// `hasExpertDim` the weights are `w1 [E, D, F]`, `w2 [E, F, D]`,
/// `b1 [E, F]`, `b2 [E, D]` (`numExperts` may be dynamic to take E from w1);
/// otherwise the same without E (a dense FFN).
static LogicalResult verifyExpertWeights(Operation *op, Type modelType,
                                         int64_t dModel, int64_t numExperts,
                                         StringRef eSource, Value w1, Value wg,
                                         Value w2, Value b1, Value b2,
                                         Activation activation,
                                         bool hasExpertDim) {
  const unsigned off = hasExpertDim ? 1 : 0;
  // Empty products: the lowering tiles and packs D and F.
  for (auto [name, w] : {std::pair<StringRef, Value>{"w1", w1}, {"w2", w2}})
    if (llvm::is_contained(shapeOf(w), 0))
      return op->emitOpError("expected ")
             << name << " to have no empty dimension, but found "
             << w.getType();
  if (hasExpertDim && !ShapedType::isDynamic(numExperts) &&
      !ShapedType::isDynamic(dimOf(w1, 0)) && dimOf(w1, 0) != numExperts)
    return op->emitOpError("expected w1 to have E = ")
           << numExperts << " experts (from " << eSource << "), but found "
           << dimOf(w1, 0);
  int64_t e = hasExpertDim ? dimOf(w1, 0) : 0;
  int64_t f = dimOf(w1, off + 1);
  if (!ShapedType::isDynamic(dModel) && !ShapedType::isDynamic(dimOf(w1, off)) &&
      dimOf(w1, off) != dModel)
    return op->emitOpError("expected w1 to have model width D = ")
           << dModel << " (from the input), but found " << dimOf(w1, off);
  auto withE = [&](ArrayRef<int64_t> dims) {
    SmallVector<int64_t> shape;
    if (hasExpertDim)
      shape.push_back(e);
    shape.append(dims.begin(), dims.end());
    return shape;
  };
  StringRef w1Names = hasExpertDim ? "[E, D, F]" : "[D, F]";
  StringRef w2Names = hasExpertDim ? "[E, F, D]" : "[F, D]";
  if (isGated(activation) && !wg)
    return op->emitOpError("activation '")
           << stringifyActivation(activation)
           << "' is gated and needs a wg weight, but none was given";
  if (!isGated(activation) && wg)
    return op->emitOpError("a wg weight is only used by the gated activations "
                           "swiglu and geglu, but the activation is '")
           << stringifyActivation(activation) << "'";
  if (wg && failed(verifyShape(op, "wg", wg, withE({dModel, f}), w1Names)))
    return failure();
  if (failed(verifyShape(op, "w2", w2, withE({f, dModel}), w2Names)))
    return failure();
  if (b1 && failed(verifyShape(op, "b1", b1, withE({f}),
                               hasExpertDim ? "[E, F]" : "[F]")))
    return failure();
  if (b2 && failed(verifyShape(op, "b2", b2, withE({dModel}),
                               hasExpertDim ? "[E, D]" : "[D]")))
    return failure();
  for (auto [name, value] : {std::pair<StringRef, Value>{"w1", w1},
                             {"wg", wg}, {"w2", w2}, {"b1", b1}, {"b2", b2}})
    if (value && failed(verifyElementType(op, name, value, modelType,
                                          "expert weights use the model dtype")))
      return failure();
  return success();
}

/// Capacity options of SEMANTICS.md 3.2 and section 4.
static LogicalResult verifyCapacityOptions(Operation *op,
                                           std::optional<double> factor,
                                           std::optional<int64_t> explicitCap,
                                           int64_t minCapacity) {
  if (factor && !(*factor > 0.0))
    return op->emitOpError("expected capacity_factor > 0, but found ")
           << *factor;
  if (factor && explicitCap)
    return op->emitOpError("expert_capacity overrides capacity_factor: give "
                           "one of them, not both");
  if (explicitCap && *explicitCap < 1)
    return op->emitOpError("expected expert_capacity >= 1, but found ")
           << *explicitCap;
  if (minCapacity < 0)
    return op->emitOpError("expected min_capacity >= 0, but found ")
           << minCapacity;
  return success();
}

static std::optional<double> toDouble(std::optional<APFloat> value) {
  if (!value)
    return std::nullopt;
  return value->convertToDouble();
}

static LogicalResult verifyTopK(Operation *op, int64_t topK,
                                int64_t numExperts) {
  if (topK < 1 ||
      (!ShapedType::isDynamic(numExperts) && topK > numExperts))
    return op->emitOpError("expected 1 <= top_k <= E = ")
           << numExperts << ", but found top_k = " << topK;
  return success();
}

static LogicalResult verifyNonNegative(Operation *op, StringRef name,
                                       double value) {
  if (value >= 0.0)
    return success();
  return op->emitOpError("expected ") << name << " >= 0, but found " << value;
}

static LogicalResult verifyJitter(Operation *op, double jitter) {
  if (jitter >= 0.0 && jitter < 1.0)
    return success();
  return op->emitOpError("expected 0 <= jitter < 1, but found ") << jitter;
}

/// The router of token- and expert-choice layers: `Wr [D, E]`, `br [E]`.
static LogicalResult verifyRouter(Operation *op, int64_t dModel, Value weight,
                                  Value bias) {
  if (failed(verifyShape(op, "router_weight", weight, {dModel, kAny},
                         "[D, E]")))
    return failure();
  if (bias && failed(verifyShape(op, "router_bias", bias,
                                 {dimOf(weight, 1)}, "[E]")))
    return failure();
  return success();
}

static LogicalResult verifySameType(Operation *op, StringRef resultName,
                                    Value result, StringRef operandName,
                                    Value operand) {
  if (result.getType() == operand.getType())
    return success();
  return op->emitOpError("expected ")
         << resultName << " to have the type of " << operandName << ", "
         << operand.getType() << ", but found " << result.getType();
}

//===----------------------------------------------------------------------===//
// Layer level
//===----------------------------------------------------------------------===//

/// A layer's weights have static shapes without empty dimensions (E, D and F
/// fold into capacities, tiles and packed layouts), and its input no empty
/// static dimension: a dynamic E once folded the capacity to 0, and an empty
/// reduction crashed the tiling.
static LogicalResult
verifyLayerShapes(Operation *op, Value x,
                  ArrayRef<std::pair<StringRef, Value>> weights) {
  for (auto [name, value] : weights) {
    if (!value)
      continue;
    auto type = cast<RankedTensorType>(value.getType());
    if (!type.hasStaticShape())
      return op->emitOpError("expected ")
             << name << " to have a static shape, but found " << type;
    if (llvm::is_contained(type.getShape(), 0))
      return op->emitOpError("expected ")
             << name << " to have no empty dimension, but found " << type;
  }
  if (llvm::is_contained(shapeOf(x), 0))
    return op->emitOpError("expected x to have no empty dimension, but found ")
           << x.getType();
  if (ShapedType::isDynamic(shapeOf(x).back()))
    return op->emitOpError("expected x to have a static model width D, but "
                           "found ")
           << x.getType();
  return success();
}

/// What token- and expert-choice layers share: the router, the expert
/// weights (E from the router), the z-loss weight, jitter and the results.
template <typename RoutedLayerOp>
static LogicalResult verifyRoutedLayer(RoutedLayerOp op) {
  Operation *operation = op.getOperation();
  if (failed(verifyLayerShapes(operation, op.getX(),
                               {{"router_weight", op.getRouterWeight()},
                                {"router_bias", op.getRouterBias()},
                                {"w1", op.getW1()},
                                {"wg", op.getWg()},
                                {"w2", op.getW2()},
                                {"b1", op.getB1()},
                                {"b2", op.getB2()}})))
    return failure();
  int64_t d = dimOf(op.getX(), 2);
  if (failed(verifyRouter(operation, d, op.getRouterWeight(),
                          op.getRouterBias())))
    return failure();
  int64_t e = dimOf(op.getRouterWeight(), 1);
  if (failed(verifyExpertWeights(operation, elementTypeOf(op.getX()), d, e,
                                 "router_weight", op.getW1(), op.getWg(),
                                 op.getW2(), op.getB1(), op.getB2(),
                                 op.getActivation(), /*hasExpertDim=*/true)) ||
      failed(verifyNonNegative(operation, "z_loss_weight",
                               op.getZLossWeight().convertToDouble())) ||
      failed(verifyJitter(operation, op.getJitter().convertToDouble())) ||
      failed(verifySameType(operation, "y", op.getY(), "x", op.getX())) ||
      failed(verifyShape(operation, "expert_counts", op.getExpertCounts(), {e},
                         "[E]")))
    return failure();
  return success();
}

LogicalResult TokenChoiceOp::verify() {
  Operation *op = getOperation();
  if (failed(verifyRoutedLayer(*this)) ||
      failed(verifyTopK(op, getTopK(), dimOf(getRouterWeight(), 1))) ||
      failed(verifyCapacityOptions(op, toDouble(getCapacityFactor()),
                                   getExpertCapacity(), getMinCapacity())))
    return failure();
  if (getRerouteDropped() && getTopK() != 1)
    return emitOpError("reroute_dropped is defined for top_k = 1 only, but "
                       "top_k = ")
           << getTopK();
  return verifyNonNegative(op, "aux_loss_weight",
                           getAuxLossWeight().convertToDouble());
}

LogicalResult ExpertChoiceOp::verify() {
  // The factor has a default here; an explicit capacity overrides it.
  std::optional<double> factor;
  if (!getExpertCapacity())
    factor = getCapacityFactor().convertToDouble();
  if (failed(verifyRoutedLayer(*this)))
    return failure();
  return verifyCapacityOptions(getOperation(), factor, getExpertCapacity(),
                               getMinCapacity());
}

LogicalResult SoftMoEOp::verify() {
  Operation *op = getOperation();
  int64_t d = dimOf(getX(), 2);
  int64_t slots = getSlotsPerExpert();
  if (slots < 1)
    return emitOpError("expected slots_per_expert >= 1, but found ") << slots;
  if (failed(verifyLayerShapes(op, getX(),
                               {{"phi", getPhi()},
                                {"w1", getW1()},
                                {"wg", getWg()},
                                {"w2", getW2()},
                                {"b1", getB1()},
                                {"b2", getB2()}})))
    return failure();
  if (failed(verifyExpertWeights(op, elementTypeOf(getX()), d, kAny, "",
                                 getW1(), getWg(), getW2(), getB1(), getB2(),
                                 getActivation(), /*hasExpertDim=*/true)))
    return failure();
  int64_t e = dimOf(getW1(), 0);
  int64_t totalSlots = kAny;
  if (!ShapedType::isDynamic(e) && llvm::MulOverflow(e, slots, totalSlots))
    return emitOpError("expected E * slots_per_expert to fit in 64 bits, but "
                       "E = ")
           << e << " and slots_per_expert = " << slots;
  if (failed(verifyShape(op, "phi", getPhi(), {d, totalSlots},
                         "[D, E * slots_per_expert]")) ||
      failed(verifyElementType(op, "phi", getPhi(), elementTypeOf(getX()),
                               "phi uses the model dtype")) ||
      failed(verifyNonNegative(op, "noise_std",
                               getNoiseStd().convertToDouble())) ||
      failed(verifySameType(op, "y", getY(), "x", getX())))
    return failure();
  return success();
}

LogicalResult FFNOp::verify() {
  if (failed(verifyLayerShapes(getOperation(), getX(),
                               {{"w1", getW1()},
                                {"wg", getWg()},
                                {"w2", getW2()},
                                {"b1", getB1()},
                                {"b2", getB2()}})))
    return failure();
  if (failed(verifyExpertWeights(getOperation(), elementTypeOf(getX()),
                                 dimOf(getX(), 2), kAny, "", getW1(), getWg(),
                                 getW2(), getB1(), getB2(), getActivation(),
                                 /*hasExpertDim=*/false)))
    return failure();
  return verifySameType(getOperation(), "y", getY(), "x", getX());
}

LogicalResult NormOp::verify() {
  Operation *op = getOperation();
  int64_t d = dimOf(getX(), 2);
  if (failed(verifyShape(op, "weight", getWeight(), {d}, "[D]")) ||
      failed(verifyElementType(op, "weight", getWeight(), elementTypeOf(getX()),
                               "norm weights use the model dtype")))
    return failure();
  if (getKind() == NormKind::layer && !getBias())
    return emitOpError("layer norm needs a bias operand, but none was given");
  if (getKind() == NormKind::rms && getBias())
    return emitOpError("rms norm takes no bias, but one was given");
  if (getBias() &&
      (failed(verifyShape(op, "bias", getBias(), {d}, "[D]")) ||
       failed(verifyElementType(op, "bias", getBias(), elementTypeOf(getX()),
                                "norm weights use the model dtype"))))
    return failure();
  return verifySameType(op, "y", getY(), "x", getX());
}

//===----------------------------------------------------------------------===//
// Routing level
//===----------------------------------------------------------------------===//

LogicalResult RouterLogitsOp::verify() {
  Operation *op = getOperation();
  if (failed(verifyRouter(op, dimOf(getX(), 2), getWeight(), getBias())))
    return failure();
  if (failed(verifyJitter(op, getJitter().convertToDouble())))
    return failure();
  return verifyShape(op, "logits", getLogits(),
                     {dimOf(getX(), 0), dimOf(getX(), 1), dimOf(getWeight(), 1)},
                     "[NG, G, E]");
}

int64_t ExpertCapacityOp::computeCapacity(int64_t groupSize,
                                          int64_t numExperts) {
  int64_t capacity = groupSize;
  if (std::optional<int64_t> explicitCap = getExpertCapacity()) {
    capacity = *explicitCap;
  } else if (std::optional<double> factor = toDouble(getCapacityFactor())) {
    // Exact for the small integers involved; ceil of k * G * cf / E.
    double rows = static_cast<double>(getTopK()) *
                  static_cast<double>(groupSize) * *factor /
                  static_cast<double>(numExperts);
    // Capped at G before the conversion, which a huge factor would overflow.
    rows = std::min(rows, static_cast<double>(groupSize));
    capacity = std::max<int64_t>(getCapacityFloor(),
                                 static_cast<int64_t>(std::ceil(rows)));
  }
  return std::min(capacity, groupSize);
}

int64_t ExpertCapacityOp::getCapacityFloor() {
  std::optional<double> factor = toDouble(getCapacityFactor());
  return std::max<int64_t>(getMinCapacity(), factor && *factor > 0 ? 1 : 0);
}

LogicalResult ExpertCapacityOp::verify() {
  int64_t e = dimOf(getProbs(), 2);
  if (ShapedType::isDynamic(e))
    return emitOpError("expected a static number of experts E, but the "
                       "probabilities have a dynamic last dimension");
  if (failed(verifyTopK(getOperation(), getTopK(), e)))
    return failure();
  return verifyCapacityOptions(getOperation(), toDouble(getCapacityFactor()),
                               getExpertCapacity(), getMinCapacity());
}

OpFoldResult ExpertCapacityOp::fold(FoldAdaptor) {
  int64_t g = dimOf(getProbs(), 1);
  if (ShapedType::isDynamic(g))
    return {};
  return IntegerAttr::get(IndexType::get(getContext()),
                          computeCapacity(g, dimOf(getProbs(), 2)));
}

/// The routing tensors `[NG, G, k]` of token-choice routing.
static LogicalResult verifyRoutingShape(Operation *op, StringRef name,
                                        Value value, Value reference) {
  return verifyShape(op, name, value, shapeOf(reference), "[NG, G, k]");
}

/// At the routing level only the groups NG, a group's tokens G and the
/// capacity C follow the batch; the number of choices, of experts and the
/// model width are static, as the lowering needs them. `symbol` is dimension
/// `dim` of `value`.
static LogicalResult verifyStaticDim(Operation *op, StringRef name, Value value,
                                     unsigned dim, StringRef symbol) {
  if (!ShapedType::isDynamic(dimOf(value, dim)))
    return success();
  return op->emitOpError("expected a static ")
         << symbol << " (dimension " << dim << " of " << name << "), but found "
         << value.getType();
}

/// When `capacity` is a constant, it must agree with `staticCapacity`.
static LogicalResult verifyCapacityDim(Operation *op, Value capacity,
                                       int64_t staticCapacity) {
  APInt value;
  if (ShapedType::isDynamic(staticCapacity) ||
      !matchPattern(capacity, m_ConstantInt(&value)) ||
      value.getSExtValue() == staticCapacity)
    return success();
  return op->emitOpError("expected the capacity dimension C to be ")
         << value.getSExtValue() << " (the capacity operand), but found "
         << staticCapacity;
}

/// Token-choice routing of [NG, G] tokens over `numExperts`: top_k fits the
/// experts, rerouting is asked for with top-1 only, and experts, gates,
/// positions and kept are [NG, G, top_k].
static LogicalResult verifyTokenChoice(Operation *op, int64_t topK,
                                       bool rerouteDropped, int64_t numExperts,
                                       int64_t numGroups, int64_t groupSize,
                                       Value experts, Value gates,
                                       Value positions, Value kept) {
  if (failed(verifyTopK(op, topK, numExperts)))
    return failure();
  if (rerouteDropped && topK != 1)
    return op->emitOpError("reroute_dropped is defined for top_k = 1 only, "
                           "but top_k = ")
           << topK;
  SmallVector<int64_t> shape = {numGroups, groupSize, topK};
  for (auto [name, value] : {std::pair<StringRef, Value>{"experts", experts},
                             {"gates", gates},
                             {"positions", positions},
                             {"kept", kept}})
    if (failed(verifyShape(op, name, value, shape, "[NG, G, top_k]")))
      return failure();
  return success();
}

LogicalResult TokenChoiceRouteOp::verify() {
  Value probs = getProbs();
  return verifyTokenChoice(getOperation(), getTopK(), getRerouteDropped(),
                           dimOf(probs, 2), dimOf(probs, 0), dimOf(probs, 1),
                           getExperts(), getGates(), getPositions(), getKept());
}

LogicalResult TokenChoiceRouterOp::verify() {
  Operation *op = getOperation();
  Value x = getX();
  if (failed(verifyRouter(op, dimOf(x, 2), getWeight(), getBias())))
    return failure();
  int64_t e = dimOf(getWeight(), 1);
  if (failed(verifyTokenChoice(op, getTopK(), getRerouteDropped(), e,
                               dimOf(x, 0), dimOf(x, 1), getExperts(),
                               getGates(), getPositions(), getKept())))
    return failure();
  for (auto [name, value] : {std::pair<StringRef, Value>{"logits", getLogits()},
                             {"probs", getProbs()}})
    if (failed(verifyShape(op, name, value, {dimOf(x, 0), dimOf(x, 1), e},
                           "[NG, G, E]")))
      return failure();
  return success();
}

LogicalResult DispatchOp::verify() {
  Operation *op = getOperation();
  if (failed(verifyStaticDim(op, "buffers", getBuffers(), 0,
                             "number of experts E")))
    return failure();
  if (failed(verifyRoutingShape(op, "positions", getPositions(), getExperts())) ||
      failed(verifyRoutingShape(op, "kept", getKept(), getExperts())) ||
      failed(verifyShape(op, "experts", getExperts(),
                         {dimOf(getX(), 0), dimOf(getX(), 1), kAny},
                         "[NG, G, k]")) ||
      failed(verifyShape(op, "buffers", getBuffers(),
                         {kAny, dimOf(getX(), 0), kAny, dimOf(getX(), 2)},
                         "[E, NG, C, D]")) ||
      failed(verifyElementType(op, "buffers", getBuffers(),
                               elementTypeOf(getX()), "the dtype of x")))
    return failure();
  return verifyCapacityDim(op, getCapacity(), dimOf(getBuffers(), 2));
}

LogicalResult CombineOp::verify() {
  Operation *op = getOperation();
  if (failed(verifyStaticDim(op, "experts", getExperts(), 2,
                             "number of choices k")) ||
      failed(verifyStaticDim(op, "expert_outputs", getExpertOutputs(), 0,
                             "number of experts E")))
    return failure();
  Value out = getExpertOutputs();
  if (failed(verifyRoutingShape(op, "positions", getPositions(), getExperts())) ||
      failed(verifyRoutingShape(op, "kept", getKept(), getExperts())) ||
      failed(verifyRoutingShape(op, "gates", getGates(), getExperts())) ||
      failed(verifyShape(op, "experts", getExperts(),
                         {dimOf(out, 1), kAny, kAny}, "[NG, G, k]")) ||
      failed(verifyShape(op, "y", getY(),
                         {dimOf(out, 1), dimOf(getExperts(), 1), dimOf(out, 3)},
                         "[NG, G, D]")) ||
      failed(verifyElementType(op, "y", getY(), elementTypeOf(out),
                               "the dtype of the expert outputs")))
    return failure();
  return success();
}

LogicalResult DispatchGroupedOp::verify() {
  Operation *op = getOperation();
  Value x = getX();
  if (failed(verifyRoutingShape(op, "kept", getKept(), getExperts())) ||
      failed(verifyRoutingShape(op, "slots", getSlots(), getExperts())) ||
      failed(verifyShape(op, "experts", getExperts(),
                         {dimOf(x, 0), dimOf(x, 1), kAny}, "[NG, G, k]")))
    return failure();
  ArrayRef<int64_t> routing = shapeOf(getExperts());
  int64_t assignments = ShapedType::isDynamicShape(routing)
                            ? kAny
                            : routing[0] * routing[1] * routing[2];
  if (failed(verifyShape(op, "rows", getRows(), {assignments, dimOf(x, 2)},
                         "[NG * G * k, D]")) ||
      failed(verifyElementType(op, "rows", getRows(), elementTypeOf(x),
                               "the dtype of x")))
    return failure();
  if (ShapedType::isDynamic(dimOf(getOffsets(), 0)) ||
      dimOf(getOffsets(), 0) < 2)
    return emitOpError("expected offsets of static shape [E + 1] with E >= 1, "
                       "but found ")
           << getOffsets().getType();
  return success();
}

LogicalResult CombineGroupedOp::verify() {
  Operation *op = getOperation();
  if (failed(
          verifyStaticDim(op, "slots", getSlots(), 2, "number of choices k")))
    return failure();
  Value out = getExpertOutputs();
  if (failed(verifyRoutingShape(op, "kept", getKept(), getSlots())) ||
      failed(verifyRoutingShape(op, "gates", getGates(), getSlots())))
    return failure();
  ArrayRef<int64_t> routing = shapeOf(getSlots());
  int64_t assignments = ShapedType::isDynamicShape(routing)
                            ? kAny
                            : routing[0] * routing[1] * routing[2];
  if (failed(verifyShape(op, "expert_outputs", out, {assignments, kAny},
                         "[NG * G * k, D]")) ||
      failed(verifyShape(op, "y", getY(),
                         {routing[0], routing[1], dimOf(out, 1)}, "[NG, G, D]")) ||
      failed(verifyElementType(op, "y", getY(), elementTypeOf(out),
                               "the dtype of the expert outputs")))
    return failure();
  return success();
}

LogicalResult ExpertsOp::verify() {
  Operation *op = getOperation();
  Value in = getInput();
  if (failed(verifyExpertWeights(op, elementTypeOf(in), dimOf(in, 2),
                                 dimOf(in, 0), "the input", getW1(), getWg(),
                                 getW2(), getB1(), getB2(), getActivation(),
                                 /*hasExpertDim=*/true)))
    return failure();
  return verifySameType(op, "output", getOutput(), "input", in);
}

LogicalResult GroupedExpertsOp::verify() {
  Operation *op = getOperation();
  Value rows = getRows();
  int64_t offsets = dimOf(getOffsets(), 0);
  int64_t e = ShapedType::isDynamic(offsets) ? kAny : offsets - 1;
  if (failed(verifyExpertWeights(op, elementTypeOf(rows), dimOf(rows, 1), e,
                                 "offsets, which has E + 1 entries", getW1(),
                                 getWg(), getW2(), getB1(), getB2(),
                                 getActivation(), /*hasExpertDim=*/true)))
    return failure();
  return verifySameType(op, "output", getOutput(), "rows", rows);
}

LogicalResult RoutedExpertsOp::verify() {
  Operation *op = getOperation();
  if (failed(verifyStaticDim(op, "experts", getExperts(), 2,
                             "number of choices k")))
    return failure();
  Value x = getX();
  int64_t e = dimOf(getW1(), 0);
  if (failed(verifyRoutingShape(op, "kept", getKept(), getExperts())) ||
      failed(verifyRoutingShape(op, "gates", getGates(), getExperts())) ||
      failed(verifyShape(op, "experts", getExperts(),
                         {dimOf(x, 0), dimOf(x, 1), kAny}, "[NG, G, k]")) ||
      failed(verifyExpertWeights(op, elementTypeOf(x), dimOf(x, 2), e, "w1",
                                 getW1(), getWg(), getW2(), getB1(), getB2(),
                                 getActivation(), /*hasExpertDim=*/true)))
    return failure();
  return verifySameType(op, "y", getY(), "x", x);
}

LogicalResult ChosenExpertsOp::verify() {
  Operation *op = getOperation();
  if (failed(verifyStaticDim(op, "w1", getW1(), 0, "number of experts E")))
    return failure();
  Value x = getX(), tokens = getTokens();
  if (failed(verifyShape(op, "tokens", tokens,
                         {dimOf(x, 0), dimOf(getW1(), 0), kAny},
                         "[NG, E, C]")) ||
      failed(verifyShape(op, "gates", getGates(), shapeOf(tokens),
                         "[NG, E, C]")) ||
      failed(verifyShape(op, "probs", getProbs(),
                         {dimOf(x, 0), dimOf(x, 1), dimOf(getW1(), 0)},
                         "[NG, G, E]")) ||
      failed(verifyExpertWeights(op, elementTypeOf(x), dimOf(x, 2),
                                 dimOf(getW1(), 0), "w1", getW1(), getWg(),
                                 getW2(), getB1(), getB2(), getActivation(),
                                 /*hasExpertDim=*/true)))
    return failure();
  return verifySameType(op, "y", getY(), "x", x);
}

LogicalResult ExpertChoiceRouteOp::verify() {
  Operation *op = getOperation();
  Value probs = getProbs();
  SmallVector<int64_t> shape = {dimOf(probs, 0), dimOf(probs, 2), kAny};
  if (failed(verifyShape(op, "tokens", getTokens(), shape, "[NG, E, C]")) ||
      failed(verifyShape(op, "gates", getGates(), shapeOf(getTokens()),
                         "[NG, E, C]")))
    return failure();
  // An expert picks C of the group's G tokens (SEMANTICS.md section 4 caps
  // C at G); the lowering reads C sorted tokens of G.
  int64_t g = dimOf(probs, 1), c = dimOf(getTokens(), 2);
  APInt constant;
  if (ShapedType::isDynamic(c) &&
      matchPattern(getCapacity(), m_ConstantInt(&constant)))
    c = constant.getSExtValue();
  if (!ShapedType::isDynamic(g) && !ShapedType::isDynamic(c) && c > g)
    return emitOpError("expected the capacity C = ")
           << c << " to be at most the group size G = " << g;
  return verifyCapacityDim(op, getCapacity(), dimOf(getTokens(), 2));
}

LogicalResult ExpertChoiceDispatchOp::verify() {
  Operation *op = getOperation();
  Value x = getX(), tokens = getTokens();
  if (failed(verifyShape(op, "tokens", tokens, {dimOf(x, 0), kAny, kAny},
                         "[NG, E, C]")) ||
      failed(verifyShape(op, "buffers", getBuffers(),
                         {dimOf(tokens, 1), dimOf(x, 0), dimOf(tokens, 2),
                          dimOf(x, 2)},
                         "[E, NG, C, D]")) ||
      failed(verifyElementType(op, "buffers", getBuffers(), elementTypeOf(x),
                               "the dtype of x")))
    return failure();
  return success();
}

LogicalResult ExpertChoiceCombineOp::verify() {
  Operation *op = getOperation();
  if (failed(verifyStaticDim(op, "expert_outputs", getExpertOutputs(), 0,
                             "number of experts E")))
    return failure();
  Value out = getExpertOutputs(), tokens = getTokens();
  if (failed(verifyShape(op, "tokens", tokens,
                         {dimOf(out, 1), dimOf(out, 0), dimOf(out, 2)},
                         "[NG, E, C]")) ||
      failed(verifyShape(op, "gates", getGates(), shapeOf(tokens),
                         "[NG, E, C]")) ||
      failed(verifyShape(op, "probs", getProbs(),
                         {dimOf(out, 1), kAny, dimOf(out, 0)}, "[NG, G, E]")) ||
      failed(verifyShape(op, "y", getY(),
                         {dimOf(out, 1), dimOf(getProbs(), 1), dimOf(out, 3)},
                         "[NG, G, D]")) ||
      failed(verifyElementType(op, "y", getY(), elementTypeOf(out),
                               "the dtype of the expert outputs")))
    return failure();
  return success();
}

LogicalResult SoftLogitsOp::verify() {
  Operation *op = getOperation();
  Value x = getX();
  if (failed(verifyShape(op, "phi", getPhi(), {dimOf(x, 2), kAny}, "[D, S]")) ||
      failed(verifyElementType(op, "phi", getPhi(), elementTypeOf(x),
                               "phi uses the model dtype")) ||
      failed(verifyNonNegative(op, "noise_std",
                               getNoiseStd().convertToDouble())))
    return failure();
  return verifyShape(op, "logits", getLogits(),
                     {dimOf(x, 0), dimOf(x, 1), dimOf(getPhi(), 1)},
                     "[NG, m, S]");
}

/// Checks `slots [n, NG, p, D]` against `logits [NG, m, S]` with `n * p = S`.
/// The slot count S of Soft MoE `logits [NG, m, S]` is static and a multiple
/// of slots_per_expert.
static LogicalResult verifySlotCount(Operation *op, Value logits,
                                     int64_t slotsPerExpert) {
  int64_t s = dimOf(logits, 2);
  if (ShapedType::isDynamic(s) || s % slotsPerExpert != 0)
    return op->emitOpError("expected a static number of slots S divisible by "
                           "slots_per_expert = ")
           << slotsPerExpert << ", but found S = "
           << (ShapedType::isDynamic(s) ? std::string("?")
                                        : std::to_string(s));
  return success();
}

static LogicalResult verifySlotLayout(Operation *op, StringRef name,
                                      Value slots, Value logits,
                                      int64_t slotsPerExpert, int64_t dModel) {
  if (failed(verifySlotCount(op, logits, slotsPerExpert)))
    return failure();
  int64_t s = dimOf(logits, 2);
  return verifyShape(op, name, slots,
                     {s / slotsPerExpert, dimOf(logits, 0), slotsPerExpert,
                      dModel},
                     "[S / slots_per_expert, NG, slots_per_expert, D]");
}

LogicalResult SoftDispatchOp::verify() {
  Operation *op = getOperation();
  Value x = getX();
  if (getSlotsPerExpert() < 1)
    return emitOpError("expected slots_per_expert >= 1, but found ")
           << getSlotsPerExpert();
  if (failed(verifyShape(op, "logits", getLogits(),
                         {dimOf(x, 0), dimOf(x, 1), kAny}, "[NG, m, S]")) ||
      failed(verifySlotLayout(op, "slots", getSlots(), getLogits(),
                              getSlotsPerExpert(), dimOf(x, 2))) ||
      failed(verifyElementType(op, "slots", getSlots(), elementTypeOf(x),
                               "the dtype of x")))
    return failure();
  return success();
}

LogicalResult SoftCombineOp::verify() {
  Operation *op = getOperation();
  Value slots = getSlotOutputs();
  int64_t p = dimOf(slots, 2);
  if (ShapedType::isDynamic(p) || p < 1)
    return emitOpError("expected a static slots-per-expert dimension >= 1 in "
                       "slot_outputs, but found ")
           << slots.getType();
  if (failed(verifySlotLayout(op, "slot_outputs", slots, getLogits(), p,
                              dimOf(slots, 3))) ||
      failed(verifyShape(op, "y", getY(),
                         {dimOf(getLogits(), 0), dimOf(getLogits(), 1),
                          dimOf(slots, 3)},
                         "[NG, m, D]")) ||
      failed(verifyElementType(op, "y", getY(), elementTypeOf(slots),
                               "the dtype of the slot outputs")))
    return failure();
  return success();
}

LogicalResult SoftExpertsOp::verify() {
  Operation *op = getOperation();
  if (failed(verifyStaticDim(op, "x", getX(), 2, "model width D")))
    return failure();
  Value x = getX(), logits = getLogits();
  int64_t p = getSlotsPerExpert();
  if (p < 1)
    return emitOpError("expected slots_per_expert >= 1, but found ") << p;
  if (failed(verifySlotCount(op, logits, p)) ||
      failed(verifyShape(op, "logits", logits,
                         {dimOf(x, 0), dimOf(x, 1), kAny}, "[NG, m, S]")) ||
      failed(verifyExpertWeights(op, elementTypeOf(x), dimOf(x, 2),
                                 dimOf(logits, 2) / p, "S / slots_per_expert",
                                 getW1(), getWg(), getW2(), getB1(), getB2(),
                                 getActivation(), /*hasExpertDim=*/true)))
    return failure();
  return verifySameType(op, "y", getY(), "x", x);
}

LogicalResult LoadBalancingLossOp::verify() {
  if (ShapedType::isDynamic(dimOf(getProbs(), 2)))
    return emitOpError("expected probs with a static number of experts E, "
                       "but found ")
           << getProbs().getType();
  if (failed(verifyTopK(getOperation(), getTopK(), dimOf(getProbs(), 2))))
    return failure();
  return verifyNonNegative(getOperation(), "weight",
                           getWeight().convertToDouble());
}

LogicalResult RoutingStatsOp::verify() {
  Operation *op = getOperation();
  if (failed(verifyRoutingShape(op, "kept", getKept(), getExperts())))
    return failure();
  if (ShapedType::isDynamic(dimOf(getExpertCounts(), 0)))
    return emitOpError("expected expert_counts of static shape [E], but "
                       "found ")
           << getExpertCounts().getType();
  return success();
}

LogicalResult ExpertChoiceStatsOp::verify() {
  Operation *op = getOperation();
  if (failed(
          verifyStaticDim(op, "probs", getProbs(), 2, "number of experts E")) ||
      failed(verifyStaticDim(op, "expert_counts", getExpertCounts(), 0,
                             "number of experts E")))
    return failure();
  Value probs = getProbs();
  if (failed(verifyShape(op, "tokens", getTokens(),
                         {dimOf(probs, 0), dimOf(probs, 2), kAny},
                         "[NG, E, C]")) ||
      failed(verifyShape(op, "expert_counts", getExpertCounts(),
                         {dimOf(probs, 2)}, "[E]")))
    return failure();
  return success();
}

#define GET_OP_CLASSES
#include "switchyard/Dialect/MoE/IR/MoEOps.cpp.inc"
