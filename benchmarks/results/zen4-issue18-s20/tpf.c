/* Wide-row statistics tile walk (four-vector tiles, 8-row groups) with
   software prefetch of the same rows' lines DIST tiles ahead (into L1),
   against the plain walk and a read; x OFF bytes past a page. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
typedef float V __attribute__((vector_size(64), aligned(4), may_alias));
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static float rd(const float *x, long n) {
    V a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    for (long i = 0; i + 64 <= n; i += 64) { const V *r = (const V *) (x + i); a0 += r[0]; a1 += r[1]; a2 += r[2]; a3 += r[3]; }
    V s = a0 + a1 + a2 + a3; float t = 0; for (int j = 0; j < 16; j++) t += s[j]; return t;
}
static long S_;
static void walk(const float *x, long nr, long W, long G, const float *sh, float *b1, float *b2, long dist, int nl) {
    for (long g0 = 0; g0 < nr; g0 += G) {
        long g1 = g0 + G < nr ? g0 + G : nr;
        for (long c = 0; c < W; c += 64) {
            const V *k = (const V *) (sh + c);
            V k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3];
            V *p1 = (V *) (b1 + c), *p2 = (V *) (b2 + c);
            V a0 = p1[0], a1 = p1[1], a2 = p1[2], a3 = p1[3], q0 = p2[0], q1 = p2[1], q2 = p2[2], q3 = p2[3];
            for (long i = g0; i < g1; i++) {
                const V *r = (const V *) (x + i * S_ + c);
                if (dist) { const char *f = (const char *) (x + i * W + c + 64 * dist); for (int l = 0; l < nl; l++) __builtin_prefetch(f + 64 * l, 0, 3); }
                V d0 = r[0] - k0, d1 = r[1] - k1, d2 = r[2] - k2, d3 = r[3] - k3;
                a0 += d0; a1 += d1; a2 += d2; a3 += d3; q0 += d0 * d0; q1 += d1 * d1; q2 += d2 * d2; q3 += d3 * d3;
            }
            p1[0] = a0; p1[1] = a1; p1[2] = a2; p1[3] = a3; p2[0] = q0; p2[1] = q1; p2[2] = q2; p2[3] = q3;
        }
    }
}
int main(int argc, char **argv) {
    long W = atol(argv[1]), nr = atol(argv[2]), off = argc > 3 ? atol(argv[3]) : 16; S_ = W + (argc > 4 ? atol(argv[4]) : 0); long n = S_ * nr;
    char *bx = aligned_alloc(4096, n * 4 + 8192); float *x = (float *) (bx + off);
    float *sh = aligned_alloc(64, W * 4), *b1 = aligned_alloc(64, W * 4), *b2 = aligned_alloc(64, W * 4);
    for (long i = 0; i < n; i++) x[i] = (float) ((i * 7919) % 1000) * 0.001f;
    for (long j = 0; j < W; j++) { sh[j] = x[j]; b1[j] = b2[j] = 0; }
    int inner = (int) (4000000 / n) + 1; volatile float sink = 0;
    struct { const char *name; long d; int nl; long G; } vs[] = {{"G8", 0, 0, 8}, {"G4", 0, 0, 4}, {"G6", 0, 0, 6}, {"G2", 0, 0, 2}, {"G16", 0, 0, 16}};
    int nv = sizeof vs / sizeof vs[0]; double tot_r = 0, tot[16] = {0};
    for (int rep = 0; rep < 31; rep++) {
        double t0 = now(); for (int k = 0; k < inner; k++) sink += rd(x, n); tot_r += now() - t0;
        for (int v = 0; v < nv; v++) { t0 = now(); for (int k = 0; k < inner; k++) walk(x, nr, W, vs[v].G, sh, b1, b2, vs[v].d, vs[v].nl); tot[v] += now() - t0; }
    }
    printf("%ldx%ld +%ld (%ld KiB): read %.1f us;", nr, W, off, n * 4 / 1024, tot_r / 31 / inner * 1e6);
    for (int v = 0; v < nv; v++) printf(" %s %.2f", vs[v].name, tot[v] / tot_r);
    printf("\n"); return (int) sink & 0;
}
