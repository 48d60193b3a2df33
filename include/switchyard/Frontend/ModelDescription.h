//===- ModelDescription.h - The YAML model description ----------*- C++ -*-===//
//
// Part of Switchyard. A model description is the YAML file users write
// (docs/ModelDescription.md): d_model, seq_len, dtype and a list of blocks.
// This header parses and validates it with LLVM's YAML parser, and nothing
// here depends on MLIR, so the fuzz target and the runtime can link it with
// LLVMSupport alone.
//
//===----------------------------------------------------------------------===//

#ifndef SWITCHYARD_FRONTEND_MODELDESCRIPTION_H
#define SWITCHYARD_FRONTEND_MODELDESCRIPTION_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace switchyard {

/// One block: `x <- x + layer(norm(x))` (or without the residual). String
/// options hold one of the documented spellings; the parser rejects others.
struct BlockDescription {
  std::string layer;                ///< moe | expert_choice | soft_moe | ffn
  std::string norm = "none";        ///< none | rms | layer
  bool residual = true;
  int64_t experts = 1;              ///< E (1 for ffn)
  int64_t dFF = 0;                  ///< F
  std::string activation = "relu";  ///< relu | gelu | gelu_tanh | silu | swiglu | geglu
  bool bias = false;
  bool routerBias = false;
  int64_t topK = 1;
  /// Unset means dropless (moe only); the parser fills the layer's default
  /// (1.25 for moe, 2.0 for expert_choice) when the key is absent.
  std::optional<double> capacityFactor;
  std::optional<int64_t> expertCapacity;
  int64_t minCapacity = 0;
  bool normalizeGates = false;
  std::string priority = "sequence"; ///< sequence | batch
  bool rerouteDropped = false;
  std::string group = "sequence";    ///< sequence | batch
  double auxLossWeight = 0.01;
  double zLossWeight = 0.001;
  int64_t slotsPerExpert = 1;
  bool normalize = true;
  unsigned line = 0;   ///< where the block starts in the file (1-based)
  unsigned column = 0; ///< (1-based)

  bool isGated() const { return activation == "swiglu" || activation == "geglu"; }
  bool isRouted() const { return layer == "moe" || layer == "expert_choice"; }
};

struct ModelDescription {
  std::string name;
  int64_t dModel = 0;
  int64_t seqLen = 0;
  std::string dtype = "f32"; ///< f32 | bf16 | f16
  std::vector<BlockDescription> blocks;
};

/// A problem in a model description, at a place in its file. `message` is
/// the bare problem; log() prints the whole diagnostic with the source line
/// and a caret.
class ModelDescriptionError : public llvm::ErrorInfo<ModelDescriptionError> {
public:
  static char ID;
  ModelDescriptionError(std::string file, unsigned line, unsigned column,
                        std::string message, std::string rendered)
      : file(std::move(file)), line(line), column(column),
        message(std::move(message)), rendered(std::move(rendered)) {}
  void log(llvm::raw_ostream &os) const override;
  std::error_code convertToErrorCode() const override;

  std::string file;
  unsigned line;   ///< 1-based; 0 when the problem has no place
  unsigned column; ///< 1-based
  std::string message;
  std::string rendered;
};

/// Parses and validates a model description. `bufferName` names the file in
/// diagnostics. On failure the error is one ModelDescriptionError.
llvm::Expected<ModelDescription> parseModelDescription(llvm::StringRef text,
                                                       llvm::StringRef bufferName);

/// A weight the model needs, under its safetensors name
/// (docs/ModelDescription.md):
/// `blocks.<i>.router.weight`, `blocks.<i>.experts.w1`, ...
struct WeightSpec {
  std::string name;
  std::vector<int64_t> shape;
  std::string dtype; ///< f32, or the model dtype
};

/// The weights of `model`, in the order the compiled function takes them.
std::vector<WeightSpec> getWeightSpecs(const ModelDescription &model);

} // namespace switchyard

#endif // SWITCHYARD_FRONTEND_MODELDESCRIPTION_H
