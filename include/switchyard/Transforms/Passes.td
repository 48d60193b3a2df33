//===- Passes.td - Switchyard's dialect-independent passes -*- tablegen -*-===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//

#ifndef SWITCHYARD_TRANSFORMS_PASSES_TD
#define SWITCHYARD_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def SwitchyardBufferize : Pass<"switchyard-bufferize", "::mlir::ModuleOp"> {
  let summary = "One-Shot Bufferize the whole module, copying with linalg.copy";
  let description = [{
    One-Shot Module Bufferization with function boundaries bufferized to
    identity-layout memrefs (what the C interface and the runtime pass), and
    every buffer copy emitted as `linalg.copy` instead of `memref.copy`: a copy
    into a dynamically sized slice (the dropless grouped form writes one per
    expert) then lowers to loops like every other linalg op, instead of a call
    into MLIR's C runner library, which Switchyard's artifacts do not link.
    Function arguments are marked read-only: they belong to the caller.
  }];
  let dependentDialects = [
    "::mlir::bufferization::BufferizationDialect",
    "::mlir::linalg::LinalgDialect",
    "::mlir::memref::MemRefDialect"
  ];
}

def SwitchyardTileMatmuls
    : Pass<"switchyard-tile-matmuls", "::mlir::func::FuncOp"> {
  let summary = "Tile matrix products for threads and registers, then vectorize";
  let description = [{
    Rewrites every `linalg.matmul` and `linalg.batch_matmul` on tensors (the
    expert products, the dense FFN, the router) for the host CPU:

    1. Tiles the parallel dimensions into `scf.forall` blocks of
       `thread-tile-m` x `thread-tile-n` output elements (one expert at a
       time for batched products): the units OpenMP threads take.
    2. Splits each block's rows in two: the largest multiple of
       `register-tile-m`, and the rest (a Soft MoE group's 196 tokens leave
       4), whose register tiles are one row high.
    3. Tiles each part's reduction into `reduction-tile-k` steps, then
       into register tiles of `register-tile-m` (or 1) x `register-tile-n`,
       column tiles outside row tiles (a `register-tile-n` wide panel of the
       right operand then stays in L1 while every row tile passes over it),
       the reduction innermost and one step at a time; peels the loops so
       that every full register tile has a static shape.
    4. Vectorizes every full register tile into `vector.contract` (partial
       column tiles, past the last multiple of `register-tile-n`, stay
       scalar), and carries its accumulator through the reduction loop as a
       vector.

    Before the split, the remaining rows were partial tiles too, one scalar
    FMA at a time: in the Soft MoE B/16 block, 2% of the combine product's
    rows took about 40% of its samples.

    Packed products (`C[.., mt, nt, i, j] += A[.., mt, k, i] * B[.., nt, k,
    j]`, the layouts of `linalg.mmt4d` with a unit inner reduction, which the
    expert MLPs use when their widths are multiples of 32) are tiled the same
    way with their static `i x j` inner tile as the register tile: blocks of
    all their row tiles and `thread-tile-n / j` column tiles, every
    register tile full and contiguous in both operands, no edge tiles. (A
    packed product's rows are one row block of an expert, at most 320
    rows, already a parallel task of its own; splitting off a block of the
    rows past 256 made it read every weight panel again for a few rows.) A
    packed product marked `switchyard.stream_weights` (the lowering marks the
    version of a row block with at most 32 rows, which is bound by reading
    the weights) puts its column tiles outside the reduction panels, so that
    the weights are read in memory order, and marks its column-tile and
    panel loops `switchyard.streamed_weights` for
    `switchyard-lower-vectors`. Otherwise the loop over a
    block's row tiles is marked `switchyard.prefetch_next_panel`, and the
    loop over its reduction panels `switchyard.reduction_panels`, for
    `switchyard-lower-vectors` to prefetch the next weight panel from.
    When a packed product's output is a fill of +0.0 (the expert MLPs'
    sums), the fill goes: the first reduction panel is peeled, and its
    register tiles start from a zero vector instead of reading the output,
    which every tile writes whole. That saves a memset of every block's
    sums and the first panel's reads of them (executables in turn, B=4:
    Switch block 70.9 to 69.8 ms, 8 rounds; top-2 257 to 244 ms, 4 rounds;
    expert choice unchanged; the bits are the same). Not on AMX
    tiles, whose tile loads right after the stores of a zeroed tile wait
    for them (bf16 Switch block 15.4 against 17.3 ms).

    Packed products in pairs (`convert-moe-to-linalg`'s
    `bf16-dot-products`: a second reduction loop of 2 steps, innermost in
    both operands) are tiled the same way, the pair kept whole, and each
    register tile becomes one `vector.contract` of `vector<8x2xbf16>` rows
    and `vector<32x2xbf16>` columns. Packed products for AMX tiles
    (`bf16-amx`: reduction loops (kb, q, p), q of 16 steps and p of 2) take
    reduction panels of as many 32-step blocks as divide the reduction, up
    to 8, and a register tile of 8 rows by 32 columns takes a whole panel;
    it stays a `linalg.generic` marked `switchyard.amx_tile`, which
    `switchyard-lower-vectors` lowers to AMX tile operations once it is
    bufferized.

    `switchyard-lower-vectors` then lowers the contraction to one broadcast
    and `register-tile-n / SIMD width` FMAs a row and a reduction step. This
    replaces the naive loop nest the products otherwise lower to (0.4 GFLOP/s
    in a Switch block); with it a dense FFN block runs at about 60% of the
    machine's sgemm rate (bench/RESULTS.md).
  }];
  let options = [
    Option<"threadTileM", "thread-tile-m", "int64_t", "256",
           "Rows of the output a parallel block computes">,
    Option<"threadTileN", "thread-tile-n", "int64_t", "256",
           "Columns of the output a parallel block computes">,
    Option<"reductionTileK", "reduction-tile-k", "int64_t", "256",
           "Reduction steps a block takes before moving to the next panel">,
    Option<"registerTileM", "register-tile-m", "int64_t", "8",
           "Rows of the accumulator tile kept in registers">,
    Option<"registerTileN", "register-tile-n", "int64_t", "32",
           "Columns of the accumulator tile kept in registers">
  ];
  let dependentDialects = [
    "::mlir::affine::AffineDialect",
    "::mlir::arith::ArithDialect",
    "::mlir::scf::SCFDialect",
    "::mlir::tensor::TensorDialect",
    "::mlir::vector::VectorDialect"
  ];
}

def SwitchyardHoistWeightPacking
    : Pass<"switchyard-hoist-weight-packing", "::mlir::ModuleOp"> {
  let summary = "Pack weights once, when they are bound, instead of every run";
  let description = [{
    The packed expert products (the lowering of `moe.routed_experts` when
    the widths are multiples of 32) read each weight `[E, K, N]` as
    `[E, N/32, K, 32]`: a register tile's 32 columns over the whole
    reduction are then contiguous, stay in L1 while the block's row tiles
    pass over them, and stream through the hardware prefetchers. The packing
    is a `linalg.transpose` marked `switchyard.pack_weight`.

    This pass moves every weight argument's packing into a new function,
    `<entry>_prepack`, which takes those weights and returns them packed,
    and makes the entry function take the packed weights (arguments marked
    `switchyard.packed`). The module gets `switchyard.prepack`: for each
    packed weight, its index among the weight arguments and its packed
    shape. moec adds that list to the artifact's manifest, and the runtime
    calls `switchyard_prepack` once when weights are bound.

    What it saves: a run reads the weights once, in the packed layout,
    instead of reading and writing them to pack them (150 MB, about a third
    of the Switch block's time at B=4).

    Only the entry's weights are hoisted: `@forward`, or the module's only
    public function, whose arguments after the input x are all weights
    (named by `switchyard.weight` or not; the index counts them all). Other
    functions keep packing their weights, and so does an entry that is
    called (its callers pass them unpacked); the CPU pipeline inlines calls
    first. A module whose `<entry>_prepack` name is taken is an error.

    As the CPU pipeline's first module pass after the lowering to linalg, it
    also fails on any moe op left in the module: the pipeline's function
    passes lower the module's own functions, not those of a nested module,
    which would otherwise reach the LLVM dialect untouched.
  }];
  let dependentDialects = [
    "::mlir::func::FuncDialect",
    "::mlir::linalg::LinalgDialect",
    "::mlir::tensor::TensorDialect"
  ];
}

def SwitchyardVectorizeElementwise
    : Pass<"switchyard-vectorize-elementwise", "::mlir::func::FuncOp"> {
  let summary = "Vectorize all-parallel ops by row segments, and row and column reductions";
  let description = [{
    Norms, residual additions, bias and activation epilogues and the
    combine are all-parallel `linalg.generic` ops whose innermost loop runs
    along the model or hidden width. This pass tiles each of them whose
    innermost loop is contiguous (or broadcast) in every operand, with a
    static extent, into segments of one row and 64 elements (or the whole
    row when it is shorter), and vectorizes every segment it can. A segment
    the vectorizer does not support stays scalar; the result is the same
    either way, element by element.

    Row reductions (every loop parallel but the innermost, a reduction
    along a contiguous row of whole AVX-512 vectors: the norms' sums of
    squares, the Soft MoE softmaxes' maxima and sums) are tiled one row at
    a time, a row longer than 256 elements into a loop over chunks of 256
    (its length must then be a multiple of 256), and each row or chunk is
    vectorized into a `vector.multi_reduction`; the pipeline adds its lanes
    as a tree
    (`reassociate-fp-reductions`), so a reduction's sum may round
    differently from an in-order one. An op whose payload never reads its
    init (a residual addition written into its first operand) gets a
    `tensor.empty` init, so that bufferization does not copy the operand
    into the result first. Together, in the Soft MoE B/16 block with
    1/96 of its expert width (so that the rest stands out), 8.5 to 7.0 ms.

    Column reductions (a reduction whose result's innermost dimension is a
    parallel loop that every operand has innermost or lacks: the Soft MoE
    dispatch softmax's maxima and sums over tokens, phi's column norm) get
    that loop innermost, one parallel task per row of the other parallel
    loops when the op is large, and a sequential loop over the reduction
    steps inside, each step adding one row of columns (the whole row up to
    256 columns, 64 at a time beyond) into their accumulators as vectors.
    Every column takes its terms in the same order as before, so the bits
    are unchanged. Matrix products, and the edge tiles that
    `switchyard-tile-matmuls` leaves, are not column reductions here.

    The segments of an op with 32768 iterations or more (or a dynamic
    extent: a batch of tokens) are an `scf.forall`, so that they become
    parallel tasks; a smaller op keeps `scf.for` loops, cheaper than
    starting a parallel region. Sequential segments had left every
    block's norms and residual additions to one thread; executables back
    to back on a 2-CPU Zen 5 VM, medians of six and five runs: Soft MoE
    B/16 79.8 to 70.4 ms, Switch B=4 65.2 to 62.0 ms.
  }];
  let dependentDialects = [
    "::mlir::scf::SCFDialect",
    "::mlir::tensor::TensorDialect",
    "::mlir::vector::VectorDialect"
  ];
}

def SwitchyardLowerVectors
    : Pass<"switchyard-lower-vectors", "::mlir::func::FuncOp"> {
  let summary = "Lower register-tile contractions to FMAs";
  let description = [{
    On bufferized code: drops unit dimensions, widens bf16/f16 operands
    before they are broadcast, hoists any loop-invariant
    `vector.transfer_read` / `vector.transfer_write` pairs left, and lowers
    `vector.contract` with one reduction step to FMAs (one a row of the
    tile) and vector transfers to plain loads and stores, ready for
    `convert-vector-to-llvm`.

    A contraction in pairs (`switchyard-tile-matmuls`' register tiles of
    products in pairs: `vector<Mx2xbf16>` rows times `vector<Nx2xbf16>`
    columns into `vector<MxNxf32>`, N a multiple of 16) becomes one AVX-512
    BF16 dot product (`x86vector.avx512.dot`, `vdpbf16ps`) per row and 16
    columns: the row's pair broadcast to every lane, times the columns'
    pairs, added to the f32 sums (the pair's second product first, each
    rounded once, as two FMAs would; denormal inputs and results are
    flushed to zero).

    Before all that, each register tile of a product on AMX tiles
    (`switchyard.amx_tile`, from `switchyard-tile-matmuls`) becomes AMX
    operations: its f32 sums two 8x16 tiles, loaded once; for each 32-step
    block of its panel (unrolled), an 8x32 tile of bf16 rows, two 16x32
    tiles of weight pairs and two `amx.tile_mulf` (`tdpbf16ps`); the sums
    stored back. LLVM configures the tiles (`ldtilecfg`).

    Then, in each reduction loop that feeds FMAs or dot products, it
    prefetches (`memref.prefetch`) the rows its wide loads (64 bytes or
    more: the right operand's row) will read 1 KiB ahead in f32, 4 KiB in
    bf16/f16.
    Packed weights are read in order, so this is the data the loop needs
    next. Measured on the Soft MoE B/16 block at B=8, which is bound by
    reading its weights: bf16 136 to 95 ms, f32 about 168 to 158 ms.
    Inside a streamed product's loops (`switchyard.streamed_weights`), an
    f32 tile prefetches every line of its rows 4 KiB ahead instead: Soft
    MoE B/16 at B=8, executables in turn on an Intel Xeon, 186 to 153 ms
    (medians of 6 rounds; `bench/kernels/stream_prefetch.c` measures the
    same kernel at 11.7-13.4 GB/s before and 15.9-16.4 after, against a
    plain read at 17.0). Compute-bound products keep 1 KiB and the first
    line: the deeper prefetch was slower on top-2 and expert choice.
    A streamed product's AMX register tiles (which have no reduction loop)
    prefetch every line of each block's weight rows 4 KiB ahead, before
    the block's tile loads: bf16 Soft MoE B/16 at B=8, 104 to 83 ms
    (medians of 6 rounds, executables in turn; same bits).

    And in each loop over register tiles, before a tile's reduction loop,
    it prefetches the accumulator rows the next tile will load (when there
    is a next tile). They are a block's partial sums, in the L2 cache or
    memory, and every tile used to start by waiting on them. Measured on
    the expert-choice block (B=4, S=512, D=768, F=3072, E=8): one thread
    212 to 202 ms, two threads 114 to 105 ms.

    Last, in the loops over row tiles that `switchyard-tile-matmuls` marks
    `switchyard.prefetch_next_panel` (compute-bound packed products:
    reduction panels, column tiles, row tiles), each row tile prefetches
    its share (the panel's rows divided among the row tiles) of the next
    weight panel: the next column tile's, or past the last column tile, the
    first one's in the next reduction panel (when the loop around the
    column tiles is one over panels, marked `switchyard.reduction_panels`;
    a first panel that `switchyard-tile-matmuls` peeled has none, and its
    last column tile prefetches nothing). A weight panel is what a
    register tile reads that depends on the column tile but not the row
    tile: the wide loads of its reduction loop, or the weight tiles of an
    AMX register tile. The panel stays in the L1 cache while every row
    tile passes over it, so the hardware prefetchers find no stream into
    the next one, and its first row tile used to wait on memory. Measured
    with executables taking turns (B=4, medians of 4-6 rounds, on an Intel
    Xeon with AMX): Switch block 75.6 to 71.8 ms, bf16 on AMX 16.5 to 14.7
    ms, top-2 254 to 245 ms, expert choice 141 to 131 ms, a dense FFN 67.3
    to 63.9 ms; Soft MoE, whose products stream their weights, unchanged.
  }];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::memref::MemRefDialect",
    "::mlir::amx::AMXDialect",
    "::mlir::vector::VectorDialect",
    "::mlir::x86vector::X86VectorDialect"
  ];
}

def SwitchyardSerializeNestedParallel
    : Pass<"switchyard-serialize-nested-parallel", "::mlir::func::FuncOp"> {
  let summary = "Turn scf.parallel loops nested in other loops into scf.for";
  let description = [{
    Only outermost parallel loops become OpenMP regions. A parallel loop
    inside another loop (a linalg op in a routing loop, a forall block's
    inner loops) would otherwise fork a team, or at least start a
    worksharing loop, on every iteration of its parent: with Debian's libomp,
    whose `__kmpc_for_static_init` formats a trace string on every call, that
    cost 12% of a dense FFN block's time. The one exception: the blocks of a
    vectorized matrix product (a parallel loop holding `vector.fma`) inside
    sequential loops only, like the per-expert products of the dropless
    form, stay parallel; each is worth a team.
  }];
  let dependentDialects = ["::mlir::scf::SCFDialect"];
}

def SwitchyardBF16VectorsThroughMemoryAsI16
    : Pass<"switchyard-bf16-vectors-through-memory-as-i16", "::mlir::ModuleOp"> {
  let summary = "Load and store bf16 vectors of odd widths as i16 vectors";
  let description = [{
    LLVM 22's x86 back end cannot select a load or a store of a bf16
    vector of 9, 17, 25, 33, ... elements on a host with AVX-512 BF16
    (`LLVM ERROR: Do not know how to soft promote this operator's
    operand!`): a bf16 model whose `d_model` or `d_ff` is one more than a
    multiple of 8 copies its rows with such vectors. By this point (the
    LLVM dialect) the conversions between bf16 and f32 are integer
    operations (`arith-expand` with bf16) that bitcast their bf16 operands
    to i16 and back, and bf16 arithmetic runs in f32
    (`arith-emulate-unsupported-floats`), so a bf16 vector value only ever
    goes between memory and such a bitcast.

    This pass rewrites every `llvm.load` and `llvm.store` of a bf16 vector
    whose width is not a power of two into the same access of an i16
    vector, bitcast to and from bf16: LLVM folds the bitcast pairs, and no
    bf16 vector of those widths is left for the back end. The bits moved
    are the same; power-of-two widths, the ones the products use, are left
    as they are.
  }];
  let dependentDialects = ["::mlir::LLVM::LLVMDialect"];
}

def SwitchyardApproximateMath
    : Pass<"switchyard-approximate-math", "::mlir::func::FuncOp"> {
  let summary = "Expand f32 exp and erf into polynomials that vectorize";
  let description = [{
    LLVM has no vector form of `exp` or `erf` on x86: a `vector<16xf32>`
    `math.exp` becomes sixteen calls of libm's `expf`, and `math.erf` has no
    intrinsic at all (`convert-math-to-libm` unrolls it into `erff` calls).
    The GELU and SiLU epilogues of every expert product and the softmaxes
    run one such call an element.

    This pass rewrites f32 `math.exp` and `math.erf`, scalar and vector
    alike, into MLIR's polynomial approximations (`math` dialect
    `populateMathPolynomialApproximationPatterns`): exp by range reduction
    and a Cephes polynomial, relative error under 2^-22.5, subnormal results
    flushed to zero; erf by rational minimax fits on three intervals,
    absolute error about 2.5e-7, and relative error under 4e-7 near zero; its
    result then takes the sign of x (`math.copysign`), so that `erf(-0) =
    -0` as in libm (the fits alone give +0). Both keep NaN in NaN out and
    the limits (`exp(-inf) = 0`, `exp(+inf) = +inf`, `erf(+-inf) = +-1`). Scalar and
    vector operations are rewritten alike, so a value computes to the same
    bits whichever way its loop was vectorized.

    Measured on a 2-CPU AMD EPYC (Zen 5) VM, executables back to back:
    libm's `erff` was 5% of the Soft MoE B/16 block's samples and `expf` 4%
    of the top-2 SwiGLU block's; Soft MoE f32 went from 103-114 to 79-95 ms,
    top-2 from 229-253 to 212-224 ms.
  }];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::math::MathDialect",
    "::mlir::vector::VectorDialect"
  ];
}

#endif // SWITCHYARD_TRANSFORMS_PASSES_TD
