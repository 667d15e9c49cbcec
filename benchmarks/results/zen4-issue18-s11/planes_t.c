/* Per-plane reduction by halves (one plane at a time) against the same tree
   done for 16 planes at once by transposing shuffles; channels-first
   statistics, float32, AVX-512 vectors.  Same flags as the kernels. */
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
static float *x; static long P, G, R; static volatile float sink; static double *s1, *s2, *c1, *c2; static float *K;
static void read_plain(void){ V a={0},b={0},c={0},d={0}; long n=P*G*R; for(long i=0;i+64<=n;i+=64){ a+=*(V*)(x+i); b+=*(V*)(x+i+16); c+=*(V*)(x+i+32); d+=*(V*)(x+i+48);} V s=a+b+c+d; sink=s[0]; }
static inline float hs(V v){ V8 a=__builtin_shufflevector(v,v,0,1,2,3,4,5,6,7)+__builtin_shufflevector(v,v,8,9,10,11,12,13,14,15);
  V4 b=__builtin_shufflevector(a,a,0,1,2,3)+__builtin_shufflevector(a,a,4,5,6,7);
  V2 c=__builtin_shufflevector(b,b,0,1)+__builtin_shufflevector(b,b,2,3); return c[0]+c[1]; }
static inline void plane(const float* r, float k, V* a, V* b, float* t1, float* t2){
  V kv=k-(V){}; V A={0},B={0}; long i=0; for(;i+L<=R;i+=L){ V u=*(const V*)(r+i)-kv; A+=u; B+=u*u; }
  float u1=0,u2=0; for(;i<R;i++){ float u=r[i]-k; u1+=u; u2+=u*u; } *a=A; *b=B; *t1=u1; *t2=u2; }
static void one(double* S1, double* S2){
  memset(S1,0,G*8); memset(S2,0,G*8);
  for(long p=0;p<P;p++) for(long g=0;g<G;g++){ V a,b; float t1,t2; plane(x+(p*G+g)*R,K[g],&a,&b,&t1,&t2);
    S1[g]+=(double)hs(a)+(double)t1; S2[g]+=(double)hs(b)+(double)t2; } sink=S1[0];
}
/* level: pairs of vectors -> one vector holding both halves' sums */
#define LV1(p,q) (__builtin_shufflevector(p,q,0,1,2,3,4,5,6,7,16,17,18,19,20,21,22,23)+__builtin_shufflevector(p,q,8,9,10,11,12,13,14,15,24,25,26,27,28,29,30,31))
#define LV2(p,q) (__builtin_shufflevector(p,q,0,1,2,3,8,9,10,11,16,17,18,19,24,25,26,27)+__builtin_shufflevector(p,q,4,5,6,7,12,13,14,15,20,21,22,23,28,29,30,31))
#define LV3(p,q) (__builtin_shufflevector(p,q,0,1,4,5,8,9,12,13,16,17,20,21,24,25,28,29)+__builtin_shufflevector(p,q,2,3,6,7,10,11,14,15,18,19,22,23,26,27,30,31))
#define LV4(p,q) (__builtin_shufflevector(p,q,0,2,4,6,8,10,12,14,16,18,20,22,24,26,28,30)+__builtin_shufflevector(p,q,1,3,5,7,9,11,13,15,17,19,21,23,25,27,29,31))
static inline V tr16(V* v){ V l1[8],l2[4],l3[2]; for(int j=0;j<8;j++) l1[j]=LV1(v[2*j],v[2*j+1]); for(int j=0;j<4;j++) l2[j]=LV2(l1[2*j],l1[2*j+1]);
  for(int j=0;j<2;j++) l3[j]=LV3(l2[2*j],l2[2*j+1]); return LV4(l3[0],l3[1]); }
static void sixteen(double* S1, double* S2){
  memset(S1,0,G*8); memset(S2,0,G*8);
  for(long p=0;p<P;p++){ long g=0;
    for(;g+16<=G;g+=16){ V a[16],b[16]; float t1[16],t2[16];
      for(int j=0;j<16;j++) plane(x+(p*G+g+j)*R,K[g+j],&a[j],&b[j],&t1[j],&t2[j]);
      V A=tr16(a), B=tr16(b);
      for(int j=0;j<16;j++){ S1[g+j]+=(double)A[j]+(double)t1[j]; S2[g+j]+=(double)B[j]+(double)t2[j]; } }
    for(;g<G;g++){ V a,b; float t1,t2; plane(x+(p*G+g)*R,K[g],&a,&b,&t1,&t2); S1[g]+=(double)hs(a)+(double)t1; S2[g]+=(double)hs(b)+(double)t2; } }
  sink=S1[0];
}
int main(int argc,char**argv){
  P=atol(argv[1]); G=atol(argv[2]); R=atol(argv[3]); int reps=argc>4?atoi(argv[4]):50;
  long n=P*G*R; x=aligned_alloc(64,(n*4+64+63)/64*64); s1=malloc(G*8); s2=malloc(G*8); c1=malloc(G*8); c2=malloc(G*8); K=malloc(G*4);
  for(long i=0;i<n;i++) x[i]=(i%1000)*0.001f+ (i%7)*0.3f; for(long g=0;g<G;g++) K[g]=x[g*R];
  double t[3]={0};
  for(int rep=0;rep<reps;rep++) for(int k=0;k<3;k++){ double t0=now(); if(k==0) read_plain(); else if(k==1) one(s1,s2); else sixteen(c1,c2); t[k]+=now()-t0; }
  int same = memcmp(s1,c1,G*8)==0 && memcmp(s2,c2,G*8)==0;
  printf("%ldx%ldx%ld (%.1f MB): read %.0f us, per-plane %.2fx, 16 at once %.2fx, same bits: %s\n", P,G,R,n*4/1e6, t[0]/reps*1e6, t[1]/t[0], t[2]/t[0], same?"yes":"NO");
}
