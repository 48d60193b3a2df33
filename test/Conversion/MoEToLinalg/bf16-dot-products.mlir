// RUN: moe-opt %s -convert-moe-to-linalg=bf16-dot-products=true -canonicalize | FileCheck %s
// RUN: moe-opt %s -convert-moe-to-linalg -canonicalize | FileCheck %s --check-prefix=OFF

// bf16 experts with bf16-dot-products: the packed products read their
// operands in pairs along the reduction, the layout of the AVX-512 BF16
// dot-product instruction. The weights [E, K, N] are packed as
// [E, N/32, K/2, 32, 2] (once, at load time, after
// switchyard-hoist-weight-packing); a block's rows as [MT, K/2, 8, 2] in
// bf16, element (k2, p) being column 2 * k2 + p; the hidden activations are
// written in the same layout by the first product's epilogue.

// CHECK-LABEL: func.func @experts_pairs
// CHECK:       %[[W1:.+]] = linalg.transpose ins(%{{.+}} : tensor<4x16x2x2x32xbf16>) outs(%{{.+}} : tensor<4x2x16x32x2xbf16>) permutation = [0, 3, 1, 4, 2]  {switchyard.pack_weight}
// CHECK:       %[[W2:.+]] = linalg.transpose ins(%{{.+}} : tensor<4x32x2x1x32xbf16>) outs(%{{.+}} : tensor<4x1x32x32x2xbf16>) permutation = [0, 3, 1, 4, 2]  {switchyard.pack_weight}
// CHECK:       scf.forall
// CHECK:         %[[ROWS:.+]] = linalg.generic {{.+}} outs(%{{.+}} : tensor<1x16x8x2xbf16>)
// CHECK:           %[[D2:.+]] = linalg.index 1 : index
// CHECK:           %[[TWICE:.+]] = arith.muli %[[D2]], %c2
// CHECK:           %[[P:.+]] = linalg.index 3 : index
// CHECK:           %[[D:.+]] = arith.addi %[[TWICE]], %[[P]]
// CHECK:           tensor.extract %{{.+}}[%{{.+}}, %{{.+}}, %[[D]]] : tensor<4x6x32xbf16>
// CHECK:         %[[H1:.+]] = linalg.generic {{.+}}iterator_types = ["parallel", "parallel", "reduction", "parallel", "parallel", "reduction"]{{.+}} ins(%[[ROWS]], %{{.+}} : tensor<1x16x8x2xbf16>, tensor<2x16x32x2xbf16>) outs(%{{.+}} : tensor<1x2x8x32xf32>)
// CHECK:         %[[SPLIT:.+]] = tensor.expand_shape %[[H1]] {{.+}} : tensor<1x2x8x32xf32> into tensor<1x2x8x16x2xf32>
// CHECK:         %[[H:.+]] = linalg.generic {{.+}} ins(%[[SPLIT]] : tensor<1x2x8x16x2xf32>) outs(%{{.+}} : tensor<1x2x16x8x2xbf16>)
// CHECK:           math.erf
// CHECK:           arith.truncf %{{.+}} : f32 to bf16
// CHECK:         %[[HP:.+]] = tensor.collapse_shape %[[H]] {{.+}} : tensor<1x2x16x8x2xbf16> into tensor<1x32x8x2xbf16>
// CHECK:         linalg.generic {{.+}} ins(%[[HP]], %{{.+}} : tensor<1x32x8x2xbf16>, tensor<1x32x32x2xbf16>) outs(%{{.+}} : tensor<1x1x8x32xf32>)

// Without the option, the same experts take the f32 packed layout.
// OFF-LABEL: func.func @experts_pairs
// OFF:       linalg.transpose ins(%{{.+}} : tensor<4x32x2x32xbf16>) outs(%{{.+}} : tensor<4x2x32x32xbf16>) permutation = [0, 2, 1, 3]
// OFF-NOT:   x2xbf16>
// OFF:       linalg.generic {{.+}} outs(%{{.+}} : tensor<1x32x8xf32>)
func.func @experts_pairs(%in: tensor<4x6x32xbf16>, %w1: tensor<4x32x64xbf16>,
    %w2: tensor<4x64x32xbf16>) -> tensor<4x6x32xbf16> {
  %o = moe.experts %in weights(w1 %w1 w2 %w2) {activation = #moe.activation<gelu>}
      : (tensor<4x6x32xbf16>, tensor<4x32x64xbf16>, tensor<4x64x32xbf16>)
      -> tensor<4x6x32xbf16>
  return %o : tensor<4x6x32xbf16>
}

// f32 experts are not affected by the option.
// CHECK-LABEL: func.func @experts_f32
// CHECK-NOT:   x2xf32>
// CHECK:       linalg.transpose ins(%{{.+}} : tensor<4x32x2x32xf32>) outs(%{{.+}} : tensor<4x2x32x32xf32>) permutation = [0, 2, 1, 3]
func.func @experts_f32(%in: tensor<4x6x32xf32>, %w1: tensor<4x32x64xf32>,
    %w2: tensor<4x64x32xf32>) -> tensor<4x6x32xf32> {
  %o = moe.experts %in weights(w1 %w1 w2 %w2) {activation = #moe.activation<gelu>}
      : (tensor<4x6x32xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>)
      -> tensor<4x6x32xf32>
  return %o : tensor<4x6x32xf32>
}
