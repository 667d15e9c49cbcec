/* Probe: statistics of channels-first planes of R = 49 float32 (64x2048x7x7,
 * 25.7 MB), the planes path's per-plane walk and variants, against one read.
 *   ./planes P G R cold */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <immintrin.h>
#include <sys/mman.h>
static inline unsigned long long tsc(void) { unsigned lo, hi; __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)); return ((unsigned long long) hi << 32) | lo; }
static float *x, *k; static double *s1, *s2; static long P, G, R; static char *junk; static int cold_mode; static volatile float sink;
static inline float hs(__m512 v) {   /* the tree of the kernels' CKBN_PL_HS_F (as compiled) */
    __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    b = _mm_add_ps(b, _mm_movehl_ps(b, b));
    b = _mm_hadd_ps(b, b);
    return _mm_cvtss_f32(b);
}
static void rd(void) { __m512 s = _mm512_setzero_ps(); for (long i = 0; i + 16 <= P * G * R; i += 16) s = _mm512_add_ps(s, _mm512_loadu_ps(x + i)); sink = _mm512_reduce_add_ps(s); }
static void cur(void) {
    const float *p = x; long g = 0;
    for (long s = 0; s < P * G; s++, p += R) {
        __m512 kv = _mm512_set1_ps(k[g]), a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
        long i = 0;
        for (; i + 16 <= R; i += 16) { __m512 u = _mm512_sub_ps(_mm512_loadu_ps(p + i), kv); a = _mm512_add_ps(a, u); b = _mm512_fmadd_ps(u, u, b); }
        double u1 = hs(a), u2 = hs(b); float t1 = 0, t2 = 0;
        for (; i < R; i++) { float u = p[i] - k[g]; t1 += u; t2 += u * u; }
        s1[g] += u1 + (double) t1; s2[g] += u2 + (double) t2;
        g = g + 1 == G ? 0 : g + 1;
    }
}
/* 3 vectors + masked tail lane folded into the vector sums (different bits), one HS pair */
static void masked(void) {
    const float *p = x; long g = 0; long nv = R / 16, tail = R - nv * 16; __mmask16 m = (__mmask16) ((1u << tail) - 1);
    for (long s = 0; s < P * G; s++, p += R) {
        __m512 kv = _mm512_set1_ps(k[g]), a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
        for (long v = 0; v < nv; v++) { __m512 u = _mm512_sub_ps(_mm512_loadu_ps(p + 16 * v), kv); a = _mm512_add_ps(a, u); b = _mm512_fmadd_ps(u, u, b); }
        __m512 u = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, p + 16 * nv), kv); a = _mm512_add_ps(a, u); b = _mm512_fmadd_ps(u, u, b);
        s1[g] += hs(a); s2[g] += hs(b);
        g = g + 1 == G ? 0 : g + 1;
    }
}
/* the bound without the per-plane reductions: running vector sums only */
static void nohs(void) {
    const float *p = x; __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps(); long g = 0;
    for (long s = 0; s < P * G; s++, p += R) {
        __m512 kv = _mm512_set1_ps(k[g]);
        for (long i = 0; i + 16 <= R; i += 16) { __m512 u = _mm512_sub_ps(_mm512_loadu_ps(p + i), kv); a = _mm512_add_ps(a, u); b = _mm512_fmadd_ps(u, u, b); }
        g = g + 1 == G ? 0 : g + 1;
    }
    sink = hs(a) + hs(b);
}
/* 16 planes at a time: each plane's 3 vectors summed, then the 16 a's and 16 b's
   transposed-reduced with the same tree per plane (same bits as cur's HS) */
static void cur_pf(void) {
    const float *p = x; long g = 0;
    for (long s = 0; s < P * G; s++, p += R) {
        __builtin_prefetch(p + 1024, 0, 3);
        __m512 kv = _mm512_set1_ps(k[g]), a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
        long i = 0;
        for (; i + 16 <= R; i += 16) { __m512 u = _mm512_sub_ps(_mm512_loadu_ps(p + i), kv); a = _mm512_add_ps(a, u); b = _mm512_fmadd_ps(u, u, b); }
        double u1 = hs(a), u2 = hs(b); float t1 = 0, t2 = 0;
        for (; i < R; i++) { float u = p[i] - k[g]; t1 += u; t2 += u * u; }
        s1[g] += u1 + (double) t1; s2[g] += u2 + (double) t2;
        g = g + 1 == G ? 0 : g + 1;
    }
}

typedef float f16v __attribute__((vector_size(64)));
typedef float f16u __attribute__((vector_size(64), aligned(4)));
/* 16 planes' vectors -> one vector of their 16 sums by the halves tree, plane j in lane j */
static inline f16v tr16(const f16v *a) {
    f16v c[8], d[4], e[2], f;
    for (int i = 0; i < 8; i++)   /* lanes 0-7: plane 2i, 8-15: plane 2i+1; j + (j+8) */
        c[i] = __builtin_shufflevector(a[2*i], a[2*i+1], 0,1,2,3,4,5,6,7, 16,17,18,19,20,21,22,23)
             + __builtin_shufflevector(a[2*i], a[2*i+1], 8,9,10,11,12,13,14,15, 24,25,26,27,28,29,30,31);
    for (int i = 0; i < 4; i++)   /* blocks of 4: planes 4i, 4i+1, 4i+2, 4i+3; j + (j+4) */
        d[i] = __builtin_shufflevector(c[2*i], c[2*i+1], 0,1,2,3, 8,9,10,11, 16,17,18,19, 24,25,26,27)
             + __builtin_shufflevector(c[2*i], c[2*i+1], 4,5,6,7, 12,13,14,15, 20,21,22,23, 28,29,30,31);
    for (int i = 0; i < 2; i++)   /* pairs: planes 8i..8i+7; j + (j+2) */
        e[i] = __builtin_shufflevector(d[2*i], d[2*i+1], 0,1, 4,5, 8,9, 12,13, 16,17, 20,21, 24,25, 28,29)
             + __builtin_shufflevector(d[2*i], d[2*i+1], 2,3, 6,7, 10,11, 14,15, 18,19, 22,23, 26,27, 30,31);
    /* singles: plane j in lane j; j + (j+1) */
    f = __builtin_shufflevector(e[0], e[1], 0,2,4,6,8,10,12,14, 16,18,20,22,24,26,28,30)
      + __builtin_shufflevector(e[0], e[1], 1,3,5,7,9,11,13,15, 17,19,21,23,25,27,29,31);
    return f;
}
static void batched(void) {
    long nv = R / 16, t = R - nv * 16;
    f16v zero = {0}, tm; for (int j = 0; j < 16; j++) tm[j] = j >= 16 - t ? 1.0f : 0.0f;
    for (long s0 = 0; s0 < P * G; s0 += G) {
        const float *p = x + s0 * R;
        long g = 0;
        for (; g + 16 <= G; g += 16) {
            f16v a[16], b[16];
            for (int q = 0; q < 16; q++, p += R) {
                f16v kv = zero + k[g + q], aa = zero, bb = zero;
                for (long v = 0; v < nv; v++) { f16v u = *(const f16u *) (p + 16 * v) - kv; aa += u; bb += u * u; }
                if (t) { f16v u = (*(const f16u *) (p + R - 16) - kv) * tm; aa += u; bb += u * u; }
                a[q] = aa; b[q] = bb;
            }
            f16v fa = tr16(a), fb = tr16(b);
            for (int j = 0; j < 16; j++) { s1[g + j] += fa[j]; s2[g + j] += fb[j]; }
        }
    }
}

typedef double d4v __attribute__((vector_size(32)));
typedef double d4u __attribute__((vector_size(32), aligned(8)));
typedef float f4v __attribute__((vector_size(16)));
typedef float f8v __attribute__((vector_size(32)));
/* 4 planes' vectors -> their 4 sums by the halves tree (plane q in lane q) */
static inline f4v tr4(f16v a0, f16v a1, f16v a2, f16v a3) {
    f16v c0 = __builtin_shufflevector(a0, a1, 0,1,2,3,4,5,6,7, 16,17,18,19,20,21,22,23)
            + __builtin_shufflevector(a0, a1, 8,9,10,11,12,13,14,15, 24,25,26,27,28,29,30,31);
    f16v c1 = __builtin_shufflevector(a2, a3, 0,1,2,3,4,5,6,7, 16,17,18,19,20,21,22,23)
            + __builtin_shufflevector(a2, a3, 8,9,10,11,12,13,14,15, 24,25,26,27,28,29,30,31);
    f16v d = __builtin_shufflevector(c0, c1, 0,1,2,3, 8,9,10,11, 16,17,18,19, 24,25,26,27)
           + __builtin_shufflevector(c0, c1, 4,5,6,7, 12,13,14,15, 20,21,22,23, 28,29,30,31);
    /* d: block q = plane q's 4 partials; j + (j+2), then j + (j+1), within blocks */
    f8v e = __builtin_shufflevector(d, d, 0,1, 4,5, 8,9, 12,13) + __builtin_shufflevector(d, d, 2,3, 6,7, 10,11, 14,15);
    f4v f = __builtin_shufflevector(e, e, 0, 2, 4, 6) + __builtin_shufflevector(e, e, 1, 3, 5, 7);
    return f;
}
static void batched4(void) {
    long nv = R / 16, t = R - nv * 16;
    f16v zero = {0}, tm; for (int j = 0; j < 16; j++) tm[j] = j >= 16 - t ? 1.0f : 0.0f;
    for (long s0 = 0; s0 < P * G; s0 += G) {
        const float *p = x + s0 * R;
        long g = 0;
        for (; g + 4 <= G; g += 4) {
            f16v a[4], b[4];
            for (int q = 0; q < 4; q++, p += R) {
                f16v kv = zero + k[g + q], aa = zero, bb = zero;
                for (long v = 0; v < nv; v++) { f16v u = *(const f16u *) (p + 16 * v) - kv; aa += u; bb += u * u; }
                if (t) { f16v u = (*(const f16u *) (p + R - 16) - kv) * tm; aa += u; bb += u * u; }
                a[q] = aa; b[q] = bb;
            }
            f4v fa = tr4(a[0], a[1], a[2], a[3]), fb = tr4(b[0], b[1], b[2], b[3]);
            d4v da = __builtin_convertvector(fa, d4v), db = __builtin_convertvector(fb, d4v);
            *(d4u *) (s1 + g) += da; *(d4u *) (s2 + g) += db;
        }
    }
}
static void cold(void) { if (cold_mode) for (long i = 0; i < (64L << 20); i += 64) junk[i]++; else rd(); }
static int cmp(const void *a, const void *b) { double d = *(double *) a - *(double *) b; return d < 0 ? -1 : d > 0; }
int main(int argc, char **argv) {
    P = atol(argv[1]); G = atol(argv[2]); R = atol(argv[3]); cold_mode = atoi(argv[4]);
    size_t bytes = (P * G * R * 4 + (2 << 20)) & ~((2UL << 20) - 1);
    x = aligned_alloc(2 << 20, bytes); madvise(x, bytes, MADV_HUGEPAGE);
    for (long i = 0; i < P * G * R; i++) x[i] = (float) (i % 977) * 0.01f;
    k = calloc(G, 4); s1 = calloc(G, 8); s2 = calloc(G, 8); junk = malloc(64L << 20); memset(junk, 1, 64L << 20);
    void (*f[])(void) = {rd, cur, masked, batched4, batched}; const char *nm[] = {"read", "current", "masked tail", "batched 4", "batched 16"};
    int F = 5; double t[5][21];
    for (int r = 0; r < 21; r++) for (int j = 0; j < F; j++) { cold(); unsigned long long t0 = tsc(); f[j](); t[j][r] = (double) (tsc() - t0); }
    printf("%ldx%ldx%ld %s:", P, G, R, cold_mode ? "cold" : "read first");
    for (int j = 0; j < F; j++) { qsort(t[j], 21, 8, cmp); printf(" %s %.2f", nm[j], t[j][10] / t[0][10]); }
    printf(" (read %.0f us)\n", t[0][10] / 2596); return 0;
}
