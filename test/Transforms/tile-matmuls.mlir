// RUN: moe-opt %s --switchyard-tile-matmuls='thread-tile-m=16 thread-tile-n=64 reduction-tile-k=32 register-tile-m=4 register-tile-n=16' | FileCheck %s
// Tile sizes the tiling cannot use are errors (a negative one once dropped
// the product, a thread block smaller than a register tile crashed).
// RUN: not moe-opt %s --switchyard-tile-matmuls='register-tile-n=-1' 2>&1 | FileCheck %s --check-prefix=NEGATIVE
// NEGATIVE: error: switchyard-tile-matmuls: register-tile-n must be at least 1, got -1
// RUN: not moe-opt %s --switchyard-tile-matmuls='thread-tile-m=4' 2>&1 | FileCheck %s --check-prefix=SMALL-BLOCK
// SMALL-BLOCK: error: switchyard-tile-matmuls: a thread block (thread-tile-m x thread-tile-n = 4 x 256) must hold a register tile (register-tile-m x register-tile-n = 8 x 32)

// Blocks for threads (scf.forall), reduction panels, register tiles with the
// columns outside the rows; full register tiles become a vector.contract
// whose 4x16 accumulator is carried through the reduction loop. The batch is
// dynamic, so a block's rows are split: the multiple of 4 goes to the 4x16
// tiles, the rest to tiles of one row, vectorized too. An edge tile (the
// columns past the last multiple of 16) stays scalar, generalized so that
// its multiply and add are marked `contract` (one rounding, as the FMAs).

// CHECK-LABEL: func.func @matmul
// CHECK: scf.forall ({{.*}}) = (0, 0) to (%{{.*}}, 96) step (16, 64)
// CHECK:   scf.for %{{.*}} = %c0 to %c64 step %c32
// CHECK:     scf.for %[[N:.*]] = %c0 to %{{.*}} step %c16
// CHECK:       scf.for %[[M:.*]] = %c0 to %{{.*}} step %c4
// CHECK:         %[[ACC:.*]] = vector.transfer_read {{.*}} : tensor<4x16xf32>, vector<4x16xf32>
// CHECK:         scf.for %{{.*}} = %c0 to %c32 step %c1 iter_args({{.*}}, %[[A:.*]] = %[[ACC]]) -> ({{.*}}, vector<4x16xf32>)
// CHECK:           vector.contract {{.*}} %[[A]] : vector<4x16x1xf32>, vector<4x16x1xf32> into vector<4x16xf32>
// CHECK:         vector.transfer_write {{.*}} : vector<4x16xf32>, tensor<4x16xf32>
// The rows past the last multiple of 4, one a tile:
// CHECK:   scf.for %{{.*}} = %c0 to %c64 step %c32
// CHECK:     scf.for %{{.*}} = %c0 to %{{.*}} step %c16
// CHECK:       scf.for %{{.*}} = %c0 to %{{.*}} step %c1
// CHECK:         %[[ROW:.*]] = vector.transfer_read {{.*}} : tensor<1x16xf32>, vector<16xf32>
// CHECK:         scf.for %{{.*}} = %c0 to %c32 step %c1 iter_args({{.*}}, %[[R:.*]] = %[[ROW]]) -> ({{.*}}, vector<16xf32>)
// CHECK:           vector.contract {{.*}} %[[R]] : vector<16x1xf32>, vector<16x1xf32> into vector<16xf32>
// CHECK:     scf.for %{{.*}} = %{{.*}} to %{{.*}} step %c16
// CHECK:       scf.for %{{.*}} = %c0 to %{{.*}} step %c1
// CHECK:         linalg.generic {{.*}} ins({{.*}} : tensor<1x1xf32>, tensor<1x?xf32>)
// CHECK:           arith.mulf {{.*}} fastmath<contract> : f32
// CHECK:           arith.addf {{.*}} fastmath<contract> : f32
func.func @matmul(%a: tensor<?x64xf32>, %b: tensor<64x96xf32>, %c: tensor<?x96xf32>) -> tensor<?x96xf32> {
  %0 = linalg.matmul ins(%a, %b : tensor<?x64xf32>, tensor<64x96xf32>) outs(%c : tensor<?x96xf32>) -> tensor<?x96xf32>
  return %0 : tensor<?x96xf32>
}

// The expert products: one expert a block, the unit batch dimension gone
// from the register tile.
// CHECK-LABEL: func.func @experts
// CHECK: scf.forall ({{.*}}) = (0, 0) to (4, %{{.*}}) step (1, 16)
// CHECK:   vector.contract {{.*}} : vector<4x16x1xf32>, vector<4x16x1xf32> into vector<4x16xf32>
func.func @experts(%a: tensor<4x?x32xf32>, %b: tensor<4x32x64xf32>, %c: tensor<4x?x64xf32>) -> tensor<4x?x64xf32> {
  %0 = linalg.batch_matmul ins(%a, %b : tensor<4x?x32xf32>, tensor<4x32x64xf32>) outs(%c : tensor<4x?x64xf32>) -> tensor<4x?x64xf32>
  return %0 : tensor<4x?x64xf32>
}

// A packed product (the layouts of linalg.mmt4d with a unit inner
// reduction): the 8x32 inner tile is the register tile whatever the
// options say; blocks hold all the row tiles (the rows are one row block of
// the lowering, a parallel task already) and thread-tile-n / 32 column
// tiles of one expert; every register tile is full, so there is no
// remainder loop. The loop over row tiles is marked for
// switchyard-lower-vectors to prefetch the next weight panel from.
// CHECK-LABEL: func.func @packed
// CHECK: scf.forall ({{.*}}) = (0, 0) to (4, 6) step (1, 2)
// CHECK:   scf.for %{{.*}} = %c0 to %c64 step %c32
// CHECK:     scf.for %{{.*}} = %c0 to %c2 step %c1
// CHECK:       scf.for %{{.*}} = %c0 to %{{.*}} step %c1
// CHECK:         %[[ACC:.*]] = vector.transfer_read {{.*}} : tensor<1x1x1x8x32xf32>, vector<8x32xf32>
// CHECK:         scf.for %{{.*}} = %c0 to %c32 step %c1 iter_args({{.*}}, %[[A:.*]] = %[[ACC]]) -> ({{.*}}, vector<8x32xf32>)
// CHECK:           vector.contract {{.*}} %[[A]] : vector<1x8x32xf32>, vector<1x8x32xf32> into vector<8x32xf32>
// CHECK-NOT:     linalg.generic
// CHECK:       } {switchyard.prefetch_next_panel}
// CHECK:     } {switchyard.reduction_panels}
#pa = affine_map<(e, mt, nt, k, i, j) -> (e, mt, k, i)>
#pb = affine_map<(e, mt, nt, k, i, j) -> (e, nt, k, j)>
#pc = affine_map<(e, mt, nt, k, i, j) -> (e, mt, nt, i, j)>
func.func @packed(%a: tensor<4x?x64x8xf32>, %b: tensor<4x6x64x32xf32>, %c: tensor<4x?x6x8x32xf32>) -> tensor<4x?x6x8x32xf32> {
  %0 = linalg.generic {indexing_maps = [#pa, #pb, #pc], iterator_types = ["parallel", "parallel", "parallel", "reduction", "parallel", "parallel"]}
    ins(%a, %b : tensor<4x?x64x8xf32>, tensor<4x6x64x32xf32>) outs(%c : tensor<4x?x6x8x32xf32>) {
  ^bb0(%x: f32, %y: f32, %z: f32):
    %m = arith.mulf %x, %y : f32
    %s = arith.addf %z, %m : f32
    linalg.yield %s : f32
  } -> tensor<4x?x6x8x32xf32>
  return %0 : tensor<4x?x6x8x32xf32>
}

// The same product on an output filled with zeros: the fill goes (the
// blocks' output starts as tensor.empty), and the first reduction panel is
// peeled: its register tiles start from a zero vector, written to their
// slice before their reduction loop, instead of reading the output. The
// other panels read and accumulate as before.
// CHECK-LABEL: func.func @packed_zero
// CHECK-NOT: linalg.fill
// CHECK: %[[ZERO:.*]] = arith.constant dense<0.000000e+00> : vector<8x32xf32>
// CHECK: %[[EMPTY:.*]] = tensor.empty
// CHECK: scf.forall ({{.*}}) = (0, 0) to (4, 6) step (1, 2) shared_outs(%{{.*}} = %[[EMPTY]])
// CHECK:   scf.for %{{.*}} = %c0 to %c2 step %c1
// CHECK:     scf.for %{{.*}} = %c0 to %{{.*}} step %c1
// CHECK:       vector.transfer_write %[[ZERO]], %{{.*}} : vector<8x32xf32>, tensor<1x1x1x8x32xf32>
// CHECK:       %[[FIRST:.*]] = vector.transfer_read
// CHECK:       scf.for %{{.*}} = %c0 to %c32 step %c1 iter_args({{.*}}, %[[A:.*]] = %[[FIRST]]) -> ({{.*}}, vector<8x32xf32>)
// CHECK:         vector.contract {{.*}} %[[A]] : vector<1x8x32xf32>, vector<1x8x32xf32> into vector<8x32xf32>
// CHECK:   scf.for %{{.*}} = %c0 to %c2 step %c1
// CHECK:     scf.for %{{.*}} = %c0 to %{{.*}} step %c1
// CHECK-NOT:   %[[ZERO]]
// CHECK:       %[[ACC:.*]] = vector.transfer_read {{.*}} : tensor<1x1x1x8x32xf32>, vector<8x32xf32>
// CHECK:       scf.for %{{.*}} = %c0 to %c32 step %c1 iter_args({{.*}}, %[[B:.*]] = %[[ACC]]) -> ({{.*}}, vector<8x32xf32>)
// CHECK:         vector.contract {{.*}} %[[B]] : vector<1x8x32xf32>, vector<1x8x32xf32> into vector<8x32xf32>
func.func @packed_zero(%a: tensor<4x?x64x8xf32>, %b: tensor<4x6x64x32xf32>, %m: index) -> tensor<4x?x6x8x32xf32> {
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty(%m) : tensor<4x?x6x8x32xf32>
  %c = linalg.fill ins(%zero : f32) outs(%e : tensor<4x?x6x8x32xf32>) -> tensor<4x?x6x8x32xf32>
  %0 = linalg.generic {indexing_maps = [#pa, #pb, #pc], iterator_types = ["parallel", "parallel", "parallel", "reduction", "parallel", "parallel"]}
    ins(%a, %b : tensor<4x?x64x8xf32>, tensor<4x6x64x32xf32>) outs(%c : tensor<4x?x6x8x32xf32>) {
  ^bb0(%x: f32, %y: f32, %z: f32):
    %mm = arith.mulf %x, %y : f32
    %s = arith.addf %z, %mm : f32
    linalg.yield %s : f32
  } -> tensor<4x?x6x8x32xf32>
  return %0 : tensor<4x?x6x8x32xf32>
}

// A reduction of one panel on a zero fill: nothing to peel, every register
// tile starts from a zero vector.
// CHECK-LABEL: func.func @packed_zero_one_panel
// CHECK-NOT: linalg.fill
// CHECK: %[[ZERO:.*]] = arith.constant dense<0.000000e+00> : vector<8x32xf32>
// CHECK: %[[EMPTY:.*]] = tensor.empty
// CHECK: scf.forall ({{.*}}) = (0, 0) to (4, 6) step (1, 2) shared_outs(%{{.*}} = %[[EMPTY]])
// CHECK:   scf.for %{{.*}} = %c0 to %c2 step %c1
// CHECK:     scf.for %{{.*}} = %c0 to %{{.*}} step %c1
// CHECK:       vector.transfer_write %[[ZERO]], %{{.*}} : vector<8x32xf32>, tensor<1x1x1x8x32xf32>
// CHECK:       scf.for %{{.*}} = %c0 to %c32 step %c1
// CHECK:         vector.contract
// CHECK-NOT: scf.for
// CHECK: scf.forall.in_parallel
func.func @packed_zero_one_panel(%a: tensor<4x?x32x8xf32>, %b: tensor<4x6x32x32xf32>, %m: index) -> tensor<4x?x6x8x32xf32> {
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty(%m) : tensor<4x?x6x8x32xf32>
  %c = linalg.fill ins(%zero : f32) outs(%e : tensor<4x?x6x8x32xf32>) -> tensor<4x?x6x8x32xf32>
  %0 = linalg.generic {indexing_maps = [#pa, #pb, #pc], iterator_types = ["parallel", "parallel", "parallel", "reduction", "parallel", "parallel"]}
    ins(%a, %b : tensor<4x?x32x8xf32>, tensor<4x6x32x32xf32>) outs(%c : tensor<4x?x6x8x32xf32>) {
  ^bb0(%x: f32, %y: f32, %z: f32):
    %mm = arith.mulf %x, %y : f32
    %s = arith.addf %z, %mm : f32
    linalg.yield %s : f32
  } -> tensor<4x?x6x8x32xf32>
  return %0 : tensor<4x?x6x8x32xf32>
}

// The same product marked as bound by reading its weights (a block of few
// rows): the column tiles go outside the reduction panels, so that each
// column tile's panels, contiguous in the packed weight, are read in order,
// and its row tiles do not prefetch a next panel. The column-tile and panel
// loops are marked as a streamed product's, for switchyard-lower-vectors.
// CHECK-LABEL: func.func @packed_stream
// CHECK: scf.forall ({{.*}}) = (0, 0) to (4, 6) step (1, 2)
// CHECK:   scf.for %{{.*}} = %c0 to %c2 step %c1
// CHECK:     scf.for %{{.*}} = %c0 to %c64 step %c32
// CHECK:       scf.for %{{.*}} = %c0 to %{{.*}} step %c1
// CHECK:         scf.for %{{.*}} = %c0 to %c32 step %c1
// CHECK:           vector.contract {{.*}} : vector<1x8x32xf32>, vector<1x8x32xf32> into vector<8x32xf32>
// CHECK-NOT: switchyard.prefetch_next_panel
// CHECK:     } {switchyard.streamed_weights}
// CHECK:   } {switchyard.streamed_weights}
// CHECK-NOT: switchyard.prefetch_next_panel
func.func @packed_stream(%a: tensor<4x?x64x8xf32>, %b: tensor<4x6x64x32xf32>, %c: tensor<4x?x6x8x32xf32>) -> tensor<4x?x6x8x32xf32> {
  %0 = linalg.generic {indexing_maps = [#pa, #pb, #pc], iterator_types = ["parallel", "parallel", "parallel", "reduction", "parallel", "parallel"], switchyard.stream_weights}
    ins(%a, %b : tensor<4x?x64x8xf32>, tensor<4x6x64x32xf32>) outs(%c : tensor<4x?x6x8x32xf32>) {
  ^bb0(%x: f32, %y: f32, %z: f32):
    %m = arith.mulf %x, %y : f32
    %s = arith.addf %z, %m : f32
    linalg.yield %s : f32
  } -> tensor<4x?x6x8x32xf32>
  return %0 : tensor<4x?x6x8x32xf32>
}

// A packed product in pairs (convert-moe-to-linalg's bf16-dot-products):
// the pair loop p stays whole, and each register tile becomes one
// contraction of the tile's row pairs and column pairs, in bf16, into its
// f32 accumulator, which stays in registers across the reduction loop.
// (The 32 pairs are one reduction panel.)
// CHECK-LABEL: func.func @packed_pairs
// CHECK: scf.forall ({{.*}}) = (0, 0) to (4, 6) step (1, 2)
// CHECK:     scf.for %{{.*}} = %c0 to %c2 step %c1
// CHECK:       scf.for %{{.*}} = %c0 to %{{.*}} step %c1
// CHECK:         %[[ACC:.*]] = vector.transfer_read {{.*}} : tensor<1x1x1x8x32xf32>, vector<8x32xf32>
// CHECK:         scf.for %{{.*}} = %c0 to %c32 step %c1 iter_args({{.*}}, %[[S:.*]] = %[[ACC]]) -> ({{.*}}, vector<8x32xf32>)
// CHECK:           %[[L:.*]] = vector.transfer_read {{.*}} : tensor<1x1x1x8x2xbf16>, vector<8x2xbf16>
// CHECK:           %[[R:.*]] = vector.transfer_read {{.*}} : tensor<1x1x1x32x2xbf16>, vector<32x2xbf16>
// CHECK:           vector.contract {{{.*}}iterator_types = ["parallel", "parallel", "reduction"]{{.*}}} %[[L]], %[[R]], %[[S]] : vector<8x2xbf16>, vector<32x2xbf16> into vector<8x32xf32>
// CHECK-NOT:     linalg.generic
// CHECK:       } {switchyard.prefetch_next_panel}
#qa = affine_map<(e, mt, nt, k, i, j, p) -> (e, mt, k, i, p)>
#qb = affine_map<(e, mt, nt, k, i, j, p) -> (e, nt, k, j, p)>
#qc = affine_map<(e, mt, nt, k, i, j, p) -> (e, mt, nt, i, j)>
func.func @packed_pairs(%a: tensor<4x?x32x8x2xbf16>, %b: tensor<4x6x32x32x2xbf16>, %c: tensor<4x?x6x8x32xf32>) -> tensor<4x?x6x8x32xf32> {
  %0 = linalg.generic {indexing_maps = [#qa, #qb, #qc], iterator_types = ["parallel", "parallel", "parallel", "reduction", "parallel", "parallel", "reduction"]}
    ins(%a, %b : tensor<4x?x32x8x2xbf16>, tensor<4x6x32x32x2xbf16>) outs(%c : tensor<4x?x6x8x32xf32>) {
  ^bb0(%x: bf16, %y: bf16, %z: f32):
    %xf = arith.extf %x : bf16 to f32
    %yf = arith.extf %y : bf16 to f32
    %m = arith.mulf %xf, %yf : f32
    %s = arith.addf %z, %m : f32
    linalg.yield %s : f32
  } -> tensor<4x?x6x8x32xf32>
  return %0 : tensor<4x?x6x8x32xf32>
}

// A packed product for AMX tiles (convert-moe-to-linalg's bf16-amx): a
// reduction panel is as many 32-step blocks as divide the reduction, up to
// 8 (here 4 of 4), and a register tile of 8 rows by 32 columns takes the
// whole panel. It is left as a linalg.generic, marked for
// switchyard-lower-vectors, which lowers it to AMX tile operations after
// bufferization.
// CHECK-LABEL: func.func @packed_amx
// CHECK: scf.forall ({{.*}}) = (0, 0) to (4, 6) step (1, 2)
// CHECK:     scf.for %{{.*}} = %c0 to %c2 step %c1
// CHECK:       scf.for %{{.*}} = %c0 to %{{.*}} step %c1
// CHECK:         linalg.generic {{.*}} ins(%{{.*}}, %{{.*}} : tensor<1x1x4x8x16x2xbf16>, tensor<1x1x4x16x32x2xbf16>) outs(%{{.*}} : tensor<1x1x1x8x32xf32>) attrs = {switchyard.amx_tile}
// CHECK-NOT: vector.contract
// CHECK:       } {switchyard.prefetch_next_panel}
#ra = affine_map<(e, mt, nt, kb, i, j, q, p) -> (e, mt, kb, i, q, p)>
#rb = affine_map<(e, mt, nt, kb, i, j, q, p) -> (e, nt, kb, q, j, p)>
#rc = affine_map<(e, mt, nt, kb, i, j, q, p) -> (e, mt, nt, i, j)>
func.func @packed_amx(%a: tensor<4x?x4x8x16x2xbf16>, %b: tensor<4x6x4x16x32x2xbf16>, %c: tensor<4x?x6x8x32xf32>) -> tensor<4x?x6x8x32xf32> {
  %0 = linalg.generic {indexing_maps = [#ra, #rb, #rc], iterator_types = ["parallel", "parallel", "parallel", "reduction", "parallel", "parallel", "reduction", "reduction"]}
    ins(%a, %b : tensor<4x?x4x8x16x2xbf16>, tensor<4x6x4x16x32x2xbf16>) outs(%c : tensor<4x?x6x8x32xf32>) {
  ^bb0(%x: bf16, %y: bf16, %z: f32):
    %xf = arith.extf %x : bf16 to f32
    %yf = arith.extf %y : bf16 to f32
    %m = arith.mulf %xf, %yf : f32
    %s = arith.addf %z, %m : f32
    linalg.yield %s : f32
  } -> tensor<4x?x6x8x32xf32>
  return %0 : tensor<4x?x6x8x32xf32>
}

// On AMX tiles, an output filled with zeros keeps its fill: a tile load
// right after the stores of a zeroed tile waits for them, and starting from
// zero tiles measured slower still (bench/RESULTS.md, session 9).
// CHECK-LABEL: func.func @packed_amx_zero
// CHECK: linalg.fill
// CHECK: linalg.generic {{.*}} attrs = {switchyard.amx_tile}
func.func @packed_amx_zero(%a: tensor<4x?x4x8x16x2xbf16>, %b: tensor<4x6x4x16x32x2xbf16>, %m: index) -> tensor<4x?x6x8x32xf32> {
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty(%m) : tensor<4x?x6x8x32xf32>
  %c = linalg.fill ins(%zero : f32) outs(%e : tensor<4x?x6x8x32xf32>) -> tensor<4x?x6x8x32xf32>
  %0 = linalg.generic {indexing_maps = [#ra, #rb, #rc], iterator_types = ["parallel", "parallel", "parallel", "reduction", "parallel", "parallel", "reduction", "reduction"]}
    ins(%a, %b : tensor<4x?x4x8x16x2xbf16>, tensor<4x6x4x16x32x2xbf16>) outs(%c : tensor<4x?x6x8x32xf32>) {
  ^bb0(%x: bf16, %y: bf16, %z: f32):
    %xf = arith.extf %x : bf16 to f32
    %yf = arith.extf %y : bf16 to f32
    %mm = arith.mulf %xf, %yf : f32
    %s = arith.addf %z, %mm : f32
    linalg.yield %s : f32
  } -> tensor<4x?x6x8x32xf32>
  return %0 : tensor<4x?x6x8x32xf32>
}

// A product with an empty reduction has nothing to tile: left as it is.

// CHECK-LABEL: func.func @empty_reduction
// CHECK:         linalg.matmul
func.func @empty_reduction(%a: tensor<40x0xf32>, %b: tensor<0x96xf32>, %c: tensor<40x96xf32>) -> tensor<40x96xf32> {
  %0 = linalg.matmul ins(%a, %b : tensor<40x0xf32>, tensor<0x96xf32>) outs(%c : tensor<40x96xf32>) -> tensor<40x96xf32>
  return %0 : tensor<40x96xf32>
}
