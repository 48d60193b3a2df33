// RUN: moe-opt %s --switchyard-tile-matmuls='thread-tile-m=16 thread-tile-n=64 reduction-tile-k=32 register-tile-m=4 register-tile-n=16' | FileCheck %s

// Blocks for threads (scf.forall), reduction panels, register tiles with the
// columns outside the rows; full register tiles become a vector.contract
// whose 4x16 accumulator is carried through the reduction loop; the row
// remainder (the batch is dynamic) stays scalar, generalized so that its
// multiply and add are marked `contract` (one rounding, as the FMAs).

// CHECK-LABEL: func.func @matmul
// CHECK: scf.forall ({{.*}}) = (0, 0) to (%{{.*}}, 96) step (16, 64)
// CHECK:   scf.for %{{.*}} = %c0 to %c64 step %c32
// CHECK:     scf.for %[[N:.*]] = %c0 to %{{.*}} step %c16
// CHECK:       scf.for %[[M:.*]] = %c0 to %{{.*}} step %c4
// CHECK:         %[[ACC:.*]] = vector.transfer_read {{.*}} : tensor<4x16xf32>, vector<4x16xf32>
// CHECK:         scf.for %{{.*}} = %c0 to %c32 step %c1 iter_args({{.*}}, %[[A:.*]] = %[[ACC]]) -> ({{.*}}, vector<4x16xf32>)
// CHECK:           vector.contract {{.*}} %[[A]] : vector<4x16x1xf32>, vector<4x16x1xf32> into vector<4x16xf32>
// CHECK:         vector.transfer_write {{.*}} : vector<4x16xf32>, tensor<4x16xf32>
// CHECK:       scf.for %{{.*}} = %{{.*}} to %{{.*}} step %c4
// CHECK:         linalg.generic {{.*}} ins({{.*}} : tensor<?x1xf32>, tensor<1x16xf32>)
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
