/* Probe: the statistics of N rows of C float32 lanes (C = 2048: rows 8 KiB
 * apart), register tiles of 4 vectors walking RG rows, against one read of x.
 * Variants: software prefetch of each row PD floats ahead (the next row group
 * when the row ends), and tile starts aligned to x's 64-byte lines (a
 * scalar-width head) when x is not.  x sits OFF bytes past a line.
 *   gcc -O3 -mavx512f -mavx512vl -mavx512bw -mavx512dq -mfma \
 *       -mprefer-vector-width=256 -ffp-contract=fast wide.c -o wide
 *   ./wide N C OFF
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
typedef float V __attribute__((vector_size(64), aligned(4), may_alias));
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static float *x, *sh, *a1, *a2;
static long N, C;
static volatile float sink;

static void read_plain(void) {
    V s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    long n = N * C;
    for (long i = 0; i + 64 <= n; i += 64) {
        s0 += *(V *) (x + i); s1 += *(V *) (x + i + 16); s2 += *(V *) (x + i + 32); s3 += *(V *) (x + i + 48);
    }
    V s = s0 + s1 + s2 + s3; sink = s[0];
}

static void tile(long c, long r0, long r1, long PD) {
    V m[4], p[4], q[4];
    for (int v = 0; v < 4; v++) { m[v] = *(V *) (sh + c + 16 * v); p[v] = *(V *) (a1 + c + 16 * v); q[v] = *(V *) (a2 + c + 16 * v); }
    long RG = r1 - r0;
    for (long r = r0; r < r1; r++) {
        const float *pp = x + r * C + c;
        if (PD) {
            const float *f = c + PD + 64 <= C ? pp + PD : (r1 + RG <= N ? x + (r + RG) * C + (c + PD - C) : NULL);
            if (f) for (int l = 0; l < 4; l++) __builtin_prefetch(f + 16 * l);
        }
        for (int v = 0; v < 4; v++) { V d = *(V *) (pp + 16 * v) - m[v]; p[v] += d; q[v] += d * d; }
    }
    for (int v = 0; v < 4; v++) { *(V *) (a1 + c + 16 * v) = p[v]; *(V *) (a2 + c + 16 * v) = q[v]; }
}

static void scal(long c0, long c1, long r0, long r1) {
    for (long r = r0; r < r1; r++)
        for (long c = c0; c < c1; c++) { float d = x[r * C + c] - sh[c]; a1[c] += d; a2[c] += d * d; }
}

static void stats(long RG, long PD, int al) {
    memset(a1, 0, C * 4); memset(a2, 0, C * 4);
    long h = al ? ((64 - ((size_t) x & 63)) & 63) / 4 : 0;
    for (long r0 = 0; r0 < N; r0 += RG) {
        long r1 = r0 + RG < N ? r0 + RG : N, c = h;
        if (h) scal(0, h, r0, r1);
        for (; c + 64 <= C; c += 64) tile(c, r0, r1, PD);
        if (c < C) scal(c, C, r0, r1);
    }
    sink = a1[0] + a2[0];
}

int main(int argc, char **argv) {
    N = argc > 1 ? atol(argv[1]) : 3136; C = argc > 2 ? atol(argv[2]) : 2048;
    long off = argc > 3 ? atol(argv[3]) : 16;
    char *b = aligned_alloc(64, (N * C * 4 + 128 + 63) / 64 * 64);
    x = (float *) (b + off);
    sh = aligned_alloc(64, C * 4 + 64); a1 = aligned_alloc(64, C * 4 + 64); a2 = aligned_alloc(64, C * 4 + 64);
    for (long i = 0; i < N * C; i++) x[i] = (i % 1000) * 0.001f;
    for (long c = 0; c < C; c++) sh[c] = 0.5f;
    struct { const char *name; long RG, PD; int al; } v[] = {
        {"read", 0, 0, 0}, {"RG8", 8, 0, 0}, {"RG5", 5, 0, 0},
        {"RG3_pf512", 3, 512, 0}, {"RG4_pf512", 4, 512, 0}, {"RG5_pf512", 5, 512, 0},
        {"RG6_pf512", 6, 512, 0}, {"RG7_pf512", 7, 512, 0}, {"RG8_pf512", 8, 512, 0},
        {"RG5_pf256", 5, 256, 0}, {"RG5_pf1024", 5, 1024, 0}, {"RG5_pf512_al", 5, 512, 1},
        {"RG4_pf512_al", 4, 512, 1}, {"RG6_pf512_al", 6, 512, 1},
    };
    int K = sizeof v / sizeof v[0], reps = 30;
    double tot[32] = {0};
    for (int rep = 0; rep < reps; rep++)
        for (int k = 0; k < K; k++) {
            double t = now();
            if (k == 0) read_plain(); else stats(v[k].RG, v[k].PD, v[k].al);
            tot[k] += now() - t;
        }
    printf("N=%ld C=%ld off=%ld (%.1f MB), mean of %d, round robin\n", N, C, off, N * C * 4 / 1e6, reps);
    for (int k = 0; k < K; k++) printf("%-14s %8.0f us  x read %.2f\n", v[k].name, tot[k] / reps * 1e6, tot[k] / tot[0]);
    return 0;
}
