/* Probe: statistics of N rows of C float32 lanes held in L2 (warm, repeated),
 * walk variants against one read.  ./l2walk N C */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
typedef float V __attribute__((vector_size(64), aligned(4), may_alias));
static inline unsigned long long tsc(void) { unsigned lo, hi; __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)); return ((unsigned long long) hi << 32) | lo; }
static float *x, *sh, *a1, *a2; static long N, C; static volatile float sink;
static void rd(void) {
    V s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    for (long i = 0; i + 64 <= N * C; i += 64) { s0 += *(V *) (x + i); s1 += *(V *) (x + i + 16); s2 += *(V *) (x + i + 32); s3 += *(V *) (x + i + 48); }
    V s = s0 + s1 + s2 + s3; sink = s[0];
}
static void tile8(void) {
    for (long r0 = 0; r0 + 8 <= N; r0 += 8)
        for (long c = 0; c + 64 <= C; c += 64) {
            V m[4], p[4], q[4];
            for (int v = 0; v < 4; v++) { m[v] = *(V *) (sh + c + 16 * v); p[v] = *(V *) (a1 + c + 16 * v); q[v] = *(V *) (a2 + c + 16 * v); }
            const float *pp = x + r0 * C + c;
            _Pragma("GCC unroll 8") for (long r = 0; r < 8; r++)
                for (int v = 0; v < 4; v++) { V d = *(V *) (pp + r * C + 16 * v) - m[v]; p[v] += d; q[v] += d * d; }
            for (int v = 0; v < 4; v++) { *(V *) (a1 + c + 16 * v) = p[v]; *(V *) (a2 + c + 16 * v) = q[v]; }
        }
    sink = a1[0] + a2[0];
}
/* line groups: G rows, NV vectors of lanes at a time, accumulators in memory */
#define LG(G, NV) \
static void lg_##G##_##NV(void) { \
    for (long r0 = 0; r0 + G <= N; r0 += G) { \
        const float *pp = x + r0 * C; \
        for (long c = 0; c + 16 * NV <= C; c += 16 * NV) { \
            V m[NV], p[NV], q[NV]; \
            for (int v = 0; v < NV; v++) { m[v] = *(V *) (sh + c + 16 * v); p[v] = *(V *) (a1 + c + 16 * v); q[v] = *(V *) (a2 + c + 16 * v); } \
            _Pragma("GCC unroll 16") for (long r = 0; r < G; r++) \
                for (int v = 0; v < NV; v++) { V d = *(V *) (pp + r * C + c + 16 * v) - m[v]; p[v] += d; q[v] += d * d; } \
            for (int v = 0; v < NV; v++) { *(V *) (a1 + c + 16 * v) = p[v]; *(V *) (a2 + c + 16 * v) = q[v]; } \
        } } \
    sink = a1[0] + a2[0]; }
LG(1, 4) LG(2, 2) LG(2, 4) LG(4, 1) LG(4, 2) LG(4, 4) LG(8, 1) LG(8, 2) LG(16, 1) LG(16, 2)
static int cmp(const void *a, const void *b) { double d = *(double *) a - *(double *) b; return d < 0 ? -1 : d > 0; }
int main(int argc, char **argv) {
    N = atol(argv[1]); C = atol(argv[2]); long off = argc > 3 ? atol(argv[3]) : 0;
    x = aligned_alloc(64, N * C * 4 + 4096); for (long i = 0; i < N * C; i++) x[i] = (float) (i % 977) * 0.01f;
    char *acc = aligned_alloc(4096, 3 * C * 4 + 3 * 4096 + 4096);
    sh = (float *) (acc + off); a1 = (float *) (acc + off + C * 4 + 1024); a2 = (float *) (acc + off + 2 * C * 4 + 2048);
    memset(acc, 0, 3 * C * 4 + 3 * 4096);
    void (*f[])(void) = {rd, tile8, lg_1_4, lg_2_2, lg_2_4, lg_4_1, lg_4_2, lg_4_4, lg_8_1, lg_8_2, lg_16_1, lg_16_2};
    const char *nm[] = {"read", "tile 8x4", "lg 1x4", "lg 2x2", "lg 2x4", "lg 4x1", "lg 4x2", "lg 4x4", "lg 8x1", "lg 8x2", "lg 16x1", "lg 16x2"};
    int F = 12; double t[12][41];
    for (int k = 0; k < 41; k++) for (int j = 0; j < F; j++) { f[j](); f[j](); unsigned long long t0 = tsc(); f[j](); t[j][k] = (double) (tsc() - t0); }
    printf("N=%ld C=%ld:", N, C);
    for (int j = 0; j < F; j++) { qsort(t[j], 41, 8, cmp); printf(" %s %.2f", nm[j], t[j][20] / t[0][20]); }
    printf("  (read %.1f us)\n", t[0][20] / 2600.0);
    return 0;
}
