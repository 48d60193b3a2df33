//===- CAPI.cpp - The C ABI of a compiled model ---------------------------===//
//
// Part of Switchyard's runtime: include/switchyard-c/Runtime.h over the
// Model class, for the one model linked into this artifact.
//
//===----------------------------------------------------------------------===//

#include "switchyard-c/Runtime.h"

#include "Model.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>

using namespace switchyard::runtime;

// Defined by the object moec compiles (docs/Artifacts.md).
extern "C" const char switchyard_manifest[];
extern "C" void switchyard_entry(void **args);
extern "C" void switchyard_prepack(void **args);

struct sy_model {
  Model model;
};

struct sy_stats {
  RunStats stats;
  int64_t numBlocks;
};

namespace {
sy_status statusOf(Model::ErrorKind kind) {
  switch (kind) {
  case Model::ErrorKind::Argument:
    return SY_ERROR_INVALID_ARGUMENT;
  case Model::ErrorKind::IO:
    return SY_ERROR_IO;
  case Model::ErrorKind::Format:
    return SY_ERROR_FORMAT;
  case Model::ErrorKind::Weights:
    return SY_ERROR_WEIGHTS;
  case Model::ErrorKind::Shape:
    return SY_ERROR_SHAPE;
  case Model::ErrorKind::Runtime:
    return SY_ERROR_RUNTIME;
  }
  return SY_ERROR_RUNTIME;
}

sy_status fail(sy_status status, const std::string &text, char **message) {
  if (message) {
    *message = static_cast<char *>(std::malloc(text.size() + 1));
    if (*message)
      std::memcpy(*message, text.c_str(), text.size() + 1);
  }
  return status;
}

sy_status fail(const Model::Failure &f, char **message) {
  return fail(statusOf(f.kind), f.message, message);
}

/// Runs `body`, turning the runtime's own failed allocations (weights,
/// buffers, statistics) into a status: nothing thrown leaves the C API.
sy_status guarded(char **message, llvm::function_ref<sy_status()> body) {
  try {
    return body();
  } catch (const std::bad_alloc &) {
    return fail(SY_ERROR_RUNTIME, "out of memory", message);
  } catch (const std::length_error &) {
    return fail(SY_ERROR_RUNTIME, "out of memory (a buffer too large)",
                message);
  }
}

/// The manifest, parsed once per process.
const Manifest *getManifest(std::string &error) {
  static llvm::Expected<Manifest> manifest =
      Manifest::parse(switchyard_manifest);
  static std::string parseError =
      manifest ? std::string() : llvm::toString(manifest.takeError());
  if (!manifest) {
    error = parseError;
    return nullptr;
  }
  return &*manifest;
}

sy_status create(sy_model **out, char **message,
                 llvm::function_ref<std::optional<Model::Failure>(Model &)>
                     bind) {
  if (!out)
    return fail(SY_ERROR_INVALID_ARGUMENT, "model must not be NULL", message);
  *out = nullptr;
  return guarded(message, [&] {
    std::string error;
    const Manifest *manifest = getManifest(error);
    if (!manifest)
      return fail(SY_ERROR_RUNTIME, error, message);
    auto model = std::make_unique<sy_model>(
        sy_model{Model(*manifest, switchyard_entry, switchyard_prepack)});
    std::optional<Model::Failure> f = bind(model->model);
    if (!f)
      f = model->model.packWeights();
    if (f)
      return fail(*f, message);
    *out = model.release();
    return SY_OK;
  });
}

const Manifest::Weight *weightAt(const sy_model *model, int64_t i) {
  if (!model || i < 0 ||
      i >= int64_t(model->model.getManifest().weights.size()))
    return nullptr;
  return &model->model.getManifest().weights[i];
}
} // namespace

extern "C" {

void sy_free_message(char *message) { std::free(message); }

const char *sy_manifest(void) { return switchyard_manifest; }

sy_status sy_model_create_from_file(const char *path, sy_model **model,
                                    char **message) {
  if (!path)
    return fail(SY_ERROR_INVALID_ARGUMENT, "weights_path must not be NULL",
                message);
  return create(model, message,
                [&](Model &m) { return m.loadWeights(path); });
}

sy_status sy_model_create_from_buffers(int64_t count, const char *const *names,
                                       const void *const *buffers,
                                       sy_model **model, char **message) {
  if (count < 0 || (count && (!names || !buffers)))
    return fail(SY_ERROR_INVALID_ARGUMENT,
                "names and buffers must hold `count` entries", message);
  return create(model, message, [&](Model &m) {
    return m.bindBuffers(llvm::ArrayRef(const_cast<const char **>(names), count),
                         llvm::ArrayRef(const_cast<const void **>(buffers), count));
  });
}

sy_status sy_model_create_random(uint64_t seed, sy_model **model,
                                 char **message) {
  return create(model, message, [&](Model &m) -> std::optional<Model::Failure> {
    m.randomWeights(seed);
    return std::nullopt;
  });
}

sy_status sy_model_save_weights(const sy_model *model, const char *path,
                                char **message) {
  if (!model || !path)
    return fail(SY_ERROR_INVALID_ARGUMENT, "model and path must not be NULL",
                message);
  return guarded(message, [&] {
    if (std::optional<Model::Failure> f = model->model.saveWeights(path))
      return fail(*f, message);
    return SY_OK;
  });
}

void sy_model_destroy(sy_model *model) { delete model; }

const char *sy_model_name(const sy_model *model) {
  return model ? model->model.getManifest().name.c_str() : nullptr;
}
const char *sy_model_dtype(const sy_model *model) {
  return model ? dtypeName(model->model.getManifest().dtype).data() : nullptr;
}
int64_t sy_model_seq_len(const sy_model *model) {
  return model ? model->model.getManifest().seqLen : -1;
}
int64_t sy_model_d_model(const sy_model *model) {
  return model ? model->model.getManifest().dModel : -1;
}
int64_t sy_model_fixed_batch(const sy_model *model) {
  return model ? model->model.getManifest().batch : -1;
}
int64_t sy_model_num_blocks(const sy_model *model) {
  return model ? int64_t(model->model.getManifest().blocks.size()) : -1;
}
int64_t sy_model_num_weights(const sy_model *model) {
  return model ? int64_t(model->model.getManifest().weights.size()) : -1;
}
const char *sy_model_weight_name(const sy_model *model, int64_t i) {
  const Manifest::Weight *w = weightAt(model, i);
  return w ? w->name.c_str() : nullptr;
}
const char *sy_model_weight_dtype(const sy_model *model, int64_t i) {
  const Manifest::Weight *w = weightAt(model, i);
  return w ? dtypeName(w->dtype).data() : nullptr;
}
int64_t sy_model_weight_rank(const sy_model *model, int64_t i) {
  const Manifest::Weight *w = weightAt(model, i);
  return w ? int64_t(w->shape.size()) : -1;
}
const int64_t *sy_model_weight_shape(const sy_model *model, int64_t i) {
  const Manifest::Weight *w = weightAt(model, i);
  return w ? w->shape.data() : nullptr;
}

sy_status sy_model_run(const sy_model *model, int64_t batch, const void *input,
                       void *output, sy_stats *stats, char **message) {
  if (!model)
    return fail(SY_ERROR_INVALID_ARGUMENT, "model must not be NULL", message);
  return guarded(message, [&] {
    if (std::optional<Model::Failure> f = model->model.run(
            batch, input, output, stats ? &stats->stats : nullptr))
      return fail(*f, message);
    return SY_OK;
  });
}

double sy_model_useful_flops(const sy_model *model, int64_t batch,
                             const sy_stats *stats) {
  if (!model || batch < 1)
    return std::nan("");
  return model->model.usefulFlops(batch, stats ? &stats->stats : nullptr);
}

sy_stats *sy_stats_create(const sy_model *model) {
  if (!model)
    return nullptr;
  auto *stats = new (std::nothrow) sy_stats();
  if (stats)
    stats->numBlocks = int64_t(model->model.getManifest().blocks.size());
  return stats;
}

void sy_stats_destroy(sy_stats *stats) { delete stats; }

int64_t sy_stats_num_blocks(const sy_stats *stats) {
  return stats ? stats->numBlocks : -1;
}

sy_status sy_stats_get(const sy_stats *stats, int64_t block,
                       sy_block_stats *out, char **message) {
  if (!stats || !out)
    return fail(SY_ERROR_INVALID_ARGUMENT, "stats and out must not be NULL",
                message);
  if (block < 0 || block >= stats->numBlocks)
    return fail(SY_ERROR_INVALID_ARGUMENT,
                "block " + std::to_string(block) + " is out of range [0, " +
                    std::to_string(stats->numBlocks) + ")",
                message);
  if (block >= int64_t(stats->stats.blocks.size()))
    return fail(SY_ERROR_INVALID_ARGUMENT,
                "no run has filled these statistics yet", message);
  const BlockStats &b = stats->stats.blocks[block];
  out->kind = b.kind.c_str();
  out->routed = b.routed;
  out->num_experts = int64_t(b.expertCounts.size());
  out->capacity = b.capacity;
  out->aux_loss = b.auxLoss;
  out->z_loss = b.zLoss;
  out->dropped = b.dropped;
  out->unrouted = b.unrouted;
  out->expert_counts = b.expertCounts.empty() ? nullptr : b.expertCounts.data();
  out->usage = b.usage;
  return SY_OK;
}

} // extern "C"
