/*===- switchyard-c/Runtime.h - The C ABI of a compiled model -----*- C -*-===*\
|*                                                                            *|
|* Part of Switchyard. `moec --emit=lib` builds a shared library that        *|
|* exports these functions for the one model it was compiled from, and      *|
|* writes this declaration block into the header it generates beside it.    *|
|*                                                                            *|
|* Conventions: every function that can fail returns an sy_status; on        *|
|* failure, when `message` is not NULL, *message receives a malloc'ed, NUL-  *|
|* terminated description that the caller frees with sy_free_message().     *|
|* Nothing is printed and nothing aborts. A model is immutable once created, *|
|* so concurrent sy_model_run calls on one model are safe as long as each     *|
|* has its own output buffer and sy_stats.                                   *|
|*                                                                            *|
\*===----------------------------------------------------------------------===*/

#ifndef SWITCHYARD_C_RUNTIME_H
#define SWITCHYARD_C_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define SY_API __attribute__((visibility("default")))
#else
#define SY_API
#endif

typedef enum sy_status {
  SY_OK = 0,
  SY_ERROR_INVALID_ARGUMENT = 1, /* a NULL pointer, a bad batch, ... */
  SY_ERROR_IO = 2,               /* a file could not be read or written */
  SY_ERROR_FORMAT = 3,           /* a malformed safetensors or npy file */
  SY_ERROR_WEIGHTS = 4,          /* a weight missing, mis-shaped or mis-typed */
  SY_ERROR_SHAPE = 5,            /* an input of the wrong shape or dtype */
  SY_ERROR_RUNTIME = 6           /* out of memory, or the compiled code
                                    returned bad results */
} sy_status;

typedef struct sy_model sy_model;
typedef struct sy_stats sy_stats;

/* Frees a message returned through a `char **message` argument. */
SY_API void sy_free_message(char *message);

/* -- Creating and destroying a model ------------------------------------- */

/* Loads every weight from a safetensors file (memory-mapped; each tensor
 * must have the name, shape and dtype the model lists). */
SY_API sy_status sy_model_create_from_file(const char *weights_path,
                                           sy_model **model, char **message);
/* Uses caller-owned buffers, which must stay alive and unchanged until
 * sy_model_destroy. `names[i]` names `buffers[i]`; each buffer holds the
 * weight in its listed dtype, row-major. Every weight must be given. */
SY_API sy_status sy_model_create_from_buffers(int64_t count,
                                              const char *const *names,
                                              const void *const *buffers,
                                              sy_model **model,
                                              char **message);
/* Deterministic random weights, scaled like an initialized model. */
SY_API sy_status sy_model_create_random(uint64_t seed, sy_model **model,
                                        char **message);
/* Writes the model's weights as a safetensors file. */
SY_API sy_status sy_model_save_weights(const sy_model *model, const char *path,
                                       char **message);
SY_API void sy_model_destroy(sy_model *model);

/* -- What the model is ----------------------------------------------------- */

/* The model's manifest (JSON, docs/Artifacts.md): its name, dtype, sizes,
 * weights, results and blocks; readable before any model is created. */
SY_API const char *sy_manifest(void);

SY_API const char *sy_model_name(const sy_model *model);
SY_API const char *sy_model_dtype(const sy_model *model); /* f32|bf16|f16 */
SY_API int64_t sy_model_seq_len(const sy_model *model);
SY_API int64_t sy_model_d_model(const sy_model *model);
/* The batch size the model was compiled for, or -1 for any. */
SY_API int64_t sy_model_fixed_batch(const sy_model *model);
SY_API int64_t sy_model_num_blocks(const sy_model *model);
SY_API int64_t sy_model_num_weights(const sy_model *model);
SY_API const char *sy_model_weight_name(const sy_model *model, int64_t i);
SY_API const char *sy_model_weight_dtype(const sy_model *model, int64_t i);
SY_API int64_t sy_model_weight_rank(const sy_model *model, int64_t i);
SY_API const int64_t *sy_model_weight_shape(const sy_model *model, int64_t i);

/* -- Running --------------------------------------------------------------- */

/* Runs the model on `input` ([batch, seq_len, d_model], model dtype,
 * row-major) and writes `output` (same shape and dtype). `stats` may be
 * NULL; when given it receives the statistics of this run. */
SY_API sy_status sy_model_run(const sy_model *model, int64_t batch,
                              const void *input, void *output,
                              sy_stats *stats, char **message);

/* Useful floating-point operations of a run, counting only kept expert
 * assignments, read from the run's `stats`. Without them (`stats` NULL or
 * not filled by a run, or a hand-written model that returns no expert
 * counts) a token-choice block counts every assignment as kept (tokens times
 * top_k, an upper bound) and an expert-choice block one assignment a token.
 * NaN when the input decides how many times a layer runs (a loop bounded by
 * the batch size, a branch: the manifest's `runs` is -1), and for a NULL
 * model or a batch below 1. */
SY_API double sy_model_useful_flops(const sy_model *model, int64_t batch,
                                    const sy_stats *stats);

/* -- Statistics -------------------------------------------------------------- */

SY_API sy_stats *sy_stats_create(const sy_model *model);
SY_API void sy_stats_destroy(sy_stats *stats);

typedef struct sy_block_stats {
  const char *kind;        /* moe | expert_choice | soft_moe | ffn */
  int routed;              /* 1 for moe and expert_choice blocks */
  int64_t num_experts;
  int64_t capacity;        /* C, or -1 where the block has none */
  double aux_loss;         /* NaN where the block reports none */
  double z_loss;           /* NaN where the block reports none */
  int64_t dropped;         /* dropped assignments, or -1 */
  int64_t unrouted;        /* tokens with nothing kept, or -1 */
  const int64_t *expert_counts; /* kept assignments per expert, or NULL */
  double usage; /* kept assignments over E * C * groups, or NaN */
} sy_block_stats;

SY_API int64_t sy_stats_num_blocks(const sy_stats *stats);
/* The statistics of block `block` of the last run that filled `stats`. The
 * pointers stay valid until the next run with `stats` or its destruction. */
SY_API sy_status sy_stats_get(const sy_stats *stats, int64_t block,
                              sy_block_stats *out, char **message);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SWITCHYARD_C_RUNTIME_H */
