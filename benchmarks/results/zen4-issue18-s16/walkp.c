/* Probe: the 8-row statistics tile walk with software prefetch variants,
 * against one sequential read; THP-backed, cold.  ./walkp N C */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
typedef float V __attribute__((vector_size(64), aligned(4), may_alias));
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static float *x, *sh, *a1, *a2; static char *junk; static long N, C; static volatile float sink;
static void rd(void) {
    V s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    for (long i = 0; i + 64 <= N * C; i += 64) { s0 += *(V *) (x + i); s1 += *(V *) (x + i + 16); s2 += *(V *) (x + i + 32); s3 += *(V *) (x + i + 48); }
    V s = s0 + s1 + s2 + s3; sink = s[0];
}
/* PF: 0 none; 1 next group same tile (distance 8 rows), L2; 2 same row +D, L1; 3 same row +D, L2; 4 next group, L1 */
static long D;
#define W(NAME, PF, RG) \
static void NAME(void) { \
    for (long r0 = 0; r0 + RG <= N; r0 += RG) \
        for (long c = 0; c + 64 <= C; c += 64) { \
            V m[4], p[4], q[4]; \
            for (int v = 0; v < 4; v++) { m[v] = *(V *) (sh + c + 16 * v); p[v] = *(V *) (a1 + c + 16 * v); q[v] = *(V *) (a2 + c + 16 * v); } \
            const float *pp = x + r0 * C + c; \
            _Pragma("GCC unroll 16") for (long r = 0; r < RG; r++) { \
                const float *rr = pp + r * C; \
                for (int v = 0; v < 4; v++) { \
                    if (PF == 1) __builtin_prefetch(rr + RG * C + 16 * v, 0, 2); \
                    if (PF == 4) __builtin_prefetch(rr + RG * C + 16 * v, 0, 3); \
                    if (PF == 2) __builtin_prefetch(rr + D + 16 * v, 0, 3); \
                    if (PF == 3) __builtin_prefetch(rr + D + 16 * v, 0, 2); \
                    V d = *(V *) (rr + 16 * v) - m[v]; p[v] += d; q[v] += d * d; } } \
            for (int v = 0; v < 4; v++) { *(V *) (a1 + c + 16 * v) = p[v]; *(V *) (a2 + c + 16 * v) = q[v]; } \
        } \
    sink = a1[0] + a2[0]; }
W(w0, 0, 8) W(w1, 1, 8) W(w2, 2, 8) W(w3, 3, 8) W(w4, 4, 8) W(v1, 1, 16) W(v3, 3, 16)
static void cold(void) { for (long i = 0; i < (64L << 20); i += 64) junk[i]++; }
static int cmp(const void *a, const void *b) { double d = *(double *) a - *(double *) b; return d < 0 ? -1 : d > 0; }
int main(int argc, char **argv) {
    N = atol(argv[1]); C = atol(argv[2]); int warm = argc > 3 && atoi(argv[3]);
    size_t bytes = (N * C * 4 + (4 << 20)) & ~((2UL << 20) - 1);
    x = aligned_alloc(2 << 20, bytes); madvise(x, bytes, MADV_HUGEPAGE);
    for (long i = 0; i < (long) (bytes / 4); i++) x[i] = (float) (i % 977) * 0.01f;
    sh = calloc(C, 4); a1 = calloc(C, 4); a2 = calloc(C, 4);
    junk = malloc(64L << 20); memset(junk, 1, 64L << 20);
    long Ds[] = {256, 512, 1024, 2048};
    printf("N=%ld C=%ld %s\n", N, C, warm ? "read first" : "cold");
    for (int di = 0; di < 4; di++) {
        D = Ds[di] / 4;
        void (*f[])(void) = {rd, w0, w1, w2, w3, w4, v1, v3};
        const char *nm[] = {"read", "8 rows none", "8 rows next group L2", "8 rows +D L1", "8 rows +D L2", "8 rows next group L1", "16 rows next grp L2", "16 rows +D L2"};
        double t[8][15];
        for (int k = 0; k < 15; k++) for (int j = 0; j < 8; j++) { cold(); if (warm) rd(); double t0 = now(); f[j](); t[j][k] = now() - t0; }
        printf("D=%ld B:", Ds[di]);
        for (int j = 0; j < 8; j++) { qsort(t[j], 15, 8, cmp); if (di == 0 || j == 3 || j == 4 || j == 7) printf("  %s %.2fx", nm[j], t[j][7] / t[0][7]); }
        printf("  (read %.0f us)\n", t[0][7] * 1e6);
    }
    return 0;
}
