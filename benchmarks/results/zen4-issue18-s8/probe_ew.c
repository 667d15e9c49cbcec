/* probe_ew.c -- the stand-alone probe of issue 18, session 8 (not part of
 * the library): the channels-last inference loop y = x * a[j] + b[j] over
 * rows of W lanes, float32, one thread, against a copy of the same buffers.
 *
 *   gcc -O3 -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx2 -mfma \
 *       -mprefer-vector-width=256 -ffp-contract=fast -o probe_ew probe_ew.c
 *   ./probe_ew NFLOATS ROUNDS
 *
 * x and y are 4096-byte aligned; the coefficient rows a, b (W lanes each,
 * b right after a plus a 16-lane head, as ckbn's scratch) sit at `off` bytes
 * past a 4096-byte boundary.  Variants (each timed once per round, round
 * robin, thread CPU time, medians):
 *   memcpy      memcpy in 256 KiB pieces (as ckbn's probe_copy)
 *   loop        plain vector copy loop
 *   rowW@off    y = x*a[j]+b[j], rows of W lanes, coefficients reloaded (ckbn's
 *               _row_affine: the loop gcc makes of the plain C loop)
 *   ntW         the same with non-temporal stores
 *   pairW       two rows per pass of the coefficient row: a[j], b[j] loaded once
 *               for x[r][j] and x[r+1][j]
 *   quadW       four rows per pass of the coefficient row
 *   tmpntW      the row loop into an L1-resident row buffer, then that row
 *               streamed to y with non-temporal stores (a copy of the row)
 *   regW        column tile of 4 zmm-of-coefficient pairs (64 lanes) in registers
 *               walking 8-row groups, then the next column tile
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <immintrin.h>

static double now(void){struct timespec t;clock_gettime(CLOCK_THREAD_CPUTIME_ID,&t);return t.tv_sec+1e-9*t.tv_nsec;}

__attribute__((noinline)) static void cp_memcpy(const float*x,float*y,long n){
  for(long i=0;i<n;i+=65536){long m=n-i<65536?n-i:65536; memcpy(y+i,x+i,4*m);}}
__attribute__((noinline)) static void cp_loop(const float*x,float*y,long n){
  for(long i=0;i<n;i++) y[i]=x[i];}
__attribute__((noinline)) static void row_affine(const float*x,float*y,long n,const float*a,const float*b){
  for(long j=0;j<n;j++) y[j]=x[j]*a[j]+b[j];}
__attribute__((noinline)) static void rows(const float*x,float*y,long n,long W,const float*a,const float*b){
  for(long i=0;i+W<=n;i+=W) row_affine(x+i,y+i,W,a,b);}
__attribute__((noinline)) static void rows_nt(const float*x,float*y,long n,long W,const float*a,const float*b){
  for(long i=0;i+W<=n;i+=W) for(long j=0;j<W;j+=8){
    __m256 v=_mm256_fmadd_ps(_mm256_load_ps(x+i+j),_mm256_load_ps(a+j),_mm256_load_ps(b+j));
    _mm256_stream_ps(y+i+j,v);}
  _mm_sfence();}
__attribute__((noinline)) static void rows_pair(const float*x,float*y,long n,long W,const float*a,const float*b){
  long i=0;
  for(;i+2*W<=n;i+=2*W) for(long j=0;j<W;j+=8){
    __m256 va=_mm256_load_ps(a+j), vb=_mm256_load_ps(b+j);
    _mm256_store_ps(y+i+j,_mm256_fmadd_ps(_mm256_load_ps(x+i+j),va,vb));
    _mm256_store_ps(y+i+W+j,_mm256_fmadd_ps(_mm256_load_ps(x+i+W+j),va,vb));}
  for(;i+W<=n;i+=W) row_affine(x+i,y+i,W,a,b);}
__attribute__((noinline)) static void rows_quad(const float*x,float*y,long n,long W,const float*a,const float*b){
  long i=0;
  for(;i+4*W<=n;i+=4*W) for(long j=0;j<W;j+=8){
    __m256 va=_mm256_load_ps(a+j), vb=_mm256_load_ps(b+j);
    for(int r=0;r<4;r++) _mm256_store_ps(y+i+r*W+j,_mm256_fmadd_ps(_mm256_load_ps(x+i+r*W+j),va,vb));}
  for(;i+W<=n;i+=W) row_affine(x+i,y+i,W,a,b);}
__attribute__((noinline)) static void rows_tmpnt(const float*x,float*y,long n,long W,const float*a,const float*b,float*t){
  for(long i=0;i+W<=n;i+=W){ row_affine(x+i,t,W,a,b);
    for(long j=0;j<W;j+=8) _mm256_stream_ps(y+i+j,_mm256_load_ps(t+j));}
  _mm_sfence();}
/* rows in memory order with the row's coefficients in registers: W == 64 only
 * (8 zmm: 4 of a, 4 of b) */
__attribute__((noinline)) static void rows_reg64(const float*x,float*y,long n,const float*a,const float*b){
  __m512 a0=_mm512_load_ps(a),a1=_mm512_load_ps(a+16),a2=_mm512_load_ps(a+32),a3=_mm512_load_ps(a+48);
  __m512 b0=_mm512_load_ps(b),b1=_mm512_load_ps(b+16),b2=_mm512_load_ps(b+32),b3=_mm512_load_ps(b+48);
  for(long i=0;i+64<=n;i+=64){
    _mm512_store_ps(y+i,_mm512_fmadd_ps(_mm512_load_ps(x+i),a0,b0));
    _mm512_store_ps(y+i+16,_mm512_fmadd_ps(_mm512_load_ps(x+i+16),a1,b1));
    _mm512_store_ps(y+i+32,_mm512_fmadd_ps(_mm512_load_ps(x+i+32),a2,b2));
    _mm512_store_ps(y+i+48,_mm512_fmadd_ps(_mm512_load_ps(x+i+48),a3,b3));}}
/* column tiles of 64 lanes in registers walking groups of g rows */
__attribute__((noinline)) static void rows_tile(const float*x,float*y,long n,long W,const float*a,const float*b,long g){
  long nr=n/W;
  for(long r0=0;r0<nr;r0+=g){ long r1=r0+g<nr?r0+g:nr;
    for(long c=0;c<W;c+=64){
      __m512 a0=_mm512_load_ps(a+c),a1=_mm512_load_ps(a+c+16),a2=_mm512_load_ps(a+c+32),a3=_mm512_load_ps(a+c+48);
      __m512 b0=_mm512_load_ps(b+c),b1=_mm512_load_ps(b+c+16),b2=_mm512_load_ps(b+c+32),b3=_mm512_load_ps(b+c+48);
      for(long r=r0;r<r1;r++){ const float*xr=x+r*W+c; float*yr=y+r*W+c;
        _mm512_store_ps(yr,_mm512_fmadd_ps(_mm512_load_ps(xr),a0,b0));
        _mm512_store_ps(yr+16,_mm512_fmadd_ps(_mm512_load_ps(xr+16),a1,b1));
        _mm512_store_ps(yr+32,_mm512_fmadd_ps(_mm512_load_ps(xr+32),a2,b2));
        _mm512_store_ps(yr+48,_mm512_fmadd_ps(_mm512_load_ps(xr+48),a3,b3));}}}}

#define NV 64
static const char* names[NV]; static double T[NV][200]; static int nv;
static int cmpd(const void*p,const void*q){double a=*(double*)p,b=*(double*)q;return a<b?-1:a>b;}

int main(int argc,char**argv){
  long n=argc>1?atol(argv[1]):6422528; int R=argc>2?atoi(argv[2]):25;
  float*x=aligned_alloc(4096,n*4+8192),*y=aligned_alloc(4096,n*4+8192);
  char*cb=aligned_alloc(4096,1<<20);
  for(long i=0;i<n;i++){x[i]=(float)(i%1000)*1e-3f;y[i]=0;}
  memset(cb,0,1<<20);
  static const long Ws[]={64,256,1024,2048};
  static const long offs[]={0,64,512,1024,2048,3072,4032};
  for(int r=0;r<R;r++){
    int v=0; double t0;
#define TIME(NAME,CALL) do{ names[v]=NAME; t0=now(); CALL; T[v++][r]=now()-t0; }while(0)
    TIME("memcpy",cp_memcpy(x,y,n));
    TIME("loop",cp_loop(x,y,n));
    for(int w=0;w<4;w++){ long W=Ws[w];
      for(int o=0;o<7;o++){ long off=offs[o];
        float*a=(float*)(cb+4096*4+off), *b=a+W+16;
        for(long j=0;j<W;j++){a[j]=1.f+j*1e-4f;b[j]=j*1e-4f;}
        static char nm[4][7][32]; snprintf(nm[w][o],32,"row%ld@%ld",W,off);
        TIME(nm[w][o],rows(x,y,n,W,a,b));}
      { float*a=(float*)(cb+4096*4),*b=a+W+16; static char nm2[4][4][32];
        snprintf(nm2[w][0],32,"nt%ld",W); TIME(nm2[w][0],rows_nt(x,y,n,W,a,b));
        snprintf(nm2[w][1],32,"pair%ld",W); TIME(nm2[w][1],rows_pair(x,y,n,W,a,b));
        snprintf(nm2[w][2],32,"quad%ld",W); TIME(nm2[w][2],rows_quad(x,y,n,W,a,b));
        snprintf(nm2[w][3],32,"tile8r%ld",W); TIME(nm2[w][3],rows_tile(x,y,n,W,a,b,8));
        static char nm3[4][32]; snprintf(nm3[w],32,"tmpnt%ld",W); TIME(nm3[w],rows_tmpnt(x,y,n,W,a,b,(float*)(cb+65536)));}
    }
    { float*a=(float*)(cb+4096*4),*b=a+64+16; TIME("reg64",rows_reg64(x,y,n,a,b)); }
    nv=v;
  }
  double med[NV];
  for(int v=0;v<nv;v++){qsort(T[v],R,sizeof(double),cmpd);med[v]=T[v][R/2];}
  double cp=med[0]<med[1]?med[0]:med[1];
  printf("n=%ld floats (%.1f MB), %d rounds, medians, ratio to the faster copy\n",n,n*4e-6,R);
  for(int v=0;v<nv;v++) printf("%-14s %9.1f us  %5.2fx\n",names[v],med[v]*1e6,med[v]/cp);
  return 0;
}
