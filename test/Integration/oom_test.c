/* Out of memory in the compiled code, as a server embedding the C API meets
 * it: this program replaces aligned_alloc (which the runtime's allocator
 * calls) to fail one allocation of a run, chosen by the first argument.
 *
 *   host    the run is called from inside the host's own OpenMP region (of
 *           two threads): a failure at the run's top level is an error
 *           (SY_ERROR_RUNTIME), the thread's OpenMP level is restored, and
 *           the next run gives the same bits as before.
 *   region  the model runs with one thread (omp_set_num_threads(1)) and an
 *           allocation inside one of its parallel regions fails: the
 *           process aborts with a message (docs/Artifacts.md), rather than
 *           jump out of libomp's region and leave it open.
 *
 * Built without sanitizers (they allocate through their own malloc). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libmodel.h"

static void *(*realAlignedAlloc)(size_t, size_t);
static int armed, failed;
static int failLevel = -1; /* fail the first allocation at this level */

void *aligned_alloc(size_t alignment, size_t size) {
  if (!realAlignedAlloc)
    *(void **)&realAlignedAlloc = dlsym(RTLD_NEXT, "aligned_alloc");
  if (__atomic_load_n(&armed, __ATOMIC_SEQ_CST) &&
      omp_get_level() == failLevel &&
      !__atomic_exchange_n(&failed, 1, __ATOMIC_SEQ_CST))
    return NULL;
  return realAlignedAlloc(alignment, size);
}

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      exit(1);                                                                 \
    }                                                                          \
  } while (0)

int main(int argc, char **argv) {
  CHECK(argc == 2);
  int host = strcmp(argv[1], "host") == 0;
  sy_model *model;
  char *message = NULL;
  CHECK(sy_model_create_random(1, &model, &message) == SY_OK);
  const int64_t batch = 3;
  size_t n =
      (size_t)(batch * sy_model_seq_len(model) * sy_model_d_model(model));
  float *x = malloc(n * 4), *before = malloc(n * 4), *y = malloc(n * 4);
  for (size_t i = 0; i < n; ++i)
    x[i] = (float)((i * 37 % 101) / 50.0 - 1.0);
  CHECK(sy_model_run(model, batch, x, before, NULL, &message) == SY_OK);

  sy_status status;
  if (host) {
    failLevel = 1;
#pragma omp parallel num_threads(2)
    if (omp_get_thread_num() == 0) {
      armed = 1;
      status = sy_model_run(model, batch, x, y, NULL, &message);
      armed = 0;
    }
    CHECK(failed);
    CHECK(status == SY_ERROR_RUNTIME);
    CHECK(strstr(message, "out of memory: the run could not allocate"));
    sy_free_message(message);
    CHECK(omp_get_level() == 0);
  } else {
    omp_set_num_threads(1);
    failLevel = 1;
    armed = 1;
    status = sy_model_run(model, batch, x, y, NULL, &message);
    fprintf(stderr, "the run returned %d\n", (int)status);
    return 1; /* it must not return */
  }
  CHECK(sy_model_run(model, batch, x, y, NULL, &message) == SY_OK);
  CHECK(memcmp(y, before, n * 4) == 0);
  sy_model_destroy(model);
  free(x);
  free(before);
  free(y);
  return 0;
}
