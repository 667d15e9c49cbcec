/* Probe: y = x*a + b over N rows of C lanes in L2 (per-lane a, b rows), 256- vs
 * 512-bit loops, against memcpy. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <immintrin.h>
static inline unsigned long long tsc(void) { unsigned lo, hi; __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)); return ((unsigned long long) hi << 32) | lo; }
static float *x, *y, *a, *b; static long N, C;
static void cp(void) { memcpy(y, x, N * C * 4); }
static void r256(void) { for (long r = 0; r < N; r++) { const float *xr = x + r * C; float *yr = y + r * C;
    for (long j = 0; j < C; j += 8) _mm256_storeu_ps(yr + j, _mm256_fmadd_ps(_mm256_loadu_ps(xr + j), _mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j))); } }
static void r512(void) { for (long r = 0; r < N; r++) { const float *xr = x + r * C; float *yr = y + r * C;
    for (long j = 0; j < C; j += 16) _mm512_storeu_ps(yr + j, _mm512_fmadd_ps(_mm512_loadu_ps(xr + j), _mm512_loadu_ps(a + j), _mm512_loadu_ps(b + j))); } }
static void d256(void) { for (long r = N - 1; r >= 0; r--) { const float *xr = x + r * C; float *yr = y + r * C;
    for (long j = C - 8; j >= 0; j -= 8) _mm256_storeu_ps(yr + j, _mm256_fmadd_ps(_mm256_loadu_ps(xr + j), _mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j))); } }
static void d512(void) { for (long r = N - 1; r >= 0; r--) { const float *xr = x + r * C; float *yr = y + r * C;
    for (long j = C - 16; j >= 0; j -= 16) _mm512_storeu_ps(yr + j, _mm512_fmadd_ps(_mm512_loadu_ps(xr + j), _mm512_loadu_ps(a + j), _mm512_loadu_ps(b + j))); } }
static void g2(void) { for (long r = 0; r + 2 <= N; r += 2) { const float *xr = x + r * C; float *yr = y + r * C;
    for (long j = 0; j < C; j += 16) { __m512 av = _mm512_loadu_ps(a + j), bv = _mm512_loadu_ps(b + j);
        _mm512_storeu_ps(yr + j, _mm512_fmadd_ps(_mm512_loadu_ps(xr + j), av, bv));
        _mm512_storeu_ps(yr + C + j, _mm512_fmadd_ps(_mm512_loadu_ps(xr + C + j), av, bv)); } } }
static int cmp(const void *p, const void *q) { double d = *(double *) p - *(double *) q; return d < 0 ? -1 : d > 0; }
int main(int argc, char **argv) {
    N = atol(argv[1]); C = atol(argv[2]); long off = atol(argv[3]);
    char *base = aligned_alloc(4096, 2 * N * C * 4 + 16384); x = (float *) (base + 16); y = (float *) (base + 16 + N * C * 4 + off);
    a = aligned_alloc(64, C * 4); b = aligned_alloc(64, C * 4);
    for (long i = 0; i < N * C; i++) x[i] = i * 1e-3f; for (long j = 0; j < C; j++) { a[j] = 1.5f; b[j] = 0.5f; }
    memset(y, 0, N * C * 4);
    void (*f[])(void) = {cp, r256, r512, d256, d512}; const char *nm[] = {"memcpy", "ymm up", "zmm up", "ymm down", "zmm down"};
    double t[5][41];
    for (int k = 0; k < 41; k++) for (int j = 0; j < 5; j++) { f[j](); f[j](); unsigned long long t0 = tsc(); f[j](); t[j][k] = (double) (tsc() - t0); }
    printf("%ldx%ld y at +%ld:", N, C, off);
    for (int j = 0; j < 5; j++) { qsort(t[j], 41, 8, cmp); printf(" %s %.1f us (%.2f)", nm[j], t[j][20] / 2596, t[j][20] / t[0][20]); }
    printf("\n"); return 0;
}
