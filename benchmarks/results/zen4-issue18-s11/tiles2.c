/* Tile shapes for the statistics of N rows of C float32 lanes (L3-resident),
   against a plain read.  gcc -O3 -mavx512f -mavx512vl -mavx512bw -mavx512dq -mfma
   -mprefer-vector-width=256 -ffp-contract=fast tiles2.c */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
typedef float V __attribute__((vector_size(64), aligned(4), may_alias));
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+1e-9*t.tv_nsec;}
static float *x, *sh, *a1, *a2; static long N, C; static volatile float sink;
static void read_plain(void){ V s0={0},s1={0},s2={0},s3={0}; long n=N*C; for(long i=0;i<n;i+=64){ s0+=*(V*)(x+i); s1+=*(V*)(x+i+16); s2+=*(V*)(x+i+32); s3+=*(V*)(x+i+48);} V s=s0+s1+s2+s3; sink=s[0]; }
#define TILE(NV) static void tiles##NV(long RG){ \
  memset(a1,0,C*4); memset(a2,0,C*4); \
  for(long r0=0;r0<N;r0+=RG){ long r1=r0+RG<N?r0+RG:N; \
    for(long c=0;c<C;c+=16*NV){ V m[NV],p[NV],q[NV]; \
      for(int v=0;v<NV;v++){ m[v]=*(V*)(sh+c+16*v); p[v]=*(V*)(a1+c+16*v); q[v]=*(V*)(a2+c+16*v);} \
      for(long r=r0;r<r1;r++){ const float*pp=x+r*C+c; \
        for(int v=0;v<NV;v++){ V d=*(V*)(pp+16*v)-m[v]; p[v]+=d; q[v]+=d*d; } } \
      for(int v=0;v<NV;v++){ *(V*)(a1+c+16*v)=p[v]; *(V*)(a2+c+16*v)=q[v]; } } } \
  sink=a1[0]+a2[0]; }
TILE(2) TILE(4) TILE(8)
int main(int argc,char**argv){
  N=argc>1?atol(argv[1]):3136; C=argc>2?atol(argv[2]):2048;
  x=aligned_alloc(64,N*C*4+64); sh=aligned_alloc(64,C*4); a1=aligned_alloc(64,C*4); a2=aligned_alloc(64,C*4);
  for(long i=0;i<N*C;i++) x[i]=(i%1000)*0.001f; for(long c=0;c<C;c++) sh[c]=0.5f;
  const char* names[]={"read","t2 RG4","t2 RG8","t2 RG16","t4 RG4","t4 RG8","t4 RG16","t8 RG2","t8 RG4","t8 RG8"};
  int K=10; double tot[10]={0}; int reps=30;
  for(int rep=0;rep<reps;rep++) for(int k=0;k<K;k++){ double t=now();
    switch(k){case 0: read_plain(); break; case 1: tiles2(4); break; case 2: tiles2(8); break; case 3: tiles2(16); break;
      case 4: tiles4(4); break; case 5: tiles4(8); break; case 6: tiles4(16); break; case 7: tiles8(2); break; case 8: tiles8(4); break; case 9: tiles8(8); break;}
    t=now()-t; tot[k]+=t; }
  printf("N=%ld C=%ld (%.1f MB), mean of %d\n", N, C, N*C*4/1e6, reps);
  for(int k=0;k<K;k++) printf("%-10s %8.0f us  x read %.2f\n", names[k], tot[k]/reps*1e6, tot[k]/tot[0]);
}
