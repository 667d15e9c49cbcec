/* Channels-first statistics of P samples x G planes of R float32 (L3-resident):
   planes in memory order, each plane's sums in a vector then reduced to
   float64 per channel, against a plain read.  Same flags as the kernels. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
typedef float V __attribute__((vector_size(64), aligned(4), may_alias));
enum { L = 16 };
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+1e-9*t.tv_nsec;}
static float *x; static long P, G, R; static volatile float sink; static double *s1, *s2; static float *K;
static void read_plain(void){ V a={0},b={0},c={0},d={0}; long n=P*G*R; for(long i=0;i+64<=n;i+=64){ a+=*(V*)(x+i); b+=*(V*)(x+i+16); c+=*(V*)(x+i+32); d+=*(V*)(x+i+48);} V s=a+b+c+d; sink=s[0]; }
typedef float V8 __attribute__((vector_size(32)));
typedef float V4 __attribute__((vector_size(16)));
static inline float hsum(V v){ V8 a=__builtin_shufflevector(v,v,0,1,2,3,4,5,6,7)+__builtin_shufflevector(v,v,8,9,10,11,12,13,14,15);
  V4 b=__builtin_shufflevector(a,a,0,1,2,3)+__builtin_shufflevector(a,a,4,5,6,7);
  b=b+__builtin_shufflevector(b,b,2,3,0,1); b=b+__builtin_shufflevector(b,b,1,0,3,2); return b[0]; }
static void planes(void){
  memset(s1,0,G*8); memset(s2,0,G*8);
  for(long g=0;g<G;g++) K[g]=x[g*R];
  for(long p=0;p<P;p++){ const float* xp=x+p*G*R;
    for(long g=0;g<G;g++){ const float* r=xp+g*R; V k=K[g]-(V){};
      V a1={0},a2={0}; long i=0;
      for(;i+L<=R;i+=L){ V d=*(const V*)(r+i)-k; a1+=d; a2+=d*d; }
      float t1=hsum(a1), t2=hsum(a2);
      for(;i<R;i++){ float d=r[i]-K[g]; t1+=d; t2+=d*d; }
      s1[g]+=t1; s2[g]+=t2; } }
  sink=s1[0]+s2[0];
}
/* two planes' accumulators interleaved to hide the reduction latency */
static void planes2(void){
  memset(s1,0,G*8); memset(s2,0,G*8);
  for(long g=0;g<G;g++) K[g]=x[g*R];
  for(long p=0;p<P;p++){ const float* xp=x+p*G*R;
    for(long g=0;g<G;g++){ const float* r=xp+g*R; V k=K[g]-(V){};
      V a1={0},a2={0},b1={0},b2={0}; long i=0;
      for(;i+2*L<=R;i+=2*L){ V d=*(const V*)(r+i)-k, e=*(const V*)(r+i+L)-k; a1+=d; a2+=d*d; b1+=e; b2+=e*e; }
      for(;i+L<=R;i+=L){ V d=*(const V*)(r+i)-k; a1+=d; a2+=d*d; }
      a1+=b1; a2+=b2;
      float t1=hsum(a1), t2=hsum(a2);
      for(;i<R;i++){ float d=r[i]-K[g]; t1+=d; t2+=d*d; }
      s1[g]+=t1; s2[g]+=t2; } }
  sink=s1[0]+s2[0];
}
int main(int argc,char**argv){
  P=atol(argv[1]); G=atol(argv[2]); R=atol(argv[3]); int reps=argc>4?atoi(argv[4]):30;
  long n=P*G*R; x=aligned_alloc(64,(n*4+64+63)/64*64); s1=malloc(G*8); s2=malloc(G*8); K=malloc(G*4);
  for(long i=0;i<n;i++) x[i]=(i%1000)*0.001f;
  double t[3]={0};
  for(int rep=0;rep<reps;rep++) for(int k=0;k<3;k++){ double t0=now(); if(k==0) read_plain(); else if(k==1) planes(); else planes2(); t[k]+=now()-t0; }
  printf("%ldx%ldx%ld (%.1f MB): read %.0f us, planes %.2fx, planes2 %.2fx\n", P,G,R,n*4/1e6, t[0]/reps*1e6, t[1]/t[0], t[2]/t[0]);
}
