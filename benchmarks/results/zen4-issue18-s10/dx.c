/* Probe (issue 18, session 10, Zen 4): the piecewise activation's loop, nested
   conditional against both sides computed and one selected, on 16x8x8x192
   float32 rows of 192 lanes, best of 300.  Compiled with the avx512 variant's flags:
   gcc -O3 -ffp-contract=off -fno-math-errno -fno-trapping-math -mavx512f -mavx512bw
       -mavx512dq -mavx512vl -mavx2 -mfma -mf16c -mprefer-vector-width=256
       -ffp-contract=fast -o probe dx.c
   Result: dx plain 24.0-24.4 us, nested 34.5-38.4 us, split 31.3-31.8 us with -mavx512*; AVX2 flags 24.3 / 34.9 / 31.2; -O3 only 36.3 / 100.5 / 77.0; 0 bit differences. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+1e-9*t.tv_nsec;}
__attribute__((noinline)) void dxp(const float*d,const float*x,float*o,long n,const float*k1,const float*k2,const float*k3){for(long j=0;j<n;j++) o[j]=(d[j]*k1[j])+(x[j]*k2[j]+k3[j]);}
__attribute__((noinline)) void dx1(const float*d,const float*x,float*o,long n,const float*k1,const float*k2,const float*k3,const float*za,const float*zb,float s,float h){
  for(long j=0;j<n;j++){ float z=x[j]*za[j]+zb[j]; float m = z>0 ? (z<h ? (float)1 : (float)0) : s; o[j]=(d[j]*m)*k1[j]+(x[j]*k2[j]+k3[j]); } }
__attribute__((noinline)) void dx2(const float*d,const float*x,float*o,long n,const float*k1,const float*k2,const float*k3,const float*za,const float*zb,float s,float h){
  for(long j=0;j<n;j++){ float z=x[j]*za[j]+zb[j]; float i = z<h ? (float)1 : (float)0; float m = z>0 ? i : s; o[j]=(d[j]*m)*k1[j]+(x[j]*k2[j]+k3[j]); } }
int main(){ long C=192, R=16*8*8, n=R*C; float*x=aligned_alloc(64,n*4),*d=aligned_alloc(64,n*4),*y=aligned_alloc(64,n*4),*y2=aligned_alloc(64,n*4),*k[5];
 for(int q=0;q<5;q++){ k[q]=aligned_alloc(64,C*4); for(long c=0;c<C;c++) k[q][c]=0.5f+0.01f*c*(q+1);}
 for(long i=0;i<n;i++){ x[i]=(float)rand()/RAND_MAX-0.5f; d[i]=(float)rand()/RAND_MAX-0.5f; }
 double best[3]={1e9,1e9,1e9};
 for(int rep=0;rep<300;rep++) for(int q=0;q<3;q++){ double t=now();
   for(long r=0;r<R;r++){ if(q==0) dxp(d+r*C,x+r*C,y+r*C,C,k[0],k[1],k[2]); else if(q==1) dx1(d+r*C,x+r*C,y+r*C,C,k[0],k[1],k[2],k[3],k[4],0.f,6.f); else dx2(d+r*C,x+r*C,y+r*C,C,k[0],k[1],k[2],k[3],k[4],0.f,6.f);} t=now()-t; if(t<best[q]) best[q]=t; }
 printf("dx plain %.1f us, dx act nested %.1f us, dx act split %.1f us\n", best[0]*1e6, best[1]*1e6, best[2]*1e6);
 for(long i=0;i<n;i+=7) x[i] = (i%3==0)? -0.0f : (i%3==1? 1e-40f : -1e-40f); x[5]=0.0f/0.0f; x[6]=7.f;
 long bad=0; float ss[3]={0.f,0.2f,0.01f}, hh[3]={6.f,1.0f/0.0f,0.5f};
 for(int q=0;q<3;q++){ for(long r=0;r<R;r++){ dx1(d+r*C,x+r*C,y+r*C,C,k[0],k[1],k[2],k[3],k[4],ss[q],hh[q]); dx2(d+r*C,x+r*C,y2+r*C,C,k[0],k[1],k[2],k[3],k[4],ss[q],hh[q]);} for(long i=0;i<n;i++) if(memcmp(y+i,y2+i,4)) bad++; }
 printf("bit differences: %ld\n", bad); return 0; }
