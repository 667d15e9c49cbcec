/* Statistics traversals of a channels-last float32 array (N rows of C lanes):
   sums of d = x - sh and d*d per lane, against a plain read and against the
   same arithmetic over the array in memory order ("stream+ops"); the array
   (25.7 MB) stays in the 32 MiB L3 between repetitions; best of 15.
   gcc -O3 -mavx512f -mavx512vl -mavx512bw -mavx512dq -mfma
       -mprefer-vector-width=256 -ffp-contract=fast -o rows rows.c
   ./rows 3136 2048; ./rows 25088 256   (C must be a multiple of 256)
   rowreg: whole rows in registers (C = 128 or 256 only); blkR: blocks of R
   rows read in memory order first ("touch"), then strips of 256 lanes walk
   the block with every accumulator in registers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
typedef float V __attribute__((vector_size(64), aligned(4), may_alias));
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+1e-9*t.tv_nsec;}
static float *x, *sh, *a1, *a2; static long N, C;
static volatile float sink;
static void read_plain(void){ V s0={0},s1={0},s2={0},s3={0}; long n=N*C; for(long i=0;i<n;i+=64){ s0+=*(V*)(x+i); s1+=*(V*)(x+i+16); s2+=*(V*)(x+i+32); s3+=*(V*)(x+i+48);} V s=s0+s1+s2+s3; sink=s[0]; }
static void stream_ops(void){ V m=*(V*)sh; V p0={0},p1={0},p2={0},p3={0},q0={0},q1={0},q2={0},q3={0}; long n=N*C;
  for(long i=0;i<n;i+=64){ V d0=*(V*)(x+i)-m,d1=*(V*)(x+i+16)-m,d2=*(V*)(x+i+32)-m,d3=*(V*)(x+i+48)-m; p0+=d0;p1+=d1;p2+=d2;p3+=d3;q0+=d0*d0;q1+=d1*d1;q2+=d2*d2;q3+=d3*d3;}
  V s=p0+p1+p2+p3+q0+q1+q2+q3; sink=s[0]; }
/* tiles: 64 lanes (4 vectors) in registers over RG rows, then next lanes */
static void tiles(long RG){
  memset(a1,0,C*4); memset(a2,0,C*4);
  for(long r0=0;r0<N;r0+=RG){ long r1=r0+RG<N?r0+RG:N;
    for(long c=0;c<C;c+=64){ V m0=*(V*)(sh+c),m1=*(V*)(sh+c+16),m2=*(V*)(sh+c+32),m3=*(V*)(sh+c+48);
      V p0=*(V*)(a1+c),p1=*(V*)(a1+c+16),p2=*(V*)(a1+c+32),p3=*(V*)(a1+c+48);
      V q0=*(V*)(a2+c),q1=*(V*)(a2+c+16),q2=*(V*)(a2+c+32),q3=*(V*)(a2+c+48);
      for(long r=r0;r<r1;r++){ const float*p=x+r*C+c; V d0=*(V*)p-m0,d1=*(V*)(p+16)-m1,d2=*(V*)(p+32)-m2,d3=*(V*)(p+48)-m3;
        p0+=d0;p1+=d1;p2+=d2;p3+=d3;q0+=d0*d0;q1+=d1*d1;q2+=d2*d2;q3+=d3*d3;}
      *(V*)(a1+c)=p0;*(V*)(a1+c+16)=p1;*(V*)(a1+c+32)=p2;*(V*)(a1+c+48)=p3;
      *(V*)(a2+c)=q0;*(V*)(a2+c+16)=q1;*(V*)(a2+c+32)=q2;*(V*)(a2+c+48)=q3; } }
  sink=a1[0]+a2[0];
}
static long PFD=512;
static void tiles_pf(long RG){
  memset(a1,0,C*4); memset(a2,0,C*4);
  for(long r0=0;r0<N;r0+=RG){ long r1=r0+RG<N?r0+RG:N;
    for(long c=0;c<C;c+=64){ V m0=*(V*)(sh+c),m1=*(V*)(sh+c+16),m2=*(V*)(sh+c+32),m3=*(V*)(sh+c+48);
      V p0=*(V*)(a1+c),p1=*(V*)(a1+c+16),p2=*(V*)(a1+c+32),p3=*(V*)(a1+c+48);
      V q0=*(V*)(a2+c),q1=*(V*)(a2+c+16),q2=*(V*)(a2+c+32),q3=*(V*)(a2+c+48);
      for(long r=r0;r<r1;r++){ const float*p=x+r*C+c;
        __builtin_prefetch(p+PFD); __builtin_prefetch(p+PFD+16); __builtin_prefetch(p+PFD+32); __builtin_prefetch(p+PFD+48);
        V d0=*(V*)p-m0,d1=*(V*)(p+16)-m1,d2=*(V*)(p+32)-m2,d3=*(V*)(p+48)-m3;
        p0+=d0;p1+=d1;p2+=d2;p3+=d3;q0+=d0*d0;q1+=d1*d1;q2+=d2*d2;q3+=d3*d3;}
      *(V*)(a1+c)=p0;*(V*)(a1+c+16)=p1;*(V*)(a1+c+32)=p2;*(V*)(a1+c+48)=p3;
      *(V*)(a2+c)=q0;*(V*)(a2+c+16)=q1;*(V*)(a2+c+32)=q2;*(V*)(a2+c+48)=q3; } }
  sink=a1[0]+a2[0];
}
/* whole rows of C = 16*NV lanes in memory order, all accumulators in registers */
#define ROWREG(NV) static void rowreg##NV(void){ V p[NV], q[NV]; for(int k=0;k<NV;k++){p[k]=(V){0};q[k]=(V){0};} \
  for(long r=0;r<N;r++){ const float*pp=x+r*C; _Pragma("GCC unroll 16") for(int k=0;k<NV;k++){ V d=*(V*)(pp+16*k)-*(V*)(sh+16*k); p[k]+=d; q[k]+=d*d; } } \
  for(int k=0;k<NV;k++){ *(V*)(a1+16*k)=p[k]; *(V*)(a2+16*k)=q[k]; } sink=a1[0]+a2[0]; }
ROWREG(8)
ROWREG(16)
/* blocks of RB rows: touched in memory order, then strips of 256 lanes walk the block's rows with
   all 32 accumulators in registers (block sums kept in a1/a2 between blocks) */
static long RB=32; static int TOUCH=1;
static void strips_blk(void){
  memset(a1,0,C*4); memset(a2,0,C*4);
  for(long r0=0;r0<N;r0+=RB){ long r1=r0+RB<N?r0+RB:N;
    if(TOUCH){ const volatile unsigned char*q=(const volatile unsigned char*)(x+r0*C); long nb=(r1-r0)*C*4; for(long o=0;o<nb;o+=64) (void)q[o]; }
    for(long c=0;c<C;c+=256){ V p[16],q[16]; const V*k=(const V*)(sh+c);
      for(int j=0;j<16;j++){p[j]=((V*)(a1+c))[j];q[j]=((V*)(a2+c))[j];}
      for(long r=r0;r<r1;r++){ const V*rr=(const V*)(x+r*C+c);
        _Pragma("GCC unroll 16") for(int j=0;j<16;j++){ V d=rr[j]-k[j]; p[j]+=d; q[j]+=d*d; } }
      for(int j=0;j<16;j++){((V*)(a1+c))[j]=p[j];((V*)(a2+c))[j]=q[j];} } }
  sink=a1[0]+a2[0];
}
/* row order, accumulators in memory (L1/L2), K rows at once */
static void rows(long K){
  memset(a1,0,C*4); memset(a2,0,C*4);
  for(long r=0;r<N;r+=K){
    if(K==1){ const float*p=x+r*C; for(long c=0;c<C;c+=16){ V d=*(V*)(p+c)-*(V*)(sh+c); *(V*)(a1+c)+=d; *(V*)(a2+c)+=d*d; } }
    else if(K==2){ const float*p=x+r*C,*q=p+C; for(long c=0;c<C;c+=16){ V m=*(V*)(sh+c); V d=*(V*)(p+c)-m, e=*(V*)(q+c)-m; *(V*)(a1+c)+=d+e; *(V*)(a2+c)+=d*d+e*e; } }
    else { const float*p=x+r*C,*q=p+C,*s=q+C,*t=s+C; for(long c=0;c<C;c+=16){ V m=*(V*)(sh+c); V d=*(V*)(p+c)-m, e=*(V*)(q+c)-m, f=*(V*)(s+c)-m, g=*(V*)(t+c)-m; *(V*)(a1+c)+=(d+e)+(f+g); *(V*)(a2+c)+=(d*d+e*e)+(f*f+g*g); } }
  }
  sink=a1[0]+a2[0];
}
/* column strips of W lanes, all rows, strip accumulators in registers (W=128: 8+8 regs) */
static void strips128(void){
  for(long c=0;c<C;c+=128){ V p[8]={0},q[8]={0},m[8]; for(int k=0;k<8;k++) m[k]=*(V*)(sh+c+16*k);
    for(long r=0;r<N;r++){ const float*pp=x+r*C+c; for(int k=0;k<8;k++){ V d=*(V*)(pp+16*k)-m[k]; p[k]+=d; q[k]+=d*d; } }
    for(int k=0;k<8;k++){ *(V*)(a1+c+16*k)=p[k]; *(V*)(a2+c+16*k)=q[k]; } }
  sink=a1[0]+a2[0];
}
int main(int argc,char**argv){
  N=argc>1?atol(argv[1]):3136; C=argc>2?atol(argv[2]):2048;
  x=aligned_alloc(64,N*C*4+64); sh=aligned_alloc(64,C*4); a1=aligned_alloc(64,C*4); a2=aligned_alloc(64,C*4);
  for(long i=0;i<N*C;i++) x[i]=(i%1000)*0.001f; for(long c=0;c<C;c++) sh[c]=0.5f;
  const char* names[]={"read","stream+ops","tiles RG=8","tiles RG=64","rows K=1","rows K=2","rows K=4","strips128","tiles8 pf256","tiles8 pf512","tiles8 pf1024","rowreg","blk32 touch","blk64 touch","blk32 notouch","blk16 touch"};
  double best[16]; for(int k=0;k<16;k++) best[k]=1e9;
  for(int rep=0;rep<15;rep++) for(int k=0;k<16;k++){ double t=now();
    switch(k){case 12: RB=32;TOUCH=1;strips_blk(); break; case 13: RB=64;TOUCH=1;strips_blk(); break; case 14: RB=32;TOUCH=0;strips_blk(); break; case 15: RB=16;TOUCH=1;strips_blk(); break; case 11: if(C==128) rowreg8(); else if(C==256) rowreg16(); break; case 8: PFD=256; tiles_pf(8); break; case 9: PFD=512; tiles_pf(8); break; case 10: PFD=1024; tiles_pf(8); break; case 0: read_plain(); break; case 1: stream_ops(); break; case 2: tiles(8); break; case 3: tiles(64); break; case 4: rows(1); break; case 5: rows(2); break; case 6: rows(4); break; case 7: strips128(); break;}
    t=now()-t; if(t<best[k]) best[k]=t; }
  printf("N=%ld C=%ld (%.1f MB)\n", N, C, N*C*4/1e6);
  for(int k=0;k<16;k++) printf("%-12s %8.0f us  x read %.2f\n", names[k], best[k]*1e6, best[k]/best[0]);
  return 0;
}
