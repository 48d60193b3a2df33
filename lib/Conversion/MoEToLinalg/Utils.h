//===- Utils.h - Builders shared by the moe-to-linalg lowerings -*- C++ -*-===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//

#ifndef SWITCHYARD_LIB_CONVERSION_MOETOLINALG_UTILS_H
#define SWITCHYARD_LIB_CONVERSION_MOETOLINALG_UTILS_H

#include "switchyard/Conversion/MoEToLinalg/MoEToLinalg.h"
#include "switchyard/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"
#include "mlir/Transforms/DialectConversion.h"

namespace switchyard::lowering {

using LoopBody = llvm::function_ref<llvm::SmallVector<mlir::Value>(
    mlir::OpBuilder &, mlir::Location, mlir::Value, mlir::ValueRange)>;

/// `scf.for iv = lb to ub` carrying `inits`; `body` returns what to yield.
llvm::SmallVector<mlir::Value> buildLoop(mlir::OpBuilder &b, mlir::Location loc,
                                         mlir::Value lb, mlir::Value ub,
                                         mlir::ValueRange inits, LoopBody body);

/// `scf.if cond`; each branch returns what to yield (the same types).
using BranchBody = llvm::function_ref<llvm::SmallVector<mlir::Value>(
    mlir::OpBuilder &, mlir::Location)>;
llvm::SmallVector<mlir::Value> buildIf(mlir::OpBuilder &b, mlir::Location loc,
                                       mlir::Value cond, BranchBody thenBody,
                                       BranchBody elseBody);

mlir::Value indexConst(mlir::OpBuilder &b, mlir::Location loc, int64_t v);
mlir::Value i64Const(mlir::OpBuilder &b, mlir::Location loc, int64_t v);
mlir::Value floatConst(mlir::OpBuilder &b, mlir::Location loc, mlir::Type type,
                       double v);

/// Extends or truncates a float, or casts between index and integers.
mlir::Value convertScalar(mlir::OpBuilder &b, mlir::Location loc,
                          mlir::Value v, mlir::Type to);

/// A tensor of `sizes` filled with `value`.
mlir::Value filledTensor(mlir::OpBuilder &b, mlir::Location loc,
                         llvm::ArrayRef<mlir::OpFoldResult> sizes,
                         mlir::Type elementType, mlir::Value value);
mlir::Value zeroTensor(mlir::OpBuilder &b, mlir::Location loc,
                       llvm::ArrayRef<mlir::OpFoldResult> sizes,
                       mlir::Type elementType);

/// The mixed sizes of a ranked tensor value.
llvm::SmallVector<mlir::OpFoldResult> sizesOf(mlir::OpBuilder &b,
                                              mlir::Location loc,
                                              mlir::Value tensor);
mlir::Value dimOf(mlir::OpBuilder &b, mlir::Location loc, mlir::Value tensor,
                  int64_t dim);

/// `tensor.extract` / `tensor.insert` at index values.
mlir::Value extract(mlir::OpBuilder &b, mlir::Location loc, mlir::Value tensor,
                    mlir::ValueRange indices);
mlir::Value insert(mlir::OpBuilder &b, mlir::Location loc, mlir::Value scalar,
                   mlir::Value tensor, mlir::ValueRange indices);
/// `v` where `valid` holds, else a zero of its type (a read at an index
/// made safe to read, for a row that is not there).
mlir::Value selectOrZero(mlir::OpBuilder &b, mlir::Location loc,
                         mlir::Value valid, mlir::Value v);

/// True where `v` is NaN.
mlir::Value isNaN(mlir::OpBuilder &b, mlir::Location loc, mlir::Value v);

/// The element type of a tensor value.
mlir::Type elementType(mlir::Value tensor);

/// Applies the activation of SEMANTICS.md section 1 to f32 `h`; gated
/// activations multiply act(`gate`) by `h`.
mlir::Value applyActivation(mlir::OpBuilder &b, mlir::Location loc,
                            moe::Activation activation, mlir::Value h,
                            mlir::Value gate);

/// A `linalg.generic` with all-parallel iterators over `outputs` (identity
/// maps) and the given inputs and maps.
mlir::Value buildGeneric(
    mlir::OpBuilder &b, mlir::Location loc, mlir::ValueRange inputs,
    mlir::Value output, llvm::ArrayRef<mlir::AffineMap> maps,
    llvm::ArrayRef<mlir::utils::IteratorType> iterators,
    llvm::function_ref<void(mlir::OpBuilder &, mlir::Location,
                            mlir::ValueRange)>
        body);

/// A reduction `linalg.generic` into a fresh f32 tensor of `outSizes` filled
/// with `init`; `fn(inputs, acc)` gives the new accumulator.
mlir::Value
reduce(mlir::OpBuilder &b, mlir::Location loc, mlir::ValueRange inputs,
       llvm::ArrayRef<mlir::OpFoldResult> outSizes, double init,
       llvm::ArrayRef<mlir::AffineMap> maps,
       llvm::ArrayRef<mlir::utils::IteratorType> iterators,
       llvm::function_ref<mlir::Value(mlir::OpBuilder &, mlir::Location,
                                      mlir::ValueRange, mlir::Value)>
           fn);

/// The maximum and sum of exp(l - max) of rank-3 f32 `logits` over dimension
/// `reducedDim` (1 or 2), for a numerically stable softmax: two [NG, n]
/// tensors, n the remaining dimension.
std::pair<mlir::Value, mlir::Value> softmaxStats(mlir::OpBuilder &b,
                                                 mlir::Location loc,
                                                 mlir::Value logits,
                                                 unsigned reducedDim);

/// exp(l - max) / sum: one weight of a softmax from softmaxStats.
mlir::Value softmaxWeight(mlir::OpBuilder &b, mlir::Location loc, mlir::Value l,
                          mlir::Value max, mlir::Value sum);

/// Router logits `z = f32(x) . w (+ bias)` of x [NG, G, D]: [NG, G, E] f32
/// (SEMANTICS.md section 2).
mlir::Value routerLogits(mlir::OpBuilder &b, mlir::Location loc, mlir::Value x,
                         mlir::Value w, mlir::Value bias);

/// The softmax of router logits [NG, G, E] over the experts.
mlir::Value routerProbs(mlir::OpBuilder &b, mlir::Location loc, mlir::Value z);

/// Weights of one MLP application: rank 3 ([E, ...], batched over experts)
/// or rank 2 (one expert).
struct MLPWeights {
  mlir::Value w1, wg, w2, b1, b2;
  moe::Activation activation;
  /// How packed bf16 products run (convert-moe-to-linalg's options): see
  /// packsPairs and packsAmx.
  BF16Products bf16 = {};
};

/// The expert MLP of SEMANTICS.md section 1 over `input [.., M, D]`: f32
/// products, the hidden activation and the output in the model dtype.
mlir::Value buildMLP(mlir::OpBuilder &b, mlir::Location loc, mlir::Value input,
                     const MLPWeights &w);

/// The weights of an op with w1, wg, w2, b1, b2 operands (its adaptor).
template <typename AdaptorT>
MLPWeights mlpWeights(AdaptorT adaptor, moe::Activation activation,
                      BF16Products bf16 = {}) {
  return {adaptor.getW1(),
          adaptor.getWg(),
          adaptor.getW2(),
          adaptor.getB1(),
          adaptor.getB2(),
          activation,
          bf16};
}

/// A pattern that lowers an op with expert MLPs, under the pass's choice of
/// product layout.
template <typename OpTy>
struct ExpertMLPLowering : mlir::OpConversionPattern<OpTy> {
  ExpertMLPLowering(mlir::MLIRContext *ctx, BF16Products bf16)
      : mlir::OpConversionPattern<OpTy>(ctx), bf16(bf16) {}
  /// The weights of `adaptor`'s op, packed as the pass says.
  template <typename AdaptorT>
  MLPWeights weightsOf(AdaptorT adaptor, moe::Activation activation) const {
    return mlpWeights(adaptor, activation, bf16);
  }
  BF16Products bf16;
};

/// Expert `e`'s slices of weights with a leading expert dimension, rank
/// reduced: [E, a, b] -> [a, b], [E, a] -> [a].
MLPWeights expertWeights(mlir::OpBuilder &b, mlir::Location loc,
                         const MLPWeights &weights, mlir::Value e);

/// Packed operands (docs/Rationale.md): a product's left operand [M, K] is
/// packed as [M/8, K, 8] and a weight [K, N] as [N/32, K, 32], so that each
/// 8x32 register tile reads both contiguously.
constexpr int64_t kPackRows = 8;
constexpr int64_t kPackCols = 32;

/// Whether buildPackedMLP applies: static rank-3 weights whose column counts
/// (F and D) are multiples of kPackCols.
bool canPack(const MLPWeights &weights);

/// Whether a block's products read their operands in pairs (bf16 weights
/// and `weights.bf16.dot`, or packsAmx): the weights [E, K, N] as [E, N/32,
/// K/2, 32, 2] and the rows [M, K] as [M/8, K/2, 8, 2] in bf16, element (k2, p)
/// being k = 2 * k2 + p, the layout of the AVX-512 BF16 dot-product
/// instruction, which adds each lane's two products to its f32 sum (k + 1's
/// first).
bool packsPairs(const MLPWeights &weights);

/// Whether a block's products run on AMX tiles (bf16 weights and
/// `weights.bf16.amx`): the weights packed in pairs as packsPairs says, the
/// rows [M, K] as [M/8, K/32, 8, 32] in bf16 (a tile reads 8 rows of 32
/// reduction steps), and the products tiled for switchyard-lower-vectors'
/// AMX lowering.
bool packsAmx(const MLPWeights &weights);

/// A weight [E, K, N] packed as [E, N/32, K, 32], or in pairs as
/// [E, N/32, K/2, 32, 2] (K even: when canPack, K is the other weight's N,
/// a multiple of 32).
mlir::Value packWeight(mlir::OpBuilder &b, mlir::Location loc,
                       mlir::Value weight, bool pairs);

/// The MLP over packed rows `input [MT, D, 8]` with one expert's packed
/// weights (w1/wg [F/32, D, 32], w2 [D/32, F, 32], biases as they are):
/// returns the output rows [MT * 8, D] in the model dtype. The hidden
/// activations are written packed, as the second product reads them. With
/// packsPairs, the rows are [MT, D/2, 8, 2] and the weights in pairs; with
/// packsAmx, the rows are [MT, D/32, 8, 32] and the weights in pairs.
/// `streamWeights` marks its products as bound by reading the weights (few
/// rows): switchyard-tile-matmuls then reads them in memory order.
mlir::Value buildPackedMLP(mlir::OpBuilder &b, mlir::Location loc,
                           mlir::Value input, const MLPWeights &weights,
                           bool streamWeights);

/// Row blocks of at most this many rows take the weight-streaming version.
constexpr int64_t kStreamRows = 32;

/// Rows of an expert computed together by buildRowBlockMLPs: one parallel
/// task. Chosen by measurement (Switch, B=4: 64 rows 126 ms, 128 rows 108 ms,
/// 256 rows 105 ms, 512 rows 106 ms): the second product reads the block's
/// hidden activations back while they are still in cache.
constexpr int64_t kRowBlock = 256;

/// Rows past a multiple of kRowBlock that join an expert's blocks rather
/// than make a block of their own, so that a block has at most
/// kRowBlock + kRowBlockSlack rows (Switch, B=4: half the experts own a few
/// rows more than 256; 51.5 to 50.3 ms against a dense FFN's 48.7).
constexpr int64_t kRowBlockSlack = 64;

/// `rows` rounded up to a multiple of kPackRows, the register tile's rows:
/// the row extent of buildRowBlockMLPs' output.
mlir::Value roundUpToPackRows(mlir::OpBuilder &b, mlir::Location loc,
                              mlir::Value rows);

/// Expert MLPs by row blocks: one parallel task per (expert e, block of
/// about kRowBlock rows, at most kRowBlock + kRowBlockSlack; an expert's
/// rows are split into as few blocks as hold them, of nearly equal sizes)
/// reads the block's rows through `element(e, r, d)` (the model-dtype value
/// of row r, column d; rows up to `count(e)` rounded up to 8 are read, so
/// rows past count(e) must still be readable), runs e's MLP on them (packed
/// products when canPack), and writes them to
/// `out [E, roundUpToPackRows(maxRows), width]`. Rows past count(e) are
/// not meaningful. The hidden activations of a block stay in cache between
/// its two products.
mlir::Value buildRowBlockMLPs(
    mlir::OpBuilder &b, mlir::Location loc, mlir::Value maxRows,
    mlir::Value width, const MLPWeights &weights,
    llvm::function_ref<mlir::Value(mlir::OpBuilder &, mlir::Location,
                                   mlir::Value)>
        count,
    llvm::function_ref<mlir::Value(mlir::OpBuilder &, mlir::Location,
                                   mlir::Value, mlir::Value, mlir::Value)>
        element);

/// buildRowBlockMLPs where every expert has the same `rows` rows, read
/// through `element(e, r, d)` for r < rows; the rows past them (up to the
/// next multiple of 8) read as zero.
mlir::Value buildUniformRowBlockMLPs(
    mlir::OpBuilder &b, mlir::Location loc, mlir::Value rows,
    mlir::Value width, const MLPWeights &weights,
    llvm::function_ref<mlir::Value(mlir::OpBuilder &, mlir::Location,
                                   mlir::Value, mlir::Value, mlir::Value)>
        element);

/// Iterator lists.
llvm::SmallVector<mlir::utils::IteratorType> parallelIterators(unsigned n);

} // namespace switchyard::lowering

#endif // SWITCHYARD_LIB_CONVERSION_MOETOLINALG_UTILS_H
