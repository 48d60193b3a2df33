/* Exercises a model library (`moec --emit=lib`) through its generated
 * header only: creating a model from a file, from caller buffers and from a
 * seed; running it, also from several threads at once; reading statistics;
 * and the error paths, which must return codes and messages, never print or
 * abort.
 *
 *   capi_test OUT_DIR    writes OUT_DIR/x.bin (input) and OUT_DIR/y.bin
 *                        (output with the buffer weights) for the pytest
 *                        driver to compare against the reference.
 */
#include "libmodel.h" /* written by moec beside libmodel.so */

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                              \
    }                                                                          \
  } while (0)

/* The buffer weights' values; test_capi.py computes the same. */
static float weight_value(int64_t w, int64_t i) {
  return (float)(0.25 * sin(0.37 * (double)i + (double)w));
}
static float input_value(int64_t i) { return (float)cos(0.11 * (double)i); }

static int write_file(const char *dir, const char *name, const void *data,
                      size_t bytes) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  if (!f)
    return 0;
  size_t n = fwrite(data, 1, bytes, f);
  return fclose(f) == 0 && n == bytes;
}

typedef struct {
  const sy_model *model;
  int64_t batch;
  const float *input;
  float *output;
  const float *expected;
  size_t count;
  int ok;
} job;

static void *run_job(void *arg) {
  job *j = (job *)arg;
  sy_stats *stats = sy_stats_create(j->model);
  j->ok = stats != NULL;
  for (int iter = 0; iter < 3 && j->ok; ++iter) {
    char *message = NULL;
    if (sy_model_run(j->model, j->batch, j->input, j->output, stats,
                     &message) != SY_OK) {
      fprintf(stderr, "run failed: %s\n", message);
      sy_free_message(message);
      j->ok = 0;
    }
    for (size_t i = 0; i < j->count && j->ok; ++i)
      if (fabsf(j->output[i] - j->expected[i]) > 1e-6f)
        j->ok = 0;
  }
  sy_stats_destroy(stats);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: capi_test OUT_DIR\n");
    return 2;
  }
  const char *dir = argv[1];
  char *message = NULL;

  /* The manifest, before any model exists: JSON with the model's name and a
   * dynamic batch, written as -1 in the output's shape too. */
  const char *manifest = sy_manifest();
  CHECK(manifest && manifest[0] == '{');
  CHECK(strstr(manifest, "\"name\":\"capi\""));
  CHECK(strstr(manifest, "\"batch\":-1"));
  CHECK(strstr(manifest, "\"shape\":[-1,"));

  /* A model from caller-owned buffers. */
  sy_model *seeded = NULL;
  CHECK(sy_model_create_random(11, &seeded, &message) == SY_OK);
  const int64_t nw = sy_model_num_weights(seeded);
  const int64_t S = sy_model_seq_len(seeded), D = sy_model_d_model(seeded);
  CHECK(strcmp(sy_model_name(seeded), "capi") == 0);
  CHECK(strcmp(sy_model_dtype(seeded), "f32") == 0);
  CHECK(sy_model_fixed_batch(seeded) == -1);
  CHECK(sy_model_num_blocks(seeded) == 2);
  CHECK(nw > 0);
  CHECK(sy_model_weight_name(seeded, nw) == NULL);
  CHECK(sy_model_weight_rank(seeded, -1) == -1);

  const char **names = calloc((size_t)nw, sizeof *names);
  const void **buffers = calloc((size_t)nw, sizeof *buffers);
  for (int64_t w = 0; w < nw; ++w) {
    int64_t count = 1;
    for (int64_t d = 0; d < sy_model_weight_rank(seeded, w); ++d)
      count *= sy_model_weight_shape(seeded, w)[d];
    CHECK(strcmp(sy_model_weight_dtype(seeded, w), "f32") == 0);
    float *data = malloc((size_t)count * sizeof(float));
    for (int64_t i = 0; i < count; ++i)
      data[i] = weight_value(w, i);
    names[w] = sy_model_weight_name(seeded, w);
    buffers[w] = data;
  }
  sy_model *model = NULL;
  CHECK(sy_model_create_from_buffers(nw, names, buffers, &model, &message) ==
        SY_OK);

  const int64_t B = 3;
  const size_t count = (size_t)(B * S * D);
  float *x = malloc(count * sizeof(float)), *y = malloc(count * sizeof(float));
  for (size_t i = 0; i < count; ++i)
    x[i] = input_value((int64_t)i);
  sy_stats *stats = sy_stats_create(model);
  CHECK(sy_stats_num_blocks(stats) == 2);
  sy_block_stats block;
  CHECK(sy_stats_get(stats, 0, &block, &message) == SY_ERROR_INVALID_ARGUMENT);
  CHECK(message && strstr(message, "no run has filled these statistics"));
  sy_free_message(message);
  message = NULL;
  CHECK(sy_model_run(model, B, x, y, stats, &message) == SY_OK);
  CHECK(write_file(dir, "x.bin", x, count * sizeof(float)));
  CHECK(write_file(dir, "y.bin", y, count * sizeof(float)));

  /* Statistics: block 0 is a dense ffn, block 1 a top-2 moe. */
  CHECK(sy_stats_get(stats, 0, &block, NULL) == SY_OK);
  CHECK(strcmp(block.kind, "ffn") == 0 && !block.routed);
  CHECK(block.capacity == -1 && isnan(block.aux_loss) && !block.expert_counts);
  CHECK(isnan(block.usage));
  CHECK(sy_stats_get(stats, 1, &block, NULL) == SY_OK);
  CHECK(strcmp(block.kind, "moe") == 0 && block.routed);
  CHECK(block.num_experts == 4 && block.expert_counts != NULL);
  int64_t kept = 0;
  for (int64_t e = 0; e < block.num_experts; ++e) {
    CHECK(block.expert_counts[e] <= block.capacity * B);
    kept += block.expert_counts[e];
  }
  CHECK(kept + block.dropped == 2 * B * S);
  CHECK(block.aux_loss > 0 && block.z_loss > 0);
  /* For test_capi.py to compare with the reference: capacity, dropped,
   * unrouted, the losses, then the counts. */
  {
    char text[512];
    int n = snprintf(text, sizeof text, "%lld %lld %lld %.9g %.9g %.9g",
                     (long long)block.capacity, (long long)block.dropped,
                     (long long)block.unrouted, block.aux_loss, block.z_loss,
                     block.usage);
    for (int64_t e = 0; e < block.num_experts; ++e)
      n += snprintf(text + n, sizeof text - n, " %lld",
                    (long long)block.expert_counts[e]);
    CHECK(write_file(dir, "stats.txt", text, (size_t)n));
  }
  FILE *f = fopen("/dev/null", "w");
  fprintf(f, "%g\n", sy_model_useful_flops(model, B, stats));
  fclose(f);
  CHECK(sy_model_useful_flops(model, B, stats) > 0);
  CHECK(isnan(sy_model_useful_flops(model, 0, stats)));
  CHECK(isnan(sy_model_useful_flops(NULL, B, stats)));
  CHECK(sy_stats_get(stats, 2, &block, &message) == SY_ERROR_INVALID_ARGUMENT);
  CHECK(message && strstr(message, "block 2 is out of range [0, 2)"));
  sy_free_message(message);
  message = NULL;

  /* Save, reload: the same numbers. */
  char path[4096];
  snprintf(path, sizeof path, "%s/w.safetensors", dir);
  CHECK(sy_model_save_weights(model, path, &message) == SY_OK);
  sy_model *loaded = NULL;
  CHECK(sy_model_create_from_file(path, &loaded, &message) == SY_OK);
  float *y2 = malloc(count * sizeof(float));
  CHECK(sy_model_run(loaded, B, x, y2, NULL, &message) == SY_OK);
  CHECK(memcmp(y, y2, count * sizeof(float)) == 0);

  /* Concurrent runs on one model, separate outputs and stats. */
  enum { kThreads = 4 };
  pthread_t threads[kThreads];
  job jobs[kThreads];
  for (int t = 0; t < kThreads; ++t) {
    jobs[t] = (job){loaded, B, x, malloc(count * sizeof(float)), y, count, 0};
    CHECK(pthread_create(&threads[t], NULL, run_job, &jobs[t]) == 0);
  }
  for (int t = 0; t < kThreads; ++t) {
    pthread_join(threads[t], NULL);
    CHECK(jobs[t].ok);
    free(jobs[t].output);
  }

  /* Errors come back as codes and messages. */
  sy_model *bad = NULL;
  CHECK(sy_model_create_from_buffers(nw - 1, names, buffers, &bad, &message) ==
        SY_ERROR_WEIGHTS);
  CHECK(bad == NULL && message && strstr(message, "is missing from the buffers"));
  sy_free_message(message);
  message = NULL;
  const char *dup_names[2] = {names[0], names[0]};
  CHECK(sy_model_create_from_buffers(2, dup_names, buffers, &bad, &message) ==
        SY_ERROR_INVALID_ARGUMENT);
  sy_free_message(message);
  message = NULL;
  CHECK(sy_model_create_from_file("/nonexistent/w.safetensors", &bad,
                                  &message) == SY_ERROR_IO);
  CHECK(message && strstr(message, "/nonexistent/w.safetensors"));
  sy_free_message(message);
  message = NULL;
  /* A device is refused before it is read: /dev/zero never ends. */
  CHECK(sy_model_create_from_file("/dev/zero", &bad, &message) == SY_ERROR_IO);
  CHECK(message &&
        strstr(message, "'/dev/zero': not a regular file or a pipe"));
  sy_free_message(message);
  message = NULL;
  CHECK(sy_model_run(model, 0, x, y, NULL, &message) ==
        SY_ERROR_INVALID_ARGUMENT);
  sy_free_message(message);
  message = NULL;
  CHECK(sy_model_run(model, B, NULL, y, NULL, NULL) ==
        SY_ERROR_INVALID_ARGUMENT);
  CHECK(sy_model_run(NULL, B, x, y, NULL, NULL) == SY_ERROR_INVALID_ARGUMENT);
  CHECK(sy_model_save_weights(model, "/nonexistent/dir/w", &message) ==
        SY_ERROR_IO);
  sy_free_message(message);

  sy_stats_destroy(stats);
  sy_model_destroy(loaded);
  sy_model_destroy(model);
  sy_model_destroy(seeded);
  for (int64_t w = 0; w < nw; ++w)
    free((void *)buffers[w]);
  free(names);
  free(buffers);
  free(x);
  free(y);
  free(y2);
  if (failures)
    fprintf(stderr, "%d checks failed\n", failures);
  return failures ? 1 : 0;
}
