// The rate of an AMX bf16 register tile (Intel Sapphire Rapids and later,
// `amx_bf16` in /proc/cpuinfo) with its operands in the L1 cache, one
// thread: a 32x32 f32 block of C in four 16x16 tiles, the reduction 32
// steps a tile instruction (tdpbf16ps), the weights in the pair layout of
// `--bf16-dot-products` ([K/2][32][2]), the rows row-major. What an AMX
// path for bf16 expert products could reach, beside bench/kernels/bf16_dot.c
// (docs/Rationale.md, "bf16 dot products"):
//   clang-22 -O3 -march=native bench/kernels/amx_bf16.c -o amx_bf16
//   ./amx_bf16   # prints GFLOP/s (a product and an addition: 2 FLOPs)
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

// Linux hands a process the AMX tile state only when it asks.
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

#define STEPS 256 // the reduction
#define REPS 200000

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

// The tile configuration (palette 1): 8 tiles of 16 rows of 64 bytes.
struct tile_config {
  uint8_t palette, start_row, reserved[14];
  uint16_t bytes_per_row[16];
  uint8_t rows[16];
};

static uint16_t rows[32 * STEPS] __attribute__((aligned(64)));       // [32][STEPS] bf16
static uint16_t pairs[STEPS / 2 * 32 * 2] __attribute__((aligned(64))); // [STEPS/2][32][2]
static float c[32 * 32] __attribute__((aligned(64)));

int main(void) {
  if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)) {
    perror("arch_prctl(ARCH_REQ_XCOMP_PERM)");
    return 1;
  }
  struct tile_config config;
  memset(&config, 0, sizeof config);
  config.palette = 1;
  for (int t = 0; t < 8; ++t) {
    config.rows[t] = 16;
    config.bytes_per_row[t] = 64;
  }
  _tile_loadconfig(&config);
  for (int i = 0; i < 32 * STEPS; ++i)
    rows[i] = 0x3a83; // about 1e-3 in bf16
  for (int i = 0; i < STEPS * 32; ++i)
    pairs[i] = 0x3a83;

  double best = 0;
  for (int round = 0; round < 5; ++round) {
    double start = now();
    for (long rep = 0; rep < REPS; ++rep) {
      // Tiles 0-3: C's four 16x16 quarters; 4-5: two 16-row slices of
      // the rows; 6-7: two 16-column slices of the weights.
      _tile_loadd(0, c, 128);
      _tile_loadd(1, c + 16, 128);
      _tile_loadd(2, c + 16 * 32, 128);
      _tile_loadd(3, c + 16 * 32 + 16, 128);
      for (int k = 0; k < STEPS; k += 32) {
        _tile_loadd(4, rows + k, STEPS * 2);
        _tile_loadd(5, rows + 16 * STEPS + k, STEPS * 2);
        _tile_loadd(6, pairs + k / 2 * 64, 128);
        _tile_loadd(7, pairs + k / 2 * 64 + 32, 128);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
      _tile_stored(0, c, 128);
      _tile_stored(1, c + 16, 128);
      _tile_stored(2, c + 16 * 32, 128);
      _tile_stored(3, c + 16 * 32 + 16, 128);
    }
    double rate = 2.0 * 32 * 32 * STEPS * REPS / (now() - start) * 1e-9;
    if (rate > best)
      best = rate; // other tenants of a VM only ever slow a round down
  }
  _tile_release();
  printf("AMX bf16 (tdpbf16ps) 32x32 block: %.1f GFLOP/s\n", best);
  return 0;
}
