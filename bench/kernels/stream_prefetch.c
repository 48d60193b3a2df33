// The register tile of a streamed expert product (a block of 8 rows, bound by
// reading its weights) with and without software prefetch, to choose how far
// ahead switchyard-lower-vectors prefetches streamed weights
// (kStreamedPrefetchBytes; bench/RESULTS.md, 2026-12-02 session 10):
//   clang-22 -O3 -march=native -fopenmp -DEVERY_LINE=1 bench/kernels/stream_prefetch.c -o /tmp/sp
//   for d in 0 1024 4096 8192; do /tmp/sp $d; done   # bytes ahead, 0 = none
// 64 experts of f32 weights packed [N/32][K][32] (K 768, N 3072, 604 MB), an
// 8x32 register tile per (expert, column tile), 2 OpenMP threads by default.
// EVERY_LINE=0 prefetches only the first 64-byte line of each 128-byte row.
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#ifndef EVERY_LINE
#define EVERY_LINE 1
#endif
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  int E=64,K=768,N=3072; int ahead=argc>1?atoi(argv[1]):0;
  size_t per=(size_t)K*N; float*W=aligned_alloc(64,per*E*4);
  #pragma omp parallel for
  for(size_t i=0;i<per*E;i++)W[i]=1e-3f*(i%5);
  float A[768*8]; for(int i=0;i<768*8;i++)A[i]=1e-3f*(i%7);
  float*Cs=aligned_alloc(64,(size_t)E*8*N*4);
  double best=1e9;
  for(int r=0;r<4;r++){ double t=now();
  #pragma omp parallel for collapse(2) schedule(static)
  for(int e=0;e<E;e++) for(int nt=0;nt<N/32;nt++){
    const float*bp=W+per*e+(size_t)nt*K*32; __m512 c[8][2];
    for(int i=0;i<8;i++){c[i][0]=_mm512_setzero_ps();c[i][1]=_mm512_setzero_ps();}
    for(int k=0;k<K;k++){
      if(ahead){ _mm_prefetch((const char*)(bp+ahead/4),_MM_HINT_T0);
                 if(EVERY_LINE) _mm_prefetch((const char*)(bp+ahead/4+16),_MM_HINT_T0); }
      __m512 b0=_mm512_loadu_ps(bp),b1=_mm512_loadu_ps(bp+16); bp+=32;
      for(int i=0;i<8;i++){__m512 a=_mm512_set1_ps(A[k*8+i]);c[i][0]=_mm512_fmadd_ps(a,b0,c[i][0]);c[i][1]=_mm512_fmadd_ps(a,b1,c[i][1]);}
    }
    float*C=Cs+(size_t)e*8*N; for(int i=0;i<8;i++){_mm512_storeu_ps(C+i*N+nt*32,c[i][0]);_mm512_storeu_ps(C+i*N+nt*32+16,c[i][1]);}
  }
  t=now()-t; if(t<best)best=t;}
  printf("%d bytes ahead, %s: %.1f GB/s\n",ahead,EVERY_LINE?"every line":"first line",per*E*4/best/1e9);
}
