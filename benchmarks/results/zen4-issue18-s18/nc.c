/* Probe: the traffic of a channels-last backward (P rows of C float32 lanes,
   x, dy in, dx out) in memory order with zmm vectors: the sums pass (per-lane
   sum dy and sum dy*(x-mu), accumulators in L1), the dx pass (per-lane
   coefficients in L1), and reads alone.
   gcc -O3 -mavx512f -mfma -shared -fPIC nc.c -o libnc.so */
#include <immintrin.h>
#include <stddef.h>
void sums(const float*dy,const float*x,ptrdiff_t P,ptrdiff_t C,const float*mu,float*b1,float*b2){
  for(ptrdiff_t j=0;j<C;j++){b1[j]=0;b2[j]=0;}
  for(ptrdiff_t i=0;i<P;i++){const float*d=dy+i*C,*xx=x+i*C;
    for(ptrdiff_t j=0;j<C;j+=16){__m512 dv=_mm512_loadu_ps(d+j),xv=_mm512_loadu_ps(xx+j);
      _mm512_storeu_ps(b1+j,_mm512_add_ps(_mm512_loadu_ps(b1+j),dv));
      _mm512_storeu_ps(b2+j,_mm512_fmadd_ps(dv,_mm512_sub_ps(xv,_mm512_loadu_ps(mu+j)),_mm512_loadu_ps(b2+j)));}}
}
/* sums with four rows at a time (accumulators loaded and stored once per four rows) */
void sums4(const float*dy,const float*x,ptrdiff_t P,ptrdiff_t C,const float*mu,float*b1,float*b2){
  for(ptrdiff_t j=0;j<C;j++){b1[j]=0;b2[j]=0;}
  for(ptrdiff_t i=0;i+4<=P;i+=4){
    for(ptrdiff_t j=0;j<C;j+=16){__m512 a1=_mm512_loadu_ps(b1+j),a2=_mm512_loadu_ps(b2+j),m=_mm512_loadu_ps(mu+j);
      for(int r=0;r<4;r++){__m512 dv=_mm512_loadu_ps(dy+(i+r)*C+j),xv=_mm512_loadu_ps(x+(i+r)*C+j);
        a1=_mm512_add_ps(a1,dv);a2=_mm512_fmadd_ps(dv,_mm512_sub_ps(xv,m),a2);}
      _mm512_storeu_ps(b1+j,a1);_mm512_storeu_ps(b2+j,a2);}}
}
void dxp(const float*dy,const float*x,ptrdiff_t P,ptrdiff_t C,const float*k1,const float*k2,const float*k3,float*dx){
  for(ptrdiff_t i=0;i<P;i++){const float*d=dy+i*C,*xx=x+i*C;float*o=dx+i*C;
    for(ptrdiff_t j=0;j<C;j+=16)_mm512_storeu_ps(o+j,_mm512_fmadd_ps(_mm512_loadu_ps(d+j),_mm512_loadu_ps(k1+j),_mm512_fmadd_ps(_mm512_loadu_ps(xx+j),_mm512_loadu_ps(k2+j),_mm512_loadu_ps(k3+j))));}
}
/* dx pass rows in reverse (from the rows the sums read last) */
void dxp_rev(const float*dy,const float*x,ptrdiff_t P,ptrdiff_t C,const float*k1,const float*k2,const float*k3,float*dx){
  for(ptrdiff_t i=P-1;i>=0;i--){const float*d=dy+i*C,*xx=x+i*C;float*o=dx+i*C;
    for(ptrdiff_t j=0;j<C;j+=16)_mm512_storeu_ps(o+j,_mm512_fmadd_ps(_mm512_loadu_ps(d+j),_mm512_loadu_ps(k1+j),_mm512_fmadd_ps(_mm512_loadu_ps(xx+j),_mm512_loadu_ps(k2+j),_mm512_loadu_ps(k3+j))));}
}
float read2(const float*a,const float*b,ptrdiff_t n){
  __m512 s[8];for(int k=0;k<8;k++)s[k]=_mm512_setzero_ps();
  for(ptrdiff_t i=0;i<n;i+=64){for(int k=0;k<4;k++){s[k]=_mm512_add_ps(s[k],_mm512_loadu_ps(a+i+16*k));s[k+4]=_mm512_add_ps(s[k+4],_mm512_loadu_ps(b+i+16*k));}}
  for(int k=1;k<8;k++)s[0]=_mm512_add_ps(s[0],s[k]);return _mm512_reduce_add_ps(s[0]);
}
void bwd(const float*dy,const float*x,ptrdiff_t P,ptrdiff_t C,const float*mu,float*b1,float*b2,const float*k1,const float*k2,const float*k3,float*dx,int four,int rev){
  if(four)sums4(dy,x,P,C,mu,b1,b2);else sums(dy,x,P,C,mu,b1,b2);
  if(rev)dxp_rev(dy,x,P,C,k1,k2,k3,dx);else dxp(dy,x,P,C,k1,k2,k3,dx);
}
/* statistics' traffic: per-lane sum (x-K) and sum (x-K)^2, rows in memory order, accumulators in L1 */
void mom(const float*x,ptrdiff_t P,ptrdiff_t C,const float*K,float*b1,float*b2){
  for(ptrdiff_t j=0;j<C;j++){b1[j]=0;b2[j]=0;}
  for(ptrdiff_t i=0;i<P;i++){const float*xx=x+i*C;
    for(ptrdiff_t j=0;j<C;j+=16){__m512 d=_mm512_sub_ps(_mm512_loadu_ps(xx+j),_mm512_loadu_ps(K+j));
      _mm512_storeu_ps(b1+j,_mm512_add_ps(_mm512_loadu_ps(b1+j),d));
      _mm512_storeu_ps(b2+j,_mm512_fmadd_ps(d,d,_mm512_loadu_ps(b2+j)));}}
}
/* the same, two rows at a time */
void mom2(const float*x,ptrdiff_t P,ptrdiff_t C,const float*K,float*b1,float*b2){
  for(ptrdiff_t j=0;j<C;j++){b1[j]=0;b2[j]=0;}
  for(ptrdiff_t i=0;i+2<=P;i+=2){const float*xx=x+i*C;
    for(ptrdiff_t j=0;j<C;j+=16){__m512 k=_mm512_loadu_ps(K+j),d=_mm512_sub_ps(_mm512_loadu_ps(xx+j),k),e=_mm512_sub_ps(_mm512_loadu_ps(xx+C+j),k);
      _mm512_storeu_ps(b1+j,_mm512_add_ps(_mm512_add_ps(_mm512_loadu_ps(b1+j),d),e));
      _mm512_storeu_ps(b2+j,_mm512_fmadd_ps(e,e,_mm512_fmadd_ps(d,d,_mm512_loadu_ps(b2+j))));}}
}
float read1(const float*a,ptrdiff_t n){
  __m512 s[8];for(int k=0;k<8;k++)s[k]=_mm512_setzero_ps();
  for(ptrdiff_t i=0;i<n;i+=128){for(int k=0;k<8;k++)s[k]=_mm512_add_ps(s[k],_mm512_loadu_ps(a+i+16*k));}
  for(int k=1;k<8;k++)s[0]=_mm512_add_ps(s[0],s[k]);return _mm512_reduce_add_ps(s[0]);
}
