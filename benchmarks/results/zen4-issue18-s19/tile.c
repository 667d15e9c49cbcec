/* Wide-row statistics tile walks, in L2 and beyond: which shape of walk
   runs at the read's speed?  float32 rows of W lanes, nr rows. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
typedef float V __attribute__((vector_size(64), aligned(4), may_alias));
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }

static float rd(const float *x, long n) {
    V a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    for (long i = 0; i < n; i += 64) {
        const V *r = (const V *) (x + i);
        a0 += r[0]; a1 += r[1]; a2 += r[2]; a3 += r[3];
    }
    V s = a0 + a1 + a2 + a3; float t = 0; for (int j = 0; j < 16; j++) t += s[j]; return t;
}

/* tiles of TV vectors, groups of G rows; b1, b2, sh: W lanes */
#define TILE(NAME, TV)                                                                  \
static void NAME(const float *x, long nr, long W, long G, const float *sh, float *b1, float *b2) \
{                                                                                       \
    for (long g0 = 0; g0 < nr; g0 += G) {                                               \
        long g1 = g0 + G < nr ? g0 + G : nr;                                            \
        for (long c = 0; c < W; c += 16 * TV) {                                         \
            V k[TV], a[TV], q[TV];                                                      \
            for (int v = 0; v < TV; v++) { k[v] = *(const V *) (sh + c + 16 * v);       \
                a[v] = *(V *) (b1 + c + 16 * v); q[v] = *(V *) (b2 + c + 16 * v); }     \
            for (long i = g0; i < g1; i++) {                                            \
                const V *r = (const V *) (x + i * W + c);                               \
                for (int v = 0; v < TV; v++) { V d = r[v] - k[v]; a[v] += d; q[v] += d * d; } \
            }                                                                           \
            for (int v = 0; v < TV; v++) { *(V *) (b1 + c + 16 * v) = a[v]; *(V *) (b2 + c + 16 * v) = q[v]; } \
        }                                                                               \
    }                                                                                   \
}
TILE(t4, 4)
TILE(t8, 8)
TILE(t2, 2)

/* memory order, two rows at a time, accumulators in memory */
static void mo2(const float *x, long nr, long W, long G, const float *sh, float *b1, float *b2)
{
    (void) G;
    long i = 0;
    for (; i + 2 <= nr; i += 2) {
        const V *r0 = (const V *) (x + i * W), *r1 = (const V *) (x + (i + 1) * W);
        for (long v = 0; v < W / 16; v++) {
            V k = ((const V *) sh)[v];
            V d0 = r0[v] - k, d1 = r1[v] - k;
            ((V *) b1)[v] += d0 + d1;   /* (not the same order: probe only) */
            ((V *) b2)[v] += d0 * d0 + d1 * d1;
        }
    }
}

int main(int argc, char **argv) {
    long W = atol(argv[1]), nr = atol(argv[2]);
    long n = W * nr;
    float *x = aligned_alloc(64, n * 4), *sh = aligned_alloc(64, W * 4), *b1 = aligned_alloc(64, W * 4), *b2 = aligned_alloc(64, W * 4);
    for (long i = 0; i < n; i++) x[i] = (float) ((i * 7919) % 1000) * 0.001f;
    for (long j = 0; j < W; j++) { sh[j] = x[j]; b1[j] = b2[j] = 0; }
    int inner = (int) (4000000 / n) + 1;
    volatile float sink = 0;
    struct { const char *name; void (*f)(const float *, long, long, long, const float *, float *, float *); long G; } vs[] = {
        {"t4 G8", t4, 8}, {"t4 G16", t4, 16}, {"t4 G32", t4, 32}, {"t4 G64", t4, 64},
        {"t8 G8", t8, 8}, {"t8 G16", t8, 16}, {"t8 G64", t8, 64}, {"t2 G8", t2, 8}, {"t2 G32", t2, 32}, {"mo2", mo2, 2}};
    int nv = sizeof vs / sizeof vs[0];
    double best_r = 1e9, best[16]; for (int v = 0; v < nv; v++) best[v] = 1e9;
    for (int rep = 0; rep < 25; rep++) {
        double t0 = now(); for (int k = 0; k < inner; k++) sink += rd(x, n); double t = (now() - t0) / inner; if (t < best_r) best_r = t;
        for (int v = 0; v < nv; v++) {
            t0 = now(); for (int k = 0; k < inner; k++) vs[v].f(x, nr, W, vs[v].G, sh, b1, b2); t = (now() - t0) / inner;
            if (t < best[v]) best[v] = t;
        }
    }
    printf("%ldx%ld (%ld KiB): read %.1f us;", nr, W, n * 4 / 1024, best_r * 1e6);
    for (int v = 0; v < nv; v++) printf(" %s %.2f", vs[v].name, best[v] / best_r);
    printf("\n");
    return (int) sink & 0;
}
