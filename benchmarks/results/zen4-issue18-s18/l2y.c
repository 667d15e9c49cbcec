/* Probe: L2-resident traffic of the small channels-first backward (16x32x8x8 float32): a read of x and dy, the dx pass, a copy; best of 20000.
 * gcc -O2 -mavx512f -mfma l2.c -o l2 */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e6+t.tv_nsec*1e-3;}
#define N (16*32*64)
int main(){
  float *x=aligned_alloc(4096,N*4),*d=aligned_alloc(4096,N*4),*o=aligned_alloc(4096,N*4);
  for(int i=0;i<N;i++){x[i]=i*1e-3f;d[i]=1.f;o[i]=0;}
  volatile float sink;
  for(int rep=0;rep<3;rep++){
  double best=1e9,bestdx=1e9,bestc=1e9,bestcp=1e9;
  for(int it=0;it<20000;it++){
    double t=now();
    __m512 a[8];for(int k=0;k<8;k++)a[k]=_mm512_setzero_ps();
    for(int i=0;i<N;i+=128){for(int k=0;k<8;k++)a[k]=_mm512_add_ps(a[k],_mm512_add_ps(_mm512_loadu_ps(x+i+16*k),_mm512_loadu_ps(d+i+16*k)));}
    __m512 s=a[0];for(int k=1;k<8;k++)s=_mm512_add_ps(s,a[k]);sink=_mm512_reduce_add_ps(s);
    double t2=now(); if(t2-t<best)best=t2-t;
    __m512 k1=_mm512_set1_ps(0.5f),k2=_mm512_set1_ps(0.25f),k3=_mm512_set1_ps(0.1f);
    t=now();
    for(int i=0;i<N;i+=16){_mm512_storeu_ps(o+i,_mm512_fmadd_ps(_mm512_loadu_ps(d+i),k1,_mm512_fmadd_ps(_mm512_loadu_ps(x+i),k2,k3)));}
    t2=now(); if(t2-t<bestdx)bestdx=t2-t;
    __m256 h1=_mm256_set1_ps(0.5f),h2=_mm256_set1_ps(0.25f),h3=_mm256_set1_ps(0.1f);
    t=now();
    for(int i=0;i<N;i+=8){_mm256_storeu_ps(o+i,_mm256_fmadd_ps(_mm256_loadu_ps(d+i),h1,_mm256_fmadd_ps(_mm256_loadu_ps(x+i),h2,h3)));}
    t2=now(); if(t2-t<bestcp)bestcp=t2-t;
    sink=o[it%N];
  }
  printf("read x+dy (256KB) %.2f us  dx pass %.2f us  dx ymm %.2f us\n",best,bestdx,bestcp);}
}
