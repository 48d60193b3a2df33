// Switch-Base-8, two blocks of the encoder (Fedus et al. 2021): a dense
// feed-forward block, then a Switch (top-1) MoE block with 8 experts and a
// capacity factor of 1.25; both pre-RMS-norm with a residual connection.
// d_model 768, d_ff 3072, sequences of 512 tokens, any batch.
//
//   moe-opt examples/switch-base-8.mlir                   # layer level
//   moe-opt examples/switch-base-8.mlir --moe-decompose   # routing level
//   moec examples/switch-base-8.mlir -o switch            # an executable
//
// `switchyard.weight` names each weight as moec's YAML importer does, so the
// artifact's --weights and --save-weights use the same safetensors names.

func.func @forward(%x: tensor<?x512x768xf32>,
    %norm0: tensor<768xf32> {switchyard.weight = "blocks.0.norm.weight"},
    %ffn_w1: tensor<768x3072xf32> {switchyard.weight = "blocks.0.ffn.w1"},
    %ffn_w2: tensor<3072x768xf32> {switchyard.weight = "blocks.0.ffn.w2"},
    %norm1: tensor<768xf32> {switchyard.weight = "blocks.1.norm.weight"},
    %router: tensor<768x8xf32> {switchyard.weight = "blocks.1.router.weight"},
    %w1: tensor<8x768x3072xf32> {switchyard.weight = "blocks.1.experts.w1"},
    %w2: tensor<8x3072x768xf32> {switchyard.weight = "blocks.1.experts.w2"})
    -> (tensor<?x512x768xf32>, tensor<f32>, tensor<f32>, tensor<8xi64>, tensor<i64>,
        tensor<i64>, tensor<i64>) {
  // Block 0: x <- x + ffn(rms(x))
  %n0 = moe.norm rms %x, %norm0
      : (tensor<?x512x768xf32>, tensor<768xf32>) -> tensor<?x512x768xf32>
  %f0 = moe.ffn %n0 weights(w1 %ffn_w1 w2 %ffn_w2) {activation = #moe.activation<relu>}
      : (tensor<?x512x768xf32>, tensor<768x3072xf32>, tensor<3072x768xf32>)
      -> tensor<?x512x768xf32>
  %x1 = moe.residual %x, %f0 : tensor<?x512x768xf32>

  // Block 1: x <- x + switch(rms(x))
  %n1 = moe.norm rms %x1, %norm1
      : (tensor<?x512x768xf32>, tensor<768xf32>) -> tensor<?x512x768xf32>
  %y, %aux, %z, %counts, %dropped, %unrouted, %capacity = moe.token_choice %n1
      router(%router) experts(w1 %w1 w2 %w2)
      {activation = #moe.activation<relu>, top_k = 1 : i64, capacity_factor = 1.25 : f64,
       aux_loss_weight = 0.01 : f64, z_loss_weight = 0.001 : f64}
      : (tensor<?x512x768xf32>, tensor<768x8xf32>, tensor<8x768x3072xf32>,
         tensor<8x3072x768xf32>)
      -> (tensor<?x512x768xf32>, tensor<f32>, tensor<f32>, tensor<8xi64>, tensor<i64>,
          tensor<i64>, tensor<i64>)
  %x2 = moe.residual %x1, %y : tensor<?x512x768xf32>
  return %x2, %aux, %z, %counts, %dropped, %unrouted, %capacity
      : tensor<?x512x768xf32>, tensor<f32>, tensor<f32>, tensor<8xi64>, tensor<i64>,
        tensor<i64>, tensor<i64>
}
