/* Probe: the fold of 32 channels x 64 lanes (x2 arrays), per channel (ckbn_fold8's way) against 8 channels at a time with the horizontal sums transposed (same adds, same order).
   gcc -O3 -mavx512f -mavx512dq -mavx512vl -mfma -mprefer-vector-width=256 fold.c -o fold */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e6+t.tv_nsec*1e-3;}
typedef double v8d __attribute__((vector_size(64)));
#define W8(p) ((v8d)_mm512_cvtps_pd(_mm256_loadu_ps(p)))
static inline __attribute__((noinline)) void fold8(const float*b,double*out){
  v8d v[8]; for(int k=0;k<8;k++)v[k]=W8(b+8*k);
  for(int n=4;n>=1;n/=2)for(int k=0;k<n;k++)v[k]+=v[k+n];
  *out=((v[0][0]+v[0][4])+(v[0][2]+v[0][6]))+((v[0][1]+v[0][5])+(v[0][3]+v[0][7]));
}
static inline __m512d vert8(const float*b){
  __m512d v0=_mm512_cvtps_pd(_mm256_loadu_ps(b)),v1=_mm512_cvtps_pd(_mm256_loadu_ps(b+8)),v2=_mm512_cvtps_pd(_mm256_loadu_ps(b+16)),v3=_mm512_cvtps_pd(_mm256_loadu_ps(b+24)),
         v4=_mm512_cvtps_pd(_mm256_loadu_ps(b+32)),v5=_mm512_cvtps_pd(_mm256_loadu_ps(b+40)),v6=_mm512_cvtps_pd(_mm256_loadu_ps(b+48)),v7=_mm512_cvtps_pd(_mm256_loadu_ps(b+56));
  v0=_mm512_add_pd(v0,v4);v1=_mm512_add_pd(v1,v5);v2=_mm512_add_pd(v2,v6);v3=_mm512_add_pd(v3,v7);
  v0=_mm512_add_pd(v0,v2);v1=_mm512_add_pd(v1,v3);return _mm512_add_pd(v0,v1);
}
/* 8 channels' final vectors -> their 8 sums, in the order c0 c4 c1 c5 c2 c6 c3 c7 */
static inline __m512d hsum8(__m512d a0,__m512d a1,__m512d a2,__m512d a3,__m512d a4,__m512d a5,__m512d a6,__m512d a7){
#define PAIR(a,b) _mm512_add_pd(_mm512_shuffle_f64x2(a,b,0x44),_mm512_shuffle_f64x2(a,b,0xEE))
  __m512d b01=PAIR(a0,a1),b23=PAIR(a2,a3),b45=PAIR(a4,a5),b67=PAIR(a6,a7);
#define QUAD(a,b) _mm512_add_pd(_mm512_shuffle_f64x2(a,b,0x88),_mm512_shuffle_f64x2(a,b,0xDD))
  __m512d c0=QUAD(b01,b23),c1=QUAD(b45,b67);
  return _mm512_add_pd(_mm512_unpacklo_pd(c0,c1),_mm512_unpackhi_pd(c0,c1));
}
static void fold_batched(const float*b,ptrdiff_t W,ptrdiff_t n,double*o){
  ptrdiff_t g=0; double t[8];
  for(;g+8<=n;g+=8){
    __m512d d=hsum8(vert8(b+(g)*W),vert8(b+(g+1)*W),vert8(b+(g+2)*W),vert8(b+(g+3)*W),vert8(b+(g+4)*W),vert8(b+(g+5)*W),vert8(b+(g+6)*W),vert8(b+(g+7)*W));
    _mm512_storeu_pd(t,d);
    o[g*W]=t[0];o[(g+4)*W]=t[1];o[(g+1)*W]=t[2];o[(g+5)*W]=t[3];o[(g+2)*W]=t[4];o[(g+6)*W]=t[5];o[(g+3)*W]=t[6];o[(g+7)*W]=t[7];
  }
  for(;g<n;g++)fold8(b+g*W,o+g*W);
}
#define G 32
#define R 64
int main(){
  float *b1=aligned_alloc(64,G*R*4),*b2=aligned_alloc(64,G*R*4);
  double *o1=aligned_alloc(64,G*R*8),*o2=aligned_alloc(64,G*R*8),*p1=aligned_alloc(64,G*R*8),*p2=aligned_alloc(64,G*R*8);
  srand(1);for(int i=0;i<G*R;i++){b1[i]=(rand()/(float)RAND_MAX-0.5f)*(1<<(rand()%20));b2[i]=(rand()/(float)RAND_MAX)*1e3f;}
  for(int g=0;g<G;g++){fold8(b1+g*R,o1+g*R);fold8(b2+g*R,o2+g*R);}
  fold_batched(b1,R,G,p1);fold_batched(b2,R,G,p2);
  int same=1;for(int g=0;g<G;g++)if(memcmp(&o1[g*R],&p1[g*R],8)||memcmp(&o2[g*R],&p2[g*R],8))same=0;
  printf("same bits: %d\n",same);
  for(int rep=0;rep<3;rep++){double a=1e9,bb=1e9;
    for(int it=0;it<20000;it++){
      double t=now();for(int g=0;g<G;g++){fold8(b1+g*R,o1+g*R);fold8(b2+g*R,o2+g*R);}double t2=now();if(t2-t<a)a=t2-t;
      t=now();fold_batched(b1,R,G,p1);fold_batched(b2,R,G,p2);t2=now();if(t2-t<bb)bb=t2-t;}
    printf("per channel %.3f us  batched %.3f us\n",a,bb);}
}
