// A stand-alone register-tile kernel, to measure what operand layouts cost
// without the compiler in the way (bench/RESULTS.md, session 2):
//   clang-22 -O3 -march=native bench/kernels/gemm_layouts.c -o /tmp/gemm_layouts
//   /tmp/gemm_layouts 3072 768   # N K (M = 512), one thread
// C[M,N] += A[M,K] B[K,N] with Switchyard's blocking: 256x256 blocks of C,
// 256-step reduction panels, 8x32 register tiles (16 AVX-512 accumulators),
// columns outside rows. Modes: rowmajor (A and B as given), packedB (B as
// [K/256][N/32][256][32]), packedAB (A also as [M/8][K][8]).
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
// C[M,N] += A[M,K] B[K,N]; block 256x256 of C per "thread block", k panels 256, register tile 8x32
// mode 0: B row-major ldb=N; mode 1: B packed per (kpanel, ntile) contiguous [256][32]
static void gemm(int M,int N,int K,const float*A,const float*B,float*C,int mode,const float*Bp,const float*Ap){
  for(int n0=0;n0<N;n0+=256) for(int m0=0;m0<M;m0+=256)
  for(int k0=0;k0<K;k0+=256)
  for(int n=n0;n<n0+256;n+=32) for(int m=m0;m<m0+256;m+=8){
    __m512 c[8][2];
    for(int i=0;i<8;i++){c[i][0]=_mm512_loadu_ps(C+(m+i)*N+n);c[i][1]=_mm512_loadu_ps(C+(m+i)*N+n+16);}
    const float*bp = mode? Bp + ((size_t)(k0/256)*(N/32) + n/32)*256*32 : B + (size_t)k0*N + n;
    int ldb = mode? 32 : N;
    for(int k=k0;k<k0+256;k++){
      __m512 b0=_mm512_loadu_ps(bp), b1=_mm512_loadu_ps(bp+16); bp+=ldb;
      for(int i=0;i<8;i++){__m512 a=_mm512_set1_ps(mode==2? Ap[((size_t)(m/8)*K + k)*8+i] : A[(m+i)*K+k]); c[i][0]=_mm512_fmadd_ps(a,b0,c[i][0]); c[i][1]=_mm512_fmadd_ps(a,b1,c[i][1]);}
    }
    for(int i=0;i<8;i++){_mm512_storeu_ps(C+(m+i)*N+n,c[i][0]);_mm512_storeu_ps(C+(m+i)*N+n+16,c[i][1]);}
  }
}
int main(int argc,char**argv){
  int M=512,N=atoi(argv[1]),K=atoi(argv[2]);
  float*A=aligned_alloc(64,4l*M*K),*B=aligned_alloc(64,4l*K*N),*C=aligned_alloc(64,4l*M*N),*Bp=aligned_alloc(64,4l*K*N);
  for(long i=0;i<(long)M*K;i++)A[i]=1e-3f*(i%7); for(long i=0;i<(long)K*N;i++)B[i]=1e-3f*(i%5);
  for(int kp=0;kp<K/256;kp++)for(int nt=0;nt<N/32;nt++)for(int k=0;k<256;k++)memcpy(Bp+(((size_t)kp*(N/32)+nt)*256+k)*32, B+(size_t)(kp*256+k)*N+nt*32,128);
  float*Ap=aligned_alloc(64,4l*M*K); for(int mt=0;mt<M/8;mt++)for(int k=0;k<K;k++)for(int i=0;i<8;i++)Ap[((size_t)mt*K+k)*8+i]=A[(mt*8+i)*K+k];
  for(int mode=0;mode<3;mode++){ double best=1e9; for(int r=0;r<5;r++){memset(C,0,4l*M*N);double t=now();gemm(M,N,K,A,B,C,mode,Bp,Ap);t=now()-t;if(t<best)best=t;}
    printf("N=%d K=%d mode=%s: %.1f GFLOP/s\n",N,K,mode==2?"packedAB":mode?"packedB":"rowmajor",2.0*M*N*K/best*1e-9);}
}
