// Read bandwidth with 1 and 2 OpenMP threads (bench/RESULTS.md, session 2);
// bench/run.py reports the 2-thread figure beside the copy ceiling:
//   clang-22 -O3 -march=native -fopenmp bench/kernels/read_bandwidth.c -o /tmp/read_bw
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(){ size_t n = (size_t)600<<20; float *a = aligned_alloc(64, n*4); for(size_t i=0;i<n;i++) a[i]=1;
 for (int th=1; th<=2; th++){ double best=1e9; for(int r=0;r<3;r++){ double t=now(); float tot=0;
 #pragma omp parallel for num_threads(th) reduction(+:tot)
 for(size_t i=0;i<n;i+=64){ __m512 s=_mm512_setzero_ps(); for(int j=0;j<64;j+=16) s=_mm512_add_ps(s,_mm512_load_ps(a+i+j)); tot+=_mm512_reduce_add_ps(s);}
 t=now()-t; if(t<best)best=t; if(tot==0)printf("x");}
 printf("%d threads: read %.1f GB/s\n", th, n*4/best/1e9);}
}
