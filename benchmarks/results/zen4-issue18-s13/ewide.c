/* Probe: channels-last inference y = x * a[c] + b[c] on N rows of C float32
 * lanes (64x7x7x2048: N = 3136, C = 2048, 25.7 MB), one thread, against a
 * copy (memcpy, and a plain vector loop).  Variants: whole rows (as the
 * kernels' units), and column blocks of B lanes walked down a unit of U rows
 * (the coefficient rows the block needs: B * 8 bytes instead of C * 8).
 * x sits OFF bytes past a 64-byte line, y on a line (empty_aligned).
 *   gcc -O3 -mavx512f -mavx512vl -mavx512bw -mavx512dq -mfma \
 *       -mprefer-vector-width=256 -ffp-contract=fast ewide.c -o ewide
 *   ./ewide N C OFF
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static float *x, *y, *a, *b;
static long N, C;

static void copy_memcpy(void) { memcpy(y, x, N * C * 4); }
static void copy_loop(void) { long n = N * C; for (long i = 0; i < n; i++) y[i] = x[i] + 0.0f; }
static void __attribute__((noinline)) row(const float *xr, float *yr, const float *ar, const float *br, long n) {
    for (long j = 0; j < n; j++) yr[j] = xr[j] * ar[j] + br[j];
}
static long PD = 256;
typedef float V8 __attribute__((vector_size(32), aligned(4), may_alias));
static void __attribute__((noinline)) row_pf(const float *xr, float *yr, const float *ar, const float *br, long n, int w) {
    long j = 0;
    for (; j + 16 <= n; j += 16) {
        if (w != 2) __builtin_prefetch(xr + j + PD, 0, 3);
        if (w) __builtin_prefetch(yr + j + PD, 1, 3);
        *(V8 *) (yr + j) = *(const V8 *) (xr + j) * *(const V8 *) (ar + j) + *(const V8 *) (br + j);
        *(V8 *) (yr + j + 8) = *(const V8 *) (xr + j + 8) * *(const V8 *) (ar + j + 8) + *(const V8 *) (br + j + 8);
    }
    for (; j < n; j++) yr[j] = xr[j] * ar[j] + br[j];
}
static long PIECE = 256;
static void rows_piece(void) {
    long n = N * C;
    for (long r = 0; r < N; r++) {
        const float *xr = x + r * C; float *yr = y + r * C;
        for (long j = 0; j < C; j += PIECE) {
            long m = j + PIECE <= C ? PIECE : C - j;
            /* the piece PD floats ahead, in the flat array (next row included) */
            long f = r * C + j + PD;
            if (f < n)
                for (long l = 0; l < PIECE; l += 16) { __builtin_prefetch(x + f + l, 0, 3); __builtin_prefetch(y + f + l, 1, 3); }
            row(xr + j, yr + j, a + j, b + j, m);
        }
    }
}
static void rows_pf(int w) { for (long r = 0; r < N; r++) row_pf(x + r * C, y + r * C, a, b, C, w); }
/* row groups: RG rows walked together, one line (16 lanes) of each row at a
   time, the coefficient line loaded once for the group; pf: prefetch each
   row's line PD floats ahead. */
static void rowgroup(int RG, int pf) {
    for (long r0 = 0; r0 < N; r0 += RG) {
        int nr = r0 + RG <= N ? RG : (int) (N - r0);
        for (long c = 0; c + 16 <= C; c += 16) {
            V8 a0 = *(const V8 *) (a + c), a1 = *(const V8 *) (a + c + 8);
            V8 b0 = *(const V8 *) (b + c), b1 = *(const V8 *) (b + c + 8);
            for (int i = 0; i < nr; i++) {
                const float *xr = x + (r0 + i) * C + c; float *yr = y + (r0 + i) * C + c;
                if (pf) { __builtin_prefetch(xr + PD); __builtin_prefetch(yr + PD); }
                *(V8 *) yr = *(const V8 *) xr * a0 + b0;
                *(V8 *) (yr + 8) = *(const V8 *) (xr + 8) * a1 + b1;
            }
        }
    }
}
/* row groups of RG rows, pieces of P lanes: the row loop (a call) per piece */
static void rowgroup_pieces(int RG, long P) {
    for (long r0 = 0; r0 < N; r0 += RG) {
        int nr = r0 + RG <= N ? RG : (int) (N - r0);
        for (long c = 0; c < C; c += P) {
            long n = c + P <= C ? P : C - c;
            for (int i = 0; i < nr; i++)
                row(x + (r0 + i) * C + c, y + (r0 + i) * C + c, a + c, b + c, n);
        }
    }
}
static void rows(void) { for (long r = 0; r < N; r++) row(x + r * C, y + r * C, a, b, C); }
static void blocks(long B, long U) {
    for (long r0 = 0; r0 < N; r0 += U) {
        long r1 = r0 + U < N ? r0 + U : N;
        for (long c = 0; c < C; c += B) {
            long n = c + B <= C ? B : C - c;
            for (long r = r0; r < r1; r++) row(x + r * C + c, y + r * C + c, a + c, b + c, n);
        }
    }
}
int main(int argc, char **argv) {
    N = argc > 1 ? atol(argv[1]) : 3136; C = argc > 2 ? atol(argv[2]) : 2048;
    long off = argc > 3 ? atol(argv[3]) : 16; PD = argc > 4 ? atol(argv[4]) : 256; PIECE = argc > 5 ? atol(argv[5]) : 256;
    char *bx = aligned_alloc(4096, (N * C * 4 + 4096 + 4095) / 4096 * 4096);
    x = (float *) (bx + off);
    y = aligned_alloc(64, (N * C * 4 + 63) / 64 * 64);
    a = aligned_alloc(64, C * 4 + 64); b = aligned_alloc(64, C * 4 + 64);
    for (long i = 0; i < N * C; i++) { x[i] = (i % 1000) * 0.001f; y[i] = 0; }
    for (long c = 0; c < C; c++) { a[c] = 1.5f; b[c] = 0.25f; }
    const char *names[] = {"memcpy", "copy loop", "rows", "B1024 U256", "B512 U256", "B256 U256", "B1024 U64", "B512 U64", "B1024 U16", "rows pf x", "rows pf x+w", "rows pf w", "rows piece", "RG2", "RG4", "RG2 pf", "RG4 pf", "RG8 pf", "RG4 P64", "RG4 P128", "RG4 P256"};
    int K = 21, reps = 30;
    double tot[32] = {0};
    for (int rep = 0; rep < reps; rep++)
        for (int k = 0; k < K; k++) {
            double t = now();
            switch (k) {
            case 0: copy_memcpy(); break; case 1: copy_loop(); break; case 2: rows(); break;
            case 3: blocks(1024, 256); break; case 4: blocks(512, 256); break; case 5: blocks(256, 256); break;
            case 6: blocks(1024, 64); break; case 7: blocks(512, 64); break; case 8: blocks(1024, 16); break; case 9: rows_pf(0); break; case 10: rows_pf(1); break; case 11: rows_pf(2); break; case 12: rows_piece(); break; case 13: rowgroup(2, 0); break; case 14: rowgroup(4, 0); break; case 15: rowgroup(2, 1); break; case 16: rowgroup(4, 1); break; case 17: rowgroup(8, 1); break; case 18: rowgroup_pieces(4, 64); break; case 19: rowgroup_pieces(4, 128); break; case 20: rowgroup_pieces(4, 256); break;
            }
            tot[k] += now() - t;
        }
    printf("N=%ld C=%ld off=%ld (%.1f MB), mean of %d, round robin\n", N, C, off, N * C * 4 / 1e6, reps);
    for (int k = 0; k < K; k++) printf("%-12s %8.0f us  x memcpy %.2f\n", names[k], tot[k] / reps * 1e6, tot[k] / tot[0]);
    return 0;
}
