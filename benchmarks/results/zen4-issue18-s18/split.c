/* Probe: the small backward's three-tile sums walk (16 rows x 2048 lanes, rows 8 KiB apart) with x on a line
   and dy 0/16/32/48 bytes past one: zmm loads (split when dy is off a line) against dy loaded as two ymm
   halves joined in a register (no split at +32).  gcc -O3 -mavx512f -mavx512dq -mfma split.c -o split */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e6+t.tv_nsec*1e-3;}
#define P 16
#define S 2048
static float mu[S] __attribute__((aligned(64))), b1[S] __attribute__((aligned(64))), b2[S] __attribute__((aligned(64)));
static inline __m512 ld_z(const float*p){return _mm512_loadu_ps(p);}
static inline __m512 ld_h(const float*p){return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(p)),_mm256_loadu_ps(p+8),1);}
#define WALK(NAME,LD) static void NAME(const float*d,const float*x){ \
  for(int c=0;c+48<=S;c+=48){__m512 a1[3],a2[3],m[3]; \
    for(int t=0;t<3;t++){a1[t]=_mm512_setzero_ps();a2[t]=_mm512_setzero_ps();m[t]=_mm512_load_ps(mu+c+16*t);} \
    for(int i=0;i<P;i++)for(int t=0;t<3;t++){__m512 dv=LD(d+i*S+c+16*t),xv=_mm512_load_ps(x+i*S+c+16*t); \
      a1[t]=_mm512_add_ps(a1[t],dv);a2[t]=_mm512_fmadd_ps(dv,_mm512_sub_ps(xv,m[t]),a2[t]);} \
    for(int t=0;t<3;t++){_mm512_store_ps(b1+c+16*t,a1[t]);_mm512_store_ps(b2+c+16*t,a2[t]);}}}
WALK(walk_z,ld_z)
WALK(walk_h,ld_h)
int main(){
  char*bx=aligned_alloc(4096,P*S*4+8192),*bd=aligned_alloc(4096,P*S*4+8192);
  float*x=(float*)bx;
  for(int i=0;i<P*S;i++)x[i]=(i%97)*0.01f;
  for(int i=0;i<(P*S*4+8192)/4;i++)((float*)bd)[i]=(i%13)*0.1f;
  volatile float sink;
  for(int rep=0;rep<2;rep++)for(int off=0;off<64;off+=16){float*d=(float*)(bd+DOFF+off);double bz=1e9,bh=1e9;
    for(int it=0;it<20000;it++){double t=now();walk_z(d,x);double t2=now();if(t2-t<bz)bz=t2-t;
      t=now();walk_h(d,x);t2=now();if(t2-t<bh)bh=t2-t;sink=b1[it%S];}
    printf("dy at +%d: zmm loads %.2f us, two ymm halves %.2f us\n",off,bz,bh);}
}
