/* Probe: small channels-first backward (16x32x8x8 f32), two passes over L2 against
   per-channel sums that pack x and dy into an L1 buffer and dx from it.
   gcc -O2 -mavx512f -mavx512dq -mfma pk.c -o pk */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e6+t.tv_nsec*1e-3;}
#define P 16
#define G 32
#define R 64
#define S (G*R)
#define N (P*S)
static float mu[G], k1[G], k2[G], k3[G];
static float sb1[S], sb2[S];
/* A: sums walk, 48-lane (3 tiles) columns down all rows, then dx plane by plane */
static void two_pass(const float*d,const float*x,float*o){
  for(int c=0;c+48<=S;c+=48){
    __m512 a1[3],a2[3],m[3];
    for(int t=0;t<3;t++){a1[t]=_mm512_setzero_ps();a2[t]=_mm512_setzero_ps();m[t]=_mm512_set1_ps(mu[(c+16*t)/R]);}
    for(int i=0;i<P;i++)for(int t=0;t<3;t++){__m512 dv=_mm512_loadu_ps(d+i*S+c+16*t),xv=_mm512_loadu_ps(x+i*S+c+16*t);
      a1[t]=_mm512_add_ps(a1[t],dv);a2[t]=_mm512_fmadd_ps(dv,_mm512_sub_ps(xv,m[t]),a2[t]);}
    for(int t=0;t<3;t++){_mm512_storeu_ps(sb1+c+16*t,a1[t]);_mm512_storeu_ps(sb2+c+16*t,a2[t]);}
  }
  { int c=S-32; __m512 a1[2],a2[2],m[2];
    for(int t=0;t<2;t++){a1[t]=_mm512_setzero_ps();a2[t]=_mm512_setzero_ps();m[t]=_mm512_set1_ps(mu[(c+16*t)/R]);}
    for(int i=0;i<P;i++)for(int t=0;t<2;t++){__m512 dv=_mm512_loadu_ps(d+i*S+c+16*t),xv=_mm512_loadu_ps(x+i*S+c+16*t);
      a1[t]=_mm512_add_ps(a1[t],dv);a2[t]=_mm512_fmadd_ps(dv,_mm512_sub_ps(xv,m[t]),a2[t]);}
    for(int t=0;t<2;t++){_mm512_storeu_ps(sb1+c+16*t,a1[t]);_mm512_storeu_ps(sb2+c+16*t,a2[t]);} }
  for(int g=0;g<G;g++){k3[g]=(sb1[g*R]+sb2[g*R+R-1])*1e-9f;}
  for(int i=P-1;i>=0;i--)for(int g=0;g<G;g++){__m512 q1=_mm512_set1_ps(k1[g]),q2=_mm512_set1_ps(k2[g]),q3=_mm512_set1_ps(k3[g]);
    const float*dd=d+i*S+g*R,*xx=x+i*S+g*R;float*oo=o+i*S+g*R;
    for(int j=0;j<R;j+=16)_mm512_storeu_ps(oo+j,_mm512_fmadd_ps(_mm512_loadu_ps(dd+j),q1,_mm512_fmadd_ps(_mm512_loadu_ps(xx+j),q2,q3)));}
}
/* B: K channels at a time: sums down the rows, copying the rows into buf; then dx from buf */
static float buf[2*P*4*R] __attribute__((aligned(64)));
static void packed(const float*d,const float*x,float*o,int K){
  int W=K*R, V=W/16;
  for(int g0=0;g0<G;g0+=K){
    __m512 a1[16],a2[16],m[16];
    for(int t=0;t<V;t++){a1[t]=_mm512_setzero_ps();a2[t]=_mm512_setzero_ps();m[t]=_mm512_set1_ps(mu[g0+16*t/R]);}
    for(int i=0;i<P;i++){const float*dd=d+i*S+g0*R,*xx=x+i*S+g0*R;float*bd=buf+i*2*W,*bx=bd+W;
      for(int t=0;t<V;t++){__m512 dv=_mm512_loadu_ps(dd+16*t),xv=_mm512_loadu_ps(xx+16*t);
        _mm512_store_ps(bd+16*t,dv);_mm512_store_ps(bx+16*t,xv);
        a1[t]=_mm512_add_ps(a1[t],dv);a2[t]=_mm512_fmadd_ps(dv,_mm512_sub_ps(xv,m[t]),a2[t]);}}
    for(int t=0;t<V;t++){_mm512_storeu_ps(sb1+g0*R+16*t,a1[t]);_mm512_storeu_ps(sb2+g0*R+16*t,a2[t]);}
    for(int g=g0;g<g0+K;g++){k3[g]=(sb1[g*R]+sb2[g*R+R-1])*1e-9f;}
    for(int i=0;i<P;i++){const float*bd=buf+i*2*W,*bx=bd+W;float*oo=o+i*S+g0*R;
      for(int t=0;t<V;t++){int g=g0+16*t/R;
        _mm512_storeu_ps(oo+16*t,_mm512_fmadd_ps(_mm512_load_ps(bd+16*t),_mm512_set1_ps(k1[g]),_mm512_fmadd_ps(_mm512_load_ps(bx+16*t),_mm512_set1_ps(k2[g]),_mm512_set1_ps(k3[g]))));}}
  }
}
/* C: K channels at a time without the copy: dx re-reads x and dy (from L2) */
static void nopack(const float*d,const float*x,float*o,int K){
  int W=K*R, V=W/16;
  for(int g0=0;g0<G;g0+=K){
    __m512 a1[16],a2[16],m[16];
    for(int t=0;t<V;t++){a1[t]=_mm512_setzero_ps();a2[t]=_mm512_setzero_ps();m[t]=_mm512_set1_ps(mu[g0+16*t/R]);}
    for(int i=0;i<P;i++){const float*dd=d+i*S+g0*R,*xx=x+i*S+g0*R;
      for(int t=0;t<V;t++){__m512 dv=_mm512_loadu_ps(dd+16*t),xv=_mm512_loadu_ps(xx+16*t);
        a1[t]=_mm512_add_ps(a1[t],dv);a2[t]=_mm512_fmadd_ps(dv,_mm512_sub_ps(xv,m[t]),a2[t]);}}
    for(int t=0;t<V;t++){_mm512_storeu_ps(sb1+g0*R+16*t,a1[t]);_mm512_storeu_ps(sb2+g0*R+16*t,a2[t]);}
    for(int g=g0;g<g0+K;g++){k3[g]=(sb1[g*R]+sb2[g*R+R-1])*1e-9f;}
    for(int i=0;i<P;i++){const float*dd=d+i*S+g0*R,*xx=x+i*S+g0*R;float*oo=o+i*S+g0*R;
      for(int t=0;t<V;t++){int g=g0+16*t/R;
        _mm512_storeu_ps(oo+16*t,_mm512_fmadd_ps(_mm512_loadu_ps(dd+16*t),_mm512_set1_ps(k1[g]),_mm512_fmadd_ps(_mm512_loadu_ps(xx+16*t),_mm512_set1_ps(k2[g]),_mm512_set1_ps(k3[g]))));}}
  }
}
int main(int argc,char**argv){
  int xo=argc>1?atoi(argv[1]):0, dof=argc>2?atoi(argv[2]):0;
  char*bx=aligned_alloc(4096,N*4+8192),*bd=aligned_alloc(4096,N*4+8192);
  float *x=(float*)(bx+xo),*d=(float*)(bd+dof),*o=aligned_alloc(4096,N*4);
  for(int i=0;i<N;i++){x[i]=(i%97)*1e-2f;d[i]=(i%13)*0.1f;o[i]=0;}
  for(int g=0;g<G;g++){mu[g]=0.5f;k1[g]=0.5f;k2[g]=0.25f;}
  volatile float sink;
  for(int rep=0;rep<3;rep++){
    double b[5]={1e9,1e9,1e9,1e9,1e9};
    for(int it=0;it<20000;it++){
      for(int v=0;v<5;v++){double t=now();
        if(v==0)two_pass(d,x,o);else if(v==1)packed(d,x,o,1);else if(v==2)packed(d,x,o,2);else if(v==3)nopack(d,x,o,1);else packed(d,x,o,4);
        double t2=now();if(t2-t<b[v])b[v]=t2-t;sink=o[it%N];}
    }
    printf("x+%d dy+%d: two-pass %.2f  packed K=1 %.2f  K=2 %.2f  K=4 %.2f  nopack K=1 %.2f us\n",xo,dof,b[0],b[1],b[2],b[4],b[3]);
  }
}
