/* Is a small plane's reduction slowed by loads that cross cache lines?
   The same per-plane statistics (vectors from the plane's first element,
   reduced by halves) over P x G planes of R = 49 float32, stored either
   packed (stride 49: most vector loads cross a 64-byte line) or with each
   plane starting on a 64-byte boundary (stride 64, the same work).  Time per
   element, against a plain read of each layout.  Same flags as the kernels. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
typedef float V __attribute__((vector_size(64), aligned(4), may_alias));
typedef float V8 __attribute__((vector_size(32)));
typedef float V4 __attribute__((vector_size(16)));
typedef float V2 __attribute__((vector_size(8)));
enum { L = 16 };
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+1e-9*t.tv_nsec;}
static volatile float sink;
static inline float hs(V v){ V8 a=__builtin_shufflevector(v,v,0,1,2,3,4,5,6,7)+__builtin_shufflevector(v,v,8,9,10,11,12,13,14,15);
  V4 b=__builtin_shufflevector(a,a,0,1,2,3)+__builtin_shufflevector(a,a,4,5,6,7);
  V2 c=__builtin_shufflevector(b,b,0,1)+__builtin_shufflevector(b,b,2,3); return c[0]+c[1]; }
static void stats(const float* x, long np, long R, long S, long G, const float* K, double* s1, double* s2){
  long g=0; for(long s=0;s<np;s++){ const float* r=x+s*S; V kv=K[g]-(V){}; V a={0},b={0}; long i=0;
    for(;i+L<=R;i+=L){ V u=*(const V*)(r+i)-kv; a+=u; b+=u*u; }
    float t1=0,t2=0; for(;i<R;i++){ float u=r[i]-K[g]; t1+=u; t2+=u*u; }
    s1[g]+=(double)hs(a)+(double)t1; s2[g]+=(double)hs(b)+(double)t2; g=g+1==G?0:g+1; } }
int main(int argc,char**argv){
  long P=atol(argv[1]), G=atol(argv[2]), R=49; int reps=200;
  float *xp=aligned_alloc(64,(P*G*R*4+63)/64*64), *xa=aligned_alloc(64,P*G*64*4); float* K=malloc(G*4); double *s1=malloc(G*8),*s2=malloc(G*8);
  for(long i=0;i<P*G*R;i++) xp[i]=(i%1000)*0.001f; for(long s=0;s<P*G;s++) for(long i=0;i<64;i++) xa[s*64+i]=i<R?xp[s*R+i]:0;
  for(long g=0;g<G;g++) K[g]=xp[g*R];
  double tp=0, ta=0;
  for(int rep=0;rep<reps;rep++){ double t0=now(); stats(xp,P*G,R,R,G,K,s1,s2); tp+=now()-t0; t0=now(); stats(xa,P*G,R,64,G,K,s1,s2); ta+=now()-t0; }
  sink=s1[0];
  printf("%ldx%ldx49: packed %.1f us, aligned planes %.1f us (aligned / packed %.2f)\n", P, G, tp/reps*1e6, ta/reps*1e6, ta/tp);
}
