//===- ModelDescriptionFuzzer.cpp - libFuzzer target for the YAML importer ===//
//
// Part of Switchyard. Any bytes must parse to a model or to one diagnostic,
// never crash, hang or read out of bounds (built with ASan and UBSan).
//
//===----------------------------------------------------------------------===//

#include "switchyard/Frontend/ModelDescription.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::StringRef text(reinterpret_cast<const char *>(data), size);
  llvm::Expected<switchyard::ModelDescription> model =
      switchyard::parseModelDescription(text, "fuzz.yaml");
  if (!model) {
    llvm::consumeError(model.takeError());
    return 0;
  }
  // A valid model must describe a consistent set of weights.
  for (const switchyard::WeightSpec &w : switchyard::getWeightSpecs(*model))
    if (w.name.empty() || w.shape.size() > 3)
      __builtin_trap();
  return 0;
}
