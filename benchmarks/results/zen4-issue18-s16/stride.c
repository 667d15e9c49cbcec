/* Probe: 8-row register-tile statistics walk of N rows of C float32 lanes,
 * rows S floats apart (S = C: contiguous, as ckbn sees them; S > C: padded),
 * THP-backed, against one sequential read of the same bytes.
 *   gcc -O3 -march=native stride.c -o stride ; ./stride N C PAD */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
typedef float V __attribute__((vector_size(64), aligned(4), may_alias));
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static float *x, *sh, *a1, *a2; static char *junk;
static long N, C, S;
static volatile float sink;
static void rd(void) {
    V s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    for (long r = 0; r < N; r++) { const float *p = x + r * S;
        for (long i = 0; i + 64 <= C; i += 64) {
            s0 += *(V *) (p + i); s1 += *(V *) (p + i + 16); s2 += *(V *) (p + i + 32); s3 += *(V *) (p + i + 48);
        } }
    V s = s0 + s1 + s2 + s3; sink = s[0];
}
static void walk(long RG, int skew) {
    for (long r0 = 0; r0 < N; r0 += RG) {
        long r1 = r0 + RG < N ? r0 + RG : N;
        for (long c = 0; c + 64 <= C; c += 64) {
            V m[4], p[4], q[4];
            for (int v = 0; v < 4; v++) { m[v] = *(V *) (sh + c + 16 * v); p[v] = *(V *) (a1 + c + 16 * v); q[v] = *(V *) (a2 + c + 16 * v); }
            for (long r = r0; r < r1; r++) { const float *pp = x + r * S + c;
                for (int v = 0; v < 4; v++) { V d = *(V *) (pp + 16 * v) - m[v]; p[v] += d; q[v] += d * d; } }
            for (int v = 0; v < 4; v++) { *(V *) (a1 + c + 16 * v) = p[v]; *(V *) (a2 + c + 16 * v) = q[v]; }
        }
    }
    sink = a1[0] + a2[0];
}
static void cold(void) { for (long i = 0; i < (64L << 20); i += 64) junk[i]++; }
static int cmp(const void *a, const void *b) { double d = *(double *) a - *(double *) b; return d < 0 ? -1 : d > 0; }
int main(int argc, char **argv) {
    N = atol(argv[1]); C = atol(argv[2]); S = C + atol(argv[3]); int thp = argc > 4 ? atoi(argv[4]) : 1;
    size_t bytes = (N * S * 4 + (2 << 20)) & ~((2UL << 20) - 1);
    x = aligned_alloc(2 << 20, bytes); madvise(x, bytes, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    for (long i = 0; i < N * S; i++) x[i] = (float) (i % 977) * 0.01f;
    sh = calloc(C, 4); a1 = calloc(C, 4); a2 = calloc(C, 4); junk = malloc(64L << 20); memset(junk, 1, 64L << 20);
    double tr[21], tw[21], tw4[21];
    for (int k = 0; k < 21; k++) {
        double t;
        cold(); t = now(); rd(); tr[k] = now() - t;
        cold(); t = now(); walk(8, 0); tw[k] = now() - t;
        cold(); t = now(); walk(4, 0); tw4[k] = now() - t;
    }
    qsort(tr, 21, 8, cmp); qsort(tw, 21, 8, cmp); qsort(tw4, 21, 8, cmp);
    printf("N=%ld C=%ld S=%ld thp=%d  read %.0f us  walk8 %.0f us (%.2fx)  walk4 %.0f us (%.2fx)\n", N, C, S, thp,
           tr[10] * 1e6, tw[10] * 1e6, tw[10] / tr[10], tw4[10] * 1e6, tw4[10] / tr[10]);
    return 0;
}
