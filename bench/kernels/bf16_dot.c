// The rate of an 8x32 register tile with its operands in the L1 cache, one
// thread, in two forms: f32 FMAs (vfmadd231ps, the default packed products)
// and AVX-512 BF16 dot products (vdpbf16ps, `moec --bf16-dot-products`),
// which multiply two bf16 pairs a lane per instruction. Whether the second
// is faster depends on the core (docs/Rationale.md, "bf16 dot products"):
//   clang-22 -O3 -march=native bench/kernels/bf16_dot.c -o bf16_dot
//   ./bf16_dot   # prints GFLOP/s of each (a product and an addition: 2 FLOPs)
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

#define ROWS 8
#define STEPS 256
#define REPS 200000

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static float a32[STEPS * ROWS] __attribute__((aligned(64)));
static float b32[STEPS * 32] __attribute__((aligned(64)));
static unsigned short a16[STEPS * ROWS] __attribute__((aligned(64)));
static unsigned short b16[STEPS * 32] __attribute__((aligned(64)));
static float c[ROWS * 32] __attribute__((aligned(64)));

// The accumulator tile, in and out of its 16 registers.
static void load_tile(__m512 acc[ROWS][2]) {
  for (int i = 0; i < ROWS; ++i)
    for (int v = 0; v < 2; ++v)
      acc[i][v] = _mm512_load_ps(c + i * 32 + v * 16);
}

static void store_tile(__m512 acc[ROWS][2]) {
  for (int i = 0; i < ROWS; ++i)
    for (int v = 0; v < 2; ++v)
      _mm512_store_ps(c + i * 32 + v * 16, acc[i][v]);
  __asm__ volatile("" ::: "memory");
}

// One register tile over STEPS reduction steps, REPS times: [k][8] rows
// broadcast one at a time, [k][32] columns, 16 accumulators.
static double fma_f32(void) {
  double start = now();
  for (int rep = 0; rep < REPS; ++rep) {
    __m512 acc[ROWS][2];
    load_tile(acc);
    for (int k = 0; k < STEPS; ++k) {
      __m512 b0 = _mm512_load_ps(b32 + k * 32), b1 = _mm512_load_ps(b32 + k * 32 + 16);
      for (int i = 0; i < ROWS; ++i) {
        __m512 a = _mm512_set1_ps(a32[k * ROWS + i]);
        acc[i][0] = _mm512_fmadd_ps(a, b0, acc[i][0]);
        acc[i][1] = _mm512_fmadd_ps(a, b1, acc[i][1]);
      }
    }
    store_tile(acc);
  }
  return 2.0 * ROWS * 32 * STEPS * REPS / (now() - start) * 1e-9;
}

// The same tile in pairs: [k/2][8][2] rows, each pair broadcast as one
// 32-bit lane, [k/2][32][2] columns.
static double dot_bf16(void) {
  double start = now();
  for (int rep = 0; rep < REPS; ++rep) {
    __m512 acc[ROWS][2];
    load_tile(acc);
    for (int k = 0; k < STEPS; k += 2) {
      __m512bh b0 = (__m512bh)_mm512_load_si512(b16 + k * 32);
      __m512bh b1 = (__m512bh)_mm512_load_si512(b16 + k * 32 + 32);
      const int *pairs = (const int *)(a16 + k * ROWS);
      for (int i = 0; i < ROWS; ++i) {
        __m512bh a = (__m512bh)_mm512_set1_epi32(pairs[i]);
        acc[i][0] = _mm512_dpbf16_ps(acc[i][0], a, b0);
        acc[i][1] = _mm512_dpbf16_ps(acc[i][1], a, b1);
      }
    }
    store_tile(acc);
  }
  return 2.0 * ROWS * 32 * STEPS * REPS / (now() - start) * 1e-9;
}

int main(void) {
  for (int i = 0; i < STEPS * ROWS; ++i) {
    a32[i] = 1e-3f;
    a16[i] = 0x3a83; // about 1e-3 in bf16
  }
  for (int i = 0; i < STEPS * 32; ++i) {
    b32[i] = 1e-3f;
    b16[i] = 0x3a83;
  }
  // The best of 5 rounds each, in turn: other tenants of a VM only ever
  // slow a round down.
  double best_fma = 0, best_dot = 0;
  for (int round = 0; round < 5; ++round) {
    double f = fma_f32(), d = dot_bf16();
    if (f > best_fma)
      best_fma = f;
    if (d > best_dot)
      best_dot = d;
  }
  printf("f32 FMA (vfmadd231ps) 8x32 tile: %.1f GFLOP/s\n", best_fma);
  printf("bf16 dot (vdpbf16ps) 8x32 tile:  %.1f GFLOP/s (%.2fx the FMA tile)\n", best_dot,
         best_dot / best_fma);
  return 0;
}
