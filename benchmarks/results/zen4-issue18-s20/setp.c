/* G-row groups of 4-vector tiles over rows 4 KiB multiples apart: the
   group size G against the L1 sets, with the shift and block sums (sh, b1,
   b2) in the same sets as x's tile (B = 0) or 2 KiB away (B = 2048). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
typedef float V __attribute__((vector_size(64), aligned(4), may_alias));
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static float rd(const float *x, long n) {
    V a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    for (long i = 0; i + 64 <= n; i += 64) { const V *r = (const V *) (x + i); a0 += r[0]; a1 += r[1]; a2 += r[2]; a3 += r[3]; }
    V s = a0 + a1 + a2 + a3; float t = 0; for (int j = 0; j < 16; j++) t += s[j]; return t;
}
static void walk(const float *x, long nr, long W, long G, const float *sh, float *b1, float *b2) {
    for (long g0 = 0; g0 < nr; g0 += G) {
        long g1 = g0 + G < nr ? g0 + G : nr;
        for (long c = 0; c < W; c += 64) {
            const V *k = (const V *) (sh + c);
            V k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3];
            V *p1 = (V *) (b1 + c), *p2 = (V *) (b2 + c);
            V a0 = p1[0], a1 = p1[1], a2 = p1[2], a3 = p1[3], q0 = p2[0], q1 = p2[1], q2 = p2[2], q3 = p2[3];
            for (long i = g0; i < g1; i++) {
                const V *r = (const V *) (x + i * W + c);
                V d0 = r[0] - k0, d1 = r[1] - k1, d2 = r[2] - k2, d3 = r[3] - k3;
                a0 += d0; a1 += d1; a2 += d2; a3 += d3; q0 += d0 * d0; q1 += d1 * d1; q2 += d2 * d2; q3 += d3 * d3;
            }
            p1[0] = a0; p1[1] = a1; p1[2] = a2; p1[3] = a3; p2[0] = q0; p2[1] = q1; p2[2] = q2; p2[3] = q3;
        }
    }
}
int main(int argc, char **argv) {
    long W = atol(argv[1]), nr = atol(argv[2]), off = atol(argv[3]), n = W * nr;
    char *bx = aligned_alloc(4096, n * 4 + 8192); float *x = (float *) (bx + off);
    char *bb = aligned_alloc(4096, 3 * W * 4 + 3 * 4096 + 8192);
    for (long i = 0; i < n; i++) x[i] = (float) ((i * 7919) % 1000) * 0.001f;
    int inner = (int) (4000000 / n) + 1; volatile float sink = 0;
    long Gs[] = {4, 5, 6, 7, 8}; long Bs[] = {0, 2048};
    double tr = 0, t[5][2] = {{0}};
    float *sh[2], *b1[2], *b2[2];
    for (int b = 0; b < 2; b++) {   /* arrays W*4 + 4096 apart, each at x's page offset + B, rounded to a line */
        char *base = bb + ((off + Bs[b]) % 4096) / 64 * 64 + (b ? 0 : 0);
        static char *keep[2]; keep[b] = aligned_alloc(4096, 3 * (W * 4 + 4096) + 8192);
        base = keep[b] + ((off + Bs[b]) % 4096) / 64 * 64;
        sh[b] = (float *) base; b1[b] = (float *) (base + W * 4 + 4096); b2[b] = (float *) (base + 2 * (W * 4 + 4096));
        for (long j = 0; j < W; j++) { sh[b][j] = x[j]; b1[b][j] = b2[b][j] = 0; }
    }
    (void) bb;
    for (int rep = 0; rep < 21; rep++) {
        double t0 = now(); for (int k = 0; k < inner; k++) sink += rd(x, n); tr += now() - t0;
        for (int g = 0; g < 5; g++) for (int b = 0; b < 2; b++) { t0 = now(); for (int k = 0; k < inner; k++) walk(x, nr, W, Gs[g], sh[b], b1[b], b2[b]); t[g][b] += now() - t0; }
    }
    printf("%ldx%ld x +%ld: read %.1f us;", nr, W, off, tr / 21 / inner * 1e6);
    for (int g = 0; g < 5; g++) printf(" G%ld %.2f/%.2f", Gs[g], t[g][0] / tr, t[g][1] / tr);
    printf("  (sh,b in x's sets / 2 KiB away)\n");
    return (int) sink & 0;
}
