/* Probe: the small channels-first backward sums and dx (16x32x8x8 float32, in L2),
 * with dy, x and dx at chosen byte offsets past a page.
 *   gcc -O3 -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx2 -mfma -mprefer-vector-width=256 -ffp-contract=fast sb.c -o sb
 *   gcc -O3 -mavx2 -mfma -DVB=32 -ffp-contract=fast sb.c -o sb2      (AVX2)
 *   ./sb X_OFF DY_OFF DX_OFF */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifndef VB
#define VB 64
#endif
typedef float V __attribute__((vector_size(VB), aligned(4), may_alias));
enum { VL = VB / 4, TLn = 4 * VL };
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
enum { P = 16, G = 32, R = 64, S = G * R, L = G * R };
static float *dy, *x, *dx, mu[L], b1[L], b2[L];
static volatile float sink;
static inline void gs_tile(const float *e, const float *xx, long nr, const float *m_, float *p1_, float *p2_) {
    const V *m = (const V *) m_; V *p1 = (V *) p1_, *p2 = (V *) p2_;
    V m0 = m[0], m1 = m[1], m2 = m[2], m3 = m[3];
    V a0 = p1[0], a1 = p1[1], a2 = p1[2], a3 = p1[3], q0 = p2[0], q1 = p2[1], q2 = p2[2], q3 = p2[3];
    for (long i = 0; i < nr; i++) {
        const V *d = (const V *) (e + i * S), *r = (const V *) (xx + i * S);
        V e0 = d[0], e1 = d[1], e2 = d[2], e3 = d[3];
        a0 += e0; a1 += e1; a2 += e2; a3 += e3;
        q0 += e0 * (r[0] - m0); q1 += e1 * (r[1] - m1); q2 += e2 * (r[2] - m2); q3 += e3 * (r[3] - m3);
    }
    p1[0] = a0; p1[1] = a1; p1[2] = a2; p1[3] = a3; p2[0] = q0; p2[1] = q1; p2[2] = q2; p2[3] = q3;
}
static void sums_rows(int RG) {
    memset(b1, 0, sizeof b1); memset(b2, 0, sizeof b2);
    for (long i = 0; i < P; i += RG) for (long c = 0; c < L; c += TLn) gs_tile(dy + i * S + c, x + i * S + c, i + RG <= P ? RG : P - i, mu + c, b1 + c, b2 + c);
    sink = b1[5] + b2[7];
}
static inline void gs_tileW(int W, const float *e, const float *xx, long nr, const float *m_, float *p1_, float *p2_) {
    V m[4], a[4], q[4];
    for (int v = 0; v < W; v++) { m[v] = ((const V *) m_)[v]; a[v] = ((V *) p1_)[v]; q[v] = ((V *) p2_)[v]; }
    for (long i = 0; i < nr; i++) {
        const V *d = (const V *) (e + i * S), *r = (const V *) (xx + i * S);
        for (int v = 0; v < W; v++) { V ee = d[v]; a[v] += ee; q[v] += ee * (r[v] - m[v]); }
    }
    for (int v = 0; v < W; v++) { ((V *) p1_)[v] = a[v]; ((V *) p2_)[v] = q[v]; }
}
static void sums_rowsW(int RG, int W) {
    memset(b1, 0, sizeof b1); memset(b2, 0, sizeof b2);
    for (long i = 0; i < P; i += RG) for (long c = 0; c < L; c += VL * W) {
        long n = i + RG <= P ? RG : P - i;
        if (W == 2) gs_tileW(2, dy + i * S + c, x + i * S + c, n, mu + c, b1 + c, b2 + c);
        else if (W == 1) gs_tileW(1, dy + i * S + c, x + i * S + c, n, mu + c, b1 + c, b2 + c);
        else gs_tileW(3, dy + i * S + c, x + i * S + c, n, mu + c, b1 + c, b2 + c); }
    sink = b1[5] + b2[7];
}
static void sums_cols(int RG) {
    memset(b1, 0, sizeof b1); memset(b2, 0, sizeof b2);
    for (long c = 0; c < L; c += TLn) for (long i = 0; i < P; i += RG) gs_tile(dy + i * S + c, x + i * S + c, RG, mu + c, b1 + c, b2 + c);
    sink = b1[5] + b2[7];
}
/* NT tiles side by side (acc in registers over all P rows), rows RS at a time
   (the row loop inner: tile t's rows i..i+RS, then tile t+1's) */
static inline void colsK(long c, int NT) {
    V a[4][4], q[4][4], m[4][4];
    for (int t = 0; t < NT; t++) for (int v = 0; v < 4; v++) { a[t][v] = (V){0}; q[t][v] = (V){0}; m[t][v] = *(V *) (mu + c + TLn * t + VL * v); }
    for (long i = 0; i < P; i++)
        for (int t = 0; t < NT; t++) {
            const V *d = (const V *) (dy + i * S + c + TLn * t), *r = (const V *) (x + i * S + c + TLn * t);
            for (int v = 0; v < 4; v++) { V e = d[v]; a[t][v] += e; q[t][v] += e * (r[v] - m[t][v]); }
        }
    for (int t = 0; t < NT; t++) for (int v = 0; v < 4; v++) { *(V *) (b1 + c + TLn * t + VL * v) = a[t][v]; *(V *) (b2 + c + TLn * t + VL * v) = q[t][v]; }
}
static void sums_colsK(int NT) {
    for (long c = 0; c + TLn * NT <= L; c += TLn * NT) { if (NT == 2) colsK(c, 2); else if (NT == 1) colsK(c, 1); else colsK(c, 3); }
    sink = b1[5] + b2[7];
}
/* sums with a 2-row tile of 8 vectors */
static void dx_planes(int rev, int chmaj) {
    for (long k = 0; k < P * G; k++) {
        long i, g;
        if (chmaj) { g = k / P; i = k % P; } else { i = k / G; g = k % G; }
        if (rev) i = P - 1 - i;
        long off = i * S + g * R; float k1 = 0.5f + g, k2 = 0.25f, k3 = 0.125f * g;
        for (long j = 0; j < R; j++) dx[off + j] = dy[off + j] * k1 + (x[off + j] * k2 + k3);
    }
}
static void rd2(void) { V s = {0}; for (long i = 0; i < P * S; i += VL) s += *(V *) (dy + i) + *(V *) (x + i); sink = s[0]; }
static void cp(void) { memcpy(dx, x, P * S * 4); }
static char *place(long off) { char *p = aligned_alloc(4096, P * S * 4 + 8192); return p + off; }
int main(int argc, char **argv) {
    long ox = atol(argv[1]), od = atol(argv[2]), oo = atol(argv[3]);
    x = (float *) place(ox); dy = (float *) place(od); dx = (float *) place(oo);
    for (long i = 0; i < P * S; i++) { x[i] = i % 13; dy[i] = i % 7; dx[i] = 0; }
    struct { const char *name; int k, a, b; } v[] = {
        {"read dy+x", 0, 0, 0}, {"memcpy 128K", 1, 0, 0},
        {"sums rows4", 2, 4, 0}, {"sums rows8", 2, 8, 0}, {"sums rows2", 2, 2, 0},
        {"sums cols16", 3, 16, 0}, {"sums cols8", 3, 8, 0}, {"sums cols4", 3, 4, 0},
        {"sums rows3", 2, 3, 0}, {"colsK1", 5, 1, 0}, {"colsK2", 5, 2, 0}, {"colsK3", 5, 3, 0},
        {"rows4 w2", 6, 4, 2}, {"rows8 w2", 6, 8, 2}, {"rows4 w1", 6, 4, 1}, {"rows8 w1", 6, 8, 1}, {"rows16 w1", 6, 16, 1}, {"rows2 w2", 6, 2, 2},
        {"dx rev", 4, 1, 0}, {"dx fwd", 4, 0, 0}, {"dx chmaj", 4, 0, 1},
    };
    int K = sizeof v / sizeof v[0];
    double best[32]; for (int k = 0; k < K; k++) best[k] = 1e9;
    for (int rep = 0; rep < 200; rep++)
        for (int k = 0; k < K; k++) {
            double t0 = now();
            for (int it = 0; it < 20; it++) {
                switch (v[k].k) { case 0: rd2(); break; case 1: cp(); break; case 2: sums_rows(v[k].a); break;
                                  case 3: sums_cols(v[k].a); break; case 4: dx_planes(v[k].a, v[k].b); break; case 5: sums_colsK(v[k].a); break; case 6: sums_rowsW(v[k].a, v[k].b); break; }
            }
            double t = (now() - t0) / 20; if (t < best[k]) best[k] = t;
        }
    printf("x+%ld dy+%ld dx+%ld (bytes past a page)\n", ox, od, oo);
    for (int k = 0; k < K; k++) printf("  %-12s %6.2f us\n", v[k].name, best[k] * 1e6);
}
