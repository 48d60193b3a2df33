// RUN: moe-opt %s -convert-moe-to-linalg=bf16-amx=true -canonicalize | FileCheck %s

// bf16 experts with bf16-amx: the weights are packed in pairs
// [E, N/32, K/2, 32, 2], as for bf16-dot-products; a block's rows are
// [MT, K/32, 8, 32] in bf16, 8 rows by 32 reduction steps, the shape of an
// AMX tile of rows; each product reads them as [MT, K/32, 8, 16, 2] and the
// weights as [NT, K/32, 16, 32, 2], loops (mt, nt, kb, i, j, q, p) with
// reduction step 32 * kb + 2 * q + p; the hidden activations are written in
// the accumulator's own layout, [MT, F/32, 8, 32], in bf16.

// CHECK-LABEL: func.func @experts_amx
// CHECK:       linalg.transpose ins(%{{.+}} : tensor<4x16x2x2x32xbf16>) outs(%{{.+}} : tensor<4x2x16x32x2xbf16>) permutation = [0, 3, 1, 4, 2]  {switchyard.pack_weight}
// CHECK:       linalg.transpose ins(%{{.+}} : tensor<4x32x2x1x32xbf16>) outs(%{{.+}} : tensor<4x1x32x32x2xbf16>) permutation = [0, 3, 1, 4, 2]  {switchyard.pack_weight}
// CHECK:       scf.forall
// CHECK:         %[[ROWS:.+]] = linalg.generic {{.+}} outs(%{{.+}} : tensor<1x1x8x32xbf16>)
// CHECK:         %[[A:.+]] = tensor.expand_shape %[[ROWS]] {{.+}} : tensor<1x1x8x32xbf16> into tensor<1x1x8x16x2xbf16>
// CHECK:         %[[W:.+]] = tensor.expand_shape %{{.+}} : tensor<2x16x32x2xbf16> into tensor<2x1x16x32x2xbf16>
// CHECK:         %[[H1:.+]] = linalg.generic {{.+}}iterator_types = ["parallel", "parallel", "reduction", "parallel", "parallel", "reduction", "reduction"]{{.+}} ins(%[[A]], %[[W]] : tensor<1x1x8x16x2xbf16>, tensor<2x1x16x32x2xbf16>) outs(%{{.+}} : tensor<1x2x8x32xf32>)
// CHECK:         %[[H:.+]] = linalg.generic {{.+}} ins(%[[H1]] : tensor<1x2x8x32xf32>) outs(%{{.+}} : tensor<1x2x8x32xbf16>)
// CHECK:           math.erf
// CHECK:         %[[HA:.+]] = tensor.expand_shape %[[H]] {{.+}} : tensor<1x2x8x32xbf16> into tensor<1x2x8x16x2xbf16>
// CHECK:         linalg.generic {{.+}} ins(%[[HA]], %{{.+}} : tensor<1x2x8x16x2xbf16>, tensor<1x2x16x32x2xbf16>) outs(%{{.+}} : tensor<1x1x8x32xf32>)
func.func @experts_amx(%in: tensor<4x6x32xbf16>, %w1: tensor<4x32x64xbf16>,
    %w2: tensor<4x64x32xbf16>) -> tensor<4x6x32xbf16> {
  %o = moe.experts %in weights(w1 %w1 w2 %w2) {activation = #moe.activation<gelu>}
      : (tensor<4x6x32xbf16>, tensor<4x32x64xbf16>, tensor<4x64x32xbf16>)
      -> tensor<4x6x32xbf16>
  return %o : tensor<4x6x32xbf16>
}
