/* Probe: channels-first affine y = x*a[c] + b[c] over planes of R float32, plain against non-temporal stores. */
#include <immintrin.h>
#include <stddef.h>
void aff(const float*x,float*y,ptrdiff_t P,ptrdiff_t G,ptrdiff_t R,const float*a,const float*b,int nt){
  for(ptrdiff_t p=0;p<P;p++)for(ptrdiff_t g=0;g<G;g++){const float*xx=x+(p*G+g)*R;float*yy=y+(p*G+g)*R;
    __m512 av=_mm512_set1_ps(a[g]),bv=_mm512_set1_ps(b[g]);ptrdiff_t j=0;
    if(nt){for(;j+16<=R;j+=16)_mm512_stream_ps(yy+j,_mm512_fmadd_ps(_mm512_loadu_ps(xx+j),av,bv));}
    else{for(;j+16<=R;j+=16)_mm512_storeu_ps(yy+j,_mm512_fmadd_ps(_mm512_loadu_ps(xx+j),av,bv));}
    for(;j<R;j++)yy[j]=xx[j]*a[g]+b[g];}
  if(nt)_mm_sfence();
}
