//===- Utils.cpp - Builders shared by the moe-to-linalg lowerings ---------===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//

#include "Utils.h"

#include "mlir/Dialect/Math/IR/Math.h"

#include <cmath>

using namespace mlir;

namespace switchyard::lowering {

SmallVector<Value> buildLoop(OpBuilder &b, Location loc, Value lb, Value ub,
                             ValueRange inits, LoopBody body) {
  Value step = indexConst(b, loc, 1);
  auto loop = scf::ForOp::create(
      b, loc, lb, ub, step, inits,
      [&](OpBuilder &nb, Location nloc, Value iv, ValueRange args) {
        SmallVector<Value> results = body(nb, nloc, iv, args);
        scf::YieldOp::create(nb, nloc, results);
      });
  return SmallVector<Value>(loop.getResults());
}

SmallVector<Value> buildIf(OpBuilder &b, Location loc, Value cond,
                           BranchBody thenBody, BranchBody elseBody) {
  auto ifOp = scf::IfOp::create(
      b, loc, cond,
      [&](OpBuilder &nb, Location nloc) {
        scf::YieldOp::create(nb, nloc, thenBody(nb, nloc));
      },
      [&](OpBuilder &nb, Location nloc) {
        scf::YieldOp::create(nb, nloc, elseBody(nb, nloc));
      });
  return SmallVector<Value>(ifOp.getResults());
}

Value indexConst(OpBuilder &b, Location loc, int64_t v) {
  return arith::ConstantIndexOp::create(b, loc, v);
}

Value i64Const(OpBuilder &b, Location loc, int64_t v) {
  return arith::ConstantIntOp::create(b, loc, b.getI64Type(), v);
}

Value floatConst(OpBuilder &b, Location loc, Type type, double v) {
  return arith::ConstantOp::create(b, loc, type, b.getFloatAttr(type, v));
}

Value convertScalar(OpBuilder &b, Location loc, Value v, Type to) {
  Type from = v.getType();
  if (from == to)
    return v;
  if (isa<FloatType>(from) && isa<FloatType>(to)) {
    if (from.getIntOrFloatBitWidth() < to.getIntOrFloatBitWidth())
      return arith::ExtFOp::create(b, loc, to, v);
    return arith::TruncFOp::create(b, loc, to, v);
  }
  if (from.isIndex() || to.isIndex())
    return arith::IndexCastOp::create(b, loc, to, v);
  if (isa<IntegerType>(from) && isa<FloatType>(to))
    return arith::SIToFPOp::create(b, loc, to, v);
  llvm_unreachable("unsupported scalar conversion");
}

Value filledTensor(OpBuilder &b, Location loc, ArrayRef<OpFoldResult> sizes,
                   Type elementType, Value value) {
  Value empty = tensor::EmptyOp::create(b, loc, sizes, elementType);
  return linalg::FillOp::create(b, loc, value, empty).getResult(0);
}

Value zeroTensor(OpBuilder &b, Location loc, ArrayRef<OpFoldResult> sizes,
                 Type elementType) {
  Value zero = arith::ConstantOp::create(b, loc, elementType,
                                         b.getZeroAttr(elementType));
  return filledTensor(b, loc, sizes, elementType, zero);
}

SmallVector<OpFoldResult> sizesOf(OpBuilder &b, Location loc, Value tensor) {
  return tensor::getMixedSizes(b, loc, tensor);
}

Value dimOf(OpBuilder &b, Location loc, Value tensor, int64_t dim) {
  return getValueOrCreateConstantIndexOp(
      b, loc, tensor::getMixedSize(b, loc, tensor, dim));
}

Value extract(OpBuilder &b, Location loc, Value tensor, ValueRange indices) {
  return tensor::ExtractOp::create(b, loc, tensor, indices);
}

Value insert(OpBuilder &b, Location loc, Value scalar, Value tensor,
             ValueRange indices) {
  return tensor::InsertOp::create(b, loc, scalar, tensor, indices);
}

Value selectOrZero(OpBuilder &b, Location loc, Value valid, Value v) {
  Type type = v.getType();
  return arith::SelectOp::create(
      b, loc, valid, v,
      arith::ConstantOp::create(b, loc, type, b.getZeroAttr(type)));
}

Value isNaN(OpBuilder &b, Location loc, Value v) {
  return arith::CmpFOp::create(b, loc, arith::CmpFPredicate::UNO, v, v);
}

Type elementType(Value tensor) {
  return cast<ShapedType>(tensor.getType()).getElementType();
}

Value applyActivation(OpBuilder &b, Location loc, moe::Activation activation,
                      Value h, Value gate) {
  Type f32 = h.getType();
  auto c = [&](double v) { return floatConst(b, loc, f32, v); };
  auto silu = [&](Value v) {
    // v * sigmoid(v) = v / (1 + exp(-v))
    Value e = math::ExpOp::create(b, loc, arith::NegFOp::create(b, loc, v));
    return arith::DivFOp::create(b, loc, v,
                                 arith::AddFOp::create(b, loc, c(1.0), e))
        .getResult();
  };
  auto geluErf = [&](Value v) {
    // 0.5 v (1 + erf(v / sqrt 2))
    Value scaled = arith::MulFOp::create(b, loc, v, c(M_SQRT1_2));
    Value erf = math::ErfOp::create(b, loc, scaled);
    Value onePlus = arith::AddFOp::create(b, loc, c(1.0), erf);
    return arith::MulFOp::create(
               b, loc, arith::MulFOp::create(b, loc, c(0.5), v), onePlus)
        .getResult();
  };
  switch (activation) {
  case moe::Activation::relu:
    return arith::MaximumFOp::create(b, loc, h, c(0.0));
  case moe::Activation::gelu:
    return geluErf(h);
  case moe::Activation::gelu_tanh: {
    // 0.5 v (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3)))
    Value cube = arith::MulFOp::create(
        b, loc, h, arith::MulFOp::create(b, loc, h, h));
    Value inner = arith::AddFOp::create(
        b, loc, h, arith::MulFOp::create(b, loc, c(0.044715), cube));
    Value t = math::TanhOp::create(
        b, loc, arith::MulFOp::create(b, loc, c(std::sqrt(2.0 / M_PI)), inner));
    return arith::MulFOp::create(
        b, loc, arith::MulFOp::create(b, loc, c(0.5), h),
        arith::AddFOp::create(b, loc, c(1.0), t));
  }
  case moe::Activation::silu:
    return silu(h);
  case moe::Activation::swiglu:
    return arith::MulFOp::create(b, loc, silu(gate), h);
  case moe::Activation::geglu:
    return arith::MulFOp::create(b, loc, geluErf(gate), h);
  }
  llvm_unreachable("unknown activation");
}

SmallVector<utils::IteratorType> parallelIterators(unsigned n) {
  return SmallVector<utils::IteratorType>(n, utils::IteratorType::parallel);
}

Value buildGeneric(OpBuilder &b, Location loc, ValueRange inputs, Value output,
                   ArrayRef<AffineMap> maps,
                   ArrayRef<utils::IteratorType> iterators,
                   function_ref<void(OpBuilder &, Location, ValueRange)> body) {
  auto generic = linalg::GenericOp::create(b, loc, TypeRange{output.getType()},
                                           inputs, ValueRange{output}, maps,
                                           iterators, body);
  return generic.getResult(0);
}

Value reduce(OpBuilder &b, Location loc, ValueRange inputs,
             ArrayRef<OpFoldResult> outSizes, double init,
             ArrayRef<AffineMap> maps, ArrayRef<utils::IteratorType> iterators,
             function_ref<Value(OpBuilder &, Location, ValueRange, Value)> fn) {
  Type f32 = b.getF32Type();
  Value acc = filledTensor(b, loc, outSizes, f32, floatConst(b, loc, f32, init));
  return buildGeneric(b, loc, inputs, acc, maps, iterators,
                      [&](OpBuilder &b, Location loc, ValueRange args) {
                        linalg::YieldOp::create(
                            b, loc,
                            fn(b, loc, args.drop_back(), args.back()));
                      });
}

std::pair<Value, Value> softmaxStats(OpBuilder &b, Location loc, Value logits,
                                     unsigned reducedDim) {
  MLIRContext *ctx = b.getContext();
  auto d = [&](unsigned i) { return getAffineDimExpr(i, ctx); };
  SmallVector<OpFoldResult> sizes = sizesOf(b, loc, logits);
  // Iteration (g, kept, reduced) with the reduced dimension last.
  AffineMap in = reducedDim == 1 ? AffineMap::get(3, 0, {d(0), d(2), d(1)}, ctx)
                                 : AffineMap::getMultiDimIdentityMap(3, ctx);
  AffineMap out = AffineMap::get(3, 0, {d(0), d(1)}, ctx);
  SmallVector<OpFoldResult> outSizes = {sizes[0],
                                        sizes[reducedDim == 1 ? 2 : 1]};
  SmallVector<utils::IteratorType> iters = {utils::IteratorType::parallel,
                                            utils::IteratorType::parallel,
                                            utils::IteratorType::reduction};
  // maximumf propagates NaN: a row (column) with a NaN stays NaN.
  Value max = reduce(b, loc, logits, outSizes, -INFINITY, {in, out}, iters,
                     [](OpBuilder &b, Location loc, ValueRange v, Value acc) {
                       return arith::MaximumFOp::create(b, loc, v[0], acc)
                           .getResult();
                     });
  Value sum = reduce(b, loc, ValueRange{logits, max}, outSizes, 0.0,
                     {in, out, out}, iters,
                     [](OpBuilder &b, Location loc, ValueRange v, Value acc) {
                       Value e = math::ExpOp::create(
                           b, loc, arith::SubFOp::create(b, loc, v[0], v[1]));
                       return arith::AddFOp::create(b, loc, acc, e).getResult();
                     });
  return {max, sum};
}

Value softmaxWeight(OpBuilder &b, Location loc, Value l, Value max, Value sum) {
  Value e = math::ExpOp::create(b, loc, arith::SubFOp::create(b, loc, l, max));
  return arith::DivFOp::create(b, loc, e, sum);
}

} // namespace switchyard::lowering
