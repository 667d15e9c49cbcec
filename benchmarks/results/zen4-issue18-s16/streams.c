/* Probe: read N rows of C float32 (contiguous, THP) as groups of K rows
 * walked B bytes of each row at a time (K interleaved streams), pure sums,
 * against one sequential read.  ./streams N C */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
typedef float V __attribute__((vector_size(64), aligned(4), may_alias));
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static float *x; static char *junk; static long N, C; static volatile float sink;
static void walk(long K, long B) {
    V s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    long L = B / 4;
    for (long r0 = 0; r0 < N; r0 += K)
        for (long c = 0; c < C; c += L)
            for (long r = r0; r < r0 + K && r < N; r++) { const float *p = x + r * C + c;
                for (long i = 0; i < L; i += 64) { s0 += *(V *) (p + i); s1 += *(V *) (p + i + 16); s2 += *(V *) (p + i + 32); s3 += *(V *) (p + i + 48); } }
    V s = s0 + s1 + s2 + s3; sink = s[0];
}
static void cold(void) { for (long i = 0; i < (64L << 20); i += 64) junk[i]++; }
static int cmp(const void *a, const void *b) { double d = *(double *) a - *(double *) b; return d < 0 ? -1 : d > 0; }
int main(int argc, char **argv) {
    N = atol(argv[1]); C = atol(argv[2]);
    size_t bytes = (N * C * 4 + (2 << 20)) & ~((2UL << 20) - 1);
    x = aligned_alloc(2 << 20, bytes); madvise(x, bytes, MADV_HUGEPAGE);
    for (long i = 0; i < N * C; i++) x[i] = (float) (i % 977) * 0.01f;
    junk = malloc(64L << 20); memset(junk, 1, 64L << 20);
    long Ks[] = {1, 2, 4, 8, 16}; long Bs[] = {256, 1024, 4096};
    double base = 0;
    for (int ki = 0; ki < 5; ki++) for (int bi = 0; bi < 3; bi++) {
        if (ki == 0 && bi > 0) continue;
        double t[15];
        for (int k = 0; k < 15; k++) { cold(); double t0 = now(); walk(Ks[ki], ki == 0 ? C * 4 : Bs[bi]); t[k] = now() - t0; }
        qsort(t, 15, 8, cmp); if (ki == 0) base = t[7];
        printf("K=%2ld B=%5ld  %.0f us  %.2fx\n", Ks[ki], ki == 0 ? C * 4 : Bs[bi], t[7] * 1e6, t[7] / base);
    }
    return 0;
}
