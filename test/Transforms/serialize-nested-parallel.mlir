// RUN: moe-opt %s --switchyard-serialize-nested-parallel | FileCheck %s

// Outermost parallel loops stay parallel (they become OpenMP regions); those
// nested in another loop become sequential loops.

// CHECK-LABEL: func.func @nested
// CHECK: scf.parallel (%[[I:.*]]) = (%c0) to (%c8) step (%c1)
// CHECK-NOT: scf.parallel
// CHECK:   scf.for %{{.*}} = %c0 to %c4 step %c1
// CHECK:     scf.for %{{.*}} = %c0 to %c4 step %c1
// CHECK: scf.for
// CHECK-NOT: scf.parallel
// CHECK:   scf.for %{{.*}} = %c0 to %c8 step %c1
func.func @nested(%m: memref<8x4x4xf32>, %v: f32) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c4 = arith.constant 4 : index
  %c8 = arith.constant 8 : index
  scf.parallel (%i) = (%c0) to (%c8) step (%c1) {
    scf.parallel (%j, %k) = (%c0, %c0) to (%c4, %c4) step (%c1, %c1) {
      memref.store %v, %m[%i, %j, %k] : memref<8x4x4xf32>
    }
  }
  scf.for %j = %c0 to %c4 step %c1 {
    scf.parallel (%i) = (%c0) to (%c8) step (%c1) {
      memref.store %v, %m[%i, %j, %j] : memref<8x4x4xf32>
    }
  }
  return
}

// The blocks of a vectorized product inside a sequential loop (one expert
// after another) stay parallel; loops nested in them do not.
// CHECK-LABEL: func.func @product_blocks
// CHECK: scf.for
// CHECK:   scf.parallel
// CHECK-NOT: scf.parallel
// CHECK:     vector.fma
func.func @product_blocks(%m: memref<4x8x16xf32>, %v: vector<16xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c4 = arith.constant 4 : index
  %c8 = arith.constant 8 : index
  scf.for %e = %c0 to %c4 step %c1 {
    scf.parallel (%i) = (%c0) to (%c8) step (%c1) {
      %f = vector.fma %v, %v, %v : vector<16xf32>
      vector.store %f, %m[%e, %i, %c0] : memref<4x8x16xf32>, vector<16xf32>
      scf.parallel (%j) = (%c0) to (%c4) step (%c1) {
        vector.store %f, %m[%e, %j, %c0] : memref<4x8x16xf32>, vector<16xf32>
      }
    }
  }
  return
}
