/* Wide-row statistics walks: 8-row groups of 4-vector tiles (G8) against a
   skewed walk: windows of 8 vectors, row i of the group reading vector
   (s + i) % 8 at step s, so that one step's 8 loads fall on 8 different L1
   sets where the rows are 4 KiB multiples apart.  x OFF bytes past a page,
   rows PAD floats apart beyond W. */
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
static long S_;
static void g8(const float *x, long nr, long W, const float *sh, float *b1, float *b2) {
    for (long g0 = 0; g0 < nr; g0 += 8) {
        long g1 = g0 + 8 < nr ? g0 + 8 : nr;
        for (long c = 0; c < W; c += 64) {
            const V *k = (const V *) (sh + c);
            V k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3];
            V *p1 = (V *) (b1 + c), *p2 = (V *) (b2 + c);
            V a0 = p1[0], a1 = p1[1], a2 = p1[2], a3 = p1[3], q0 = p2[0], q1 = p2[1], q2 = p2[2], q3 = p2[3];
            for (long i = g0; i < g1; i++) {
                const V *r = (const V *) (x + i * S_ + c);
                V d0 = r[0] - k0, d1 = r[1] - k1, d2 = r[2] - k2, d3 = r[3] - k3;
                a0 += d0; a1 += d1; a2 += d2; a3 += d3; q0 += d0 * d0; q1 += d1 * d1; q2 += d2 * d2; q3 += d3 * d3;
            }
            p1[0] = a0; p1[1] = a1; p1[2] = a2; p1[3] = a3; p2[0] = q0; p2[1] = q1; p2[2] = q2; p2[3] = q3;
        }
    }
}
/* skewed: groups of exactly 8 rows (nr % 8 == 0 here), windows of 8 vectors */
#define STEP(s) \
    _Pragma("GCC unroll 8") for (int i = 0; i < 8; i++) { \
        const int v = ((s) + i) & 7; \
        V d = *(const V *) (x + (g0 + i) * S_ + c + 16 * v) - k[v]; \
        a[v] += d; q[v] += d * d; }
static void skew(const float *x, long nr, long W, const float *sh, float *b1, float *b2) {
    for (long g0 = 0; g0 + 8 <= nr; g0 += 8) {
        for (long c = 0; c < W; c += 128) {
            V k[8], a[8], q[8];
            _Pragma("GCC unroll 8") for (int v = 0; v < 8; v++) { k[v] = *(const V *) (sh + c + 16 * v); a[v] = *(V *) (b1 + c + 16 * v); q[v] = *(V *) (b2 + c + 16 * v); }
            STEP(0) STEP(1) STEP(2) STEP(3) STEP(4) STEP(5) STEP(6) STEP(7)
            _Pragma("GCC unroll 8") for (int v = 0; v < 8; v++) { *(V *) (b1 + c + 16 * v) = a[v]; *(V *) (b2 + c + 16 * v) = q[v]; }
        }
    }
}
/* skewed by 4: windows of 4 vectors, 8 rows, row i reads vector (s + i) % 4 */
#define STEP4(s) \
    _Pragma("GCC unroll 8") for (int i = 0; i < 8; i++) { \
        const int v = ((s) + i) & 3; \
        V d = *(const V *) (x + (g0 + i) * S_ + c + 16 * v) - k[v]; \
        a[v] += d; q[v] += d * d; }
static void skew4(const float *x, long nr, long W, const float *sh, float *b1, float *b2) {
    for (long g0 = 0; g0 + 8 <= nr; g0 += 8) {
        for (long c = 0; c < W; c += 64) {
            V k[4], a[4], q[4];
            _Pragma("GCC unroll 4") for (int v = 0; v < 4; v++) { k[v] = *(const V *) (sh + c + 16 * v); a[v] = *(V *) (b1 + c + 16 * v); q[v] = *(V *) (b2 + c + 16 * v); }
            STEP4(0) STEP4(1) STEP4(2) STEP4(3)
            _Pragma("GCC unroll 4") for (int v = 0; v < 4; v++) { *(V *) (b1 + c + 16 * v) = a[v]; *(V *) (b2 + c + 16 * v) = q[v]; }
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
    double tr = 0, t[3] = {0};
    for (int rep = 0; rep < 31; rep++) {
        double t0 = now(); for (int k = 0; k < inner; k++) sink += rd(x, n); tr += now() - t0;
        t0 = now(); for (int k = 0; k < inner; k++) g8(x, nr, W, sh, b1, b2); t[0] += now() - t0;
        t0 = now(); for (int k = 0; k < inner; k++) skew(x, nr, W, sh, b1, b2); t[1] += now() - t0;
        t0 = now(); for (int k = 0; k < inner; k++) skew4(x, nr, W, sh, b1, b2); t[2] += now() - t0;
    }
    printf("%ldx%ld +%ld pad %ld: read %.1f us; G8 %.2f skew8 %.2f skew4 %.2f\n", nr, W, off, S_ - W, tr / 31 / inner * 1e6, t[0] / tr, t[1] / tr, t[2] / tr);
    return (int) sink & 0;
}
