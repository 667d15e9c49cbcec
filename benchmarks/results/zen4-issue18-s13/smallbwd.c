/* Probe: the backward of 16x32x8x8 float32 channels-first data, one thread,
 * in L2 (as bench_layer --small runs it): the per-lane sums pass with
 * several traversals, and the dx pass, timed apart.  Build:
 *   gcc -O3 -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx2 -mfma -mf16c \
 *       -mprefer-vector-width=256 -ffp-contract=fast -I../../../pyx/ckbn smallbwd.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "ckbn_kernel_helpers.h"

#define P 16
#define G 32
#define R 64
#define S (G * R)
#define N (P * S)

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }

static float *dy, *x, *dx, *mu, *b1, *b2;

/* current: row groups of 8, tiles of 64 lanes across the row */
static void sums_rg(int rg) {
    memset(b1, 0, S * 4); memset(b2, 0, S * 4);
    for (int i = 0; i < P; i += rg)
        for (int c = 0; c < S; c += 64)
            ckbn_gs_tile_f32(dy + i * S + c, x + i * S + c, S, i + rg <= P ? rg : P - i, mu + c, b1 + c, b2 + c);
}
/* tiles outermost: each tile walks all P rows */
static void sums_col(void) {
    memset(b1, 0, S * 4); memset(b2, 0, S * 4);
    for (int c = 0; c < S; c += 64)
        ckbn_gs_tile_f32(dy + c, x + c, S, P, mu + c, b1 + c, b2 + c);
}
/* tiles outermost with software prefetch of the next tile's rows */
static void sums_colpf(void) {
    memset(b1, 0, S * 4); memset(b2, 0, S * 4);
    for (int c = 0; c < S; c += 64) {
        if (c + 64 < S)
            for (int i = 0; i < P; i++)
                for (int l = 0; l < 4; l++) {
                    __builtin_prefetch(dy + i * S + c + 64 + 16 * l);
                    __builtin_prefetch(x + i * S + c + 64 + 16 * l);
                }
        ckbn_gs_tile_f32(dy + c, x + c, S, P, mu + c, b1 + c, b2 + c);
    }
}
/* memory order: each sample's row of all lanes, accumulators in L1 */
static void sums_mem(void) {
    memset(b1, 0, S * 4); memset(b2, 0, S * 4);
    for (int i = 0; i < P; i++) {
        const ckbn_vf *e = (const ckbn_vf *) (dy + i * S), *r = (const ckbn_vf *) (x + i * S), *m = (const ckbn_vf *) mu;
        ckbn_vf *p1 = (ckbn_vf *) b1, *p2 = (ckbn_vf *) b2;
        for (int c = 0; c < S / 16; c++) { ckbn_vf d = e[c]; p1[c] += d; p2[c] += d * (r[c] - m[c]); }
    }
}
/* memory order, two samples per sweep of the accumulators */
static void sums_mem2(void) {
    memset(b1, 0, S * 4); memset(b2, 0, S * 4);
    for (int i = 0; i < P; i += 2) {
        const ckbn_vf *e = (const ckbn_vf *) (dy + i * S), *r = (const ckbn_vf *) (x + i * S), *m = (const ckbn_vf *) mu;
        const ckbn_vf *e2 = (const ckbn_vf *) (dy + i * S + S), *r2 = (const ckbn_vf *) (x + i * S + S);
        ckbn_vf *p1 = (ckbn_vf *) b1, *p2 = (ckbn_vf *) b2;
        for (int c = 0; c < S / 16; c++) { ckbn_vf d = e[c], d2 = e2[c], mm = m[c]; ckbn_vf a = p1[c] + d, q = p2[c] + d * (r[c] - mm); p1[c] = a + d2; p2[c] = q + d2 * (r2[c] - mm); }
    }
}
/* plain read of dy and x in memory order (a bound) */
static float sink;
static void readboth(void) {
    ckbn_vf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    for (int i = 0; i < N; i += 32) {
        a0 += *(ckbn_vf *)(dy + i); a1 += *(ckbn_vf *)(dy + i + 16);
        a2 += *(ckbn_vf *)(x + i); a3 += *(ckbn_vf *)(x + i + 16);
    }
    ckbn_vf s = a0 + a1 + a2 + a3; sink += s[0];
}
static void dxpass(void) {
    for (int i = P - 1; i >= 0; i--)
        for (int g = 0; g < G; g++) {
            int off = i * S + g * R;
            float k1 = 0.5f + g, k2 = 0.25f, k3 = 0.125f;
            for (int j = 0; j < R; j++)
                dx[off + j] = dy[off + j] * k1 + (x[off + j] * k2 + k3);
        }
}
static void copy(void) { memcpy(dx, x, N * 4); }

#define TIME(name, call) do { double b = 1e9; for (int r = 0; r < 40; r++) { double t = now(); \
    for (int k = 0; k < 200; k++) { call; } double e = (now() - t) / 200; if (e < b) b = e; } \
    printf("%-28s %7.2f us\n", name, b * 1e6); } while (0)

int main(int argc, char **argv) {
    int off = argc > 1 ? atoi(argv[1]) : 0, offo = argc > 2 ? atoi(argv[2]) : 0;
    char *buf = aligned_alloc(4096, 4 * N * 4 + 4 * 8192 + 4 * S * 4 + 4096);
    x = (float *) buf; dy = (float *) (buf + N * 4 + 4096 + off); dx = (float *) (buf + 2 * N * 4 + 8192 + offo);
    mu = (float *) (buf + 3 * N * 4 + 20480); b1 = mu + S; b2 = b1 + S;
    for (int i = 0; i < N; i++) { x[i] = (float) rand() / RAND_MAX; dy[i] = (float) rand() / RAND_MAX - 0.5f; dx[i] = 0; }
    for (int i = 0; i < S; i++) mu[i] = 0.5f;
    TIME("read dy+x (bound)", readboth());
    TIME("copy 128 KB", copy());
    TIME("sums memory order", sums_mem());
    TIME("sums memory order x2", sums_mem2());
    TIME("sums rowgroup 8 (current)", sums_rg(8));
    TIME("sums rowgroup 16", sums_rg(16));
    TIME("sums rowgroup 6", sums_rg(6));
    TIME("sums rowgroup 5", sums_rg(5));
    TIME("sums rowgroup 4", sums_rg(4));
    TIME("sums rowgroup 3", sums_rg(3));
    TIME("sums rowgroup 2", sums_rg(2));
    TIME("sums tiles outer", sums_col());
    TIME("sums tiles outer + pf", sums_colpf());
    TIME("dx pass", dxpass());
    return (int) sink;
}
