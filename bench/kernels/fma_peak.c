// The machine's f32 FMA peak: every thread runs 16 independent chains of
// 512-bit (or, without AVX-512, 256-bit) fused multiply-adds, enough to fill
// the FMA pipes at their latency; the best of 7 short rounds, since other
// tenants of a VM take cycles at random. bench/run.py compiles and runs it as
// the compute ceiling beside numpy's sgemm:
//   clang-22 -O3 -march=native -fopenmp bench/kernels/fma_peak.c -o fma_peak
//   ./fma_peak 2   # prints GFLOP/s with 2 threads
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef __AVX512F__
typedef __m512 vec;
#define LANES 16
#define SET1 _mm512_set1_ps
#define FMA _mm512_fmadd_ps
#define SUM _mm512_reduce_add_ps
#else
typedef __m256 vec;
#define LANES 8
#define SET1 _mm256_set1_ps
#define FMA _mm256_fmadd_ps
static float SUM(__m256 v) {
  float f[8];
  _mm256_storeu_ps(f, v);
  return f[0] + f[1] + f[2] + f[3] + f[4] + f[5] + f[6] + f[7];
}
#endif

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : omp_get_max_threads();
  const long iters = 20000000;
  double best = 1e30;
  float sink = 0;
  for (int rep = 0; rep < 7; ++rep) {
    double start = omp_get_wtime();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    {
      vec acc[16];
      for (int i = 0; i < 16; ++i)
        acc[i] = SET1(0.001f * i);
      vec a = SET1(0.9999f), b = SET1(0.0001f);
      for (long n = 0; n < iters; ++n) {
#pragma clang loop unroll(full)
        for (int i = 0; i < 16; ++i)
          acc[i] = FMA(acc[i], a, b);
      }
      for (int i = 0; i < 16; ++i)
        sink += SUM(acc[i]);
    }
    double t = omp_get_wtime() - start;
    if (t < best)
      best = t;
  }
  printf("%.1f\n", threads * iters * 16.0 * LANES * 2 / best / 1e9);
  return sink == 12345.0f;  // keeps the chains alive
}
