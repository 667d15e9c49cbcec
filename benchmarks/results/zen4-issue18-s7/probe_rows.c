/* probe_rows.c -- the stand-alone probe of issue 18, session 7 (not part of
 * the library): ckbn's statistics walk over channels-last rows, float32,
 * one thread, with variants of the tile and of the order rows are read in.
 *
 *   gcc -DVB=64 -O3 -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx2 -mfma \
 *       -mprefer-vector-width=256 -ffp-contract=fast -o probe probe_rows.c
 *   gcc -DVB=32 -O3 -mavx2 -mfma -ffp-contract=fast -o probe probe_rows.c
 *   ./probe C name:W:g:BLOCK:mode:pfd:unitrows[:Cp] ...
 *
 * 6422528 floats (25.7 MB, the suite's size) as rows of C channels (or Cp:
 * the same memory read as rows of Cp channels).  Each variant reads it in
 * units of `unitrows` rows, channel tiles of W lanes; register tiles of 4
 * vectors (mode 0; mode 1: 8 vectors, mode 4: 2) walk g rows at a time,
 * block sums flushed to float64 every BLOCK rows; mode 2: the plain row loop
 * with the sums in memory; mode 3: tiles with a software prefetch pfd bytes
 * ahead; mode 5: prefetch the group pfd groups ahead, then tiles; mode 7:
 * read the group pfd groups ahead with real loads (pfd 0: the group itself,
 * what the library now does), then tiles.  Times: thread CPU time, medians
 * of 25 rounds, every variant and a read probe in each round.
 */
// Probe: stats pass variants over channels-last rows (float32), 1 thread.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <immintrin.h>

typedef float vf __attribute__((vector_size(VB), aligned(4), may_alias));
#define VL 16

static double now(void){struct timespec t;clock_gettime(CLOCK_THREAD_CPUTIME_ID,&t);return t.tv_sec+1e-9*t.tv_nsec;}

// NV-vector register tile, shift in registers (as ckbn today when NV=4)
#define TILE(NAME, NV) \
static void NAME(const float*x, long S, long nr, const float*sh, float*b1, float*b2){ \
  vf k[NV], a[NV], q[NV]; \
  for(int v=0;v<NV;v++){k[v]=((const vf*)sh)[v];a[v]=((vf*)b1)[v];q[v]=((vf*)b2)[v];} \
  for(long i=0;i<nr;i++){const vf*r=(const vf*)(x+i*S); \
    for(int v=0;v<NV;v++){vf d=r[v]-k[v];a[v]+=d;q[v]+=d*d;}} \
  for(int v=0;v<NV;v++){((vf*)b1)[v]=a[v];((vf*)b2)[v]=q[v];} }
TILE(tile4,4)
TILE(tile8,8)
TILE(tile2,2)
TILE(tile12,12)

// prefetching tile: prefetch row i+PF of the same lanes
#define TILEPF(NAME, NV) \
static void NAME(const float*x, long S, long nr, const float*sh, float*b1, float*b2, long pfd){ \
  vf k[NV], a[NV], q[NV]; \
  for(int v=0;v<NV;v++){k[v]=((const vf*)sh)[v];a[v]=((vf*)b1)[v];q[v]=((vf*)b2)[v];} \
  for(long i=0;i<nr;i++){const vf*r=(const vf*)(x+i*S); \
    for(int v=0;v<NV;v++) __builtin_prefetch((const char*)(r+v)+pfd,0,3); \
    for(int v=0;v<NV;v++){vf d=r[v]-k[v];a[v]+=d;q[v]+=d*d;}} \
  for(int v=0;v<NV;v++){((vf*)b1)[v]=a[v];((vf*)b2)[v]=q[v];} }
TILEPF(tile4pf,4)

static void mom1(const float*r,long W,const float*sh,float*b1,float*b2){
  for(long j=0;j<W;j++){float d=r[j]-sh[j];b1[j]+=d;b2[j]+=d*d;}}
static void flush(float*b1,float*b2,double*s1,double*s2,long W){
  for(long j=0;j<W;j++){s1[j]+=b1[j];s2[j]+=b2[j];b1[j]=0;b2[j]=0;}}

static vf touchacc; static float *b1,*b2,*shf; static double *s1,*s2;
static volatile double sink;

// generic: rows of W lanes (W multiple of 16*NV), stride S, nrows; groups of g rows per tile call, BLOCK flush
// mode 0: tile4, 1: tile8, 2: mom1 row loop, 3: tile4 with prefetch, 4: tile2, 5: tile12-ish (W multiple of 192 not needed; skip)
static void run(const float*x,long nrows,long S,long W,long g,long BLK,int mode,long pfd){
  long nb=0;
  memcpy(shf,x,W*4);
  memset(b1,0,W*4);memset(b2,0,W*4);memset(s1,0,W*8);memset(s2,0,W*8);
  long TL = mode==1?2*VB: mode==4?VB/2: VB;
  for(long i=0;i<nrows;){
    long take=nrows-i; if(take>BLK-nb) take=BLK-nb; if(take>g) take=g;
    if(mode==2){ for(long q=i;q<i+take;q++) mom1(x+q*S,W,shf,b1,b2); }
    else if(mode==7){ /* touch the group pfd groups ahead with real loads, then tiles */
      if(i+pfd*take+take<=nrows){ vf t=touchacc, t2=touchacc; for(long q=i+pfd*take;q<i+pfd*take+take;q++){ const vf*p=(const vf*)(x+q*S); for(long o=0;o<W/(VB/4);o+=2){ t+=p[o]; t2+=p[o+1];} } touchacc=t+t2; }
      for(long c=0;c<W;c+=VB) tile4(x+i*S+c,S,take,shf+c,b1+c,b2+c); }
    else if(mode==5){ /* prefetch the group pfd groups ahead, line by line, then tiles */
      if(S==W){ const char*p=(const char*)(x+(i+pfd*take)*S); long nbyt=take*W*4; for(long o=0;o<nbyt;o+=64) __builtin_prefetch(p+o,0,3);}
      else { for(long q=i;q<i+take;q++){const char*p=(const char*)(x+(q+pfd*take)*S); for(long o=0;o<W*4;o+=64) __builtin_prefetch(p+o,0,3);} }
      for(long c=0;c<W;c+=VB) tile4(x+i*S+c,S,take,shf+c,b1+c,b2+c); }
    else for(long c=0;c<W;c+=TL){
      const float*p=x+i*S+c;
      if(mode==0) tile4(p,S,take,shf+c,b1+c,b2+c);
      else if(mode==1) tile8(p,S,take,shf+c,b1+c,b2+c);
      else if(mode==3) tile4pf(p,S,take,shf+c,b1+c,b2+c,pfd);
      else tile2(p,S,take,shf+c,b1+c,b2+c);
    }
    i+=take; nb+=take; if(nb>=BLK){flush(b1,b2,s1,s2,W);nb=0;}
  }
  flush(b1,b2,s1,s2,W); sink+=s1[0]+s2[W-1]+touchacc[0];
}

// stats over array of N floats with channel count C; unitized like ckbn:
// W = C (C>=64); unit = 'unitrows' rows.
typedef struct {const char*name;long W;long g;long BLK;int mode;long pfd;long unitrows;long Cp;} Var;

static float readprobe(const float*x,long n){
  vf a[4]={0};for(long i=0;i<n;i+=64){const vf*r=(const vf*)(x+i);a[0]+=r[0];a[1]+=r[1];a[2]+=r[2];a[3]+=r[3];}
  vf s=a[0]+a[1]+a[2]+a[3]; return s[0]+s[5];
}

static int cmpd(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}

int main(int argc,char**argv){
  long C=atol(argv[1]);
  long N=6422528;
  float*x=aligned_alloc(64,N*4); for(long i=0;i<N;i++) x[i]=(float)((i*7919)%1000)*0.001f+1.0f;
  b1=aligned_alloc(64,1<<16);b2=aligned_alloc(64,1<<16);shf=aligned_alloc(64,1<<16);s1=aligned_alloc(64,1<<17);s2=aligned_alloc(64,1<<17);
  long R=N/C;
  Var vs[64]; int nv=0;
  // variant list from argv[2..]: name:g:BLK:mode:pfd:unitrows  (W=C unless tiled: W given = tile width; stride C)
  for(int a=2;a<argc;a++){ Var v; char*s=argv[a]; v.name=strtok(s,":"); v.W=atol(strtok(NULL,":")); v.g=atol(strtok(NULL,":")); v.BLK=atol(strtok(NULL,":")); v.mode=atoi(strtok(NULL,":")); v.pfd=atol(strtok(NULL,":")); v.unitrows=atol(strtok(NULL,":")); char*cp=strtok(NULL,":"); v.Cp=cp?atol(cp):C; vs[nv++]=v; }
  int rounds=25; double t[64][32]; double tr[32];
  for(int r=0;r<rounds;r++){
    double t0=now(); sink+=readprobe(x,N); tr[r]=now()-t0;
    for(int k=0;k<nv;k++){ Var*v=&vs[k];
      t0=now();
      long CC=v->Cp, RR=N/CC;
      for(long q0=0;q0<RR;q0+=v->unitrows){ long nr=RR-q0<v->unitrows?RR-q0:v->unitrows;
        for(long c0=0;c0<CC;c0+=v->W) run(x+q0*CC+c0,nr,CC,v->W,v->g,v->BLK,v->mode,v->pfd); }
      t[k][r]=now()-t0; }
  }
  qsort(tr,rounds,sizeof(double),cmpd); double rd=tr[rounds/2];
  printf("C=%ld read %.0f us\n",C,rd*1e6);
  for(int k=0;k<nv;k++){qsort(t[k],rounds,sizeof(double),cmpd); printf("  %-14s %7.0f us  %.2fx read\n",vs[k].name,t[k][rounds/2]*1e6,t[k][rounds/2]/rd);}
  return 0;
}
