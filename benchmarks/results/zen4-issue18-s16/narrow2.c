/* Probe: statistics of N rows of C=256 float32 lanes (1 KiB rows, 25.7 MB),
 * walks against one read; repeated (as passes.py: partly in L3).  ./narrow N C */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
typedef float V __attribute__((vector_size(64), aligned(4), may_alias));
static inline unsigned long long tsc(void) { unsigned lo, hi; __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)); return ((unsigned long long) hi << 32) | lo; }
static float *x, *sh, *a1, *a2; static long N, C; static volatile float sink; static char *junk; static int cold_mode;
static void rd(void) {
    V s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    for (long i = 0; i + 64 <= N * C; i += 64) { s0 += *(V *) (x + i); s1 += *(V *) (x + i + 16); s2 += *(V *) (x + i + 32); s3 += *(V *) (x + i + 48); }
    V s = s0 + s1 + s2 + s3; sink = s[0];
}
static inline void tile(const float *p, long S, long nr, const float *k, float *b1, float *b2) {
    const V *kk = (const V *) k; V *p1 = (V *) b1, *p2 = (V *) b2;
    V k0 = kk[0], k1 = kk[1], k2 = kk[2], k3 = kk[3];
    V a0 = p1[0], a1 = p1[1], a2 = p1[2], a3 = p1[3], q0 = p2[0], q1 = p2[1], q2 = p2[2], q3 = p2[3];
    for (long i = 0; i < nr; i++) { const V *r = (const V *) (p + i * S);
        V d0 = r[0] - k0, d1 = r[1] - k1, d2 = r[2] - k2, d3 = r[3] - k3;
        a0 += d0; a1 += d1; a2 += d2; a3 += d3; q0 += d0 * d0; q1 += d1 * d1; q2 += d2 * d2; q3 += d3 * d3; }
    p1[0] = a0; p1[1] = a1; p1[2] = a2; p1[3] = a3; p2[0] = q0; p2[1] = q1; p2[2] = q2; p2[3] = q3;
}
/* current: touch T rows in memory order, then tiles walk them (64-row blocks) */
static void cur(void) {
    long T = 256;
    for (long r0 = 0; r0 < N; r0 += 64) {
        long nr = r0 + 64 <= N ? 64 : N - r0;
        if (r0 % T == 0) { const volatile char *t = (const volatile char *) (x + r0 * C); long e = (r0 + T <= N ? T : N - r0) * C * 4; for (long o = 0; o < e; o += 64) (void) t[o]; }
        for (long c = 0; c < C; c += 64) tile(x + r0 * C + c, C, nr, sh + c, a1 + c, a2 + c);
    }
    sink = a1[0];
}
static void notouch(void) {
    for (long r0 = 0; r0 < N; r0 += 64) { long nr = r0 + 64 <= N ? 64 : N - r0;
        for (long c = 0; c < C; c += 64) tile(x + r0 * C + c, C, nr, sh + c, a1 + c, a2 + c); }
    sink = a1[0];
}
/* groups of G rows, tiles across (each tile walks G rows) */
#define GRP(G) static void g##G(void) { for (long r0 = 0; r0 + G <= N; r0 += G) for (long c = 0; c < C; c += 64) tile(x + r0 * C + c, C, G, sh + c, a1 + c, a2 + c); sink = a1[0]; }
GRP(2) GRP(4) GRP(8)
#define TCH(T) static void t##T(void) { \
    for (long r0 = 0; r0 + T <= N; r0 += T) { \
        const volatile char *t = (const volatile char *) (x + r0 * C); for (long o = 0; o < T * C * 4; o += 64) (void) t[o]; \
        for (long c = 0; c < C; c += 64) tile(x + r0 * C + c, C, T, sh + c, a1 + c, a2 + c); } \
    sink = a1[0]; }
TCH(8) TCH(16) TCH(32) TCH(64)
/* prefetch-ahead variant of cur: hint the next 64-row block (L2) while tiles walk */
static void pfnext(void) {
    for (long r0 = 0; r0 < N; r0 += 64) { long nr = r0 + 64 <= N ? 64 : N - r0;
        if (r0 == 0) { const volatile char *t = (const volatile char *) x; for (long o = 0; o < 64 * C * 4; o += 64) (void) t[o]; }
        const char *nx = (const char *) (x + (r0 + 64) * C); long ne = (r0 + 128 <= N) ? 64 * C * 4 : 0; long per = ne / (C / 64) ;
        for (long c = 0; c < C; c += 64) {
            for (long o = 0; o < per; o += 64) __builtin_prefetch(nx + (c / 64) * per + o, 0, 2);
            tile(x + r0 * C + c, C, nr, sh + c, a1 + c, a2 + c); }
    }
    sink = a1[0];
}
static void cold(void) { if (cold_mode) for (long i = 0; i < (64L << 20); i += 64) junk[i]++; }
static int cmp(const void *a, const void *b) { double d = *(double *) a - *(double *) b; return d < 0 ? -1 : d > 0; }
int main(int argc, char **argv) {
    N = atol(argv[1]); C = atol(argv[2]); cold_mode = atoi(argv[3]);
    size_t bytes = (N * C * 4 + (2 << 20)) & ~((2UL << 20) - 1);
    x = aligned_alloc(2 << 20, bytes); madvise(x, bytes, MADV_HUGEPAGE);
    for (long i = 0; i < N * C; i++) x[i] = (float) (i % 977) * 0.01f;
    sh = calloc(C, 4); a1 = calloc(C, 4); a2 = calloc(C, 4); junk = malloc(64L << 20); memset(junk, 1, 64L << 20);
    void (*f[])(void) = {rd, cur, t8, t16, t32, t64}; const char *nm[] = {"read", "touch256+tiles", "touch8", "touch16", "touch32", "touch64"};
    int F = 6; double t[7][21];
    for (int k = 0; k < 21; k++) for (int j = 0; j < F; j++) { cold(); unsigned long long t0 = tsc(); f[j](); t[j][k] = (double) (tsc() - t0); }
    printf("%ldx%ld %s:", N, C, cold_mode ? "cold" : "repeated");
    for (int j = 0; j < F; j++) { qsort(t[j], 21, 8, cmp); printf(" %s %.2f", nm[j], t[j][10] / t[0][10]); }
    printf(" (read %.0f us)\n", t[0][10] / 2596); return 0;
}
