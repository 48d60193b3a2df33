// RUN: moe-opt %s --switchyard-vectorize-elementwise -split-input-file | FileCheck %s

// An RMS-norm-like scaling: x [?, 8, 128] times a per-row factor [?, 8] and
// a per-column weight [128]. Tiled into rows of 64-element segments and
// vectorized; the row factor is broadcast. Its extent is dynamic, so it may
// be large: the segments are parallel tasks.

// CHECK-LABEL: func.func @scale
// CHECK:       scf.forall (%{{.+}}, %{{.+}}, %{{.+}}) = (0, 0, 0) to (%{{.+}}, 8, 128) step (1, 1, 64)
// CHECK:         vector.transfer_read {{.+}} vector<1x1x64xf32>
// CHECK:         arith.divf {{.+}} : vector<1x1x64xf32>
// CHECK:         arith.mulf {{.+}} : vector<1x1x64xf32>
// CHECK:         vector.transfer_write
// CHECK:         tensor.parallel_insert_slice
// CHECK-NOT:   linalg.generic
#x = affine_map<(g, t, d) -> (g, t, d)>
#r = affine_map<(g, t, d) -> (g, t)>
#w = affine_map<(g, t, d) -> (d)>
func.func @scale(%x: tensor<?x8x128xf32>, %r: tensor<?x8xf32>, %w: tensor<128xf32>,
                 %out: tensor<?x8x128xf32>) -> tensor<?x8x128xf32> {
  %0 = linalg.generic {indexing_maps = [#x, #r, #w, #x],
                       iterator_types = ["parallel", "parallel", "parallel"]}
      ins(%x, %r, %w : tensor<?x8x128xf32>, tensor<?x8xf32>, tensor<128xf32>)
      outs(%out : tensor<?x8x128xf32>) {
  ^bb0(%a: f32, %b: f32, %c: f32, %o: f32):
    %q = arith.divf %a, %b : f32
    %m = arith.mulf %q, %c : f32
    linalg.yield %m : f32
  } -> tensor<?x8x128xf32>
  return %0 : tensor<?x8x128xf32>
}

// -----

// A small op (under 32768 elements) keeps sequential loops over its
// segments: a parallel region would cost more than it saves.

// CHECK-LABEL: func.func @small
// CHECK-NOT:   scf.forall
// CHECK:       scf.for %{{.+}} = %{{.+}} to %{{.+}} step %c1
// CHECK:         scf.for %{{.+}} = %{{.+}} to %{{.+}} step %c64
// CHECK:           arith.addf {{.+}} : vector<1x64xf32>
// CHECK-NOT:   linalg.generic
// CHECK-NOT:   scf.forall
// CHECK:       return
#id2 = affine_map<(i, j) -> (i, j)>
func.func @small(%x: tensor<16x128xf32>, %y: tensor<16x128xf32>,
                 %out: tensor<16x128xf32>) -> tensor<16x128xf32> {
  %0 = linalg.generic {indexing_maps = [#id2, #id2, #id2],
                       iterator_types = ["parallel", "parallel"]}
      ins(%x, %y : tensor<16x128xf32>, tensor<16x128xf32>)
      outs(%out : tensor<16x128xf32>) {
  ^bb0(%a: f32, %b: f32, %o: f32):
    %s = arith.addf %a, %b : f32
    linalg.yield %s : f32
  } -> tensor<16x128xf32>
  return %0 : tensor<16x128xf32>
}

// -----

// Written transposed (the packed hidden activations): the innermost loop is
// strided in the output, so the op is left alone.

// CHECK-LABEL: func.func @transposed
// CHECK-NOT:   vector.
// CHECK:       linalg.generic
#in = affine_map<(i, j) -> (i, j)>
#tr = affine_map<(i, j) -> (j, i)>
func.func @transposed(%x: tensor<8x32xf32>, %out: tensor<32x8xf32>) -> tensor<32x8xf32> {
  %0 = linalg.generic {indexing_maps = [#in, #tr], iterator_types = ["parallel", "parallel"]}
      ins(%x : tensor<8x32xf32>) outs(%out : tensor<32x8xf32>) {
  ^bb0(%a: f32, %o: f32):
    %z = arith.constant 0.0 : f32
    %m = arith.maximumf %a, %z : f32
    linalg.yield %m : f32
  } -> tensor<32x8xf32>
  return %0 : tensor<32x8xf32>
}

// -----

// A dynamic innermost extent has no static segment: left alone.

// CHECK-LABEL: func.func @dynamic_rows
// CHECK-NOT:   vector.
// CHECK:       linalg.generic
#id = affine_map<(i, j) -> (i, j)>
func.func @dynamic_rows(%x: tensor<8x?xf32>, %out: tensor<8x?xf32>) -> tensor<8x?xf32> {
  %0 = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%x : tensor<8x?xf32>) outs(%out : tensor<8x?xf32>) {
  ^bb0(%a: f32, %o: f32):
    %m = arith.addf %a, %a : f32
    linalg.yield %m : f32
  } -> tensor<8x?xf32>
  return %0 : tensor<8x?xf32>
}

// -----

// A residual addition as convert-elementwise-to-linalg writes it: into its
// first operand, whose values the payload never reads. The init becomes a
// tensor.empty, so that bufferization does not copy %x into the result
// before the op overwrites it.

// CHECK-LABEL: func.func @unread_init
// CHECK-SAME:    (%[[X:.+]]: tensor<?x8x128xf32>, %[[F:.+]]: tensor<?x8x128xf32>)
// CHECK:       %[[E:.+]] = tensor.empty(%{{.+}}) : tensor<?x8x128xf32>
// CHECK:       scf.forall {{.+}} shared_outs(%{{.+}} = %[[E]])
// CHECK:         arith.addf {{.+}} : vector<1x1x64xf32>
#res = affine_map<(g, t, d) -> (g, t, d)>
func.func @unread_init(%x: tensor<?x8x128xf32>, %f: tensor<?x8x128xf32>) -> tensor<?x8x128xf32> {
  %0 = linalg.generic {indexing_maps = [#res, #res, #res],
                       iterator_types = ["parallel", "parallel", "parallel"]}
      ins(%x, %f : tensor<?x8x128xf32>, tensor<?x8x128xf32>)
      outs(%x : tensor<?x8x128xf32>) {
  ^bb0(%a: f32, %b: f32, %o: f32):
    %s = arith.addf %a, %b : f32
    linalg.yield %s : f32
  } -> tensor<?x8x128xf32>
  return %0 : tensor<?x8x128xf32>
}

// -----

// A row reduction (the RMS norm's sum of squares): one row at a time, its
// 128 elements a vector, reduced with the row's accumulator. The init is
// read, so it stays.

// CHECK-LABEL: func.func @row_sum
// CHECK-SAME:    (%[[X:.+]]: tensor<?x8x128xf32>, %[[ACC:.+]]: tensor<?x8xf32>)
// CHECK:       scf.forall (%{{.+}}, %{{.+}}) in (%{{.+}}, 8) shared_outs(%{{.+}} = %[[ACC]])
// CHECK:         %[[V:.+]] = vector.transfer_read {{.+}} vector<1x1x128xf32>
// CHECK:         %[[SQ:.+]] = arith.mulf %[[V]], %[[V]] : vector<1x1x128xf32>
// CHECK:         vector.multi_reduction <add>, %[[SQ]], %{{.+}} [2] : vector<1x1x128xf32> to vector<1x1xf32>
// CHECK-NOT:   linalg.generic
#row = affine_map<(g, t, d) -> (g, t, d)>
#acc = affine_map<(g, t, d) -> (g, t)>
func.func @row_sum(%x: tensor<?x8x128xf32>, %acc: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %0 = linalg.generic {indexing_maps = [#row, #acc],
                       iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%x : tensor<?x8x128xf32>) outs(%acc : tensor<?x8xf32>) {
  ^bb0(%a: f32, %o: f32):
    %sq = arith.mulf %a, %a : f32
    %s = arith.addf %o, %sq : f32
    linalg.yield %s : f32
  } -> tensor<?x8xf32>
  return %0 : tensor<?x8xf32>
}

// -----

// Column reductions: each reduction step adds one row of columns into their
// accumulators, so every column takes its terms in order. phi's column
// norm (the sum of squares over d of a [768, 128] matrix) is a sequential
// loop over the rows of 128 columns. A softmax's maxima over a dynamic tile
// of tokens, one column per slot (iteration (g, s, i), the tokens i
// innermost but strided), gets its slots loop innermost: a task per group,
// a loop over tokens inside, a vector of 32 slots each step.

// CHECK-LABEL: func.func @column_sum
// CHECK-SAME:    (%[[X:.+]]: tensor<768x128xf32>, %[[ACC:.+]]: tensor<128xf32>)
// CHECK-NOT:   scf.forall
// CHECK:       scf.for %{{.+}} = %{{.+}} to %{{.+}} step %{{.+}} iter_args(%{{.+}} = %{{.+}})
// CHECK:         %[[V:.+]] = vector.transfer_read {{.+}} vector<1x128xf32>
// CHECK:         %[[SQ:.+]] = arith.mulf %[[V]], %[[V]] : vector<1x128xf32>
// CHECK:         vector.multi_reduction <add>, %[[SQ]], %{{.+}} [0] : vector<1x128xf32> to vector<128xf32>
// CHECK-NOT:   scf.forall
// CHECK-NOT:   linalg.generic
#col_in = affine_map<(j, i) -> (i, j)>
#col_out = affine_map<(j, i) -> (j)>
func.func @column_sum(%x: tensor<768x128xf32>, %acc: tensor<128xf32>) -> tensor<128xf32> {
  %0 = linalg.generic {indexing_maps = [#col_in, #col_out],
                       iterator_types = ["parallel", "reduction"]}
      ins(%x : tensor<768x128xf32>) outs(%acc : tensor<128xf32>) {
  ^bb0(%a: f32, %o: f32):
    %sq = arith.mulf %a, %a : f32
    %s = arith.addf %o, %sq : f32
    linalg.yield %s : f32
  } -> tensor<128xf32>
  return %0 : tensor<128xf32>
}

// CHECK-LABEL: func.func @token_max
// CHECK-SAME:    (%[[L:.+]]: tensor<?x?x32xf32>, %[[M:.+]]: tensor<?x32xf32>)
// CHECK:       scf.forall (%{{.+}}, %{{.+}}) = (0, 0) to (%{{.+}}, 32) step (1, 32) shared_outs(%{{.+}} = %[[M]])
// CHECK:         scf.for %{{.+}} = %{{.+}} to %{{.+}} step %{{.+}} iter_args
// CHECK:           vector.transfer_read {{.+}} vector<1x1x32xf32>
// CHECK:           vector.multi_reduction <maximumf>, %{{.+}}, %{{.+}} [1] : vector<1x1x32xf32> to vector<1x32xf32>
// CHECK-NOT:   linalg.generic
#tok_in = affine_map<(g, s, i) -> (g, i, s)>
#tok_out = affine_map<(g, s, i) -> (g, s)>
func.func @token_max(%l: tensor<?x?x32xf32>, %m: tensor<?x32xf32>) -> tensor<?x32xf32> {
  %0 = linalg.generic {indexing_maps = [#tok_in, #tok_out],
                       iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%l : tensor<?x?x32xf32>) outs(%m : tensor<?x32xf32>) {
  ^bb0(%a: f32, %o: f32):
    %x = arith.maximumf %a, %o : f32
    linalg.yield %x : f32
  } -> tensor<?x32xf32>
  return %0 : tensor<?x32xf32>
}

// -----

// A reduction this pass leaves alone: along a row that is not whole AVX-512
// vectors.

// CHECK-LABEL: func.func @short_row
// CHECK-NOT:   vector.
// CHECK:       linalg.generic
#short_in = affine_map<(i, j) -> (i, j)>
#short_out = affine_map<(i, j) -> (i)>
func.func @short_row(%x: tensor<64x4xf32>, %acc: tensor<64xf32>) -> tensor<64xf32> {
  %0 = linalg.generic {indexing_maps = [#short_in, #short_out],
                       iterator_types = ["parallel", "reduction"]}
      ins(%x : tensor<64x4xf32>) outs(%acc : tensor<64xf32>) {
  ^bb0(%a: f32, %o: f32):
    %s = arith.maximumf %o, %a : f32
    linalg.yield %s : f32
  } -> tensor<64xf32>
  return %0 : tensor<64xf32>
}

// -----

// A row longer than a chunk (1024 elements: top-2's model width) is reduced
// 256 elements at a time, in a loop that carries the row's accumulator.

// CHECK-LABEL: func.func @long_row
// CHECK:       scf.forall
// CHECK:         scf.for %{{.+}} = %c0 to %c1024 step %c256
// CHECK:           vector.multi_reduction <add>, {{.+}} [1] : vector<1x256xf32> to vector<1xf32>
#long_in = affine_map<(i, j) -> (i, j)>
#long_out = affine_map<(i, j) -> (i)>
func.func @long_row(%x: tensor<2048x1024xf32>, %acc: tensor<2048xf32>) -> tensor<2048xf32> {
  %0 = linalg.generic {indexing_maps = [#long_in, #long_out],
                       iterator_types = ["parallel", "reduction"]}
      ins(%x : tensor<2048x1024xf32>) outs(%acc : tensor<2048xf32>) {
  ^bb0(%a: f32, %o: f32):
    %sq = arith.mulf %a, %a : f32
    %s = arith.addf %o, %sq : f32
    linalg.yield %s : f32
  } -> tensor<2048xf32>
  return %0 : tensor<2048xf32>
}

// -----

// An op with an empty loop computes nothing and is left as it is (tiling
// its empty extent crashed).

// CHECK-LABEL: func.func @empty_row
// CHECK:         linalg.generic
// CHECK-NOT:     vector.
func.func @empty_row(%x: tensor<2x8x0xf32>) -> tensor<2x8xf32> {
  %zero = arith.constant 0.0 : f32
  %init = tensor.empty() : tensor<2x8xf32>
  %fill = linalg.fill ins(%zero : f32) outs(%init : tensor<2x8xf32>) -> tensor<2x8xf32>
  %sum = linalg.generic {indexing_maps = [affine_map<(b, s, d) -> (b, s, d)>, affine_map<(b, s, d) -> (b, s)>],
                         iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%x : tensor<2x8x0xf32>) outs(%fill : tensor<2x8xf32>) {
  ^bb0(%in: f32, %acc: f32):
    %a = arith.addf %in, %acc : f32
    linalg.yield %a : f32
  } -> tensor<2x8xf32>
  return %sum : tensor<2x8xf32>
}
