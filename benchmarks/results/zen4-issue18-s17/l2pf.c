/* Probe: software prefetch (T0, D floats ahead) on the L2-resident read of x and dy and the dx pass of 16x32x8x8 float32.
 * gcc -O2 -mavx512f -mprfchw -mfma l2pf.c -o l2pf */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e6+t.tv_nsec*1e-3;}
#define N (16*32*64)
static float *x,*d,*o;
volatile float sink;
__attribute__((noinline)) void rd(int D){
    __m512 a[8];for(int k=0;k<8;k++)a[k]=_mm512_setzero_ps();
    for(int i=0;i<N;i+=64){
      if(D){_mm_prefetch((const char*)(x+i+D),_MM_HINT_T0);_mm_prefetch((const char*)(x+i+D+16),_MM_HINT_T0);_mm_prefetch((const char*)(x+i+D+32),_MM_HINT_T0);_mm_prefetch((const char*)(x+i+D+48),_MM_HINT_T0);
      _mm_prefetch((const char*)(d+i+D),_MM_HINT_T0);_mm_prefetch((const char*)(d+i+D+16),_MM_HINT_T0);_mm_prefetch((const char*)(d+i+D+32),_MM_HINT_T0);_mm_prefetch((const char*)(d+i+D+48),_MM_HINT_T0);}
      for(int k=0;k<4;k++){a[k]=_mm512_add_ps(a[k],_mm512_load_ps(x+i+16*k));a[k+4]=_mm512_add_ps(a[k+4],_mm512_load_ps(d+i+16*k));}}
    __m512 s=a[0];for(int k=1;k<8;k++)s=_mm512_add_ps(s,a[k]);sink=_mm512_reduce_add_ps(s);
}
__attribute__((noinline)) void dxp(int D){
    __m512 k1=_mm512_set1_ps(0.5f),k2=_mm512_set1_ps(0.25f),k3=_mm512_set1_ps(0.1f);
    for(int i=0;i<N;i+=16){ if(D && (i%16)==0){_mm_prefetch((const char*)(x+i+D),_MM_HINT_T0);_mm_prefetch((const char*)(d+i+D),_MM_HINT_T0);_m_prefetchw((void*)(const char*)(o+i+D));}
      _mm512_store_ps(o+i,_mm512_fmadd_ps(_mm512_load_ps(d+i),k1,_mm512_fmadd_ps(_mm512_load_ps(x+i),k2,k3)));}
}
int main(){
  x=aligned_alloc(4096,N*4);d=aligned_alloc(4096,N*4+4096)+1024;o=aligned_alloc(4096,N*4+4096)+2048;
  for(int i=0;i<N;i++){x[i]=i*1e-3f;d[i]=1.f;o[i]=0;}
  int Ds[]={0,64,128,256,512,1024};
  for(int rep=0;rep<2;rep++) for(int j=0;j<6;j++){int D=Ds[j];
    double b1=1e9,b2=1e9;
    for(int it=0;it<20000;it++){double t=now();rd(D);double t2=now();if(t2-t<b1)b1=t2-t;
      t=now();dxp(D);t2=now();if(t2-t<b2)b2=t2-t;}
    printf("pf %4d floats: read %.2f us  dx %.2f us\n",D,b1,b2);}
}
