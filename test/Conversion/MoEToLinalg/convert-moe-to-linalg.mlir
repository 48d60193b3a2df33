// RUN: moe-opt %s -convert-moe-to-linalg -canonicalize -split-input-file | FileCheck %s

// The router runs in f32 on a bf16 model: the product extends x; the
// softmax subtracts the row maximum.

// CHECK-DAG: #[[$X:.+]] = affine_map<(d0, d1, d2, d3) -> (d0, d1, d3)>
// CHECK-DAG: #[[$W:.+]] = affine_map<(d0, d1, d2, d3) -> (d3, d2)>
// CHECK-LABEL: func.func @router
// CHECK:       %[[Z:.+]] = linalg.generic {indexing_maps = [#[[$X]], #[[$W]], #{{.+}}], iterator_types = ["parallel", "parallel", "parallel", "reduction"]}
// CHECK:         arith.extf %{{.+}} : bf16 to f32
// CHECK:       %[[MAX:.+]] = linalg.generic
// CHECK-SAME:    ins(%[[Z]] :
// CHECK:         arith.maximumf
// CHECK:       %[[SUM:.+]] = linalg.generic
// CHECK-SAME:    ins(%[[Z]], %[[MAX]] :
// CHECK:         arith.subf
// CHECK:         math.exp
// CHECK:       linalg.generic
// CHECK-SAME:    ins(%[[Z]], %[[MAX]], %[[SUM]] :
// CHECK:         arith.divf
// CHECK-NOT:   moe.
func.func @router(%x: tensor<2x8x16xbf16>, %w: tensor<16x4xf32>) -> tensor<2x8x4xf32> {
  %z = moe.router_logits %x, %w : (tensor<2x8x16xbf16>, tensor<16x4xf32>) -> tensor<2x8x4xf32>
  %p = moe.router_probs %z : tensor<2x8x4xf32>
  return %p : tensor<2x8x4xf32>
}

// -----

// Batch priority sorts the tokens by their rank-1 probability with a stable
// radix sort: four 8-bit digit passes, never a quadratic search.

// CHECK-LABEL: func.func @batch_priority
// CHECK-DAG:   arith.constant 8 : i32
// CHECK-DAG:   arith.constant 16 : i32
// CHECK-DAG:   arith.constant 24 : i32
// CHECK-DAG:   arith.constant 256 : index
// CHECK:       scf.for
// CHECK:         arith.bitcast %{{.+}} : f32 to i32
// CHECK:         arith.shrui
// CHECK-NOT:   moe.
func.func @batch_priority(%p: tensor<2x8x4xf32>) -> (tensor<2x8x1xi64>, tensor<2x8x1xi1>) {
  %c = arith.constant 2 : index
  %e, %g, %pos, %kept = moe.token_choice_route %p, %c {priority = #moe.priority<batch>}
      : (tensor<2x8x4xf32>, index)
      -> (tensor<2x8x1xi64>, tensor<2x8x1xf32>, tensor<2x8x1xi64>, tensor<2x8x1xi1>)
  return %e, %kept : tensor<2x8x1xi64>, tensor<2x8x1xi1>
}

// -----

// Dispatch is a gather through a slot -> token table; empty rows are zero.

// CHECK-LABEL: func.func @dispatch
// CHECK:       %[[TABLE:.+]] = scf.for
// CHECK:       linalg.generic
// CHECK-SAME:    ins(%[[TABLE]] : tensor<4x2x3xi64>)
// CHECK:         %[[G:.+]] = linalg.index 1 : index
// CHECK:         %[[D:.+]] = linalg.index 3 : index
// CHECK:         tensor.extract %{{.+}}[%[[G]], %{{.+}}, %[[D]]] : tensor<2x8x16xf32>
// CHECK:         arith.select
// CHECK-NOT:   moe.
func.func @dispatch(%x: tensor<2x8x16xf32>, %e: tensor<2x8x1xi64>, %pos: tensor<2x8x1xi64>,
    %kept: tensor<2x8x1xi1>) -> tensor<4x2x3x16xf32> {
  %c = arith.constant 3 : index
  %b = moe.dispatch %x, %e, %pos, %kept, %c
      : (tensor<2x8x16xf32>, tensor<2x8x1xi64>, tensor<2x8x1xi64>, tensor<2x8x1xi1>, index)
      -> tensor<4x2x3x16xf32>
  return %b : tensor<4x2x3x16xf32>
}

// -----

// Experts: batched products accumulate in f32, the hidden activation and the
// output are stored in the model dtype; the gated form has a third product.

// CHECK-LABEL: func.func @experts_swiglu
// CHECK:       %[[H1:.+]] = linalg.batch_matmul ins(%{{.+}}, %{{.+}} : tensor<4x6x16xbf16>, tensor<4x16x32xbf16>) outs(%{{.+}} : tensor<4x6x32xf32>)
// CHECK:       %[[HG:.+]] = linalg.batch_matmul ins(%{{.+}}, %{{.+}} : tensor<4x6x16xbf16>, tensor<4x16x32xbf16>) outs(%{{.+}} : tensor<4x6x32xf32>)
// CHECK:       %[[H:.+]] = linalg.generic {{.+}} ins(%[[H1]], %[[HG]] : tensor<4x6x32xf32>, tensor<4x6x32xf32>) outs(%{{.+}} : tensor<4x6x32xbf16>)
// CHECK:         math.exp
// CHECK:         arith.truncf %{{.+}} : f32 to bf16
// CHECK:       %[[O:.+]] = linalg.batch_matmul ins(%[[H]], %{{.+}} : tensor<4x6x32xbf16>, tensor<4x32x16xbf16>) outs(%{{.+}} : tensor<4x6x16xf32>)
// CHECK:       linalg.generic {{.+}} ins(%[[O]] : tensor<4x6x16xf32>) outs(%{{.+}} : tensor<4x6x16xbf16>)
func.func @experts_swiglu(%in: tensor<4x6x16xbf16>, %w1: tensor<4x16x32xbf16>,
    %wg: tensor<4x16x32xbf16>, %w2: tensor<4x32x16xbf16>) -> tensor<4x6x16xbf16> {
  %o = moe.experts %in weights(w1 %w1 wg %wg w2 %w2) {activation = #moe.activation<swiglu>}
      : (tensor<4x6x16xbf16>, tensor<4x16x32xbf16>, tensor<4x16x32xbf16>, tensor<4x32x16xbf16>)
      -> tensor<4x6x16xbf16>
  return %o : tensor<4x6x16xbf16>
}

// -----

// Dropless experts: one product per expert over its rows.

// CHECK-LABEL: func.func @grouped_experts
// CHECK:       scf.for
// CHECK:         tensor.extract_slice %{{.+}}[%{{.+}}, 0] [%{{.+}}, 16] [1, 1] : tensor<?x16xf32> to tensor<?x16xf32>
// CHECK:         linalg.matmul
// CHECK:         linalg.matmul
// CHECK:         tensor.insert_slice
func.func @grouped_experts(%rows: tensor<?x16xf32>, %off: tensor<5xi64>,
    %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) -> tensor<?x16xf32> {
  %o = moe.grouped_experts %rows, %off weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<?x16xf32>, tensor<5xi64>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<?x16xf32>
  return %o : tensor<?x16xf32>
}

// -----

// Soft dispatch: exp(L - max) over tokens, materialized (one exp a weight),
// then a batched product over the tokens into [NG, n*p, D] divided by the
// column sums, then the slots s = e * p + q laid out as [n, NG, p, D].

// CHECK-DAG: #[[$W:.+]] = affine_map<(d0, d1, d2, d3) -> (d0, d3, d1)>
// CHECK-DAG: #[[$X:.+]] = affine_map<(d0, d1, d2, d3) -> (d0, d3, d2)>
// CHECK-LABEL: func.func @soft_dispatch
// CHECK:       %[[W:.+]] = linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "parallel"]}
// CHECK:         math.exp
// CHECK-NOT:     arith.divf
// CHECK:       %[[U:.+]] = linalg.generic {indexing_maps = [#[[$W]], #[[$X]], {{.+}}], iterator_types = ["parallel", "parallel", "parallel", "reduction"]} ins(%[[W]], %{{.*}} : tensor<2x8x4xf32>, tensor<2x8x16xf32>) outs({{.*}} : tensor<2x4x16xf32>)
// CHECK:       %[[P:.+]] = linalg.generic {{.*}} ins(%[[U]], %{{.*}} : tensor<2x4x16xf32>, tensor<2x4xf32>)
// CHECK:         arith.divf
// CHECK:       %[[E:.+]] = tensor.expand_shape %[[P]] {{\[\[}}0], [1, 2], [3]] output_shape [2, 2, 2, 16] : tensor<2x4x16xf32> into tensor<2x2x2x16xf32>
// CHECK:       linalg.transpose ins(%[[E]] : tensor<2x2x2x16xf32>) outs({{.*}}) permutation = [1, 0, 2, 3]
func.func @soft_dispatch(%x: tensor<2x8x16xf32>, %l: tensor<2x8x4xf32>) -> tensor<2x2x2x16xf32> {
  %s = moe.soft_dispatch %x, %l {slots_per_expert = 2 : i64}
      : (tensor<2x8x16xf32>, tensor<2x8x4xf32>) -> tensor<2x2x2x16xf32>
  return %s : tensor<2x2x2x16xf32>
}

// -----

// Soft combine: the slot outputs regrouped as [NG, n*p, D], the softmax over
// slots materialized, then one batched product over the slots.

// CHECK-LABEL: func.func @soft_combine
// CHECK:       %[[T:.+]] = linalg.transpose ins(%{{.*}} : tensor<2x2x2x16xf32>) outs({{.*}}) permutation = [1, 0, 2, 3]
// CHECK:       %[[C:.+]] = tensor.collapse_shape %[[T]] {{\[\[}}0], [1, 2], [3]] : tensor<2x2x2x16xf32> into tensor<2x4x16xf32>
// CHECK:       %[[W:.+]] = linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "parallel"]}
// CHECK:         math.exp
// CHECK:       linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "parallel", "reduction"]} ins(%[[W]], %[[C]] : tensor<2x8x4xf32>, tensor<2x4x16xf32>) outs({{.*}} : tensor<2x8x16xf32>)
func.func @soft_combine(%ys: tensor<2x2x2x16xf32>, %l: tensor<2x8x4xf32>) -> tensor<2x8x16xf32> {
  %y = moe.soft_combine %l, %ys
      : (tensor<2x8x4xf32>, tensor<2x2x2x16xf32>) -> tensor<2x8x16xf32>
  return %y : tensor<2x8x16xf32>
}

// -----

// moe.routed_experts: a compaction loop gives each expert its kept rows
// (rowToken) and each assignment its row (slotOf); one parallel task per
// (expert, block) gathers its rows from x and runs the MLP on them alone; the
// combine reads each kept assignment's row. An expert's count, rounded up to
// the 8-row register tile, is split into max(1, ceil((max(tiles, 8) - 8) /
// 32)) blocks (at most 320 rows each) of nearly equal numbers of tiles:
// block j starts at tile floor(min(j, parts) * tiles / parts), so blocks
// past the last are empty. The output is as tall as the most rows an expert
// can own, rounded up to 8.

// CHECK-LABEL: func.func @routed_experts
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<?x8x16xf32>, %[[E:[a-z0-9]+]]: tensor<?x8x1xi64>, %[[K:[a-z0-9]+]]: tensor<?x8x1xi1>, %[[G:[a-z0-9]+]]: tensor<?x8x1xf32>, %[[W1:[a-z0-9]+]]: tensor<4x16x32xf32>, %[[W2:[a-z0-9]+]]: tensor<4x32x16xf32>)
// CHECK-DAG:   %[[C1:.+]] = arith.constant 1 : index
// CHECK-DAG:   %[[C3:.+]] = arith.constant 3 : index
// CHECK-DAG:   %[[C8:.+]] = arith.constant 8 : index
// CHECK-DAG:   %[[C32:.+]] = arith.constant 32 : index
// CHECK-DAG:   %[[C256:.+]] = arith.constant 256 : index
// CHECK:       %[[NG:.+]] = tensor.dim %[[X]]
// CHECK:       %[[MAXROWS:.+]] = arith.muli %[[NG]], %[[C3]] : index
// CHECK:       %[[PADDED:.+]] = arith.muli %{{.+}}, %[[C8]] : index
// CHECK:       tensor.empty(%[[PADDED]]) : tensor<4x?xi64>
// CHECK:       %[[TABLES:.+]]:3 = scf.for
// CHECK:         scf.for
// CHECK:           scf.if
// CHECK:       %[[XF:.+]] = tensor.collapse_shape %[[X]] {{\[}}[0, 1], [2]]
// CHECK:       %[[NBLOCKS:.+]] = arith.ceildivui %[[MAXROWS]], %[[C256]] : index
// CHECK:       %[[OUT:.+]] = scf.forall (%[[EI:.+]], %[[BI:.+]]) in (4, %[[NBLOCKS]]) shared_outs(%[[O:.+]] = %{{.+}}) -> (tensor<4x?x16xf32>)
// CHECK:         %[[CNT:.+]] = tensor.extract %[[TABLES]]#0[%[[EI]]]
// CHECK:         %[[TILES:.+]] = arith.ceildivui %{{.+}}, %[[C8]]
// CHECK:         %[[AT:.+]] = arith.maxui %[[TILES]], %[[C8]]
// CHECK:         %[[BEYOND:.+]] = arith.subi %[[AT]], %[[C8]]
// CHECK:         %[[P:.+]] = arith.ceildivui %[[BEYOND]], %[[C32]]
// CHECK:         %[[PARTS:.+]] = arith.maxui %[[P]], %[[C1]]
// CHECK:         %[[J:.+]] = arith.minui %[[BI]], %[[PARTS]]
// CHECK:         %[[JT:.+]] = arith.muli %[[J]], %[[TILES]]
// CHECK:         %[[T0:.+]] = arith.divui %[[JT]], %[[PARTS]]
// CHECK:         %[[START:.+]] = arith.muli %[[T0]], %[[C8]]
// CHECK:         %[[NEXT:.+]] = arith.addi %[[BI]], %[[C1]]
// CHECK:         %[[J1:.+]] = arith.minui %[[NEXT]], %[[PARTS]]
// CHECK:         %[[J1T:.+]] = arith.muli %[[J1]], %[[TILES]]
// CHECK:         %[[T1:.+]] = arith.divui %[[J1T]], %[[PARTS]]
// CHECK:         %[[END:.+]] = arith.muli %[[T1]], %[[C8]]
// CHECK:         %[[ROWS:.+]] = arith.subi %[[END]], %[[START]]
// CHECK:         %[[A:.+]] = linalg.generic {{.+}} outs(%{{.+}} : tensor<?x16xf32>)
// CHECK:           tensor.extract %[[TABLES]]#1[%[[EI]], %{{.+}}] : tensor<4x?xi64>
// CHECK:           tensor.extract %[[XF]]
// CHECK:         %[[W1E:.+]] = tensor.extract_slice %[[W1]][%[[EI]], 0, 0] [1, 16, 32] [1, 1, 1]
// CHECK:         %[[W2E:.+]] = tensor.extract_slice %[[W2]][%[[EI]], 0, 0] [1, 32, 16] [1, 1, 1]
// CHECK:         linalg.matmul ins(%[[A]], %[[W1E]] : tensor<?x16xf32>, tensor<16x32xf32>)
// CHECK:         %[[Y:.+]] = linalg.matmul ins(%{{.+}}, %[[W2E]] : tensor<?x32xf32>, tensor<32x16xf32>)
// CHECK:         scf.forall.in_parallel
// CHECK-NEXT:      tensor.parallel_insert_slice %[[Y]] into %[[O]][%[[EI]], %[[START]], 0] [1, %[[ROWS]], 16] [1, 1, 1]
// CHECK:       linalg.generic
// CHECK:         tensor.extract %[[TABLES]]#2
// CHECK:         tensor.extract %[[OUT]]
// CHECK-NOT:   tensor<4x?x3x16xf32>
func.func @routed_experts(%x: tensor<?x8x16xf32>, %e: tensor<?x8x1xi64>,
                          %kept: tensor<?x8x1xi1>, %g: tensor<?x8x1xf32>,
                          %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>)
    -> tensor<?x8x16xf32> {
  %c3 = arith.constant 3 : index
  %y = moe.routed_experts %x, %e, %kept, %g capacity %c3
      weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<?x8x16xf32>, tensor<?x8x1xi64>, tensor<?x8x1xi1>,
         tensor<?x8x1xf32>, index, tensor<4x16x32xf32>, tensor<4x32x16xf32>)
      -> tensor<?x8x16xf32>
  return %y : tensor<?x8x16xf32>
}

// -----

// moe.chosen_experts: one parallel task per (expert, 256-row block) reads
// row r's token from slot (r / C, r % C) of the chosen tokens and x, runs the
// MLP on the block. The combine scatters each taken slot's index into a
// [NG, G, E] table, then sums each token's rows, in expert order, in one
// all-parallel generic over the output, reading slot (g, c) of expert e at
// row g * C + c of the row blocks' output.

// CHECK-LABEL: func.func @chosen_experts
// CHECK:       scf.forall (%[[E:.+]], %{{.+}}) in (4, %{{.+}}) shared_outs
// CHECK:         linalg.generic
// CHECK:           arith.divui %{{.+}}, %c4
// CHECK:           arith.remui %{{.+}}, %c4
// CHECK:           tensor.extract %{{.+}} : tensor<?x4x4xi64>
// CHECK:         linalg.matmul
// CHECK:         linalg.matmul
// CHECK:         tensor.parallel_insert_slice
// CHECK-NOT:   tensor.expand_shape
// CHECK:       linalg.fill ins(%c-1_i64 : i64) outs(%{{.+}} : tensor<?x8x4xi64>)
// CHECK:       scf.for
// CHECK:         scf.for
// CHECK:           scf.for
// CHECK:             scf.if
// CHECK:               tensor.insert %{{.+}} : tensor<?x8x4xi64>
// CHECK:       linalg.generic {{.+}} iterator_types = ["parallel", "parallel", "parallel"]
// CHECK-COUNT-4: tensor.extract %{{.+}} : tensor<4x?x16xf32>
// CHECK:         arith.cmpf uno
// CHECK:         linalg.yield
// CHECK-NOT:   moe.
func.func @chosen_experts(%x: tensor<?x8x16xf32>, %tok: tensor<?x4x4xi64>,
                          %g: tensor<?x4x4xf32>, %p: tensor<?x8x4xf32>,
                          %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>)
    -> tensor<?x8x16xf32> {
  %y = moe.chosen_experts %x, %tok, %g, %p weights(w1 %w1 w2 %w2)
      {activation = #moe.activation<relu>}
      : (tensor<?x8x16xf32>, tensor<?x4x4xi64>, tensor<?x4x4xf32>,
         tensor<?x8x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>)
      -> tensor<?x8x16xf32>
  return %y : tensor<?x8x16xf32>
}

// -----

// moe.soft_experts: the dispatch is one parallel task per group and block
// of (up to 32) slots, here one block of the 4. Its softmax over tokens is
// taken online, 64 tokens at a time (100 = 64 + 36): the running column
// maximum, sum and slot accumulators are rescaled by exp(M_old - M_new) and
// the tile's exp(L - M_new) mixed in; the slots are divided by the sum once.
// Each expert's row block reads its slots from that mix, and the combine is
// one parallel task per group and tile of 64 tokens, taking the softmax over
// slots and reading the expert outputs in place (Ys[g, s] = out[s, g]). No
// [NG, 100, S] weight matrix is built.

// CHECK-DAG:   #[[$TOKSLOT:.+]] = affine_map<(d0, d1, d2, d3) -> (d0, d3, d1)>
// CHECK-DAG:   #[[$SLOTOUT:.+]] = affine_map<(d0, d1, d2, d3) -> (d3, d0, d2)>
// CHECK-LABEL: func.func @soft_experts
// CHECK-SAME:  (%[[X:[a-z0-9]+]]: tensor<?x100x64xf32>, %[[L:[a-z0-9]+]]: tensor<?x100x4xf32>
// CHECK-DAG:   %[[C64:.+]] = arith.constant 64 : index
// CHECK-DAG:   %[[C100:.+]] = arith.constant 100 : index
// CHECK:       %[[XS:.+]] = scf.forall (%[[G:.+]]) in (%{{.+}}) shared_outs(%[[XSACC:.+]] = %{{.+}}) -> (tensor<?x4x64xf32>)
// CHECK:         %[[XG:.+]] = tensor.extract_slice %[[X]][%[[G]], 0, 0] [1, 100, 64]
// CHECK:         %[[LG:.+]] = tensor.extract_slice %[[L]][%[[G]], 0, 0] [1, 100, 4]
// CHECK:         %[[STATE:.+]]:3 = scf.for %[[I:.+]] = %{{.+}} to %[[C100]] step %[[C64]] iter_args(%[[M:.+]] = %{{.+}}, %[[Z:.+]] = %{{.+}}, %[[A:.+]] = %{{.+}}) -> (tensor<1x?xf32>, tensor<1x4xf32>, tensor<1x4x64xf32>)
// CHECK:           %[[SIZE:.+]] = arith.minui %{{.+}}, %[[C64]] : index
// CHECK:           %[[LT:.+]] = tensor.extract_slice %[[LG]][0, %[[I]], 0] [1, %[[SIZE]], 4]
// CHECK:           %[[XT:.+]] = tensor.extract_slice %[[XG]][0, %[[I]], 0] [1, %[[SIZE]], 64]
// CHECK:           %[[TMAX:.+]] = linalg.generic {{.+}} ins(%[[LT]] : tensor<1x?x4xf32>)
// CHECK:             arith.maximumf
// CHECK:           %[[MOLD:.+]] = tensor.cast %[[M]]
// CHECK:           %[[RESCALE:.+]] = linalg.generic {{.+}} ins(%[[MOLD]], %[[TMAX]] : tensor<1x4xf32>, tensor<1x4xf32>)
// CHECK:             %[[NEWMAX:.+]] = arith.maximumf
// CHECK:             %[[DIFF:.+]] = arith.subf %{{.+}}, %[[NEWMAX]]
// CHECK:             math.exp %[[DIFF]]
// CHECK:           %[[MNEW:.+]] = linalg.generic {{.+}} ins(%[[TMAX]] : tensor<1x4xf32>)
// CHECK:           %[[W:.+]] = linalg.generic {{.+}} ins(%[[LT]], %[[MNEW]] : tensor<1x?x4xf32>, tensor<1x4xf32>)
// CHECK:             math.exp
// CHECK:           %[[ZS:.+]] = linalg.generic {{.+}} ins(%[[RESCALE]] : tensor<1x4xf32>) outs(%[[Z]] : tensor<1x4xf32>)
// CHECK:           %[[ZNEW:.+]] = linalg.generic {{.+}} ins(%[[W]] : tensor<1x?x4xf32>) outs(%[[ZS]] : tensor<1x4xf32>)
// CHECK:           %[[AS:.+]] = linalg.generic {{.+}} ins(%[[RESCALE]] : tensor<1x4xf32>) outs(%[[A]] : tensor<1x4x64xf32>)
// CHECK:           %[[ANEW:.+]] = linalg.generic {indexing_maps = [#[[$TOKSLOT]], {{.+}}], iterator_types = ["parallel", "parallel", "parallel", "reduction"]} ins(%[[W]], %[[XT]] : tensor<1x?x4xf32>, tensor<1x?x64xf32>) outs(%[[AS]] : tensor<1x4x64xf32>)
// CHECK:           scf.yield %{{.+}}, %[[ZNEW]], %[[ANEW]]
// CHECK:         %[[XSG:.+]] = linalg.generic {{.+}} ins(%[[STATE]]#2, %[[STATE]]#1 : tensor<1x4x64xf32>, tensor<1x4xf32>)
// CHECK:           arith.divf
// CHECK:         tensor.parallel_insert_slice %[[XSG]] into %[[XSACC]][%[[G]], 0, 0] [1, 4, 64]
// CHECK:       %[[OUT:.+]] = scf.forall (%[[E:.+]], %{{.+}}) in (4, %{{.+}}) shared_outs
// CHECK:         tensor.extract %[[XS]]
// CHECK:       %[[Y:.+]] = scf.forall (%[[G2:.+]], %[[T:.+]]) in (%{{.+}}, 2) shared_outs(%[[YACC:.+]] = %{{.+}}) -> (tensor<?x100x64xf32>)
// CHECK:         %[[J:.+]] = arith.muli %[[T]], %[[C64]]
// CHECK:         %[[CSIZE:.+]] = arith.minui %{{.+}}, %[[C64]]
// CHECK:         %[[LT2:.+]] = tensor.extract_slice %[[L]][%[[G2]], %[[J]], 0] [1, %[[CSIZE]], 4]
// CHECK:         %[[OUTG:.+]] = tensor.extract_slice %[[OUT]][0, %[[G2]], 0] [4, 1, 64]
// CHECK:         %[[CW:.+]] = linalg.generic {indexing_maps = [#{{[a-z0-9]+}}, #{{[a-z0-9]+}}, #{{[a-z0-9]+}}, #{{[a-z0-9]+}}], iterator_types = ["parallel", "parallel", "parallel"]} ins(%[[LT2]], %{{.+}}, %{{.+}} : tensor<1x?x4xf32>
// CHECK:           math.exp
// CHECK:           arith.divf
// CHECK:         %[[MIX:.+]] = linalg.generic {indexing_maps = [{{.+}}, #[[$SLOTOUT]], {{.+}}], iterator_types = ["parallel", "parallel", "parallel", "reduction"]} ins(%[[CW]], %[[OUTG]] : tensor<1x?x4xf32>, tensor<4x1x64xf32>)
// CHECK:         tensor.parallel_insert_slice %[[MIX]] into %[[YACC]][%[[G2]], %[[J]], 0] [1, %[[CSIZE]], 64]
// CHECK:       return %[[Y]]
func.func @soft_experts(%x: tensor<?x100x64xf32>, %l: tensor<?x100x4xf32>,
                        %w1: tensor<4x64x32xf32>, %w2: tensor<4x32x64xf32>)
    -> tensor<?x100x64xf32> {
  %y = moe.soft_experts %x, %l weights(w1 %w1 w2 %w2)
      {activation = #moe.activation<relu>}
      : (tensor<?x100x64xf32>, tensor<?x100x4xf32>, tensor<4x64x32xf32>,
         tensor<4x32x64xf32>) -> tensor<?x100x64xf32>
  return %y : tensor<?x100x64xf32>
}

// -----

// moe.token_choice_router: one parallel task per group and 64-token tile
// (100 = 64 + 36) computes the tile's logits, softmax and top-k choices;
// then a sequential pass per group places the choices (capacity positions).
// With sequence priority the batch-priority keys are unused and folded away.

// CHECK-LABEL: func.func @token_choice_router
// CHECK-SAME:  (%[[X:[a-z0-9]+]]: tensor<2x100x16xf32>, %[[W:[a-z0-9]+]]: tensor<16x4xf32>, %[[C:[a-z0-9]+]]: index)
// CHECK:       %[[FIRST:.+]]:4 = scf.forall (%[[G:.+]], %[[T:.+]]) in (2, 2) shared_outs(%[[Z:.+]] = %{{.+}}, %[[P:.+]] = %{{.+}}, %[[E:.+]] = %{{.+}}, %[[GATES:.+]] = %{{.+}})
// CHECK:         %[[XT:.+]] = tensor.extract_slice %[[X]][%[[G]], %[[START:.+]], 0] [1, %[[SIZE:.+]], 16]
// CHECK:         %[[ZT:.+]] = linalg.generic {{.+}} iterator_types = ["parallel", "parallel", "parallel", "reduction"]} ins(%[[XT]], %[[W]] : tensor<1x?x16xf32>, tensor<16x4xf32>)
// CHECK:         %[[PT:.+]] = linalg.generic {{.+}} ins(%[[ZT]], {{.+}}) outs({{.+}} : tensor<1x?x4xf32>)
// CHECK:           math.exp
// CHECK:           arith.divf
// CHECK:         %[[CHOSEN:.+]]:3 = scf.for %{{.+}} = %{{.+}} to %[[SIZE]] step
// CHECK:         scf.forall.in_parallel
// CHECK-NEXT:      tensor.parallel_insert_slice %[[ZT]] into %[[Z]][%[[G]], %[[START]], 0] [1, %[[SIZE]], 4]
// CHECK-NEXT:      tensor.parallel_insert_slice %[[PT]] into %[[P]][%[[G]], %[[START]], 0] [1, %[[SIZE]], 4]
// CHECK-NEXT:      tensor.parallel_insert_slice %[[CHOSEN]]#0 into %[[E]][%[[G]], %[[START]], 0] [1, %[[SIZE]], 2]
// CHECK-NEXT:      tensor.parallel_insert_slice %[[CHOSEN]]#1 into %[[GATES]][%[[G]], %[[START]], 0] [1, %[[SIZE]], 2]
// CHECK:       %[[PLACED:.+]]:2 = scf.for %[[GS:.+]] = %{{.+}} to %{{.+}} step %{{.+}} iter_args
// CHECK:         tensor.extract %[[FIRST]]#2
// CHECK:         arith.cmpi slt, %{{.+}}, %[[C]] : index
// CHECK:       return %[[FIRST]]#0, %[[FIRST]]#1, %[[FIRST]]#2, %[[FIRST]]#3, %[[PLACED]]#0, %[[PLACED]]#1
func.func @token_choice_router(%x: tensor<2x100x16xf32>, %w: tensor<16x4xf32>, %c: index)
    -> (tensor<2x100x4xf32>, tensor<2x100x4xf32>, tensor<2x100x2xi64>, tensor<2x100x2xf32>,
        tensor<2x100x2xi64>, tensor<2x100x2xi1>) {
  %z, %p, %e, %g, %pos, %kept = moe.token_choice_router %x, %w capacity %c {top_k = 2 : i64}
      : (tensor<2x100x16xf32>, tensor<16x4xf32>, index)
      -> (tensor<2x100x4xf32>, tensor<2x100x4xf32>, tensor<2x100x2xi64>, tensor<2x100x2xf32>,
          tensor<2x100x2xi64>, tensor<2x100x2xi1>)
  return %z, %p, %e, %g, %pos, %kept
      : tensor<2x100x4xf32>, tensor<2x100x4xf32>, tensor<2x100x2xi64>, tensor<2x100x2xf32>,
        tensor<2x100x2xi64>, tensor<2x100x2xi1>
}

// -----

// A dynamic group's capacity, computed at run time: a positive factor keeps
// at least a row (1 * G * 5e-324 / 4 underflows to 0 in float64).

// CHECK-LABEL: func.func @dynamic_group_capacity
// CHECK:         %[[ONE:.+]] = arith.constant 1 : index
// CHECK:         math.ceil
// CHECK:         %[[ROWS:.+]] = arith.index_cast %{{.+}} : i64 to index
// CHECK:         arith.maxsi %[[ROWS]], %[[ONE]] : index
func.func @dynamic_group_capacity(%p: tensor<1x?x4xf32>) -> index {
  %c = moe.expert_capacity %p {capacity_factor = 4.9406564584124654E-324 : f64} : tensor<1x?x4xf32>
  return %c : index
}
