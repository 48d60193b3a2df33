//===- ModelDescriptionFuzzer.cpp - libFuzzer target for the YAML importer ===//
//
// Part of Switchyard. Any bytes must parse to a model or to one diagnostic,
// never crash, hang or read out of bounds (built with ASan and UBSan).
//
//===----------------------------------------------------------------------===//

#include "switchyard/Frontend/ModelDescription.h"

#include "llvm/ADT/StringSet.h"

#include <cmath>
#include <cstddef>
#include <cstdint>

namespace {
constexpr int64_t kMaxDim = int64_t(1) << 24;

bool inRange(int64_t v, int64_t lo, int64_t hi) { return v >= lo && v <= hi; }

/// The checks docs/ModelDescription.md promises, on whatever was accepted.
bool consistent(const switchyard::ModelDescription &m) {
  if (m.name.empty() || !inRange(m.dModel, 1, kMaxDim) ||
      !inRange(m.seqLen, 1, kMaxDim) || m.blocks.empty())
    return false;
  for (const switchyard::BlockDescription &b : m.blocks) {
    if (!inRange(b.experts, 1, kMaxDim) || !inRange(b.dFF, 1, kMaxDim) ||
        !inRange(b.topK, 1, b.experts) || b.slotsPerExpert < 1 ||
        b.experts * b.slotsPerExpert > kMaxDim || b.minCapacity < 0)
      return false;
    if (b.capacityFactor &&
        !(std::isfinite(*b.capacityFactor) && *b.capacityFactor > 0))
      return false;
    if (!b.capacityFactor && b.layer == "expert_choice")
      return false; // dropless only for moe
    if (b.rerouteDropped && b.topK != 1)
      return false;
    if (b.layer != "moe" && b.layer != "expert_choice" &&
        b.layer != "soft_moe" && b.layer != "ffn")
      return false;
  }
  return true;
}
} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::StringRef text(reinterpret_cast<const char *>(data), size);
  llvm::Expected<switchyard::ModelDescription> model =
      switchyard::parseModelDescription(text, "fuzz.yaml");
  if (!model) {
    // One diagnostic, with a message.
    bool described = false;
    llvm::handleAllErrors(model.takeError(),
                          [&](const switchyard::ModelDescriptionError &e) {
                            described = !e.message.empty();
                          });
    if (!described)
      __builtin_trap();
    return 0;
  }
  if (!consistent(*model))
    __builtin_trap();
  // A valid model describes a consistent set of weights: unique names, every
  // dimension positive and within the limits, no weight over 2^36 elements
  // (soft.scale is a scalar: no dimensions).
  llvm::StringSet<> names;
  for (const switchyard::WeightSpec &w : switchyard::getWeightSpecs(*model)) {
    if (w.name.empty() || !names.insert(w.name).second || w.shape.size() > 3)
      __builtin_trap();
    int64_t elements = 1;
    for (int64_t d : w.shape) {
      if (!inRange(d, 1, kMaxDim))
        __builtin_trap();
      elements *= d; // at most 2^36 * 2^24 before the check: no overflow
      if (elements > (int64_t(1) << 36))
        __builtin_trap();
    }
  }
  return 0;
}
