//===- Model.h - A compiled model, its weights and its runs -----*- C++ -*-===//
//
// Part of Switchyard's runtime. The compiled object defines two symbols:
//   const char switchyard_manifest[]    JSON describing the entry function
//   void switchyard_entry(void **args)  args[0]: the result struct,
//                                       args[1..]: memref descriptors
//   void switchyard_prepack(void **args) the same for the weights the
//                                       entry takes packed (manifest
//                                       "prepack"): called once they are bound
// (docs/Artifacts.md). A Model binds weights to the descriptors the
// manifest lists, and runs the entry function on caller buffers.
//
//===----------------------------------------------------------------------===//

#ifndef SWITCHYARD_RUNTIME_MODEL_H
#define SWITCHYARD_RUNTIME_MODEL_H

#include "Formats.h"
#include "Workspace.h"

#include "llvm/Support/Error.h"

#include <cmath>
#include <cstdlib>
#include <memory>
#include <optional>

namespace switchyard::runtime {

struct Manifest {
  struct Weight {
    std::string name;
    std::vector<int64_t> shape;
    DType dtype;
  };
  struct Result {
    std::string name;
    int64_t rank;
    std::vector<int64_t> shape; ///< -1 for the dynamic batch
    DType dtype;
    int64_t block = -1; ///< the block a statistic belongs to, or -1
    std::string stat;   ///< aux_loss, z_loss, expert_counts, ...
  };
  struct Block {
    std::string kind;
    int64_t dFF, experts, slotsPerExpert, topK = 1;
    bool gated;
    std::string group;
    /// How many times a run runs the layer (a loop or several calls), or
    /// -1 when the input decides.
    int64_t runs = 1;
  };
  std::string name, entry;
  DType dtype;
  int64_t seqLen, dModel, batch;
  std::vector<Weight> weights;
  /// Weights the entry function takes packed, in the order
  /// switchyard_prepack takes and returns them.
  struct Packed {
    int64_t weight; ///< index into `weights`
    std::vector<int64_t> shape;
  };
  std::vector<Packed> prepack;
  std::vector<Result> results;
  std::vector<Block> blocks;

  static llvm::Expected<Manifest> parse(llvm::StringRef json);
};

/// The statistics of one run, per block.
struct BlockStats {
  std::string kind;
  bool routed = false;
  int64_t capacity = -1, dropped = -1, unrouted = -1;
  double auxLoss = NAN, zLoss = NAN;
  std::vector<int64_t> expertCounts;
  /// Expert usage (SEMANTICS.md section 6): kept assignments over
  /// E * C * groups, the share of the experts' rows that did work.
  double usage = NAN;
};
struct RunStats {
  std::vector<BlockStats> blocks;
};

class Model {
public:
  using EntryFn = void (*)(void **);

  /// Which check failed, for the C API's status codes.
  enum class ErrorKind { Argument, IO, Format, Weights, Shape, Runtime };
  struct Failure {
    ErrorKind kind;
    std::string message;
  };
  Model(Manifest manifest, EntryFn entry, EntryFn prepack)
      : manifest(std::move(manifest)), entry(entry), prepack(prepack) {
    requestTileState();
  }

  /// Asks Linux, once a process, for the AMX tile state, which code
  /// compiled with bf16-amx uses (without it, its first tile instruction
  /// faults). Does nothing elsewhere, or where the CPU has no AMX.
  static void requestTileState();

  const Manifest &getManifest() const { return manifest; }

  /// Binds every weight from a safetensors file.
  std::optional<Failure> loadWeights(llvm::StringRef path);
  /// Binds caller-owned buffers (borrowed).
  std::optional<Failure> bindBuffers(llvm::ArrayRef<const char *> names,
                                     llvm::ArrayRef<const void *> buffers);
  /// Fills every weight with deterministic seeded values.
  void randomWeights(uint64_t seed);
  std::optional<Failure> saveWeights(llvm::StringRef path) const;
  /// Packs the bound weights the manifest lists under "prepack" (once, after
  /// binding): the entry function reads those copies from then on.
  std::optional<Failure> packWeights();

  /// Runs on `input` ([batch, S, D], model dtype) into `output`.
  std::optional<Failure> run(int64_t batch, const void *input, void *output,
                             RunStats *stats) const;

  /// FLOPs of the work a run must do: expert products over kept
  /// assignments (routed blocks) or every token (dense), router and soft
  /// mixing products; norms and elementwise work are not counted.
  double usefulFlops(int64_t batch, const RunStats *stats) const;

private:
  Manifest manifest;
  EntryFn entry, prepack;
  std::vector<const char *> weightData;
  /// Per weight, its packed copy (allocated by switchyard_prepack) or null.
  struct Free {
    void operator()(void *p) const { freeCompiled(p); }
  };
  std::vector<std::unique_ptr<void, Free>> packedAllocations;
  std::vector<const char *> packedData;
  std::unique_ptr<SafeTensorsFile> file;
  std::vector<std::vector<char>> owned;
};

/// Fills `count` elements of `dtype` at `out` with N(0, scale^2) values
/// drawn from a generator keyed by `seed` and `stream`.
void fillNormal(void *out, DType dtype, int64_t count, uint64_t seed,
                uint64_t stream, double mean, double scale);

} // namespace switchyard::runtime

#endif // SWITCHYARD_RUNTIME_MODEL_H
