// RUN: moe-opt %s --switchyard-lower-vectors | FileCheck %s

// A register tile as switchyard-tile-matmuls leaves it, bufferized: the
// accumulator carried through the reduction loop, the left column and the
// right row read as broadcasts. Each reduction step becomes one FMA on the
// whole tile (convert-vector-to-llvm makes it one FMA a row, on whole SIMD
// vectors: a broadcast element of the left column times the right row).

// CHECK-LABEL: func.func @tile
// CHECK: scf.for {{.*}} -> (vector<4x16xf32>)
// CHECK-NOT: vector.contract
// CHECK: vector.load {{.*}} : memref<16xf32, {{.*}}>, vector<16xf32>
// CHECK: vector.fma {{.*}} : vector<4x16xf32>
// CHECK-NOT: vector.fma
// CHECK: scf.yield
#lhs = affine_map<(d0, d1) -> (d0, 0, d1)>
#rhs = affine_map<(d0, d1) -> (0, d1, d0)>
#id = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
#acc = affine_map<(d0, d1, d2) -> (d0, d1)>
func.func @tile(%a: memref<4x8xf32>, %b: memref<8x16xf32>, %c: vector<4x16xf32>) -> vector<4x16xf32> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c8 = arith.constant 8 : index
  %pad = ub.poison : f32
  %r = scf.for %k = %c0 to %c8 step %c1 iter_args(%acc = %c) -> (vector<4x16xf32>) {
    %sa = memref.subview %a[0, %k] [4, 1] [1, 1] : memref<4x8xf32> to memref<4x1xf32, strided<[8, 1], offset: ?>>
    %sb = memref.subview %b[%k, 0] [1, 16] [1, 1] : memref<8x16xf32> to memref<1x16xf32, strided<[16, 1], offset: ?>>
    %l = vector.transfer_read %sa[%c0, %c0], %pad {in_bounds = [true, true, true], permutation_map = #lhs} : memref<4x1xf32, strided<[8, 1], offset: ?>>, vector<4x16x1xf32>
    %r = vector.transfer_read %sb[%c0, %c0], %pad {in_bounds = [true, true, true], permutation_map = #rhs} : memref<1x16xf32, strided<[16, 1], offset: ?>>, vector<4x16x1xf32>
    %n = vector.contract {indexing_maps = [#id, #id, #acc], iterator_types = ["parallel", "parallel", "reduction"], kind = #vector.kind<add>} %l, %r, %acc : vector<4x16x1xf32>, vector<4x16x1xf32> into vector<4x16xf32>
    scf.yield %n : vector<4x16xf32>
  }
  return %r : vector<4x16xf32>
}

// The reduction loop of a register tile prefetches its wide operand's row
// 4 KiB ahead in bf16 (64 rows of 32 bf16), 1 KiB in f32; the narrow left
// column gets no prefetch.
// CHECK-LABEL: func.func @prefetch
// CHECK: scf.for %[[K:.+]] = %{{.+}} to %{{.+}} step %[[STEP:.+]] iter_args
// CHECK:   %[[C64:.+]] = arith.constant 64 : index
// CHECK:   %[[D:.+]] = arith.muli %[[STEP]], %[[C64]] : index
// CHECK:   %[[AHEAD:.+]] = arith.addi %[[K]], %[[D]] : index
// CHECK:   memref.prefetch %{{.+}}[%[[AHEAD]], %{{.+}}], read, locality<3>, data : memref<256x32xbf16>
// CHECK-NOT: memref.prefetch
// CHECK: vector.fma
func.func @prefetch(%a: memref<256x8xf32>, %b: memref<256x32xbf16>, %acc: vector<8x32xf32>) -> vector<8x32xf32> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c256 = arith.constant 256 : index
  %r = scf.for %k = %c0 to %c256 step %c1 iter_args(%c = %acc) -> (vector<8x32xf32>) {
    %row = vector.load %b[%k, %c0] : memref<256x32xbf16>, vector<32xbf16>
    %w = arith.extf %row : vector<32xbf16> to vector<32xf32>
    %col = vector.load %a[%k, %c0] : memref<256x8xf32>, vector<8xf32>
    %x = vector.extract %col[0] : f32 from vector<8xf32>
    %xb = vector.broadcast %x : f32 to vector<8x32xf32>
    %wb = vector.broadcast %w : vector<32xf32> to vector<8x32xf32>
    %n = vector.fma %xb, %wb, %c : vector<8x32xf32>
    scf.yield %n : vector<8x32xf32>
  }
  return %r : vector<8x32xf32>
}

// Inside a streamed product's loops (switchyard.streamed_weights: a block
// of few rows, bound by reading its weights), an f32 register tile
// prefetches every 64-byte line of its weight row 4 KiB (32 rows of 32 f32)
// ahead, where a compute-bound one prefetches the first line 1 KiB ahead;
// the marker is gone afterwards.
// CHECK-LABEL: func.func @prefetch_streamed
// CHECK: scf.for
// CHECK:   scf.for %[[K:.+]] = %{{.+}} to %{{.+}} step %[[STEP:.+]] iter_args
// CHECK:     %[[C32:.+]] = arith.constant 32 : index
// CHECK:     %[[D:.+]] = arith.muli %[[STEP]], %[[C32]] : index
// CHECK:     %[[AHEAD:.+]] = arith.addi %[[K]], %[[D]] : index
// CHECK:     memref.prefetch %[[B:.+]][%[[AHEAD]], %[[C0:.+]]], read, locality<3>, data : memref<256x32xf32>
// CHECK:     memref.prefetch %[[B]][%[[AHEAD]], %{{.+}}], read, locality<3>, data : memref<256x32xf32>
// CHECK-NOT: memref.prefetch
// CHECK: vector.fma
// CHECK-NOT: switchyard.streamed_weights
// CHECK-LABEL: func.func @prefetch_compute_bound
// CHECK:     %[[C8:.+]] = arith.constant 8 : index
// CHECK:     memref.prefetch %{{.+}} : memref<256x32xf32>
// CHECK-NOT: memref.prefetch
// CHECK: vector.fma
func.func @prefetch_streamed(%a: memref<256x8xf32>, %b: memref<256x32xf32>, %acc: vector<8x32xf32>) -> vector<8x32xf32> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c256 = arith.constant 256 : index
  %o = scf.for %i = %c0 to %c1 step %c1 iter_args(%s = %acc) -> (vector<8x32xf32>) {
    %r = scf.for %k = %c0 to %c256 step %c1 iter_args(%c = %s) -> (vector<8x32xf32>) {
      %w = vector.load %b[%k, %c0] : memref<256x32xf32>, vector<32xf32>
      %col = vector.load %a[%k, %c0] : memref<256x8xf32>, vector<8xf32>
      %x = vector.extract %col[0] : f32 from vector<8xf32>
      %xb = vector.broadcast %x : f32 to vector<8x32xf32>
      %wb = vector.broadcast %w : vector<32xf32> to vector<8x32xf32>
      %n = vector.fma %xb, %wb, %c : vector<8x32xf32>
      scf.yield %n : vector<8x32xf32>
    }
    scf.yield %r : vector<8x32xf32>
  } {switchyard.streamed_weights}
  return %o : vector<8x32xf32>
}

func.func @prefetch_compute_bound(%a: memref<256x8xf32>, %b: memref<256x32xf32>, %acc: vector<8x32xf32>) -> vector<8x32xf32> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c256 = arith.constant 256 : index
  %r = scf.for %k = %c0 to %c256 step %c1 iter_args(%c = %acc) -> (vector<8x32xf32>) {
    %w = vector.load %b[%k, %c0] : memref<256x32xf32>, vector<32xf32>
    %col = vector.load %a[%k, %c0] : memref<256x8xf32>, vector<8xf32>
    %x = vector.extract %col[0] : f32 from vector<8xf32>
    %xb = vector.broadcast %x : f32 to vector<8x32xf32>
    %wb = vector.broadcast %w : vector<32xf32> to vector<8x32xf32>
    %n = vector.fma %xb, %wb, %c : vector<8x32xf32>
    scf.yield %n : vector<8x32xf32>
  }
  return %r : vector<8x32xf32>
}

// A loop over register tiles: while one tile runs its reduction, the next
// tile's accumulator rows are prefetched, every 64-byte line of them, when
// there is a next tile.
// CHECK-LABEL: func.func @next_accumulator
// CHECK: scf.for %[[T:.+]] = %{{.+}} to %[[TILES:.+]] step %[[STEP:.+]] {
// CHECK:   vector.load %{{.+}}[%[[T]], %{{.+}}, %{{.+}}] : memref<?x2x32xf32>, vector<32xf32>
// CHECK:   vector.load %{{.+}}[%[[T]], %{{.+}}, %{{.+}}] : memref<?x2x32xf32>, vector<32xf32>
// CHECK:   %[[NEXT:.+]] = arith.addi %[[T]], %[[STEP]] : index
// CHECK:   %[[MORE:.+]] = arith.cmpi slt, %[[NEXT]], %[[TILES]] : index
// CHECK:   scf.if %[[MORE]] {
// CHECK:     memref.prefetch %[[C:.+]][%[[NEXT]], %[[R0:.+]], %[[C0:.+]]], read, locality<3>, data : memref<?x2x32xf32>
// CHECK:     %[[C16:.+]] = arith.addi %[[C0]], %{{.+}} : index
// CHECK:     memref.prefetch %[[C]][%[[NEXT]], %[[R0]], %[[C16]]], read
// CHECK:     memref.prefetch %[[C]][%[[NEXT]], %[[R1:.+]], %[[C0]]], read
// CHECK:     memref.prefetch %[[C]][%[[NEXT]], %[[R1]], %{{.+}}], read
// CHECK-NOT: memref.prefetch
// CHECK:   }
// CHECK:   scf.for
// CHECK:     memref.prefetch %{{.+}} : memref<?x256x32xf32>
// CHECK-NOT: memref.prefetch
// CHECK:     vector.fma
func.func @next_accumulator(%a: memref<?x256x2xf32>, %b: memref<?x256x32xf32>, %c: memref<?x2x32xf32>, %tiles: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c256 = arith.constant 256 : index
  scf.for %t = %c0 to %tiles step %c1 {
    %r0 = vector.load %c[%t, %c0, %c0] : memref<?x2x32xf32>, vector<32xf32>
    %r1 = vector.load %c[%t, %c1, %c0] : memref<?x2x32xf32>, vector<32xf32>
    %zero = arith.constant dense<0.0> : vector<2x32xf32>
    %i0 = vector.insert %r0, %zero [0] : vector<32xf32> into vector<2x32xf32>
    %init = vector.insert %r1, %i0 [1] : vector<32xf32> into vector<2x32xf32>
    %r = scf.for %k = %c0 to %c256 step %c1 iter_args(%acc = %init) -> (vector<2x32xf32>) {
      %row = vector.load %b[%c0, %k, %c0] : memref<?x256x32xf32>, vector<32xf32>
      %col = vector.load %a[%t, %k, %c0] : memref<?x256x2xf32>, vector<2xf32>
      %x = vector.extract %col[0] : f32 from vector<2xf32>
      %xb = vector.broadcast %x : f32 to vector<2x32xf32>
      %wb = vector.broadcast %row : vector<32xf32> to vector<2x32xf32>
      %n = vector.fma %xb, %wb, %acc : vector<2x32xf32>
      scf.yield %n : vector<2x32xf32>
    }
    %s0 = vector.extract %r[0] : vector<32xf32> from vector<2x32xf32>
    %s1 = vector.extract %r[1] : vector<32xf32> from vector<2x32xf32>
    vector.store %s0, %c[%t, %c0, %c0] : memref<?x2x32xf32>, vector<32xf32>
    vector.store %s1, %c[%t, %c1, %c0] : memref<?x2x32xf32>, vector<32xf32>
  }
  return
}

// A register tile of a product in pairs, bufferized: each reduction step
// reads the tile's row pairs (8x2 bf16) and column pairs (32x2 bf16) whole,
// one vector load each, and becomes one AVX-512 BF16 dot product per row and
// 16 columns: the row's pair, as one i32, broadcast to every lane. The
// column pairs are prefetched 4 KiB ahead, as a bf16 row.
// CHECK-LABEL: func.func @pairs
// CHECK: scf.for {{.*}} -> (vector<8x32xf32>)
// CHECK-NOT: vector.contract
// CHECK: memref.prefetch {{.*}} : memref<64xbf16, {{.*}}>
// CHECK-DAG: vector.load {{.*}} : memref<64xbf16, {{.*}}>, vector<64xbf16>
// CHECK-DAG: %[[L:.*]] = vector.load {{.*}} : memref<16xbf16, {{.*}}>, vector<16xbf16>
// CHECK: vector.bitcast %[[L]] : vector<16xbf16> to vector<8xi32>
// CHECK-COUNT-16: x86vector.avx512.dot {{.*}} : vector<32xbf16> -> vector<16xf32>
// CHECK-NOT: x86vector.avx512.dot
// CHECK-NOT: vector.fma
// CHECK: scf.yield
#pl = affine_map<(i, j, p) -> (i, p)>
#pr = affine_map<(i, j, p) -> (j, p)>
#pc = affine_map<(i, j, p) -> (i, j)>
func.func @pairs(%a: memref<4x8x2xbf16>, %b: memref<4x32x2xbf16>, %c: vector<8x32xf32>) -> vector<8x32xf32> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c4 = arith.constant 4 : index
  %pad = ub.poison : bf16
  %r = scf.for %k = %c0 to %c4 step %c1 iter_args(%acc = %c) -> (vector<8x32xf32>) {
    %sa = memref.subview %a[%k, 0, 0] [1, 8, 2] [1, 1, 1] : memref<4x8x2xbf16> to memref<8x2xbf16, strided<[2, 1], offset: ?>>
    %sb = memref.subview %b[%k, 0, 0] [1, 32, 2] [1, 1, 1] : memref<4x32x2xbf16> to memref<32x2xbf16, strided<[2, 1], offset: ?>>
    %l = vector.transfer_read %sa[%c0, %c0], %pad {in_bounds = [true, true]} : memref<8x2xbf16, strided<[2, 1], offset: ?>>, vector<8x2xbf16>
    %r = vector.transfer_read %sb[%c0, %c0], %pad {in_bounds = [true, true]} : memref<32x2xbf16, strided<[2, 1], offset: ?>>, vector<32x2xbf16>
    %n = vector.contract {indexing_maps = [#pl, #pr, #pc], iterator_types = ["parallel", "parallel", "reduction"], kind = #vector.kind<add>} %l, %r, %acc : vector<8x2xbf16>, vector<32x2xbf16> into vector<8x32xf32>
    scf.yield %n : vector<8x32xf32>
  }
  return %r : vector<8x32xf32>
}

// A register tile of a product on AMX tiles, bufferized: two 32-step
// blocks of the reduction, unrolled. The sums are two 8x16 f32 tiles,
// loaded once and stored once; each block loads an 8x32 tile of rows and
// two 16x32 tiles of weight pairs, and multiplies twice.
// CHECK-LABEL: func.func @amx
// CHECK-NOT: linalg.generic
// CHECK: %[[S:.*]] = memref.collapse_shape %{{.*}} {{\[}}[0, 1, 2], [3]] : memref<1x1x8x32xf32> into memref<8x32xf32>
// CHECK: %[[L:.*]] = amx.tile_load %[[S]][%{{.*}}, %{{.*}}] : memref<8x32xf32> into !amx.tile<8x16xf32>
// CHECK: %[[R:.*]] = amx.tile_load %[[S]]
// CHECK-COUNT-2: amx.tile_mulf {{.*}} : !amx.tile<8x32xbf16>, !amx.tile<16x32xbf16>, !amx.tile<8x16xf32>
// CHECK: amx.tile_load {{.*}} into !amx.tile<8x32xbf16>
// CHECK-COUNT-2: amx.tile_mulf
// CHECK-NOT: amx.tile_mulf
// CHECK-COUNT-2: amx.tile_store %[[S]]
#xa = affine_map<(mt, nt, kb, i, j, q, p) -> (mt, kb, i, q, p)>
#xb = affine_map<(mt, nt, kb, i, j, q, p) -> (nt, kb, q, j, p)>
#xc = affine_map<(mt, nt, kb, i, j, q, p) -> (mt, nt, i, j)>
func.func @amx(%a: memref<1x2x8x16x2xbf16>, %b: memref<1x2x16x32x2xbf16>, %c: memref<1x1x8x32xf32>) {
  linalg.generic {indexing_maps = [#xa, #xb, #xc], iterator_types = ["parallel", "parallel", "reduction", "parallel", "parallel", "reduction", "reduction"]}
    ins(%a, %b : memref<1x2x8x16x2xbf16>, memref<1x2x16x32x2xbf16>) outs(%c : memref<1x1x8x32xf32>) attrs = {switchyard.amx_tile} {
  ^bb0(%x: bf16, %y: bf16, %z: f32):
    %xf = arith.extf %x : bf16 to f32
    %yf = arith.extf %y : bf16 to f32
    %m = arith.mulf %xf, %yf : f32
    %s = arith.addf %z, %m : f32
    linalg.yield %s : f32
  }
  return
}

// The same tile inside a streamed product's loops: before each block's
// tile loads, every 64-byte line of its 16 weight rows (128 bytes each)
// 4 KiB ahead, 32 rows on, is prefetched: past the tile's two blocks, the
// rows that follow them in memory.
// CHECK-LABEL: func.func @amx_streamed
// CHECK: %[[W:.*]] = memref.collapse_shape %{{.*}} {{\[}}[0, 1, 2], [3, 4]] : memref<1x2x16x32x2xbf16> into memref<32x64xbf16>
// CHECK: scf.for
// CHECK: memref.prefetch %[[W]][%c32, %c0], read, locality<3>, data : memref<32x64xbf16>
// CHECK: memref.prefetch %[[W]][%c32, %c32], read, locality<3>, data : memref<32x64xbf16>
// CHECK-COUNT-30: memref.prefetch %[[W]]
// CHECK-NOT: memref.prefetch
// CHECK: amx.tile_load {{.*}} into !amx.tile<8x32xbf16>
// CHECK-COUNT-2: amx.tile_mulf
// CHECK: memref.prefetch %[[W]][%c48, %c0]
// CHECK-COUNT-31: memref.prefetch %[[W]]
// CHECK-NOT: memref.prefetch
// CHECK-COUNT-2: amx.tile_mulf
// CHECK-NOT: switchyard.streamed_weights
func.func @amx_streamed(%a: memref<1x2x8x16x2xbf16>, %b: memref<1x2x16x32x2xbf16>, %c: memref<1x1x8x32xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  scf.for %i = %c0 to %c1 step %c1 {
    linalg.generic {indexing_maps = [#xa, #xb, #xc], iterator_types = ["parallel", "parallel", "reduction", "parallel", "parallel", "reduction", "reduction"]}
      ins(%a, %b : memref<1x2x8x16x2xbf16>, memref<1x2x16x32x2xbf16>) outs(%c : memref<1x1x8x32xf32>) attrs = {switchyard.amx_tile} {
    ^bb0(%x: bf16, %y: bf16, %z: f32):
      %xf = arith.extf %x : bf16 to f32
      %yf = arith.extf %y : bf16 to f32
      %m = arith.mulf %xf, %yf : f32
      %s = arith.addf %z, %m : f32
      linalg.yield %s : f32
    }
  } {switchyard.streamed_weights}
  return
}

// The row tiles of a compute-bound packed product (reduction panels P and
// row tiles T marked by switchyard-tile-matmuls, column tiles N): before
// its reduction loop, each row tile prefetches its share (ceil(32 / tiles)
// steps) of the next weight panel, both 64-byte lines of each 32-column
// row: the next column tile's panel, or past the last column tile, the
// first one's in the next reduction panel, if there is one. The markers
// are consumed.
// CHECK-LABEL: func.func @next_panel
// CHECK: scf.for %[[P:.+]] = %[[C0:.+]] to %[[C64:.+]] step %[[C32:.+]] {
// CHECK:   scf.for %[[N:.+]] = %{{.+}} to %[[C2:.+]] step %[[C1:.+]] {
// CHECK:     scf.for %[[T:.+]] = %{{.+}} to %[[TILES:.+]] step %{{.+}} {
// CHECK:       %[[NEXT:.+]] = arith.addi %[[N]], %[[C1]] : index
// CHECK:       %[[WRAPS:.+]] = arith.cmpi sge, %[[NEXT]], %[[C2]] : index
// CHECK:       %[[COL:.+]] = arith.select %[[WRAPS]], %[[C0]], %[[NEXT]] : index
// CHECK:       %[[PN:.+]] = arith.addi %[[P]], %[[C32]] : index
// CHECK:       %[[PANEL:.+]] = arith.select %[[WRAPS]], %[[PN]], %[[P]] : index
// CHECK:       %[[MORE:.+]] = arith.cmpi slt, %[[PANEL]], %[[C64]] : index
// CHECK:       %[[SHARE:.+]] = arith.ceildivui %c32{{[_0-9]*}}, %{{.+}} : index
// CHECK:       %[[FIRST:.+]] = arith.muli %{{.+}}, %[[SHARE]] : index
// CHECK:       %[[END:.+]] = arith.addi %[[FIRST]], %[[SHARE]] : index
// CHECK:       %[[LAST:.+]] = arith.minui %[[END]], %c32{{[_0-9]*}} : index
// CHECK:       scf.if %[[MORE]] {
// CHECK:         scf.for %[[R:.+]] = %[[FIRST]] to %[[LAST]] step
// CHECK:           %[[K:.+]] = arith.addi %[[PANEL]], %{{.+}} : index
// CHECK:           memref.prefetch %[[B:.+]][%[[COL]], %[[K]], %{{.+}}], read, locality<3>, data : memref<2x64x32xf32>
// CHECK:           memref.prefetch %[[B]][%[[COL]], %[[K]], %{{.+}}], read, locality<3>, data : memref<2x64x32xf32>
// CHECK-NEXT:    }
// CHECK-NEXT:  }
// CHECK-NEXT:  scf.for
// CHECK-NOT: switchyard.prefetch_next_panel
// CHECK-NOT: switchyard.reduction_panels
func.func @next_panel(%a: memref<?x64x2xf32>, %b: memref<2x64x32xf32>, %c: memref<?x2x2x32xf32>, %tiles: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c32 = arith.constant 32 : index
  %c64 = arith.constant 64 : index
  scf.for %p = %c0 to %c64 step %c32 {
    scf.for %n = %c0 to %c2 step %c1 {
      scf.for %t = %c0 to %tiles step %c1 {
        %r0 = vector.load %c[%t, %n, %c0, %c0] : memref<?x2x2x32xf32>, vector<32xf32>
        %r1 = vector.load %c[%t, %n, %c1, %c0] : memref<?x2x2x32xf32>, vector<32xf32>
        %zero = arith.constant dense<0.0> : vector<2x32xf32>
        %i0 = vector.insert %r0, %zero [0] : vector<32xf32> into vector<2x32xf32>
        %init = vector.insert %r1, %i0 [1] : vector<32xf32> into vector<2x32xf32>
        %r = scf.for %k = %c0 to %c32 step %c1 iter_args(%acc = %init) -> (vector<2x32xf32>) {
          %kk = arith.addi %p, %k : index
          %row = vector.load %b[%n, %kk, %c0] : memref<2x64x32xf32>, vector<32xf32>
          %col = vector.load %a[%t, %kk, %c0] : memref<?x64x2xf32>, vector<2xf32>
          %x = vector.extract %col[0] : f32 from vector<2xf32>
          %xb = vector.broadcast %x : f32 to vector<2x32xf32>
          %wb = vector.broadcast %row : vector<32xf32> to vector<2x32xf32>
          %f = vector.fma %xb, %wb, %acc : vector<2x32xf32>
          scf.yield %f : vector<2x32xf32>
        }
        %s0 = vector.extract %r[0] : vector<32xf32> from vector<2x32xf32>
        %s1 = vector.extract %r[1] : vector<32xf32> from vector<2x32xf32>
        vector.store %s0, %c[%t, %n, %c0, %c0] : memref<?x2x2x32xf32>, vector<32xf32>
        vector.store %s1, %c[%t, %n, %c1, %c0] : memref<?x2x2x32xf32>, vector<32xf32>
      } {switchyard.prefetch_next_panel}
    }
  } {switchyard.reduction_panels}
  return
}

// The same on AMX tiles: the weight tiles of a row tile load from one
// panel of 32 rows (16 pairs of reduction steps a block, 2 blocks) of 128
// bytes; each row tile prefetches its share of the next panel's rows.
// CHECK-LABEL: func.func @amx_next_panel
// CHECK: scf.for %[[P:.+]] = %{{.+}} to %{{.+}} step %{{.+}} {
// CHECK:   scf.for %[[N:.+]] = %{{.+}} to %{{.+}} step %{{.+}} {
// CHECK:     scf.for %[[T:.+]] = %{{.+}} to %{{.+}} step %{{.+}} {
// CHECK:       %[[COL:.+]] = arith.select %{{.+}}, %{{.+}}, %{{.+}} : index
// CHECK:       %[[PANEL:.+]] = arith.select %{{.+}}, %{{.+}}, %[[P]] : index
// CHECK:       %[[SHARE:.+]] = arith.ceildivui %c32{{[_0-9]*}}, %{{.+}} : index
// CHECK:       scf.if
// CHECK:         scf.for %[[R:.+]] = %{{.+}} to %{{.+}} step
// CHECK:           %[[SB:.+]] = memref.subview %{{.+}}[%[[COL]], %[[PANEL]], 0, 0, 0] [1, 2, 16, 32, 2]
// CHECK:           %[[W:.+]] = memref.collapse_shape %[[SB]] {{.+}} into memref<32x64xbf16, strided<[64, 1], offset: ?>>
// CHECK:           memref.prefetch %[[W]][%[[R]], %{{.+}}], read, locality<3>, data
// CHECK:           memref.prefetch %[[W]][%[[R]], %{{.+}}], read, locality<3>, data
// CHECK-NEXT:    }
// CHECK-NEXT:  }
// CHECK:       amx.tile_load
// CHECK-NOT: switchyard.prefetch_next_panel
#na = affine_map<(mt, nt, kb, i, j, q, p) -> (mt, kb, i, q, p)>
#nb = affine_map<(mt, nt, kb, i, j, q, p) -> (nt, kb, q, j, p)>
#nc = affine_map<(mt, nt, kb, i, j, q, p) -> (mt, nt, i, j)>
func.func @amx_next_panel(%a: memref<?x4x8x16x2xbf16>, %b: memref<2x4x16x32x2xbf16>, %c: memref<?x2x8x32xf32>, %tiles: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c4 = arith.constant 4 : index
  scf.for %p = %c0 to %c4 step %c2 {
    scf.for %n = %c0 to %c2 step %c1 {
      scf.for %t = %c0 to %tiles step %c1 {
        %sa = memref.subview %a[%t, %p, 0, 0, 0] [1, 2, 8, 16, 2] [1, 1, 1, 1, 1] : memref<?x4x8x16x2xbf16> to memref<1x2x8x16x2xbf16, strided<[1024, 256, 32, 2, 1], offset: ?>>
        %sb = memref.subview %b[%n, %p, 0, 0, 0] [1, 2, 16, 32, 2] [1, 1, 1, 1, 1] : memref<2x4x16x32x2xbf16> to memref<1x2x16x32x2xbf16, strided<[4096, 1024, 64, 2, 1], offset: ?>>
        %sc = memref.subview %c[%t, %n, 0, 0] [1, 1, 8, 32] [1, 1, 1, 1] : memref<?x2x8x32xf32> to memref<1x1x8x32xf32, strided<[512, 256, 32, 1], offset: ?>>
        linalg.generic {indexing_maps = [#na, #nb, #nc], iterator_types = ["parallel", "parallel", "reduction", "parallel", "parallel", "reduction", "reduction"]}
          ins(%sa, %sb : memref<1x2x8x16x2xbf16, strided<[1024, 256, 32, 2, 1], offset: ?>>, memref<1x2x16x32x2xbf16, strided<[4096, 1024, 64, 2, 1], offset: ?>>) outs(%sc : memref<1x1x8x32xf32, strided<[512, 256, 32, 1], offset: ?>>) attrs = {switchyard.amx_tile} {
        ^bb0(%x: bf16, %y: bf16, %z: f32):
          %xf = arith.extf %x : bf16 to f32
          %yf = arith.extf %y : bf16 to f32
          %m = arith.mulf %xf, %yf : f32
          %s = arith.addf %z, %m : f32
          linalg.yield %s : f32
        }
      } {switchyard.prefetch_next_panel}
    }
  } {switchyard.reduction_panels}
  return
}

// Without a marked loop over panels around the column tiles (a first panel
// that switchyard-tile-matmuls peeled), a row tile prefetches its share of
// the next column tile's panel, and the last column tile nothing.
// CHECK-LABEL: func.func @next_column_panel
// CHECK: scf.for %[[N:.+]] = %{{.+}} to %[[C2:.+]] step %[[C1:.+]] {
// CHECK:   scf.for %[[T:.+]] = %{{.+}} to %{{.+}} step %{{.+}} {
// CHECK:     %[[NEXT:.+]] = arith.addi %[[N]], %[[C1]] : index
// CHECK:     %[[WRAPS:.+]] = arith.cmpi sge, %[[NEXT]], %[[C2]] : index
// CHECK:     %[[COL:.+]] = arith.select %[[WRAPS]], %{{.+}}, %[[NEXT]] : index
// CHECK:     %[[MORE:.+]] = arith.cmpi slt, %[[NEXT]], %[[C2]] : index
// CHECK:     scf.if %[[MORE]] {
// CHECK:       scf.for
// CHECK:         memref.prefetch %{{.+}}[%[[COL]], %{{.+}}, %{{.+}}], read, locality<3>, data : memref<2x32x32xf32>
// CHECK:         memref.prefetch %{{.+}}[%[[COL]], %{{.+}}, %{{.+}}], read, locality<3>, data : memref<2x32x32xf32>
func.func @next_column_panel(%a: memref<?x32x2xf32>, %b: memref<2x32x32xf32>, %c: memref<?x2x2x32xf32>, %tiles: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c32 = arith.constant 32 : index
  scf.for %n = %c0 to %c2 step %c1 {
    scf.for %t = %c0 to %tiles step %c1 {
      %r0 = vector.load %c[%t, %n, %c0, %c0] : memref<?x2x2x32xf32>, vector<32xf32>
      %r1 = vector.load %c[%t, %n, %c1, %c0] : memref<?x2x2x32xf32>, vector<32xf32>
      %zero = arith.constant dense<0.0> : vector<2x32xf32>
      %i0 = vector.insert %r0, %zero [0] : vector<32xf32> into vector<2x32xf32>
      %init = vector.insert %r1, %i0 [1] : vector<32xf32> into vector<2x32xf32>
      %r = scf.for %k = %c0 to %c32 step %c1 iter_args(%acc = %init) -> (vector<2x32xf32>) {
        %row = vector.load %b[%n, %k, %c0] : memref<2x32x32xf32>, vector<32xf32>
        %col = vector.load %a[%t, %k, %c0] : memref<?x32x2xf32>, vector<2xf32>
        %x = vector.extract %col[0] : f32 from vector<2xf32>
        %xb = vector.broadcast %x : f32 to vector<2x32xf32>
        %wb = vector.broadcast %row : vector<32xf32> to vector<2x32xf32>
        %f = vector.fma %xb, %wb, %acc : vector<2x32xf32>
        scf.yield %f : vector<2x32xf32>
      }
      %s0 = vector.extract %r[0] : vector<32xf32> from vector<2x32xf32>
      %s1 = vector.extract %r[1] : vector<32xf32> from vector<2x32xf32>
      vector.store %s0, %c[%t, %n, %c0, %c0] : memref<?x2x2x32xf32>, vector<32xf32>
      vector.store %s1, %c[%t, %n, %c1, %c0] : memref<?x2x2x32xf32>, vector<32xf32>
    } {switchyard.prefetch_next_panel}
  }
  return
}
