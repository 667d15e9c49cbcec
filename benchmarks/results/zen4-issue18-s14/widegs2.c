/* Probe: the backward sums of N rows of C float32 lanes (dy and x on THP-backed
 * memory at the same offset modulo 4 KiB, as NumPy places two large arrays),
 * tile walks against one read of dy and x.
 *   gcc -O3 -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx2 -mfma -mprefer-vector-width=256 widegs2.c -o widegs2
 *   ./widegs2 N C DY_OFF WARM */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#ifndef VB
#define VB 64
#endif
typedef float V __attribute__((vector_size(VB), aligned(4), may_alias));
enum { VL = VB / 4, TL = 4 * VL };
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static float *x, *dy, *mu, *b1, *b2, *junk;
static long N, C;
static volatile float sink;
static void rd(void) {
    V s0 = {0}, s1 = {0};
    for (long i = 0; i < N * C; i += 2 * VL) { s0 += *(V *) (x + i) + *(V *) (dy + i); s1 += *(V *) (x + i + VL) + *(V *) (dy + i + VL); }
    sink = (s0 + s1)[0];
}
/* NT tiles side by side over rows r0..r1 */
#define COLS(NT) static void cols##NT(long c, long r0, long r1) { \
    V a[4 * NT], q[4 * NT]; \
    for (int v = 0; v < 4 * NT; v++) { a[v] = ((V *) (b1 + c))[v]; q[v] = ((V *) (b2 + c))[v]; } \
    for (long i = r0; i < r1; i++) { const V *d = (const V *) (dy + i * C + c), *r = (const V *) (x + i * C + c); \
        for (int v = 0; v < 4 * NT; v++) { V e = d[v]; a[v] += e; q[v] += e * (r[v] - ((const V *) (mu + c))[v]); } } \
    for (int v = 0; v < 4 * NT; v++) { ((V *) (b1 + c))[v] = a[v]; ((V *) (b2 + c))[v] = q[v]; } }
COLS(1) COLS(2) COLS(3)
static void touch(const float *p, long n) { const volatile char *t = (const volatile char *) p; for (long o = 0; o < n * 4; o += 64) (void) t[o]; }
static void walk2(int NT, long RG, int tmode);
static void walk(int NT, long RG) { walk2(NT, RG, 0); }
static void walk2(int NT, long RG, int tmode) {
    for (long r0 = 0; r0 < N; r0 += RG) {
        long r1 = r0 + RG < N ? r0 + RG : N, c = 0;
        if (tmode == 1) { touch(dy + r0 * C, (r1 - r0) * C); touch(x + r0 * C, (r1 - r0) * C); }
        if (tmode == 2 && r1 < N) { long e = (r1 + RG < N ? RG : N - r1) * C * 4; const char *p = (const char *) (dy + r1 * C), *q = (const char *) (x + r1 * C);
            if (r0 == 0) { touch(dy, (r1 - r0) * C); touch(x, (r1 - r0) * C); }
            for (long o = 0; o < e; o += 64) { __builtin_prefetch(p + o, 0, 2); __builtin_prefetch(q + o, 0, 2); } }
        for (; c + NT * TL <= C; c += NT * TL) { if (NT == 3) cols3(c, r0, r1); else if (NT == 2) cols2(c, r0, r1); else cols1(c, r0, r1); }
        for (; c + TL <= C; c += TL) cols1(c, r0, r1);
    }
    sink = b1[3] + b2[5];
}
static void *big(size_t n, long off) {
    char *p = NULL; posix_memalign((void **) &p, 2 << 20, n + 4096);
    madvise(p, n + 4096, MADV_HUGEPAGE); memset(p, 1, n + 4096); return p + off;
}
int main(int argc, char **argv) {
    N = atol(argv[1]); C = atol(argv[2]); long od = atol(argv[3]); int warm = atoi(argv[4]);
    x = big(N * C * 4, 16); dy = big(N * C * 4, od); junk = big(64 << 20, 0);
    mu = aligned_alloc(64, C * 4); b1 = aligned_alloc(64, C * 4); b2 = aligned_alloc(64, C * 4);
    for (long i = 0; i < N * C; i++) { x[i] = i % 7; dy[i] = i % 5; }
    memset(mu, 0, C * 4); memset(b1, 0, C * 4); memset(b2, 0, C * 4);
    struct { const char *name; int nt; long rg; } v[] = {
        {"read dy+x", 0, 0}, {"T1x4 (now)", 1, 4}, {"T1x8", 1, 8}, {"T1x2", 1, 2},
        {"T1x16 touch", 11, 16}, {"T1x32 touch", 11, 32}, {"T3x16 touch", 13, 16}, {"T3x32 touch", 13, 32}, {"T1x8 touch", 11, 8},
        {"T3x16 pfnext", 23, 16}, {"T3x8 pfnext", 23, 8},
        {"T2x4", 2, 4}, {"T2x8", 2, 8}, {"T3x4", 3, 4}, {"T3x8", 3, 8}, {"T3x16", 3, 16}, {"T3x32", 3, 32},
    };
    int K = sizeof v / sizeof v[0], reps = 20;
    double tot[32] = {0};
    for (int rep = 0; rep < reps; rep++)
        for (int k = 0; k < K; k++) {
            if (!warm) { V s = {0}; for (long i = 0; i < (16 << 20); i += VL) s += *(V *) (junk + i); sink = s[0]; }
            else { if (v[k].nt == 0) rd(); else walk2(v[k].nt % 10, v[k].rg, v[k].nt / 10); }
            double t0 = now();
            if (v[k].nt == 0) rd(); else walk2(v[k].nt % 10, v[k].rg, v[k].nt / 10);
            tot[k] += now() - t0;
        }
    printf("N=%ld C=%ld dy at x%+ld mod 4 KiB, %s, mean of %d\n", N, C, od - 16, warm ? "warm" : "cold", reps);
    for (int k = 0; k < K; k++) printf("%-12s %8.0f us  x read %.2f\n", v[k].name, tot[k] / reps * 1e6, tot[k] / tot[0]);
}
