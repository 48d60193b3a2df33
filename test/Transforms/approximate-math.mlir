// RUN: moe-opt %s --switchyard-approximate-math | FileCheck %s

// f32 exp and erf, vector and scalar, become polynomials: no call to libm
// is left for convert-math-to-libm to make. exp reduces its range with
// floor and rebuilds 2^n from the exponent bits; erf evaluates a rational
// function on |x| and restores the sign.

// CHECK-LABEL: func.func @exp_erf
// CHECK-NOT:     math.exp
// CHECK-NOT:     math.erf
// CHECK:         math.floor %{{.+}} : vector<16xf32>
// CHECK:         math.fma
// CHECK:         arith.shli %{{.+}} : vector<16xi32>
// CHECK:         arith.bitcast %{{.+}} : vector<16xi32> to vector<16xf32>
// CHECK:         arith.divf %{{.+}} : vector<16xf32>
// CHECK:         math.copysign %{{.+}}, %arg0 : vector<16xf32>
// CHECK:         math.floor %{{.+}} : f32
// CHECK:         arith.divf %{{.+}} : f32
// CHECK:         math.copysign %{{.+}}, %arg1 : f32
// CHECK-NOT:     math.exp
// CHECK-NOT:     math.erf
// CHECK:         return
func.func @exp_erf(%v: vector<16xf32>, %s: f32) -> (vector<16xf32>, vector<16xf32>, f32, f32) {
  %0 = math.exp %v : vector<16xf32>
  %1 = math.erf %v : vector<16xf32>
  %2 = math.exp %s : f32
  %3 = math.erf %s : f32
  return %0, %1, %2, %3 : vector<16xf32>, vector<16xf32>, f32, f32
}

// tanh keeps its libm call: the approximation's clamps would turn NaN into
// +-1. Other element types are left as they are.

// So are f16 and tensors (the polynomials are built for f32 scalars and
// vectors; a tensor's made invalid IR).

// CHECK-LABEL: func.func @kept
// CHECK:         math.tanh %{{.+}} : vector<16xf32>
// CHECK:         math.exp %{{.+}} : vector<4xf64>
// CHECK:         math.erf %{{.+}} : f16
// CHECK-NOT:     math.copysign
// CHECK:         math.erf %{{.+}} : tensor<4xf32>
// CHECK:         math.exp %{{.+}} : tensor<4xf32>
func.func @kept(%v: vector<16xf32>, %d: vector<4xf64>, %h: f16, %t: tensor<4xf32>) -> (vector<16xf32>, vector<4xf64>, f16, tensor<4xf32>, tensor<4xf32>) {
  %0 = math.tanh %v : vector<16xf32>
  %1 = math.exp %d : vector<4xf64>
  %2 = math.erf %h : f16
  %3 = math.erf %t : tensor<4xf32>
  %4 = math.exp %t : tensor<4xf32>
  return %0, %1, %2, %3, %4 : vector<16xf32>, vector<4xf64>, f16, tensor<4xf32>, tensor<4xf32>
}
