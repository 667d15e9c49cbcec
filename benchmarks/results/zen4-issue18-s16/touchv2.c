/* Probe: statistics (1 array) and backward sums (2 arrays) of N rows of C
 * float32 lanes: touch T rows in memory order, then register tiles of 4
 * vectors walk them; against one read (stats) or two (sums).
 *   ./touch N C cold T1 T2 ...   (T: rows per touch; 0 = the kernel's present
 *   rule, L2/4 bytes per touch with tiles walking 64 rows) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#ifndef VB
#define VB 64
#endif
typedef float V __attribute__((vector_size(VB), aligned(4), may_alias));
static inline unsigned long long tsc(void) { unsigned lo, hi; __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)); return ((unsigned long long) hi << 32) | lo; }
static float *x, *e, *sh, *a1, *a2; static long N, C; static volatile float sink; static char *junk; static int cold_mode;
static void rd(void) {
    V s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    for (long i = 0; i + 4 * (VB / 4) <= N * C; i += 4 * (VB / 4)) { s0 += *(V *) (x + i); s1 += *(V *) (x + i + VB / 4); s2 += *(V *) (x + i + VB / 2); s3 += *(V *) (x + i + 3 * VB / 4); }
    V s = s0 + s1 + s2 + s3; sink = s[0];
}
static void rd2(void) { rd(); float *t = x; x = e; rd(); x = t; }
static inline void mtile(const float *p, long S, long nr, const float *k, float *b1, float *b2) {
    const V *kk = (const V *) k; V *p1 = (V *) b1, *p2 = (V *) b2;
    V k0 = kk[0], k1 = kk[1], k2 = kk[2], k3 = kk[3];
    V a0 = p1[0], a1 = p1[1], a2 = p1[2], a3 = p1[3], q0 = p2[0], q1 = p2[1], q2 = p2[2], q3 = p2[3];
    for (long i = 0; i < nr; i++) { const V *r = (const V *) (p + i * S);
        V d0 = r[0] - k0, d1 = r[1] - k1, d2 = r[2] - k2, d3 = r[3] - k3;
        a0 += d0; a1 += d1; a2 += d2; a3 += d3; q0 += d0 * d0; q1 += d1 * d1; q2 += d2 * d2; q3 += d3 * d3; }
    p1[0] = a0; p1[1] = a1; p1[2] = a2; p1[3] = a3; p2[0] = q0; p2[1] = q1; p2[2] = q2; p2[3] = q3;
}
static inline void gtile(const float *d, const float *p, long S, long nr, const float *k, float *b1, float *b2) {
    const V *kk = (const V *) k; V *p1 = (V *) b1, *p2 = (V *) b2;
    V k0 = kk[0], k1 = kk[1], k2 = kk[2], k3 = kk[3];
    V a0 = p1[0], a1 = p1[1], a2 = p1[2], a3 = p1[3], q0 = p2[0], q1 = p2[1], q2 = p2[2], q3 = p2[3];
    for (long i = 0; i < nr; i++) { const V *r = (const V *) (p + i * S), *g = (const V *) (d + i * S);
        a0 += g[0]; a1 += g[1]; a2 += g[2]; a3 += g[3];
        q0 += g[0] * (r[0] - k0); q1 += g[1] * (r[1] - k1); q2 += g[2] * (r[2] - k2); q3 += g[3] * (r[3] - k3); }
    p1[0] = a0; p1[1] = a1; p1[2] = a2; p1[3] = a3; p2[0] = q0; p2[1] = q1; p2[2] = q2; p2[3] = q3;
}
static void touch(const float *p, long bytes) { const volatile char *t = (const volatile char *) p; for (long o = 0; o < bytes; o += 64) (void) t[o]; }
static long T; static int arrays; static int inter;
static void touch2(const float *p, const float *q, long bytes) { const volatile char *a = (const volatile char *) p, *b = (const volatile char *) q; for (long o = 0; o < bytes; o += 64) { (void) a[o]; (void) b[o]; } }
static void walk(void) {
    long tr = T > 0 ? T : (256 * 1024) / (C * 4 * arrays), step = T > 0 ? T : 64;
    for (long r0 = 0; r0 < N; r0 += step) {
        long nr = r0 + step <= N ? step : N - r0;
        if (T > 0 || r0 % tr == 0) { long tn = T > 0 ? nr : (r0 + tr <= N ? tr : N - r0);
            if (arrays == 2 && inter) touch2(e + r0 * C, x + r0 * C, tn * C * 4); else { if (arrays == 2) touch(e + r0 * C, tn * C * 4); touch(x + r0 * C, tn * C * 4); } }
        for (long c = 0; c < C; c += 4 * (VB / 4)) {
            if (arrays == 1) mtile(x + r0 * C + c, C, nr, sh + c, a1 + c, a2 + c);
            else gtile(e + r0 * C + c, x + r0 * C + c, C, nr, sh + c, a1 + c, a2 + c); }
    }
    sink = a1[0];
}
static void cold(void) { if (cold_mode) for (long i = 0; i < (64L << 20); i += 64) junk[i]++; }
static int cmp(const void *a, const void *b) { double d = *(double *) a - *(double *) b; return d < 0 ? -1 : d > 0; }
int main(int argc, char **argv) {
    inter = getenv("INTER") ? 1 : 0; N = atol(argv[1]); C = atol(argv[2]); cold_mode = atoi(argv[3]);
    size_t bytes = (N * C * 4 + (2 << 20)) & ~((2UL << 20) - 1);
    x = aligned_alloc(2 << 20, bytes); madvise(x, bytes, MADV_HUGEPAGE);
    e = aligned_alloc(2 << 20, bytes); madvise(e, bytes, MADV_HUGEPAGE);
    e = (float *) ((char *) e + (getenv("EOFF") ? atol(getenv("EOFF")) : 16)); x = (float *) ((char *) x + 16);
    for (long i = 0; i < N * C; i++) { x[i] = (float) (i % 977) * 0.01f; e[i] = (float) (i % 313) * 0.01f; }
    sh = calloc(C, 4); a1 = calloc(C, 4); a2 = calloc(C, 4); junk = malloc(64L << 20); memset(junk, 1, 64L << 20);
    int nT = argc - 4; long Ts[16]; for (int i = 0; i < nT; i++) Ts[i] = atol(argv[4 + i]);
    for (arrays = 1; arrays <= 2; arrays++) {
        double tr[21], tw[16][21];
        for (int k = 0; k < 21; k++) {
            cold(); unsigned long long t0 = tsc(); if (arrays == 1) rd(); else rd2(); tr[k] = (double) (tsc() - t0);
            for (int i = 0; i < nT; i++) { T = Ts[i]; cold(); t0 = tsc(); walk(); tw[i][k] = (double) (tsc() - t0); }
        }
        qsort(tr, 21, 8, cmp);
        printf("%ldx%ld %s %s (read %.0f us):", N, C, cold_mode ? "cold" : "repeated", arrays == 1 ? "stats" : "sums ", tr[10] / 2596);
        for (int i = 0; i < nT; i++) { qsort(tw[i], 21, 8, cmp); printf("  T=%ld %.2f", Ts[i], tw[i][10] / tr[10]); }
        printf("\n");
    }
    return 0;
}
