/* Probe: the 8/16-row tile walk of the statistics (d = x - K; sums of d and d*d)
 * in variants, against one sequential read; THP-backed, cold.  ./walkv N C */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <immintrin.h>
typedef float V __attribute__((vector_size(64), aligned(4), may_alias));
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static float *x, *sh, *a1, *a2; static char *junk; static long N, C; static volatile float sink;
static void rd(void) {
    V s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    for (long i = 0; i + 64 <= N * C; i += 64) { s0 += *(V *) (x + i); s1 += *(V *) (x + i + 16); s2 += *(V *) (x + i + 32); s3 += *(V *) (x + i + 48); }
    V s = s0 + s1 + s2 + s3; sink = s[0];
}
/* mode 0: sums of x only (one acc set), 1: d and d*d, 2: d and d*d, no shift (d = x) */
#define TILE(RG, MODE) \
static void w_##RG##_##MODE(void) { \
    for (long r0 = 0; r0 + RG <= N; r0 += RG) \
        for (long c = 0; c + 64 <= C; c += 64) { \
            V m[4], p[4], q[4]; \
            for (int v = 0; v < 4; v++) { m[v] = *(V *) (sh + c + 16 * v); p[v] = *(V *) (a1 + c + 16 * v); q[v] = *(V *) (a2 + c + 16 * v); } \
            const float *pp = x + r0 * C + c; \
            _Pragma("GCC unroll 16") for (long r = 0; r < RG; r++) { \
                for (int v = 0; v < 4; v++) { V d = *(V *) (pp + r * C + 16 * v); \
                    if (MODE == 1 || MODE >= 3) d -= m[v]; \
                    if (MODE == 3 && (v & 1)) p[v] = (V) _mm512_fmadd_ps((__m512) d, _mm512_set1_ps(1.0f), (__m512) p[v]); \
                    else if (MODE == 4) p[v] = (V) _mm512_fmadd_ps((__m512) d, _mm512_set1_ps(1.0f), (__m512) p[v]); \
                    else p[v] += d; if (MODE != 0) q[v] = (V) _mm512_fmadd_ps((__m512) d, (__m512) d, (__m512) q[v]); } } \
            for (int v = 0; v < 4; v++) { *(V *) (a1 + c + 16 * v) = p[v]; if (MODE != 0) *(V *) (a2 + c + 16 * v) = q[v]; } \
        } \
    sink = a1[0] + a2[0]; }
TILE(8, 0) TILE(8, 1) TILE(8, 3) TILE(8, 4) TILE(16, 1) TILE(16, 3)
static void cold(void) { for (long i = 0; i < (64L << 20); i += 64) junk[i]++; }
static int cmp(const void *a, const void *b) { double d = *(double *) a - *(double *) b; return d < 0 ? -1 : d > 0; }
int main(int argc, char **argv) {
    N = atol(argv[1]); C = atol(argv[2]);
    size_t bytes = (N * C * 4 + (2 << 20)) & ~((2UL << 20) - 1);
    x = aligned_alloc(2 << 20, bytes); madvise(x, bytes, MADV_HUGEPAGE);
    for (long i = 0; i < N * C; i++) x[i] = (float) (i % 977) * 0.01f;
    sh = calloc(C, 4); a1 = calloc(C, 4); a2 = calloc(C, 4);
    junk = malloc(64L << 20); memset(junk, 1, 64L << 20);
    void (*f[])(void) = {rd, w_8_0, w_8_1, w_8_3, w_8_4, w_16_1, w_16_3};
    const char *nm[] = {"read", "8 rows, sum x", "8 rows, d, d*d", "8 rows, half adds fma", "8 rows, all adds fma", "16 rows, d, d*d", "16 rows, half fma"};
    double t[7][15];
    for (int k = 0; k < 15; k++) for (int j = 0; j < 7; j++) { cold(); double t0 = now(); f[j](); t[j][k] = now() - t0; }
    for (int j = 0; j < 7; j++) { qsort(t[j], 15, 8, cmp); printf("%-18s %6.0f us  %.2fx\n", nm[j], t[j][7] * 1e6, t[j][7] / t[0][7]); }
    return 0;
}
