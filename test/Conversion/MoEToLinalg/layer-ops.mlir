// RUN: moe-opt %s --split-input-file --convert-moe-to-linalg -verify-diagnostics

// Layer-level ops are moe-decompose's to take apart; the conversion names
// the pass to run instead of failing to legalize them.

func.func @ffn(%x: tensor<?x8x16xf32>, %w1: tensor<16x32xf32>, %w2: tensor<32x16xf32>) -> tensor<?x8x16xf32> {
  // expected-error @+1 {{'moe.ffn' is a layer-level op: run moe-decompose first (or the whole --switchyard-cpu-pipeline)}}
  %y = moe.ffn %x weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<?x8x16xf32>, tensor<16x32xf32>, tensor<32x16xf32>) -> tensor<?x8x16xf32>
  return %y : tensor<?x8x16xf32>
}

// -----

func.func @residual(%x: tensor<?x8x16xf32>, %g: tensor<?x8x16xf32>) -> tensor<?x8x16xf32> {
  // expected-error @+1 {{'moe.residual' is a layer-level op: run moe-decompose first (or the whole --switchyard-cpu-pipeline)}}
  %y = moe.residual %x, %g : tensor<?x8x16xf32>
  return %y : tensor<?x8x16xf32>
}
