/* Probe: statistics of N rows of C float32 lanes on THP-backed memory (as
 * numpy's), walk variants against one sequential read.
 *   gcc -O3 -march=znver4 -mprefer-vector-width=512 wide2.c -o wide2 ; ./wide2 N C THP */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
typedef float V __attribute__((vector_size(64), aligned(4), may_alias));
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static float *x, *sh, *a1, *a2, *junk;
static long N, C;
static volatile float sink;

static void rd(void) {
    V s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    long n = N * C;
    for (long i = 0; i + 64 <= n; i += 64) {
        s0 += *(V *) (x + i); s1 += *(V *) (x + i + 16); s2 += *(V *) (x + i + 32); s3 += *(V *) (x + i + 48);
    }
    V s = s0 + s1 + s2 + s3; sink = s[0];
}
/* tile of NV vectors, rows r0..r1, prefetch PD floats ahead */
static const char *pfc, *pfe; static int pfl;
static inline void tile(int NV, long c, long r0, long r1, long PD) {
    V m[4], p[4], q[4];
    for (int v = 0; v < NV; v++) { m[v] = *(V *) (sh + c + 16 * v); p[v] = *(V *) (a1 + c + 16 * v); q[v] = *(V *) (a2 + c + 16 * v); }
    long RG = r1 - r0;
    for (long r = r0; r < r1; r++) {
        const float *pp = x + r * C + c;
        if (PD) {
            const float *f = c + PD + 16 * NV <= C ? pp + PD : (r1 + RG <= N ? x + (r + RG) * C + (c + PD - C) : NULL);
            if (f) for (int l = 0; l < NV; l++) __builtin_prefetch(f + 16 * l);
        }
        if (pfc < pfe) { for (int l = 0; l < NV; l++) { if (pfl == 3) (void) *(const volatile char *) (pfc + 64 * l); else if (pfl == 2) __builtin_prefetch(pfc + 64 * l, 0, 2); else if (pfl == 1) __builtin_prefetch(pfc + 64 * l, 0, 1); else __builtin_prefetch(pfc + 64 * l, 0, 3); } pfc += 64 * NV; }
        for (int v = 0; v < NV; v++) { V d = *(V *) (pp + 16 * v) - m[v]; p[v] += d; q[v] += d * d; }
    }
    for (int v = 0; v < NV; v++) { *(V *) (a1 + c + 16 * v) = p[v]; *(V *) (a2 + c + 16 * v) = q[v]; }
}
static void walk(int NV, long RG, long PD, int touch) {
    for (long r0 = 0; r0 < N; r0 += RG) {
        long r1 = r0 + RG < N ? r0 + RG : N;
        if (touch == 1) { const volatile char *t = (const volatile char *) (x + r0 * C); for (long o = 0; o < (r1 - r0) * C * 4; o += 64) (void) t[o]; }
        if (touch == 2) { const char *t = (const char *) (x + r0 * C); for (long o = 0; o < (r1 - r0) * C * 4; o += 64) __builtin_prefetch(t + o); }
        if (touch == 3 && r1 < N) { const char *t = (const char *) (x + r1 * C); long e = (r1 + RG < N ? RG : N - r1) * C * 4; for (long o = 0; o < e; o += 64) __builtin_prefetch(t + o); }
        pfc = pfe = NULL; if (touch == 20) {}
        if (touch >= 4 && touch <= 7) {
            if (r0 == 0) { const volatile char *t = (const volatile char *) x; for (long o = 0; o < (r1 - r0) * C * 4; o += 64) (void) t[o]; }
            if (r1 < N) { pfc = (const char *) (x + r1 * C); pfe = pfc + (r1 + RG < N ? RG : N - r1) * C * 4; pfl = touch - 4; }
        }
        for (long c = 0; c + 16 * NV <= C; c += 16 * NV) {
            if (NV == 4) tile(4, c, r0, r1, PD); else if (NV == 2) tile(2, c, r0, r1, PD); else tile(1, c, r0, r1, PD);
        }
    }
    sink = a1[0] + a2[0];
}
/* RG streams of U/RG rows each inside units of U rows: the tile's rows are
   U/RG apart, so each stream walks its rows in memory order */
static void walk_il(int NV, long RG, long U, long PD) {
    for (long u0 = 0; u0 < N; u0 += U) {
        long n = u0 + U < N ? U : N - u0, B = n / RG;
        for (long i = 0; i < B; i++)
            for (long c = 0; c + 16 * NV <= C; c += 16 * NV) {
                const float *b = x + (u0 + i) * C + c;
                V m[4], p[4], q[4];
                for (int v = 0; v < NV; v++) { m[v] = *(V *) (sh + c + 16 * v); p[v] = *(V *) (a1 + c + 16 * v); q[v] = *(V *) (a2 + c + 16 * v); }
                for (long k = 0; k < RG; k++) {
                    const float *pp = b + k * B * C;
                    if (PD) for (int l = 0; l < NV; l++) __builtin_prefetch(pp + PD + 16 * l);
                    for (int v = 0; v < NV; v++) { V d = *(V *) (pp + 16 * v) - m[v]; p[v] += d; q[v] += d * d; }
                }
                for (int v = 0; v < NV; v++) { *(V *) (a1 + c + 16 * v) = p[v]; *(V *) (a2 + c + 16 * v) = q[v]; }
            }
        /* rows left over (n % RG) ignored in the probe */
    }
    sink = a1[0] + a2[0];
}
/* column panels of PW lanes: per unit of U rows, each panel's rows walked in groups of RG */
static void walk_panel(long PW, long RG, long U) {
    for (long u0 = 0; u0 < N; u0 += U) {
        long u1 = u0 + U < N ? u0 + U : N;
        for (long p0 = 0; p0 < C; p0 += PW)
            for (long r0 = u0; r0 < u1; r0 += RG) {
                long r1 = r0 + RG < u1 ? r0 + RG : u1;
                for (long c = p0; c < p0 + PW; c += 64) tile(4, c, r0, r1, 0);
            }
    }
    sink = a1[0] + a2[0];
}
static void sum1(void) {
    for (long r = 0; r < N; r++) { const float *p = x + r * C; for (long c = 0; c < C; c += 16) *(V *) (a1 + c) += *(V *) (p + c); }
    sink = a1[0];
}
static void *big(size_t n, int thp) {
    void *p = NULL; posix_memalign(&p, 2 << 20, n);
    if (thp) madvise(p, n, MADV_HUGEPAGE);
    memset(p, 1, n); return p;
}
int main(int argc, char **argv) {
    N = atol(argv[1]); C = atol(argv[2]); int thp = atoi(argv[3]);
    x = big(N * C * 4, thp); junk = big(64 << 20, thp);
    sh = aligned_alloc(64, C * 4); a1 = aligned_alloc(64, C * 4); a2 = aligned_alloc(64, C * 4);
    for (long i = 0; i < N * C; i++) x[i] = (float) (i % 7);
    memset(sh, 0, C * 4); memset(a1, 0, C * 4); memset(a2, 0, C * 4);
    struct { const char *name; int nv; long rg, pd; int touch; } v[] = {
        {"read", 0, 0, 0, 0},
        {"T4x8", 4, 8, 0, 0}, {"T4x8 pf1K", 4, 8, 256, 0},
        {"T1x1 rowstream", 1, 1, 0, 0}, {"T2x1", 2, 1, 0, 0}, {"T4x1", 4, 1, 0, 0}, {"sum1 rowstream", 1, 1, 0, 30},
    };
    int K = sizeof v / sizeof v[0], reps = 30;
    double tot[64] = {0}; int warm = argc > 4 ? atoi(argv[4]) : 0;
    for (int rep = 0; rep < reps; rep++)
        for (int k = 0; k < K; k++) {
            /* evict: read junk */
            if (!warm) { V s = {0}; for (long i = 0; i < (16 << 20); i += 16) s += *(V *) (junk + i); sink = s[0]; } else { if (v[k].nv == 0) rd(); else if (v[k].touch == 30) sum1(); else if (v[k].touch == 20) walk_panel(v[k].nv, v[k].rg, v[k].pd); else if (v[k].touch >= 10) walk_il(v[k].nv, v[k].rg, v[k].pd, v[k].touch == 11 ? 256 : 0); else walk(v[k].nv, v[k].rg, v[k].pd, v[k].touch); }
            double t0 = now();
            if (v[k].nv == 0) rd(); else if (v[k].touch == 30) sum1(); else if (v[k].touch == 20) walk_panel(v[k].nv, v[k].rg, v[k].pd); else if (v[k].touch >= 10) walk_il(v[k].nv, v[k].rg, v[k].pd, v[k].touch == 11 ? 256 : 0); else walk(v[k].nv, v[k].rg, v[k].pd, v[k].touch);
            tot[k] += now() - t0;
        }
    printf("N=%ld C=%ld thp=%d (%.1f MB), mean of %d, after a 64 MB read each\n", N, C, thp, N * C * 4 / 1e6, reps);
    for (int k = 0; k < K; k++) printf("%-14s %8.0f us  x read %.2f\n", v[k].name, tot[k] / reps * 1e6, tot[k] / tot[0]);
}
