/*
 * ckbn_kernel_helpers.h -- the C helpers of ckbn's kernels (private).
 *
 * Included by pyx/ckbn/_k_common.pxi, so once per kernel variant
 * (_kernels_base/_avx2/_avx512), each compiled with its own -m flags: the
 * macros below pick what that instruction set offers.
 *
 *   CKBN_HAVE_OPENMP    whether the module is built with OpenMP; ckbn_thread()
 *                       the calling thread's number in the parallel region.
 *   CKBN_HAVE_F16C      float16 <-> float32 row converters (F16C): ckbn_h2f,
 *                       ckbn_f2h (round to nearest even, like NumPy).
 *   CKBN_HAVE_TILES     register tiles: four vectors of lanes whose sums stay
 *                       in registers while they walk a block of rows
 *                       (ckbn_mom_tile_*: statistics, ckbn_gs_tile_*:
 *                       backward sums, ckbn_gs_act_tile_*: backward sums
 *                       through ReLU/ReLU6/leaky ReLU, with
 *                       ckbn_gs_act_vecs_* for single vectors after the
 *                       tiles).  CKBN_TILE_F32/F64 lanes per tile
 *                       (0 where the compiler has no vector extensions).
 *   CKBN_GS_COLS_TILES  tiles side by side in one walk of the small
 *                       channels-first backward's sums (ckbn_gs_cols3/2_f32;
 *                       3 with AVX-512's 32 vector registers, else 1: the
 *                       four-row walk of ckbn_gs_tile_f32); ckbn_fold_f32
 *                       folds a channel's float32 lane sums in registers.
 *   CKBN_VBYTES         bytes per vector of this variant (64, 32 or 16).
 *   CKBN_PF_TILE        a prefetch hint (into L2) for each line of one
 *                       tile row: the reductions' register tiles on wide
 *                       rows hint the next row group's lines as they walk.
 *   ckbn_affine_rg_*, ckbn_dx_rg_*  the element-wise passes over a group of
 *                       rows, a line of lanes at a time (CKBN_HAVE_EW_RG).
 *   ckbn_cache_bytes(l) the size of the level-l data cache of this CPU (1, 2
 *                       or 3; per core for L1/L2), from Linux's sysfs, else
 *                       sysconf (which asks cpuid on x86), or a small default
 *                       where neither says anything.
 *   ckbn_swish_f32/f64  swish in place, z -> z*sigmoid(z), or its derivative,
 *                       z -> sigmoid(z)*(1 + z*(1 - sigmoid(z))), in whole
 *                       vectors (the tail through a padded vector, so every
 *                       element takes the same arithmetic wherever it sits).
 *   ckbn_sw_*           the element-wise passes and the backward sums with
 *                       swish, a block of CKBN_SW_BLOCK values at a time (not
 *                       inlined: their stack block and exp stay out of the
 *                       other passes' code).
 *   ckbn_touch          read runs of bytes one byte per 64-byte line, in
 *                       memory order (a block the reductions' register tiles
 *                       then walk column by column).
 *
 * Not part of the public ABI (that is ckbn/include/ckbn_kernels.h).
 */
#ifndef CKBN_KERNEL_HELPERS_H
#define CKBN_KERNEL_HELPERS_H

#include <stddef.h>
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif
#if defined(__linux__)
#include <stdio.h>
#include <string.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#define CKBN_HAVE_OPENMP 1
static inline int ckbn_thread(void) { return omp_get_thread_num(); }
#else
#define CKBN_HAVE_OPENMP 0
static inline int ckbn_thread(void) { return 0; }
#endif

/* ---- cache sizes -------------------------------------------------------- */

/* The size of CPU 0's level-`level` data (or unified) cache from Linux's
   sysfs (/sys/devices/system/cpu/cpu0/cache/index<i>/{level,type,size}, the
   size as "32K" or "1M"); 0 where it cannot be read.  sysfs first: glibc's
   sysconf reported 320 MiB of L3 on the AMD EPYC Zen 4 guest whose sysfs and
   lscpu say 32 MiB. */
static long ckbn_sysfs_cache_bytes(int level)
{
#if defined(__linux__)
    char path[96], buf[32];
    for (int i = 0; i < 16; i++) {
        long lvl = 0, size = 0;
        FILE *f;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", i);
        if ((f = fopen(path, "r")) == NULL)
            break;
        if (fscanf(f, "%ld", &lvl) != 1)
            lvl = 0;
        fclose(f);
        if (lvl != level)
            continue;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/type", i);
        if ((f = fopen(path, "r")) == NULL)
            continue;
        buf[0] = 0;
        if (fscanf(f, "%31s", buf) != 1)
            buf[0] = 0;
        fclose(f);
        if (strcmp(buf, "Data") != 0 && strcmp(buf, "Unified") != 0)
            continue;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
        if ((f = fopen(path, "r")) == NULL)
            continue;
        buf[0] = 0;
        if (fscanf(f, "%ld%31s", &size, buf) < 1)
            size = 0;
        fclose(f);
        if (buf[0] == 'K')
            size <<= 10;
        else if (buf[0] == 'M')
            size <<= 20;
        else if (buf[0] == 'G')
            size <<= 30;
        if (size > 0)
            return size;
    }
#endif
    return 0;
}

static long ckbn_cache_bytes(int level)
{
    long v = ckbn_sysfs_cache_bytes(level);
    if (v > 0)
        return v;
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE) && defined(_SC_LEVEL3_CACHE_SIZE)
    v = sysconf(level == 1 ? _SC_LEVEL1_DCACHE_SIZE
                : level == 2 ? _SC_LEVEL2_CACHE_SIZE : _SC_LEVEL3_CACHE_SIZE);
#endif
    if (v > 0)
        return v;
    /* The smallest of the machines measured (benchmarks/RESULTS.md). */
    return level == 1 ? 32768L : level == 2 ? 524288L : 8388608L;
}

/* ---- float16 <-> float32 ---------------------------------------------- */

#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#define CKBN_HAVE_F16C 1
static void ckbn_h2f(const unsigned short *s, float *d, ptrdiff_t n)
{
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (s + i))));
    for (; i < n; i++)
        d[i] = _cvtsh_ss(s[i]);
}
static void ckbn_f2h(const float *s, unsigned short *d, ptrdiff_t n)
{
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *) (d + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        d[i] = _cvtss_sh(s[i], _MM_FROUND_TO_NEAREST_INT);
}
#else
#define CKBN_HAVE_F16C 0
static void ckbn_h2f(const unsigned short *s, float *d, ptrdiff_t n)
{
    (void) s; (void) d; (void) n;
}
static void ckbn_f2h(const float *s, unsigned short *d, ptrdiff_t n)
{
    (void) s; (void) d; (void) n;
}
#endif

/* ---- software prefetch ------------------------------------------------- */

/* The reductions' register tiles walk a group of wide rows (ROW_GROUP rows
   S apart, or half as many of each of two arrays) four vectors at a time:
   that many short strided streams, which run at 1.5-2x the time of one read
   in memory order (on AMD Zen 4 a read of THP-backed memory, as NumPy's
   large arrays are, gains most).  Each tile row walked hints one tile row of
   the next group, taken in memory order (_tile_pf in _k_rows.pxi), so the
   whole next group is asked for, line after line, while this one is summed.
   Hints go to L2 (locality 2: prefetcht1); they never fault. */
#if defined(__GNUC__)
#define CKBN_PREFETCH(p) __builtin_prefetch((const void *) (p), 0, 2)
#else
#define CKBN_PREFETCH(p) ((void) (p))
#endif

/* ---- register tiles ---------------------------------------------------- */

#if defined(__AVX512F__)
#define CKBN_VBYTES 64
#elif defined(__AVX__)
#define CKBN_VBYTES 32
#else
#define CKBN_VBYTES 16
#endif

#if defined(__GNUC__)
#define CKBN_HAVE_TILES 1
typedef float ckbn_vf __attribute__((vector_size(CKBN_VBYTES), aligned(4), may_alias));
typedef double ckbn_vd __attribute__((vector_size(CKBN_VBYTES), aligned(8), may_alias));
#define CKBN_TILE_F32 (CKBN_VBYTES)
#define CKBN_TILE_F64 (CKBN_VBYTES / 2)

/* The lines of one tile row (four vectors) at p. */
#define CKBN_PF_TILE(p)                                                        \
    do {                                                                       \
        const char *f_ = (const char *) (p);                                   \
        for (int l_ = 0; l_ < 4 * CKBN_VBYTES; l_ += 64)                       \
            CKBN_PREFETCH(f_ + l_);                                            \
    } while (0)

/* b1 += sum_i (x_i - sh), b2 += sum_i (x_i - sh)^2 over rows x + i*S.
   pf != NULL: row i also hints the tile row at pf + i*pfs (CKBN_PF_TILE). */
#define CKBN_MOM_TILE(NAME, T, V)                                              \
static void NAME(const T *x, ptrdiff_t S, ptrdiff_t nr, const T *sh,           \
                 T *b1, T *b2, const T *pf, ptrdiff_t pfs)                     \
{                                                                              \
    const V *k = (const V *) sh;                                               \
    V *p1 = (V *) b1, *p2 = (V *) b2;                                          \
    V k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3];                              \
    V a0 = p1[0], a1 = p1[1], a2 = p1[2], a3 = p1[3];                          \
    V q0 = p2[0], q1 = p2[1], q2 = p2[2], q3 = p2[3];                          \
    for (ptrdiff_t i = 0; i < nr; i++) {                                       \
        const V *r = (const V *) (x + i * S);                                  \
        if (pf)                                                                \
            CKBN_PF_TILE(pf + i * pfs);                                        \
        V d0 = r[0] - k0, d1 = r[1] - k1, d2 = r[2] - k2, d3 = r[3] - k3;      \
        a0 += d0; a1 += d1; a2 += d2; a3 += d3;                                \
        q0 += d0 * d0; q1 += d1 * d1; q2 += d2 * d2; q3 += d3 * d3;            \
    }                                                                          \
    p1[0] = a0; p1[1] = a1; p1[2] = a2; p1[3] = a3;                            \
    p2[0] = q0; p2[1] = q1; p2[2] = q2; p2[3] = q3;                            \
}

/* Loads of a vector of e in the backward sums' walks (LDE): in one, or, with
   AVX-512 and float32, in two 32-byte halves joined in a register, for an e
   off the 64-byte lines that x's tiles start on (_tile_start): a half then
   splits a line at most half the time, the whole vector every time.  The
   same values, so the same sums. */
#define CKBN_LD_VEC(V, p) (*(const V *) (p))
#if defined(__AVX512F__)
#define CKBN_LD_HALVES(V, p)                                                   \
    ((V) _mm512_castpd_ps(_mm512_insertf64x4(                                  \
        _mm512_castps_pd(_mm512_castps256_ps512(_mm256_loadu_ps(p))),          \
        _mm256_castps_pd(_mm256_loadu_ps((p) + 8)), 1)))
#endif

/* b1 += sum_i e_i, b2 += sum_i e_i * (x_i - mu) over rows e + i*S, x + i*S;
   pfe != NULL: row i also hints the tile rows at pfe + i*pfs, pfx + i*pfs;
   LDE loads e's vectors. */
#define CKBN_GS_TILE(NAME, T, V, LDE)                                          \
static void NAME(const T *e, const T *x, ptrdiff_t S, ptrdiff_t nr,            \
                 const T *mu, T *b1, T *b2, const T *pfe, const T *pfx,        \
                 ptrdiff_t pfs)                                                \
{                                                                              \
    const int nl = (int) (sizeof(V) / sizeof(T));                              \
    const V *m = (const V *) mu;                                               \
    V *p1 = (V *) b1, *p2 = (V *) b2;                                          \
    V m0 = m[0], m1 = m[1], m2 = m[2], m3 = m[3];                              \
    V a0 = p1[0], a1 = p1[1], a2 = p1[2], a3 = p1[3];                          \
    V q0 = p2[0], q1 = p2[1], q2 = p2[2], q3 = p2[3];                          \
    for (ptrdiff_t i = 0; i < nr; i++) {                                       \
        const T *d = e + i * S;                                                \
        const V *r = (const V *) (x + i * S);                                  \
        if (pfe) {                                                             \
            CKBN_PF_TILE(pfe + i * pfs);                                       \
            CKBN_PF_TILE(pfx + i * pfs);                                       \
        }                                                                      \
        V e0 = LDE(V, d), e1 = LDE(V, d + nl);                                 \
        V e2 = LDE(V, d + 2 * nl), e3 = LDE(V, d + 3 * nl);                    \
        a0 += e0; a1 += e1; a2 += e2; a3 += e3;                                \
        q0 += e0 * (r[0] - m0); q1 += e1 * (r[1] - m1);                        \
        q2 += e2 * (r[2] - m2); q3 += e3 * (r[3] - m3);                        \
    }                                                                          \
    p1[0] = a0; p1[1] = a1; p1[2] = a2; p1[3] = a3;                            \
    p2[0] = q0; p2[1] = q1; p2[2] = q2; p2[3] = q3;                            \
}
/* The backward sums through a piecewise-linear activation (ReLU, ReLU6,
   leaky ReLU): CKBN_GS_TILE of e = d * act'(z), z = x * za + zb, with
   act'(z) = z > 0 ? (z < h ? 1 : 0) : s -- the expression of _gs1_act in
   _k_rows.pxi, lane by lane and row by row in the same order, so the sums
   are bitwise those of the row loop.  The mask is built from the bits of
   the comparisons (C's vector extensions have no element-wise ?:).  za, zb
   and mu stay in registers where the variant has enough of them (AVX-512);
   with AVX2 some are reloaded from the stack, still no store per row. */
#define CKBN_ACT_GRAD(NAME, T, V, IV)                                          \
static inline V NAME(V z, V s, V h)                                           \
{                                                                              \
    const V zero = {0}, one = zero + (T) 1;                                    \
    IV pos = z > zero;                                                         \
    IV in = pos & (z < h);                                                     \
    return (V) ((in & (IV) one) | (~pos & (IV) s));                            \
}
#define CKBN_GS_ACT_TILE(NAME, T, V, GRAD)                                     \
static void NAME(const T *e, const T *x, ptrdiff_t S, ptrdiff_t nr,            \
                 const T *mu, const T *za, const T *zb, T s, T h,              \
                 T *b1, T *b2, const T *pfe, const T *pfx, ptrdiff_t pfs)      \
{                                                                              \
    const V *m = (const V *) mu, *ka = (const V *) za, *kb = (const V *) zb;   \
    V *p1 = (V *) b1, *p2 = (V *) b2;                                          \
    const V vs = (V){0} + s, vh = (V){0} + h;                                  \
    V m0 = m[0], m1 = m[1], m2 = m[2], m3 = m[3];                              \
    V a0 = p1[0], a1 = p1[1], a2 = p1[2], a3 = p1[3];                          \
    V q0 = p2[0], q1 = p2[1], q2 = p2[2], q3 = p2[3];                          \
    for (ptrdiff_t i = 0; i < nr; i++) {                                       \
        const V *d = (const V *) (e + i * S);                                  \
        const V *r = (const V *) (x + i * S);                                  \
        if (pfe) {                                                             \
            CKBN_PF_TILE(pfe + i * pfs);                                       \
            CKBN_PF_TILE(pfx + i * pfs);                                       \
        }                                                                      \
        V x0 = r[0], x1 = r[1], x2 = r[2], x3 = r[3];                          \
        V e0 = d[0] * GRAD(x0 * ka[0] + kb[0], vs, vh);                        \
        V e1 = d[1] * GRAD(x1 * ka[1] + kb[1], vs, vh);                        \
        V e2 = d[2] * GRAD(x2 * ka[2] + kb[2], vs, vh);                        \
        V e3 = d[3] * GRAD(x3 * ka[3] + kb[3], vs, vh);                        \
        a0 += e0; a1 += e1; a2 += e2; a3 += e3;                                \
        q0 += e0 * (x0 - m0); q1 += e1 * (x1 - m1);                            \
        q2 += e2 * (x2 - m2); q3 += e3 * (x3 - m3);                            \
    }                                                                          \
    p1[0] = a0; p1[1] = a1; p1[2] = a2; p1[3] = a3;                            \
    p2[0] = q0; p2[1] = q1; p2[2] = q2; p2[3] = q3;                            \
}
/* The same sums one vector at a time, for nv vectors of lanes after the
   tiles (a row loop there would store the block sums on every row). */
#define CKBN_GS_ACT_VECS(NAME, T, V, GRAD)                                     \
static void NAME(const T *e, const T *x, ptrdiff_t S, ptrdiff_t nr,            \
                 const T *mu, const T *za, const T *zb, T s, T h,              \
                 T *b1, T *b2, ptrdiff_t nv)                                   \
{                                                                              \
    const V vs = (V){0} + s, vh = (V){0} + h;                                  \
    for (ptrdiff_t v = 0; v < nv; v++) {                                       \
        const V m0 = ((const V *) mu)[v];                                      \
        const V ka = ((const V *) za)[v], kb = ((const V *) zb)[v];            \
        V a0 = ((V *) b1)[v], q0 = ((V *) b2)[v];                              \
        for (ptrdiff_t i = 0; i < nr; i++) {                                   \
            V x0 = ((const V *) (x + i * S))[v];                               \
            V e0 = ((const V *) (e + i * S))[v] * GRAD(x0 * ka + kb, vs, vh);  \
            a0 += e0;                                                          \
            q0 += e0 * (x0 - m0);                                              \
        }                                                                      \
        ((V *) b1)[v] = a0;                                                    \
        ((V *) b2)[v] = q0;                                                    \
    }                                                                          \
}
typedef int ckbn_vi __attribute__((vector_size(CKBN_VBYTES)));
typedef long long ckbn_vl __attribute__((vector_size(CKBN_VBYTES)));
CKBN_MOM_TILE(ckbn_mom_tile_f32, float, ckbn_vf)
CKBN_MOM_TILE(ckbn_mom_tile_f64, double, ckbn_vd)
CKBN_GS_TILE(ckbn_gs_tile_f32, float, ckbn_vf, CKBN_LD_VEC)
CKBN_GS_TILE(ckbn_gs_tile_f64, double, ckbn_vd, CKBN_LD_VEC)
#if defined(__AVX512F__)
CKBN_GS_TILE(ckbn_gs_tileh_f32, float, ckbn_vf, CKBN_LD_HALVES)
#else
#define ckbn_gs_tileh_f32 ckbn_gs_tile_f32
#endif
CKBN_ACT_GRAD(ckbn_act_grad_f32, float, ckbn_vf, ckbn_vi)
CKBN_ACT_GRAD(ckbn_act_grad_f64, double, ckbn_vd, ckbn_vl)
CKBN_GS_ACT_TILE(ckbn_gs_act_tile_f32, float, ckbn_vf, ckbn_act_grad_f32)
CKBN_GS_ACT_TILE(ckbn_gs_act_tile_f64, double, ckbn_vd, ckbn_act_grad_f64)
CKBN_GS_ACT_VECS(ckbn_gs_act_vecs_f32, float, ckbn_vf, ckbn_act_grad_f32)
CKBN_GS_ACT_VECS(ckbn_gs_act_vecs_f64, double, ckbn_vd, ckbn_act_grad_f64)

/* CKBN_GS_TILE for NT tiles side by side (4*NT vectors of lanes), all nr
   rows in one walk: each lane's sums are CKBN_GS_TILE's, in the same order,
   so the same bits (fresh: the sums start from +0.0 in registers, as from
   b1 and b2 cleared, which then need no clearing).  For the small channels-first backward (_small_bwd_cf),
   whose rows lie G*R lanes apart: a tile of four vectors walking four rows
   of dy and x puts eight lines into each L1 set it uses where dy and x sit
   at the same offset modulo 4 KiB (as NumPy places two arrays of the same
   size), and its block sums are stored and reloaded every four rows.
   Three tiles across, one walk down: on AMD Zen 4 (AVX-512), 16x32x8x8 in
   L2, 2.4-3.6 us against 3.2-6.6 us for the four-row walk over five
   placements of dy and x (a C probe, benchmarks/results/zen4-issue18-s14/).
   Its 24 accumulators need the 32 vector registers of AVX-512
   (CKBN_GS_COLS_TILES 3); with 16 (AVX2 tiles: 3.3-4.9 us against 3.2-3.7
   us) the variant keeps the four-row walk (CKBN_GS_COLS_TILES 1).  LDE
   loads a vector of e: in one (CKBN_LD_VEC), or, for the ...h_f32 walks,
   in two halves joined in a register (CKBN_LD_HALVES), for an e that is off
   the 64-byte lines x's tiles start on: each half then splits a line at
   most half the time, the whole vector every time (16x32x8x8 in L2, dy 16,
   32 or 48 bytes off x's line: the walk 3.0-3.4 against 3.3-4.1 us, the
   same with dy on a line, AMD Zen 4, a C probe:
   benchmarks/results/zen4-issue18-s18/split.c). */
#define CKBN_GS_COLS(NAME, T, V, NT, LDE)                                      \
static void NAME(const T *e, const T *x, ptrdiff_t S, ptrdiff_t nr,            \
                 const T *mu, T *b1, T *b2, int fresh)                         \
{                                                                              \
    const int nl = (int) (sizeof(V) / sizeof(T));                              \
    V a[4 * NT], q[4 * NT];                                                    \
    const V zero = {0};                                                        \
    for (int v = 0; v < 4 * NT; v++) {                                         \
        a[v] = fresh ? zero : ((V *) b1)[v];                                   \
        q[v] = fresh ? zero : ((V *) b2)[v];                                   \
    }                                                                          \
    for (ptrdiff_t i = 0; i < nr; i++) {                                       \
        const T *d = e + i * S;                                                \
        const V *r = (const V *) (x + i * S);                                  \
        for (int v = 0; v < 4 * NT; v++) {                                     \
            V e0 = LDE(V, d + v * nl);                                         \
            a[v] += e0;                                                        \
            q[v] += e0 * (r[v] - ((const V *) mu)[v]);                         \
        }                                                                      \
    }                                                                          \
    for (int v = 0; v < 4 * NT; v++) {                                         \
        ((V *) b1)[v] = a[v];                                                  \
        ((V *) b2)[v] = q[v];                                                  \
    }                                                                          \
}
CKBN_GS_COLS(ckbn_gs_cols3_f32, float, ckbn_vf, 3, CKBN_LD_VEC)
CKBN_GS_COLS(ckbn_gs_cols2_f32, float, ckbn_vf, 2, CKBN_LD_VEC)
#if defined(__AVX512F__)
CKBN_GS_COLS(ckbn_gs_cols3h_f32, float, ckbn_vf, 3, CKBN_LD_HALVES)
CKBN_GS_COLS(ckbn_gs_cols2h_f32, float, ckbn_vf, 2, CKBN_LD_HALVES)
#else
#define ckbn_gs_cols3h_f32 ckbn_gs_cols3_f32
#define ckbn_gs_cols2h_f32 ckbn_gs_cols2_f32
#endif

/* The fold of one channel's W lanes of float32 sums (_fold_chans in
   _k_rows.pxi) in registers: each lane widened to float64 (exactly), then
   halved pairwise, lane j += lane j + W/2, down to 8 lanes (ckbn_halve##N),
   which add as ((0+4) + (2+6)) + ((1+5) + (3+7)) -- _fold_halve's adds in
   its order, so its bits.  _fold_halve goes through memory, each halving loop
   waiting on the stores of the one before (16x32x8x8 channels first: the
   flush to float64 and the fold of 32 channels took 1.3-1.8 us on AMD Zen 4).
   n channels of W lanes each (channel g at b + g*W, its sum to o + g*W); W a
   power of two from 8 to 256; returns 0 (nothing written) for any other W.
   With AVX-512 the last adds run for eight channels at once (ckbn_hsum8x8):
   the fold of 32 channels of 64 lanes, both sums, 0.34 against 0.47 us one
   channel at a time (AMD Zen 4, same bits). */
typedef float ckbn_v8f __attribute__((vector_size(32), aligned(4), may_alias));
typedef double ckbn_v8d __attribute__((vector_size(64)));
#if defined(__AVX512F__)
#include <immintrin.h>
/* one conversion of eight lanes (GCC splits the generic one into halves
   under -mprefer-vector-width=256: 0.63 against 0.48 us for 32 channels of 64 lanes, AMD Zen 4) */
#define CKBN_WIDEN8(p) ((ckbn_v8d) _mm512_cvtps_pd(_mm256_loadu_ps(p)))
/* The last adds of eight channels' 8-lane vectors a[0..7], each as
   ckbn_fold##N adds its own: halves of two channels side by side give
   (0+4) (1+5) (2+6) (3+7) for both, quarters of four give (0+4)+(2+6) and
   (1+5)+(3+7), and one add of their pairs the sums; lane l of the result is
   channel 0 4 1 5 2 6 3 7 for l = 0..7. */
static inline __m512d ckbn_hsum8x8(const ckbn_v8d *a)
{
#define CKBN_HALVES(u, v) _mm512_add_pd(_mm512_shuffle_f64x2((__m512d) (u), (__m512d) (v), 0x44), \
                                        _mm512_shuffle_f64x2((__m512d) (u), (__m512d) (v), 0xEE))
#define CKBN_QUARTERS(u, v) _mm512_add_pd(_mm512_shuffle_f64x2(u, v, 0x88),        \
                                          _mm512_shuffle_f64x2(u, v, 0xDD))
    __m512d h01 = CKBN_HALVES(a[0], a[1]), h23 = CKBN_HALVES(a[2], a[3]);
    __m512d h45 = CKBN_HALVES(a[4], a[5]), h67 = CKBN_HALVES(a[6], a[7]);
    __m512d q0 = CKBN_QUARTERS(h01, h23), q1 = CKBN_QUARTERS(h45, h67);
#undef CKBN_HALVES
#undef CKBN_QUARTERS
    return _mm512_add_pd(_mm512_unpacklo_pd(q0, q1), _mm512_unpackhi_pd(q0, q1));
}
/* ckbn_fold##N's channels eight at a time, g advanced past them */
#define CKBN_FOLD_EIGHTS(N)                                                    \
    {                                                                          \
        static const int at[8] = {0, 4, 1, 5, 2, 6, 3, 7};                     \
        ckbn_v8d a[8];                                                         \
        double t[8];                                                           \
        for (; g + 8 <= n; g += 8) {                                           \
            for (int c = 0; c < 8; c++)                                        \
                ckbn_halve##N(b + (g + c) * W, a + c);                         \
            _mm512_storeu_pd(t, ckbn_hsum8x8(a));                              \
            for (int l = 0; l < 8; l++)                                        \
                o[(g + at[l]) * W] = t[l];                                     \
        }                                                                      \
    }
#else
#define CKBN_WIDEN8(p) __builtin_convertvector(*(const ckbn_v8f *) (p), ckbn_v8d)
#define CKBN_FOLD_EIGHTS(N)
#endif
#define CKBN_FOLD_N(N)                                                         \
static inline void ckbn_halve##N(const float *b, ckbn_v8d *out)               \
{                                                                              \
    ckbn_v8d v[N];                                                             \
    for (int k = 0; k < N; k++)                                                \
        v[k] = CKBN_WIDEN8(b + 8 * k);                                         \
    for (int n = N / 2; n >= 1; n /= 2)                                        \
        for (int k = 0; k < n; k++)                                            \
            v[k] += v[k + n];                                                  \
    *out = v[0];                                                               \
}                                                                              \
static inline void ckbn_fold##N(const float *b, ptrdiff_t W, ptrdiff_t n,      \
                                double *o)                                     \
{                                                                              \
    ptrdiff_t g = 0;                                                           \
    CKBN_FOLD_EIGHTS(N)                                                        \
    for (; g < n; g++) {                                                       \
        ckbn_v8d v;                                                            \
        ckbn_halve##N(b + g * W, &v);                                          \
        o[g * W] = ((v[0] + v[4]) + (v[2] + v[6]))                             \
                   + ((v[1] + v[5]) + (v[3] + v[7]));                          \
    }                                                                          \
}
CKBN_FOLD_N(1)
CKBN_FOLD_N(2)
CKBN_FOLD_N(4)
CKBN_FOLD_N(8)
CKBN_FOLD_N(16)
CKBN_FOLD_N(32)
#define CKBN_FOLD_ALL(N)                                                       \
    ckbn_fold##N(b1, W, n, o1);                                                \
    ckbn_fold##N(b2, W, n, o2);                                                \
    return 1;
static int ckbn_fold_f32(const float *b1, const float *b2, ptrdiff_t W, ptrdiff_t n,
                         double *o1, double *o2)
{
    switch (W) {
    case 8: CKBN_FOLD_ALL(1)
    case 16: CKBN_FOLD_ALL(2)
    case 32: CKBN_FOLD_ALL(4)
    case 64: CKBN_FOLD_ALL(8)
    case 128: CKBN_FOLD_ALL(16)
    case 256: CKBN_FOLD_ALL(32)
    default: return 0;
    }
}
#if defined(__AVX512F__)
#define CKBN_GS_COLS_TILES 3
#else
#define CKBN_GS_COLS_TILES 1
#endif

/* ---- whole rows in registers ---------------------------------------------
   The sums of CKBN_MOM_TILE / CKBN_GS_TILE over nr contiguous rows of W = NV
   vectors (S == W), every lane's accumulators in registers for the whole
   run, so the rows are read as one stream in memory order.  The register
   tiles instead walk a block of rows four vectors at a time, which on the
   AMD EPYC Zen 4 read an L3-resident 32x28x28x256 array at 2.5x the time of
   a plain read, where this order runs at 1.16x (the same arithmetic over the
   array in memory order: 1.09-1.17x; benchmarks/results/
   zen4-issue18-s8-rows).  Lane for lane the same expressions in the same row
   order as the tiles, so the same bits.  AVX-512 only: its 32 registers
   hold the 2 NV accumulators of rows of 5 to 16 vectors; below it rows are
   at least MIN_LANES = 64 lanes, 8 vectors or more, whose accumulators do
   not fit 16 registers. */
#if defined(__AVX512F__)
#define CKBN_ROWS_MAXV 16
/* Whether contiguous rows of W lanes of item-byte values are reduced whole in
   registers here (the ckbn_*_rows_* kernels below): 5 to 16 vectors. */
static inline int ckbn_rows_fit(ptrdiff_t W, size_t item)
{
    const ptrdiff_t L = CKBN_VBYTES / (ptrdiff_t) item;
    return W % L == 0 && W / L >= 5 && W / L <= CKBN_ROWS_MAXV;
}
/* A whole-row kernel's accumulators: the block sums b1, b2 of NV vectors
   into registers a, q, and back. */
#define CKBN_ROWS_LOAD(V, NV)                                                  \
    V a[NV], q[NV];                                                            \
    _Pragma("GCC unroll 16")                                                   \
    for (int j = 0; j < NV; j++) {                                             \
        a[j] = ((V *) b1)[j];                                                  \
        q[j] = ((V *) b2)[j];                                                  \
    }
#define CKBN_ROWS_STORE(V, NV)                                                 \
    _Pragma("GCC unroll 16")                                                   \
    for (int j = 0; j < NV; j++) {                                             \
        ((V *) b1)[j] = a[j];                                                  \
        ((V *) b2)[j] = q[j];                                                  \
    }
#define CKBN_MOM_ROWS(NAME, T, V, NV)                                          \
static void NAME(const T *x, ptrdiff_t nr, const T *sh, T *b1, T *b2)          \
{                                                                              \
    const V *k = (const V *) sh;                                               \
    CKBN_ROWS_LOAD(V, NV)                                                      \
    for (ptrdiff_t i = 0; i < nr; i++) {                                       \
        const V *r = (const V *) (x + i * (ptrdiff_t) (NV * sizeof(V) / sizeof(T))); \
        _Pragma("GCC unroll 16")                                               \
        for (int j = 0; j < NV; j++) {                                         \
            V d = r[j] - k[j];                                                 \
            a[j] += d;                                                         \
            q[j] += d * d;                                                     \
        }                                                                      \
    }                                                                          \
    CKBN_ROWS_STORE(V, NV)                                                     \
}
#define CKBN_GS_ROWS(NAME, T, V, NV)                                           \
static void NAME(const T *e, const T *x, ptrdiff_t nr, const T *mu, T *b1,     \
                 T *b2)                                                        \
{                                                                              \
    const V *m = (const V *) mu;                                               \
    CKBN_ROWS_LOAD(V, NV)                                                      \
    for (ptrdiff_t i = 0; i < nr; i++) {                                       \
        ptrdiff_t o = i * (ptrdiff_t) (NV * sizeof(V) / sizeof(T));            \
        const V *d = (const V *) (e + o), *r = (const V *) (x + o);            \
        _Pragma("GCC unroll 16")                                               \
        for (int j = 0; j < NV; j++) {                                         \
            V ej = d[j];                                                       \
            a[j] += ej;                                                        \
            q[j] += ej * (r[j] - m[j]);                                        \
        }                                                                      \
    }                                                                          \
    CKBN_ROWS_STORE(V, NV)                                                     \
}
/* CKBN_GS_ROWS through a piecewise-linear activation: e = d * act'(z),
   z = x * za + zb, act' as CKBN_GS_ACT_TILE computes it (za, zb and mu from
   L1, like the shift). */
#define CKBN_GS_ACT_ROWS(NAME, T, V, NV, GRAD)                                 \
static void NAME(const T *e, const T *x, ptrdiff_t nr, const T *mu,            \
                 const T *za, const T *zb, T s, T h, T *b1, T *b2)             \
{                                                                              \
    const V *m = (const V *) mu, *ka = (const V *) za, *kb = (const V *) zb;   \
    const V vs = (V){0} + s, vh = (V){0} + h;                                  \
    CKBN_ROWS_LOAD(V, NV)                                                      \
    for (ptrdiff_t i = 0; i < nr; i++) {                                       \
        ptrdiff_t o = i * (ptrdiff_t) (NV * sizeof(V) / sizeof(T));            \
        const V *d = (const V *) (e + o), *r = (const V *) (x + o);            \
        _Pragma("GCC unroll 16")                                               \
        for (int j = 0; j < NV; j++) {                                         \
            V xj = r[j];                                                       \
            V ej = d[j] * GRAD(xj * ka[j] + kb[j], vs, vh);                    \
            a[j] += ej;                                                        \
            q[j] += ej * (xj - m[j]);                                          \
        }                                                                      \
    }                                                                          \
    CKBN_ROWS_STORE(V, NV)                                                     \
}
#define CKBN_ROWS_ALL(SFX, T, V)                                               \
CKBN_MOM_ROWS(ckbn_mom_rows5_##SFX, T, V, 5)                                   \
CKBN_MOM_ROWS(ckbn_mom_rows6_##SFX, T, V, 6)                                   \
CKBN_GS_ROWS(ckbn_gs_rows5_##SFX, T, V, 5)                                     \
CKBN_GS_ROWS(ckbn_gs_rows6_##SFX, T, V, 6)                                     \
CKBN_GS_ACT_ROWS(ckbn_gs_act_rows5_##SFX, T, V, 5, ckbn_act_grad_##SFX)        \
CKBN_GS_ACT_ROWS(ckbn_gs_act_rows6_##SFX, T, V, 6, ckbn_act_grad_##SFX)        \
CKBN_ROWS_WIDE(SFX, T, V)                                                      \
/* The run's sums for rows of W lanes, or 0 where W is not a count of      */  \
/* vectors this variant keeps in registers (then the tiles run).           */  \
static int ckbn_mom_rows_##SFX(const T *x, ptrdiff_t nr, ptrdiff_t W,          \
                               const T *sh, T *b1, T *b2)                      \
{                                                                              \
    if (!ckbn_rows_fit(W, sizeof(T)))                                          \
        return 0;                                                              \
    switch (W / (CKBN_VBYTES / (ptrdiff_t) sizeof(T))) {                       \
    case 5: ckbn_mom_rows5_##SFX(x, nr, sh, b1, b2); return 1;                 \
    case 6: ckbn_mom_rows6_##SFX(x, nr, sh, b1, b2); return 1;                 \
    CKBN_ROWS_WIDE_CASES(ckbn_mom_rows, SFX, (x, nr, sh, b1, b2))              \
    }                                                                          \
    return 0;                                                                  \
}                                                                              \
static int ckbn_gs_rows_##SFX(const T *e, const T *x, ptrdiff_t nr,            \
                              ptrdiff_t W, const T *mu, T *b1, T *b2)          \
{                                                                              \
    if (!ckbn_rows_fit(W, sizeof(T)))                                          \
        return 0;                                                              \
    switch (W / (CKBN_VBYTES / (ptrdiff_t) sizeof(T))) {                       \
    case 5: ckbn_gs_rows5_##SFX(e, x, nr, mu, b1, b2); return 1;               \
    case 6: ckbn_gs_rows6_##SFX(e, x, nr, mu, b1, b2); return 1;               \
    CKBN_ROWS_WIDE_CASES(ckbn_gs_rows, SFX, (e, x, nr, mu, b1, b2))            \
    }                                                                          \
    return 0;                                                                  \
}                                                                              \
static int ckbn_gs_act_rows_##SFX(const T *e, const T *x, ptrdiff_t nr,        \
                                  ptrdiff_t W, const T *mu, const T *za,       \
                                  const T *zb, T s, T h, T *b1, T *b2)         \
{                                                                              \
    if (!ckbn_rows_fit(W, sizeof(T)))                                          \
        return 0;                                                              \
    switch (W / (CKBN_VBYTES / (ptrdiff_t) sizeof(T))) {                       \
    case 5: ckbn_gs_act_rows5_##SFX(e, x, nr, mu, za, zb, s, h, b1, b2); return 1; \
    case 6: ckbn_gs_act_rows6_##SFX(e, x, nr, mu, za, zb, s, h, b1, b2); return 1; \
    CKBN_ROWS_WIDE_CASES(ckbn_gs_act_rows, SFX,                                \
                         (e, x, nr, mu, za, zb, s, h, b1, b2))                 \
    }                                                                          \
    return 0;                                                                  \
}
#define CKBN_ROWS_WIDE(SFX, T, V)                                              \
CKBN_MOM_ROWS(ckbn_mom_rows7_##SFX, T, V, 7)                                   \
CKBN_MOM_ROWS(ckbn_mom_rows8_##SFX, T, V, 8)                                   \
CKBN_MOM_ROWS(ckbn_mom_rows9_##SFX, T, V, 9)                                   \
CKBN_MOM_ROWS(ckbn_mom_rows10_##SFX, T, V, 10)                                 \
CKBN_MOM_ROWS(ckbn_mom_rows11_##SFX, T, V, 11)                                 \
CKBN_MOM_ROWS(ckbn_mom_rows12_##SFX, T, V, 12)                                 \
CKBN_MOM_ROWS(ckbn_mom_rows13_##SFX, T, V, 13)                                 \
CKBN_MOM_ROWS(ckbn_mom_rows14_##SFX, T, V, 14)                                 \
CKBN_MOM_ROWS(ckbn_mom_rows15_##SFX, T, V, 15)                                 \
CKBN_MOM_ROWS(ckbn_mom_rows16_##SFX, T, V, 16)                                 \
CKBN_GS_ROWS(ckbn_gs_rows7_##SFX, T, V, 7)                                     \
CKBN_GS_ROWS(ckbn_gs_rows8_##SFX, T, V, 8)                                     \
CKBN_GS_ROWS(ckbn_gs_rows9_##SFX, T, V, 9)                                     \
CKBN_GS_ROWS(ckbn_gs_rows10_##SFX, T, V, 10)                                   \
CKBN_GS_ROWS(ckbn_gs_rows11_##SFX, T, V, 11)                                   \
CKBN_GS_ROWS(ckbn_gs_rows12_##SFX, T, V, 12)                                   \
CKBN_GS_ROWS(ckbn_gs_rows13_##SFX, T, V, 13)                                   \
CKBN_GS_ROWS(ckbn_gs_rows14_##SFX, T, V, 14)                                   \
CKBN_GS_ROWS(ckbn_gs_rows15_##SFX, T, V, 15)                                   \
CKBN_GS_ROWS(ckbn_gs_rows16_##SFX, T, V, 16)                                   \
CKBN_GS_ACT_ROWS(ckbn_gs_act_rows7_##SFX, T, V, 7, ckbn_act_grad_##SFX)        \
CKBN_GS_ACT_ROWS(ckbn_gs_act_rows8_##SFX, T, V, 8, ckbn_act_grad_##SFX)        \
CKBN_GS_ACT_ROWS(ckbn_gs_act_rows9_##SFX, T, V, 9, ckbn_act_grad_##SFX)        \
CKBN_GS_ACT_ROWS(ckbn_gs_act_rows10_##SFX, T, V, 10, ckbn_act_grad_##SFX)      \
CKBN_GS_ACT_ROWS(ckbn_gs_act_rows11_##SFX, T, V, 11, ckbn_act_grad_##SFX)      \
CKBN_GS_ACT_ROWS(ckbn_gs_act_rows12_##SFX, T, V, 12, ckbn_act_grad_##SFX)      \
CKBN_GS_ACT_ROWS(ckbn_gs_act_rows13_##SFX, T, V, 13, ckbn_act_grad_##SFX)      \
CKBN_GS_ACT_ROWS(ckbn_gs_act_rows14_##SFX, T, V, 14, ckbn_act_grad_##SFX)      \
CKBN_GS_ACT_ROWS(ckbn_gs_act_rows15_##SFX, T, V, 15, ckbn_act_grad_##SFX)      \
CKBN_GS_ACT_ROWS(ckbn_gs_act_rows16_##SFX, T, V, 16, ckbn_act_grad_##SFX)
#define CKBN_ROWS_WIDE_CASES(F, SFX, ARGS)                                     \
    case 7: F##7_##SFX ARGS; return 1;                                         \
    case 8: F##8_##SFX ARGS; return 1;                                         \
    case 9: F##9_##SFX ARGS; return 1;                                         \
    case 10: F##10_##SFX ARGS; return 1;                                       \
    case 11: F##11_##SFX ARGS; return 1;                                       \
    case 12: F##12_##SFX ARGS; return 1;                                       \
    case 13: F##13_##SFX ARGS; return 1;                                       \
    case 14: F##14_##SFX ARGS; return 1;                                       \
    case 15: F##15_##SFX ARGS; return 1;                                       \
    case 16: F##16_##SFX ARGS; return 1;
CKBN_ROWS_ALL(f32, float, ckbn_vf)
CKBN_ROWS_ALL(f64, double, ckbn_vd)
#define CKBN_HAVE_ROWS 1
#endif
#else
#define CKBN_HAVE_TILES 0
#define CKBN_TILE_F32 0
#define CKBN_TILE_F64 0
static void ckbn_mom_tile_f32(const float *x, ptrdiff_t S, ptrdiff_t nr,
                              const float *sh, float *b1, float *b2, const float *pf,
                              ptrdiff_t pfs) {}
static void ckbn_mom_tile_f64(const double *x, ptrdiff_t S, ptrdiff_t nr,
                              const double *sh, double *b1, double *b2, const double *pf,
                              ptrdiff_t pfs) {}
static void ckbn_gs_tile_f32(const float *e, const float *x, ptrdiff_t S,
                             ptrdiff_t nr, const float *mu, float *b1, float *b2,
                             const float *pfe, const float *pfx, ptrdiff_t pfs) {}
static void ckbn_gs_tile_f64(const double *e, const double *x, ptrdiff_t S,
                             ptrdiff_t nr, const double *mu, double *b1, double *b2,
                             const double *pfe, const double *pfx, ptrdiff_t pfs) {}
static void ckbn_gs_act_tile_f32(const float *e, const float *x, ptrdiff_t S,
                                 ptrdiff_t nr, const float *mu, const float *za,
                                 const float *zb, float s, float h, float *b1,
                                 float *b2, const float *pfe, const float *pfx,
                                 ptrdiff_t pfs) {}
static void ckbn_gs_act_tile_f64(const double *e, const double *x, ptrdiff_t S,
                                 ptrdiff_t nr, const double *mu, const double *za,
                                 const double *zb, double s, double h, double *b1,
                                 double *b2, const double *pfe, const double *pfx,
                                 ptrdiff_t pfs) {}
static void ckbn_gs_act_vecs_f32(const float *e, const float *x, ptrdiff_t S,
                                 ptrdiff_t nr, const float *mu, const float *za,
                                 const float *zb, float s, float h, float *b1,
                                 float *b2, ptrdiff_t nv) {}
static void ckbn_gs_act_vecs_f64(const double *e, const double *x, ptrdiff_t S,
                                 ptrdiff_t nr, const double *mu, const double *za,
                                 const double *zb, double s, double h, double *b1,
                                 double *b2, ptrdiff_t nv) {}
#define CKBN_GS_COLS_TILES 1
static void ckbn_gs_cols3_f32(const float *e, const float *x, ptrdiff_t S, ptrdiff_t nr,
                              const float *mu, float *b1, float *b2, int fresh) {}
static void ckbn_gs_cols2_f32(const float *e, const float *x, ptrdiff_t S, ptrdiff_t nr,
                              const float *mu, float *b1, float *b2, int fresh) {}
#define ckbn_gs_cols3h_f32 ckbn_gs_cols3_f32
#define ckbn_gs_cols2h_f32 ckbn_gs_cols2_f32
#define ckbn_gs_tileh_f32 ckbn_gs_tile_f32
static int ckbn_fold_f32(const float *b1, const float *b2, ptrdiff_t W, ptrdiff_t n,
                         double *o1, double *o2) { return 0; }
#endif
#ifndef CKBN_HAVE_ROWS
/* No whole-row kernels (below AVX-512, or no vector extensions): the tiles
   take every row. */
#define CKBN_HAVE_ROWS 0
static inline int ckbn_rows_fit(ptrdiff_t W, size_t item) { return 0; }
static int ckbn_mom_rows_f32(const float *x, ptrdiff_t nr, ptrdiff_t W,
                             const float *sh, float *b1, float *b2) { return 0; }
static int ckbn_mom_rows_f64(const double *x, ptrdiff_t nr, ptrdiff_t W,
                             const double *sh, double *b1, double *b2) { return 0; }
static int ckbn_gs_rows_f32(const float *e, const float *x, ptrdiff_t nr, ptrdiff_t W,
                            const float *mu, float *b1, float *b2) { return 0; }
static int ckbn_gs_rows_f64(const double *e, const double *x, ptrdiff_t nr, ptrdiff_t W,
                            const double *mu, double *b1, double *b2) { return 0; }
static int ckbn_gs_act_rows_f32(const float *e, const float *x, ptrdiff_t nr, ptrdiff_t W,
                                const float *mu, const float *za, const float *zb,
                                float s, float h, float *b1, float *b2) { return 0; }
static int ckbn_gs_act_rows_f64(const double *e, const double *x, ptrdiff_t nr,
                                ptrdiff_t W, const double *mu, const double *za,
                                const double *zb, double s, double h, double *b1,
                                double *b2) { return 0; }
#endif

/* ---- element-wise row groups ---------------------------------------------
   y = x * a + b and o = d * k1 + (x * k2 + k3) over nr rows of n lanes, S
   apart (the expressions of _row_affine and _row_dx in _k_rows.pxi, element
   by element, so the same bits), one 64-byte line of lanes at a time down
   the rows: the coefficients' line is loaded once for the group instead of
   once a row (a line's vectors are loaded before they are stored: in place
   is allowed).  ckbn_dx_rg_* writes its whole lines with non-temporal
   stores (CKBN_STREAM_V) where the output's rows start on 64-byte lines, as
   they do after _ew_rows_rg's head: dy and x in and dx out are three
   streams, and a plain store first reads the line it fills, a fourth (AMD
   Zen 4, 64x7x7x2048 NHWC, float32, 1 thread: the dx pass 0.79-0.85x the
   time, the backward 0.93-0.95x; benchmarks/results/zen4-issue18-s14/).
   ckbn_affine_rg_* streams its lines likewise where stream is set (an
   output of at least L3's size, _ew_core): against plain stores, with x
   cold, read just before or warm, 128x7x7x2048 NHWC (51 MB) inference
   0.86-0.95x and training 0.90-0.96x the time (AVX2 tiles: 0.80-0.89x,
   0.88-0.94x), 96x7x7x2048 (38.5 MB) 0.96-1.05x and 0.98-1.00x, while
   64x7x7x2048 (25.7 MB, much of it held by a 32 MiB L3) took 0.90-1.09x and
   1.01-1.05x (Zen 4, session 16), so smaller outputs keep plain stores.
   The pass ends with ckbn_nt_fence (_ew_unit). */
#if CKBN_HAVE_TILES
#define CKBN_LINE_VECS (64 / CKBN_VBYTES)
#if defined(__AVX512F__)
#include <immintrin.h>
#define CKBN_STREAM_V(p, v) _mm512_stream_si512((__m512i *) (p), (__m512i) (v))
#elif defined(__AVX__)
#include <immintrin.h>
#define CKBN_STREAM_V(p, v) _mm256_stream_si256((__m256i *) (p), (__m256i) (v))
#elif defined(__SSE2__)
#include <emmintrin.h>
#define CKBN_STREAM_V(p, v) _mm_stream_si128((__m128i *) (p), (__m128i) (v))
#else
#define CKBN_STREAM_V(p, v) (*(__typeof__(v) *) (p) = (v))
#endif
/* Whether the rows of an output o, S elements apart, start on 64-byte
   lines (then its whole lines can be streamed), and a line's vectors v[]
   written at w, streamed where nt is set. */
#define CKBN_RG_LINES(o, S, T) ((size_t) (o) % 64 == 0 && ((S) * sizeof(T)) % 64 == 0)
#define CKBN_RG_PUT(V, w, v, nt)                                               \
    do {                                                                       \
        for (int q_ = 0; q_ < CKBN_LINE_VECS; q_++) {                          \
            if (nt)                                                            \
                CKBN_STREAM_V((w) + q_ * VL, (v)[q_]);                         \
            else                                                               \
                *(V *) ((w) + q_ * VL) = (v)[q_];                              \
        }                                                                      \
    } while (0)
#define CKBN_EW_RG(SFX, T, V)                                                  \
static void ckbn_affine_rg_##SFX(const T *x, T *y, ptrdiff_t S, ptrdiff_t nr, \
                                 ptrdiff_t n, const T *a, const T *b,          \
                                 int stream)                                   \
{                                                                              \
    const ptrdiff_t L = 64 / sizeof(T), VL = CKBN_VBYTES / sizeof(T);         \
    const int nt = stream && CKBN_RG_LINES(y, S, T) && (void *) y != (void *) x; \
    ptrdiff_t c = 0, i;                                                        \
    int q;                                                                     \
    for (; c + L <= n; c += L) {                                               \
        V va[CKBN_LINE_VECS], vb[CKBN_LINE_VECS], v[CKBN_LINE_VECS];           \
        for (q = 0; q < CKBN_LINE_VECS; q++) {                                 \
            va[q] = *(const V *) (a + c + q * VL);                             \
            vb[q] = *(const V *) (b + c + q * VL);                             \
        }                                                                      \
        for (i = 0; i < nr; i++) {                                             \
            const T *r = x + i * S + c;                                        \
            T *w = y + i * S + c;                                              \
            for (q = 0; q < CKBN_LINE_VECS; q++)                               \
                v[q] = *(const V *) (r + q * VL) * va[q] + vb[q];              \
            CKBN_RG_PUT(V, w, v, nt);                                          \
        }                                                                      \
    }                                                                          \
    for (; c < n; c++)                                                         \
        for (i = 0; i < nr; i++)                                               \
            y[i * S + c] = x[i * S + c] * a[c] + b[c];                         \
}                                                                              \
static void ckbn_dx_rg_##SFX(const T *d, const T *x, T *o, ptrdiff_t S,       \
                             ptrdiff_t nr, ptrdiff_t n, const T *k1,           \
                             const T *k2, const T *k3)                         \
{                                                                              \
    const ptrdiff_t L = 64 / sizeof(T), VL = CKBN_VBYTES / sizeof(T);         \
    const int nt = CKBN_RG_LINES(o, S, T);                                     \
    ptrdiff_t c = 0, i;                                                        \
    int q;                                                                     \
    for (; c + L <= n; c += L) {                                               \
        V u1[CKBN_LINE_VECS], u2[CKBN_LINE_VECS], u3[CKBN_LINE_VECS];          \
        V v[CKBN_LINE_VECS];                                                   \
        for (q = 0; q < CKBN_LINE_VECS; q++) {                                 \
            u1[q] = *(const V *) (k1 + c + q * VL);                            \
            u2[q] = *(const V *) (k2 + c + q * VL);                            \
            u3[q] = *(const V *) (k3 + c + q * VL);                            \
        }                                                                      \
        for (i = 0; i < nr; i++) {                                             \
            const T *e = d + i * S + c, *r = x + i * S + c;                    \
            T *w = o + i * S + c;                                              \
            for (q = 0; q < CKBN_LINE_VECS; q++)                               \
                v[q] = *(const V *) (e + q * VL) * u1[q]                       \
                       + (*(const V *) (r + q * VL) * u2[q] + u3[q]);          \
            CKBN_RG_PUT(V, w, v, nt);                                          \
        }                                                                      \
    }                                                                          \
    for (; c < n; c++)                                                         \
        for (i = 0; i < nr; i++)                                               \
            o[i * S + c] = d[i * S + c] * k1[c] + (x[i * S + c] * k2[c] + k3[c]); \
}
CKBN_EW_RG(f32, float, ckbn_vf)
CKBN_EW_RG(f64, double, ckbn_vd)
#define CKBN_HAVE_EW_RG 1
#else
#define CKBN_HAVE_EW_RG 0
static void ckbn_affine_rg_f32(const float *x, float *y, ptrdiff_t S, ptrdiff_t nr,
                               ptrdiff_t n, const float *a, const float *b, int stream) {}
static void ckbn_affine_rg_f64(const double *x, double *y, ptrdiff_t S, ptrdiff_t nr,
                               ptrdiff_t n, const double *a, const double *b, int stream) {}
static void ckbn_dx_rg_f32(const float *d, const float *x, float *o, ptrdiff_t S,
                           ptrdiff_t nr, ptrdiff_t n, const float *k1, const float *k2,
                           const float *k3) {}
static void ckbn_dx_rg_f64(const double *d, const double *x, double *o, ptrdiff_t S,
                           ptrdiff_t nr, ptrdiff_t n, const double *k1, const double *k2,
                           const double *k3) {}
#endif

/* ---- swish ------------------------------------------------------------ */

/* sigmoid(z) = 1 / (1 + exp(-z)), exp by Cody and Waite's reduction:
   exp(t) = 2^n * exp(r), n = round(t / ln 2), r = t - n*ln2 (ln 2 split in a
   high part exact in n*hi and a low part), exp(r) by its Taylor polynomial
   on |r| <= ln(2)/2 (degree 7 for float32: truncation 6e-9 relative;
   degree 13 for float64: 4e-18), 2^n built in the exponent bits.  t is first
   clamped to where 2^n is a normal number (NaN passes the clamp, and its
   polynomial is NaN).  n is rounded by adding 1.5 * 2^(mantissa bits): the
   low bits of the sum are n, read back as integer bits (no float-to-integer
   conversion, which plain SSE2 lacks for float64). */

#if defined(__GNUC__)
typedef int ckbn_vi32 __attribute__((vector_size(CKBN_VBYTES)));
typedef long long ckbn_vi64 __attribute__((vector_size(CKBN_VBYTES)));
/* Exponent arithmetic in unsigned lanes: it wraps (NaN's bits) instead of
   overflowing. */
typedef unsigned ckbn_vu32 __attribute__((vector_size(CKBN_VBYTES)));
typedef unsigned long long ckbn_vu64 __attribute__((vector_size(CKBN_VBYTES)));

#define CKBN_SPLAT(V, c) ((V){0} + (c))

static inline ckbn_vf ckbn_vsig_f32(ckbn_vf z)
{
    const ckbn_vf lo = CKBN_SPLAT(ckbn_vf, -87.0f), hi = CKBN_SPLAT(ckbn_vf, 88.0f);
    const ckbn_vf magic = CKBN_SPLAT(ckbn_vf, 12582912.0f);          /* 1.5 * 2^23 */
    ckbn_vf t = -z, k, f, r, p;
    ckbn_vi32 m;
    ckbn_vu32 n;
    m = t < lo;
    t = (ckbn_vf) (((ckbn_vi32) t & ~m) | ((ckbn_vi32) lo & m));
    m = t > hi;
    t = (ckbn_vf) (((ckbn_vi32) t & ~m) | ((ckbn_vi32) hi & m));
    k = t * 1.44269504088896341f + magic;
    f = k - magic;
    n = (ckbn_vu32) k - 0x4B400000u;                                  /* bits of magic */
    r = (t - f * 0.693359375f) - f * -2.12194440e-4f;
    p = CKBN_SPLAT(ckbn_vf, 1.0f / 5040.0f);
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    p = p * (ckbn_vf) ((n + 127u) << 23);
    return 1.0f / (1.0f + p);
}

static inline ckbn_vd ckbn_vsig_f64(ckbn_vd z)
{
    const ckbn_vd lo = CKBN_SPLAT(ckbn_vd, -708.0), hi = CKBN_SPLAT(ckbn_vd, 709.0);
    const ckbn_vd magic = CKBN_SPLAT(ckbn_vd, 6755399441055744.0);   /* 1.5 * 2^52 */
    ckbn_vd t = -z, k, f, r, p;
    ckbn_vi64 m;
    ckbn_vu64 n;
    m = t < lo;
    t = (ckbn_vd) (((ckbn_vi64) t & ~m) | ((ckbn_vi64) lo & m));
    m = t > hi;
    t = (ckbn_vd) (((ckbn_vi64) t & ~m) | ((ckbn_vi64) hi & m));
    k = t * 1.4426950408889634074 + magic;
    f = k - magic;
    n = (ckbn_vu64) k - 0x4338000000000000ULL;                        /* bits of magic */
    r = (t - f * 6.93147180369123816490e-01) - f * 1.90821492927058770002e-10;
    p = CKBN_SPLAT(ckbn_vd, 1.0 / 6227020800.0);
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    p = p * (ckbn_vd) ((n + 1023u) << 52);
    return 1.0 / (1.0 + p);
}

/* z -> swish(z) (grad == 0) or swish'(z) (grad != 0) over n values in place. */
#define CKBN_SWISH(NAME, T, V, SIG)                                            \
static inline V NAME##_one(V z, int grad)                                      \
{                                                                              \
    V s = SIG(z);                                                              \
    return grad ? s * (1 + z * (1 - s)) : z * s;                               \
}                                                                              \
static void NAME(T *z, ptrdiff_t n, int grad)                                  \
{                                                                              \
    enum { L = CKBN_VBYTES / sizeof(T) };                                      \
    ptrdiff_t i = 0, j;                                                        \
    V v;                                                                       \
    if (grad)                                                                  \
        for (; i + L <= n; i += L)                                             \
            *(V *) (z + i) = NAME##_one(*(const V *) (z + i), 1);              \
    else                                                                       \
        for (; i + L <= n; i += L)                                             \
            *(V *) (z + i) = NAME##_one(*(const V *) (z + i), 0);              \
    if (i < n) {                                                               \
        v = (V){0};                                                            \
        for (j = 0; j < n - i; j++)                                            \
            v[j] = z[i + j];                                                   \
        v = NAME##_one(v, grad);                                               \
        for (j = 0; j < n - i; j++)                                            \
            z[i + j] = v[j];                                                   \
    }                                                                          \
}
CKBN_SWISH(ckbn_swish_f32, float, ckbn_vf, ckbn_vsig_f32)
CKBN_SWISH(ckbn_swish_f64, double, ckbn_vd, ckbn_vsig_f64)

/* The whole vectors of the swish passes below, each value in registers from
   its load to its store (the block loops staged z and m through the stack:
   on the AMD EPYC Zen 4 that store and reload cost as much as the sigmoid's
   division).  Lane for lane the same expressions, so the same bits.  Each
   returns the count of values done, a multiple of the vector's lanes. */
#define CKBN_SW_VEC(SFX, T, V)                                                 \
enum { CKBN_SWL_##SFX = CKBN_VBYTES / sizeof(T) };                             \
static inline ptrdiff_t ckbn_sw_affine_vrow_##SFX(                             \
    const T *x, T *y, ptrdiff_t n, const T *a, const T *b)                     \
{                                                                              \
    ptrdiff_t i = 0;                                                           \
    for (; i + CKBN_SWL_##SFX <= n; i += CKBN_SWL_##SFX) {                     \
        V z = *(const V *) (x + i) * *(const V *) (a + i) + *(const V *) (b + i); \
        *(V *) (y + i) = ckbn_swish_##SFX##_one(z, 0);                         \
    }                                                                          \
    return i;                                                                  \
}                                                                              \
static inline ptrdiff_t ckbn_sw_affine_vseg_##SFX(                             \
    const T *x, T *y, ptrdiff_t n, T a, T b)                                   \
{                                                                              \
    ptrdiff_t i = 0;                                                           \
    for (; i + CKBN_SWL_##SFX <= n; i += CKBN_SWL_##SFX) {                     \
        V z = *(const V *) (x + i) * a + b;                                    \
        *(V *) (y + i) = ckbn_swish_##SFX##_one(z, 0);                         \
    }                                                                          \
    return i;                                                                  \
}                                                                              \
static inline ptrdiff_t ckbn_sw_dx_vrow_##SFX(                                 \
    const T *d, const T *x, T *o, ptrdiff_t n, const T *k1, const T *k2,       \
    const T *k3, const T *za, const T *zb)                                     \
{                                                                              \
    ptrdiff_t i = 0;                                                           \
    for (; i + CKBN_SWL_##SFX <= n; i += CKBN_SWL_##SFX) {                     \
        V xv = *(const V *) (x + i);                                           \
        V m = ckbn_swish_##SFX##_one(xv * *(const V *) (za + i)                 \
                                     + *(const V *) (zb + i), 1);              \
        *(V *) (o + i) = (*(const V *) (d + i) * m) * *(const V *) (k1 + i)    \
                         + (xv * *(const V *) (k2 + i) + *(const V *) (k3 + i)); \
    }                                                                          \
    return i;                                                                  \
}                                                                              \
static inline ptrdiff_t ckbn_sw_dx_vseg_##SFX(                                 \
    const T *d, const T *x, T *o, ptrdiff_t n, T k1, T k2, T k3, T za, T zb)   \
{                                                                              \
    ptrdiff_t i = 0;                                                           \
    for (; i + CKBN_SWL_##SFX <= n; i += CKBN_SWL_##SFX) {                     \
        V xv = *(const V *) (x + i);                                           \
        V m = ckbn_swish_##SFX##_one(xv * za + zb, 1);                         \
        *(V *) (o + i) = (*(const V *) (d + i) * m) * k1 + (xv * k2 + k3);     \
    }                                                                          \
    return i;                                                                  \
}                                                                              \
static inline ptrdiff_t ckbn_sw_gs_vrow_##SFX(                                 \
    const T *d, const T *x, ptrdiff_t n, const T *mu, const T *za,             \
    const T *zb, T *b1, T *b2)                                                 \
{                                                                              \
    ptrdiff_t i = 0;                                                           \
    for (; i + CKBN_SWL_##SFX <= n; i += CKBN_SWL_##SFX) {                     \
        V xv = *(const V *) (x + i);                                           \
        V e = *(const V *) (d + i)                                             \
              * ckbn_swish_##SFX##_one(xv * *(const V *) (za + i)               \
                                       + *(const V *) (zb + i), 1);            \
        *(V *) (b1 + i) += e;                                                  \
        *(V *) (b2 + i) += e * (xv - *(const V *) (mu + i));                   \
    }                                                                          \
    return i;                                                                  \
}
CKBN_SW_VEC(f32, float, ckbn_vf)
CKBN_SW_VEC(f64, double, ckbn_vd)
#else
#include <math.h>
static void ckbn_swish_f32(float *z, ptrdiff_t n, int grad)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + expf(-z[i]));
        z[i] = grad ? s * (1.0f + z[i] * (1.0f - s)) : z[i] * s;
    }
}
static void ckbn_swish_f64(double *z, ptrdiff_t n, int grad)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        double s = 1.0 / (1.0 + exp(-z[i]));
        z[i] = grad ? s * (1.0 + z[i] * (1.0 - s)) : z[i] * s;
    }
}
/* No vector loops: the block loops do every value. */
#define CKBN_SW_VEC_NONE(SFX, T)                                               \
static ptrdiff_t ckbn_sw_affine_vrow_##SFX(const T *x, T *y, ptrdiff_t n,     \
                                           const T *a, const T *b)             \
{ return 0; }                                                                  \
static ptrdiff_t ckbn_sw_affine_vseg_##SFX(const T *x, T *y, ptrdiff_t n,     \
                                           T a, T b)                           \
{ return 0; }                                                                  \
static ptrdiff_t ckbn_sw_dx_vrow_##SFX(const T *d, const T *x, T *o,          \
    ptrdiff_t n, const T *k1, const T *k2, const T *k3, const T *za,           \
    const T *zb)                                                               \
{ return 0; }                                                                  \
static ptrdiff_t ckbn_sw_dx_vseg_##SFX(const T *d, const T *x, T *o,          \
    ptrdiff_t n, T k1, T k2, T k3, T za, T zb)                                 \
{ return 0; }                                                                  \
static ptrdiff_t ckbn_sw_gs_vrow_##SFX(const T *d, const T *x, ptrdiff_t n,   \
    const T *mu, const T *za, const T *zb, T *b1, T *b2)                       \
{ return 0; }
CKBN_SW_VEC_NONE(f32, float)
CKBN_SW_VEC_NONE(f64, double)
#endif

/* The passes with swish (z = x*a + b, per lane "row" or one value "seg"):
     affine  y = swish(z)
     dx      o = (d*m)*k1 + (x*k2 + k3), m = swish'(z)
     gs      b1 += e, b2 += e*(x - mu), e = d*m
   The same expressions as the piecewise-linear loops of _k_rows.pxi.  Whole
   vectors run in registers (CKBN_SW_VEC); the block loops, staging z and m
   through the stack, do the last values (fewer than a vector's lanes). */
#define CKBN_SW_BLOCK 512
#if defined(__GNUC__)
#define CKBN_NOINLINE __attribute__((noinline))
#else
#define CKBN_NOINLINE
#endif
#define CKBN_SW_PASSES(SFX, T)                                                 \
static CKBN_NOINLINE void ckbn_sw_affine_row_##SFX(                            \
    const T *x, T *y, ptrdiff_t n, const T *a, const T *b)                     \
{                                                                              \
    for (ptrdiff_t i = ckbn_sw_affine_vrow_##SFX(x, y, n, a, b); i < n;        \
         i += CKBN_SW_BLOCK) {                         \
        ptrdiff_t nb = n - i < CKBN_SW_BLOCK ? n - i : CKBN_SW_BLOCK;          \
        for (ptrdiff_t j = i; j < i + nb; j++)                                 \
            y[j] = x[j] * a[j] + b[j];                                         \
        ckbn_swish_##SFX(y + i, nb, 0);                                        \
    }                                                                          \
}                                                                              \
static CKBN_NOINLINE void ckbn_sw_affine_seg_##SFX(                            \
    const T *x, T *y, ptrdiff_t n, T a, T b)                                   \
{                                                                              \
    for (ptrdiff_t i = ckbn_sw_affine_vseg_##SFX(x, y, n, a, b); i < n;        \
         i += CKBN_SW_BLOCK) {                         \
        ptrdiff_t nb = n - i < CKBN_SW_BLOCK ? n - i : CKBN_SW_BLOCK;          \
        for (ptrdiff_t j = i; j < i + nb; j++)                                 \
            y[j] = x[j] * a + b;                                               \
        ckbn_swish_##SFX(y + i, nb, 0);                                        \
    }                                                                          \
}                                                                              \
/* m on the stack: o may be d or x */                                          \
static CKBN_NOINLINE void ckbn_sw_dx_row_##SFX(                                \
    const T *d, const T *x, T *o, ptrdiff_t n, const T *k1, const T *k2,       \
    const T *k3, const T *za, const T *zb)                                     \
{                                                                              \
    T m[CKBN_SW_BLOCK];                                                        \
    for (ptrdiff_t i = ckbn_sw_dx_vrow_##SFX(d, x, o, n, k1, k2, k3, za, zb);  \
         i < n; i += CKBN_SW_BLOCK) {                         \
        ptrdiff_t nb = n - i < CKBN_SW_BLOCK ? n - i : CKBN_SW_BLOCK;          \
        for (ptrdiff_t j = 0; j < nb; j++)                                     \
            m[j] = x[i + j] * za[i + j] + zb[i + j];                           \
        ckbn_swish_##SFX(m, nb, 1);                                            \
        for (ptrdiff_t j = 0; j < nb; j++)                                     \
            o[i + j] = (d[i + j] * m[j]) * k1[i + j]                           \
                       + (x[i + j] * k2[i + j] + k3[i + j]);                   \
    }                                                                          \
}                                                                              \
static CKBN_NOINLINE void ckbn_sw_dx_seg_##SFX(                                \
    const T *d, const T *x, T *o, ptrdiff_t n, T k1, T k2, T k3, T za, T zb)   \
{                                                                              \
    T m[CKBN_SW_BLOCK];                                                        \
    for (ptrdiff_t i = ckbn_sw_dx_vseg_##SFX(d, x, o, n, k1, k2, k3, za, zb);  \
         i < n; i += CKBN_SW_BLOCK) {                         \
        ptrdiff_t nb = n - i < CKBN_SW_BLOCK ? n - i : CKBN_SW_BLOCK;          \
        for (ptrdiff_t j = 0; j < nb; j++)                                     \
            m[j] = x[i + j] * za + zb;                                         \
        ckbn_swish_##SFX(m, nb, 1);                                            \
        for (ptrdiff_t j = 0; j < nb; j++)                                     \
            o[i + j] = (d[i + j] * m[j]) * k1 + (x[i + j] * k2 + k3);          \
    }                                                                          \
}                                                                              \
static CKBN_NOINLINE void ckbn_sw_gs_row_##SFX(                                \
    const T *d, const T *x, ptrdiff_t n, const T *mu, const T *za,             \
    const T *zb, T *b1, T *b2)                                                 \
{                                                                              \
    T m[CKBN_SW_BLOCK];                                                        \
    for (ptrdiff_t i = ckbn_sw_gs_vrow_##SFX(d, x, n, mu, za, zb, b1, b2);     \
         i < n; i += CKBN_SW_BLOCK) {                         \
        ptrdiff_t nb = n - i < CKBN_SW_BLOCK ? n - i : CKBN_SW_BLOCK;          \
        for (ptrdiff_t j = 0; j < nb; j++)                                     \
            m[j] = x[i + j] * za[i + j] + zb[i + j];                           \
        ckbn_swish_##SFX(m, nb, 1);                                            \
        for (ptrdiff_t j = 0; j < nb; j++) {                                   \
            T e = d[i + j] * m[j];                                             \
            b1[i + j] += e;                                                    \
            b2[i + j] += e * (x[i + j] - mu[i + j]);                           \
        }                                                                      \
    }                                                                          \
}
CKBN_SW_PASSES(f32, float)
CKBN_SW_PASSES(f64, double)

/* One step of a moving average in float32, v - (v - s) * rate, each
   operation rounded to float32 as NumPy's element-wise operations round it
   (Variable.assign_moving_average): the product goes through a volatile, so
   no FMA contraction fuses it into the subtraction, whatever -ffp-contract
   the variant is built with. */
static inline float ckbn_ema_f32(float v, float s, float rate)
{
    volatile float t = (v - s) * rate;
    return v - t;
}

/* ---- reading a block in memory order ------------------------------------ */

/* Read nrows runs of nbytes bytes, S bytes apart, one byte per 64-byte
   line, in memory order: the lines come in as one sequential stream that
   the hardware prefetchers follow, and stay in L2 (or L1) for the register
   tiles that then walk the block column by column.  Volatile loads: their
   values are not used, and the compiler must still issue them. */
static void ckbn_touch(const void *p, ptrdiff_t nbytes, ptrdiff_t S, ptrdiff_t nrows)
{
    const volatile unsigned char *q = (const volatile unsigned char *) p;
    for (ptrdiff_t i = 0; i < nrows; i++, q += S) {
        for (ptrdiff_t o = 0; o < nbytes; o += 64)
            (void) q[o];
        if (nbytes > 0)
            (void) q[nbytes - 1];
    }
}

/* ---- channels-first planes in memory order ------------------------------ */

/* The element-wise passes of _k_elementwise.pxi over channels-first planes
   read in memory order (ckbn_cf_ew_f32/f64): elements [e, e1) of x (and d),
   written to o, where plane s = i / R holds channel s % G and takes that
   channel's coefficients cf[q][s % G].  mode: 0  o = x*c0 + c1;
   1  the same with the piecewise-linear activation (slope, hi); 2  o = d*c0
   + (x*c1 + c2); 3  o = (d*m)*c0 + (x*c1 + c2), m = act'(x*c3 + c4); 4 and
   5  modes 1 and 3 with swish.  The expressions are those of _k_rows.pxi's
   loops and of the swish passes' vector loops, so each element gets the
   same bits.

   The output is written in whole vectors from its first vector boundary
   (each store inside one cache line; the plane boundaries fall anywhere);
   the coefficients stay in registers, broadcast once per plane, and a
   vector that holds the end of one plane and the start of the next takes
   each lane's coefficients from its own plane (a blend of two broadcasts),
   so the whole run is one stream of aligned stores, like a copy.  That
   needs R >= the lanes of a vector (at most one plane boundary per
   vector); shorter planes go lane by lane (correct, not fast).  The head
   before the first boundary and the tail after the last whole vector go
   through one padded vector each, lanes filled one at a time. */

#include <stdint.h>
#if defined(__GNUC__)
#ifndef CKBN_CF_VBYTES
#define CKBN_CF_VBYTES CKBN_VBYTES
#endif
typedef float ckbn_cf_vf __attribute__((vector_size(CKBN_CF_VBYTES), aligned(4), may_alias));
typedef double ckbn_cf_vd __attribute__((vector_size(CKBN_CF_VBYTES), aligned(8), may_alias));
typedef int ckbn_cf_vi32 __attribute__((vector_size(CKBN_CF_VBYTES)));
typedef long long ckbn_cf_vi64 __attribute__((vector_size(CKBN_CF_VBYTES)));
#define CKBN_SEL(V, VI, m, a, b) \
    ((V) (((VI) (a) & (VI) (m)) | ((VI) (b) & ~(VI) (m))))

/* r = the mode's expression of xv, dv and the coefficient vectors C[] */
#define CKBN_CF_EXPR0(V, VI, r, xv, dv, C) r = xv * C[0] + C[1]
#define CKBN_CF_EXPR1(V, VI, r, xv, dv, C) do {                                \
        V z_ = xv * C[0] + C[1];                                               \
        r = CKBN_SEL(V, VI, z_ > zero, CKBN_SEL(V, VI, z_ < hv, z_, hv),       \
                     z_ * sv + zero);                                          \
    } while (0)
#define CKBN_CF_EXPR2(V, VI, r, xv, dv, C) r = dv * C[0] + (xv * C[1] + C[2])
#define CKBN_CF_EXPR3(V, VI, r, xv, dv, C) do {                                \
        V z_ = xv * C[3] + C[4];                                               \
        V m_ = CKBN_SEL(V, VI, z_ > zero, CKBN_SEL(V, VI, z_ < hv, one, zero), \
                        sv);                                                   \
        r = (dv * m_) * C[0] + (xv * C[1] + C[2]);                             \
    } while (0)
/* with swish (ckbn_swish_*_one, as the swish passes' vector loops) */
#define CKBN_CF_EXPR4(V, VI, r, xv, dv, C) \
    r = (V) CKBN_CF_SW(xv * C[0] + C[1], 0)
#define CKBN_CF_EXPR5(V, VI, r, xv, dv, C) \
    r = (dv * (V) CKBN_CF_SW(xv * C[3] + C[4], 1)) * C[0] + (xv * C[1] + C[2])

/* A whole vector r stored at o + i (on a vector boundary): streamed
   (non-temporal) where nt is set. */
#if CKBN_CF_VBYTES == 64 && defined(__AVX512F__)
#include <immintrin.h>
#define CKBN_CF_STREAM(p, v) _mm512_stream_si512((__m512i *) (p), (__m512i) (v))
#elif CKBN_CF_VBYTES == 32 && defined(__AVX__)
#include <immintrin.h>
#define CKBN_CF_STREAM(p, v) _mm256_stream_si256((__m256i *) (p), (__m256i) (v))
#elif CKBN_CF_VBYTES == 16 && defined(__SSE2__)
#include <emmintrin.h>
#define CKBN_CF_STREAM(p, v) _mm_stream_si128((__m128i *) (p), (__m128i) (v))
#else
#define CKBN_CF_STREAM(p, v) (*(__typeof__(v) *) (p) = (v))
#endif
#define CKBN_CF_PUT(V, p, r)                                                   \
    do {                                                                       \
        if (nt)                                                                \
            CKBN_CF_STREAM(p, r);                                              \
        else                                                                   \
            *(V *) (p) = (r);                                                  \
    } while (0)
#define CKBN_CF_EW(NAME, T, V, VI, IT, NC, HASD, EXPR)                         \
static void NAME(const T *x, const T *d, T *o, ptrdiff_t e, ptrdiff_t e1,      \
                 ptrdiff_t R, ptrdiff_t G, const T *const *cf, T slope, T hi,  \
                 int nt)                                                       \
{                                                                              \
    enum { L = CKBN_CF_VBYTES / sizeof(T) };                                      \
    const V zero = CKBN_SPLAT(V, 0), one = CKBN_SPLAT(V, 1);                   \
    const V sv = CKBN_SPLAT(V, slope), hv = CKBN_SPLAT(V, hi);                 \
    V c[NC], nx[NC], bl[NC], xv, dv = zero, r;                                 \
    VI iota;                                                                   \
    ptrdiff_t g = (e / R) % G, pe = (e / R + 1) * R, g2, i = e, j, k, n, stop; \
    int q;                                                                     \
    (void) one; (void) sv; (void) hv; (void) d; (void) dv;                     \
    for (j = 0; j < L; j++)                                                    \
        iota[j] = (IT) j;                                                      \
    /* elements before o's first vector boundary (all of them when the       \
       planes are shorter than a vector) */                                    \
    k = (ptrdiff_t) (((uintptr_t) CKBN_CF_VBYTES                              \
                      - (uintptr_t) (o + e) % CKBN_CF_VBYTES) % CKBN_CF_VBYTES); \
    k = k % sizeof(T) == 0 ? k / (ptrdiff_t) sizeof(T) : e1 - e;               \
    if (R < L || k > e1 - e)                                                   \
        k = e1 - e;                                                            \
    for (;;) {                                                                 \
        /* k elements from i, one padded vector at a time */                   \
        while (k > 0) {                                                        \
            n = k < L ? k : L;                                                 \
            xv = zero;                                                         \
            for (q = 0; q < NC; q++)                                           \
                bl[q] = zero;                                                  \
            for (j = 0; j < n; j++) {                                          \
                if (i + j == pe) {                                             \
                    g = g + 1 == G ? 0 : g + 1;                                \
                    pe += R;                                                   \
                }                                                              \
                xv[j] = x[i + j];                                              \
                if (HASD)                                                      \
                    dv[j] = d[i + j];                                          \
                for (q = 0; q < NC; q++)                                       \
                    bl[q][j] = cf[q][g];                                       \
            }                                                                  \
            EXPR(V, VI, r, xv, dv, bl);                                        \
            for (j = 0; j < n; j++)                                            \
                o[i + j] = r[j];                                               \
            i += n;                                                            \
            k -= n;                                                            \
        }                                                                      \
        if (i >= e1)                                                           \
            return;                                                            \
        /* whole aligned vectors */                                            \
        if (i == pe) {                                                         \
            g = g + 1 == G ? 0 : g + 1;                                        \
            pe += R;                                                           \
        }                                                                      \
        for (q = 0; q < NC; q++)                                               \
            c[q] = CKBN_SPLAT(V, cf[q][g]);                                    \
        while (i + L <= e1) {                                                  \
            stop = pe < e1 ? pe : e1;                                          \
            for (; i + L <= stop; i += L) {                                    \
                xv = *(const V *) (x + i);                                     \
                if (HASD)                                                      \
                    dv = *(const V *) (d + i);                                 \
                EXPR(V, VI, r, xv, dv, c);                                     \
                CKBN_CF_PUT(V, o + i, r);                                      \
            }                                                                  \
            if (i + L > e1)                                                    \
                break;                                                         \
            g2 = g + 1 == G ? 0 : g + 1;                                       \
            for (q = 0; q < NC; q++)                                           \
                nx[q] = CKBN_SPLAT(V, cf[q][g2]);                              \
            if (i < pe) {                                                      \
                /* lanes from pe - i on belong to the next plane */            \
                VI m = (VI) (iota >= CKBN_SPLAT(VI, (IT) (pe - i)));          \
                for (q = 0; q < NC; q++)                                       \
                    bl[q] = CKBN_SEL(V, VI, m, nx[q], c[q]);                   \
                xv = *(const V *) (x + i);                                     \
                if (HASD)                                                      \
                    dv = *(const V *) (d + i);                                 \
                EXPR(V, VI, r, xv, dv, bl);                                    \
                CKBN_CF_PUT(V, o + i, r);                                      \
                i += L;                                                        \
            }                                                                  \
            for (q = 0; q < NC; q++)                                           \
                c[q] = nx[q];                                                  \
            g = g2;                                                            \
            pe += R;                                                           \
        }                                                                      \
        k = e1 - i;                                                            \
        if (k == 0)                                                            \
            return;                                                            \
    }                                                                          \
}

CKBN_CF_EW(ckbn_cf_aff_f32, float, ckbn_cf_vf, ckbn_cf_vi32, int, 2, 0, CKBN_CF_EXPR0)
CKBN_CF_EW(ckbn_cf_afa_f32, float, ckbn_cf_vf, ckbn_cf_vi32, int, 2, 0, CKBN_CF_EXPR1)
CKBN_CF_EW(ckbn_cf_dx_f32, float, ckbn_cf_vf, ckbn_cf_vi32, int, 3, 1, CKBN_CF_EXPR2)
CKBN_CF_EW(ckbn_cf_dxa_f32, float, ckbn_cf_vf, ckbn_cf_vi32, int, 5, 1, CKBN_CF_EXPR3)
#define CKBN_CF_SW(z, g) ckbn_swish_f32_one((ckbn_vf) (z), g)
CKBN_CF_EW(ckbn_cf_afs_f32, float, ckbn_cf_vf, ckbn_cf_vi32, int, 2, 0, CKBN_CF_EXPR4)
CKBN_CF_EW(ckbn_cf_dxs_f32, float, ckbn_cf_vf, ckbn_cf_vi32, int, 5, 1, CKBN_CF_EXPR5)
#undef CKBN_CF_SW
CKBN_CF_EW(ckbn_cf_aff_f64, double, ckbn_cf_vd, ckbn_cf_vi64, long long, 2, 0, CKBN_CF_EXPR0)
CKBN_CF_EW(ckbn_cf_afa_f64, double, ckbn_cf_vd, ckbn_cf_vi64, long long, 2, 0, CKBN_CF_EXPR1)
CKBN_CF_EW(ckbn_cf_dx_f64, double, ckbn_cf_vd, ckbn_cf_vi64, long long, 3, 1, CKBN_CF_EXPR2)
CKBN_CF_EW(ckbn_cf_dxa_f64, double, ckbn_cf_vd, ckbn_cf_vi64, long long, 5, 1, CKBN_CF_EXPR3)
#define CKBN_CF_SW(z, g) ckbn_swish_f64_one((ckbn_vd) (z), g)
CKBN_CF_EW(ckbn_cf_afs_f64, double, ckbn_cf_vd, ckbn_cf_vi64, long long, 2, 0, CKBN_CF_EXPR4)
CKBN_CF_EW(ckbn_cf_dxs_f64, double, ckbn_cf_vd, ckbn_cf_vi64, long long, 5, 1, CKBN_CF_EXPR5)
#undef CKBN_CF_SW

#define CKBN_CF_DISPATCH(SFX, T)                                               \
static void ckbn_cf_ew_##SFX(int mode, const T *x, const T *d, T *o,           \
                             ptrdiff_t e0, ptrdiff_t e1, ptrdiff_t R,          \
                             ptrdiff_t G, const T *const *cf, T slope, T hi,   \
                             int nt)                                           \
{                                                                              \
    if (mode == 0)                                                             \
        ckbn_cf_aff_##SFX(x, d, o, e0, e1, R, G, cf, slope, hi, nt);           \
    else if (mode == 1)                                                        \
        ckbn_cf_afa_##SFX(x, d, o, e0, e1, R, G, cf, slope, hi, nt);           \
    else if (mode == 2)                                                        \
        ckbn_cf_dx_##SFX(x, d, o, e0, e1, R, G, cf, slope, hi, nt);            \
    else if (mode == 3)                                                        \
        ckbn_cf_dxa_##SFX(x, d, o, e0, e1, R, G, cf, slope, hi, nt);           \
    else if (mode == 4)                                                        \
        ckbn_cf_afs_##SFX(x, d, o, e0, e1, R, G, cf, slope, hi, nt);           \
    else                                                                       \
        ckbn_cf_dxs_##SFX(x, d, o, e0, e1, R, G, cf, slope, hi, nt);           \
}
#else
/* Without vector extensions: the same expressions element by element. */
#define CKBN_CF_DISPATCH(SFX, T)                                               \
static void ckbn_cf_ew_##SFX(int mode, const T *x, const T *d, T *o,           \
                             ptrdiff_t e0, ptrdiff_t e1, ptrdiff_t R,          \
                             ptrdiff_t G, const T *const *cf, T slope, T hi,   \
                             int nt)                                           \
{                                                                              \
    (void) nt;                                                                 \
    for (ptrdiff_t i = e0; i < e1; i++) {                                      \
        ptrdiff_t g = (i / R) % G;                                             \
        T z, m;                                                                \
        if (mode == 0) {                                                       \
            o[i] = x[i] * cf[0][g] + cf[1][g];                                 \
        } else if (mode == 1) {                                                \
            z = x[i] * cf[0][g] + cf[1][g];                                    \
            o[i] = z > 0 ? (z < hi ? z : hi) : z * slope + 0;                  \
        } else if (mode == 2) {                                                \
            o[i] = d[i] * cf[0][g] + (x[i] * cf[1][g] + cf[2][g]);             \
        } else if (mode == 4) {                                                \
            z = x[i] * cf[0][g] + cf[1][g];                                    \
            ckbn_swish_##SFX(&z, 1, 0);                                        \
            o[i] = z;                                                          \
        } else {                                                               \
            z = x[i] * cf[3][g] + cf[4][g];                                    \
            if (mode == 5)                                                     \
                ckbn_swish_##SFX(&z, 1, 1);                                    \
            m = mode == 5 ? z : z > 0 ? (z < hi ? (T) 1 : (T) 0) : slope;      \
            o[i] = (d[i] * m) * cf[0][g] + (x[i] * cf[1][g] + cf[2][g]);       \
        }                                                                      \
    }                                                                          \
}
#endif
CKBN_CF_DISPATCH(f32, float)
CKBN_CF_DISPATCH(f64, double)

/* ---- channels-first planes reduced in memory order ----------------------

   The statistics and backward sums of channels-first planes of R elements
   read one sample after another (ckbn_pl_red_f32/f64): planes [0, np) from
   x (and d), plane s of channel g = s % G (np a multiple of G),
     statistics (mom):        s1[g] += sum(x - k[g]),  s2[g] += sum((x - k[g])^2)
     backward sums (gs):      s1[g] += sum(d),         s2[g] += sum(d * (x - k[g]))
     through ReLU & co (gsa): the same of e = d * act'(x * za[g] + zb[g]).
   The statistics' shift k[g] is the first value of channel g's first plane
   here where nk = G (planes [0, nk) set k before they are summed): taken as
   the plane is read, not gathered from G planes beforehand (a pass of G
   strided loads, 8% of the time of 64x2048x7x7 statistics).
   A plane is summed in whole vectors from its first element (planes of one
   block, CKBN_PL_BLOCK vectors or fewer: its last R % lanes elements too, in
   the last lanes of the vector that ends it), reduced to one value by halves
   (lane j plus lane j + n/2, down to one lane; larger planes then add their
   last elements in order), and the plane's sum added to the float64 sums:
   the order depends on R and the vector width alone, not on the address or
   the thread count.  The chunks (_k_chunks.pxi) instead
   walk P runs of a few KB, G*R elements apart, and a chunk's per-lane
   accumulators cost as much as its data where P is small: 64x2048x7x7 and
   8x1024x8x8 NCHW statistics took 2.3x and 5.1x a read there, 1.4x and
   2.1x in this order (AMD EPYC Zen 4, float32, 1 thread; C probe in
   benchmarks/results/zen4-issue18-s11/planes.c). */
#if defined(__GNUC__)
#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define CKBN_HAVE_SHUFFLE 1
#endif
#endif
typedef float ckbn_pl_f2 __attribute__((vector_size(8)));
typedef float ckbn_pl_f4 __attribute__((vector_size(16)));
typedef float ckbn_pl_f8 __attribute__((vector_size(32)));
typedef float ckbn_pl_f16 __attribute__((vector_size(64)));
typedef double ckbn_pl_d2 __attribute__((vector_size(16)));
typedef double ckbn_pl_d4 __attribute__((vector_size(32)));
typedef double ckbn_pl_d8 __attribute__((vector_size(64)));
/* lo + hi halves of v (n lanes) as a vector of n/2 lanes */
#ifdef CKBN_HAVE_SHUFFLE
#define CKBN_PL_HALF16(H, v) ((H) __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) \
                              + (H) __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15))
#define CKBN_PL_HALF8(H, v) ((H) __builtin_shufflevector(v, v, 0, 1, 2, 3) \
                             + (H) __builtin_shufflevector(v, v, 4, 5, 6, 7))
#define CKBN_PL_HALF4(H, v) ((H) __builtin_shufflevector(v, v, 0, 1) \
                             + (H) __builtin_shufflevector(v, v, 2, 3))
#else
#define CKBN_PL_HALFM(H, v) __extension__ ({ H lo_, hi_;                       \
        __builtin_memcpy(&lo_, &(v), sizeof lo_);                              \
        __builtin_memcpy(&hi_, (const char *) &(v) + sizeof lo_, sizeof hi_);  \
        lo_ + hi_; })
#define CKBN_PL_HALF16(H, v) CKBN_PL_HALFM(H, v)
#define CKBN_PL_HALF8(H, v) CKBN_PL_HALFM(H, v)
#define CKBN_PL_HALF4(H, v) CKBN_PL_HALFM(H, v)
#endif
static inline float ckbn_pl_hs_f2(ckbn_pl_f2 v) { return v[0] + v[1]; }
static inline float ckbn_pl_hs_f4(ckbn_pl_f4 v) { return ckbn_pl_hs_f2(CKBN_PL_HALF4(ckbn_pl_f2, v)); }
static inline float ckbn_pl_hs_f8(ckbn_pl_f8 v) { return ckbn_pl_hs_f4(CKBN_PL_HALF8(ckbn_pl_f4, v)); }
static inline float ckbn_pl_hs_f16(ckbn_pl_f16 v) { return ckbn_pl_hs_f8(CKBN_PL_HALF16(ckbn_pl_f8, v)); }
static inline double ckbn_pl_hs_d2(ckbn_pl_d2 v) { return v[0] + v[1]; }
static inline double ckbn_pl_hs_d4(ckbn_pl_d4 v) { return ckbn_pl_hs_d2(CKBN_PL_HALF4(ckbn_pl_d2, v)); }
static inline double ckbn_pl_hs_d8(ckbn_pl_d8 v) { return ckbn_pl_hs_d4(CKBN_PL_HALF8(ckbn_pl_d4, v)); }
#if CKBN_CF_VBYTES == 64
#define CKBN_PL_HS_F(v) ckbn_pl_hs_f16((ckbn_pl_f16) (v))
#define CKBN_PL_HS_D(v) ckbn_pl_hs_d8((ckbn_pl_d8) (v))
#elif CKBN_CF_VBYTES == 32
#define CKBN_PL_HS_F(v) ckbn_pl_hs_f8((ckbn_pl_f8) (v))
#define CKBN_PL_HS_D(v) ckbn_pl_hs_d4((ckbn_pl_d4) (v))
#else
#define CKBN_PL_HS_F(v) ckbn_pl_hs_f4((ckbn_pl_f4) (v))
#define CKBN_PL_HS_D(v) ckbn_pl_hs_d2((ckbn_pl_d2) (v))
#endif

/* Four planes' vectors to their four sums, plane q in lane q: the halves of
   ckbn_pl_hs_* (lane j plus lane j + n/2, down to one lane), the same adds
   lane for lane, with the four planes side by side in each shuffle.  One
   plane at a time, each reduction is a chain of dependent shuffles and adds
   of its own; four at a time share them (16 float32 lanes: 10 shuffles and
   5 adds for four planes, against 16 and 16; AMD Zen 4, 6x6, 7x7 and 8x8
   planes, session 16, benchmarks/results/zen4-issue18-s16/planes.c). */
#ifdef CKBN_HAVE_SHUFFLE
#if CKBN_CF_VBYTES == 64
/* lanes o..o+7 of a, then of b */
#define CKBN_PL_PAIR16(a, b, o)                                                \
    __builtin_shufflevector(a, b, 0 + o, 1 + o, 2 + o, 3 + o, 4 + o, 5 + o,    \
                            6 + o, 7 + o, 16 + o, 17 + o, 18 + o, 19 + o,      \
                            20 + o, 21 + o, 22 + o, 23 + o)
static inline ckbn_pl_f4 ckbn_pl_hs4_f16(ckbn_pl_f16 a0, ckbn_pl_f16 a1, ckbn_pl_f16 a2,
                                         ckbn_pl_f16 a3)
{
    /* lanes 0-7 | 8-15: j + (j+8) of planes 0 | 1 (c0) and 2 | 3 (c1) */
    ckbn_pl_f16 c0 = CKBN_PL_PAIR16(a0, a1, 0) + CKBN_PL_PAIR16(a0, a1, 8);
    ckbn_pl_f16 c1 = CKBN_PL_PAIR16(a2, a3, 0) + CKBN_PL_PAIR16(a2, a3, 8);
    /* blocks of four: j + (j+4) of planes 0, 1, 2, 3 */
    ckbn_pl_f16 d = __builtin_shufflevector(c0, c1, 0, 1, 2, 3, 8, 9, 10, 11,
                                            16, 17, 18, 19, 24, 25, 26, 27)
                  + __builtin_shufflevector(c0, c1, 4, 5, 6, 7, 12, 13, 14, 15,
                                            20, 21, 22, 23, 28, 29, 30, 31);
    /* pairs: j + (j+2); then j + (j+1) */
    ckbn_pl_f8 e = __builtin_shufflevector(d, d, 0, 1, 4, 5, 8, 9, 12, 13)
                 + __builtin_shufflevector(d, d, 2, 3, 6, 7, 10, 11, 14, 15);
    return __builtin_shufflevector(e, e, 0, 2, 4, 6)
         + __builtin_shufflevector(e, e, 1, 3, 5, 7);
}
#endif
#define CKBN_PL_HS4_8(NAME, V8, V4)                                            \
static inline V4 NAME(V8 a0, V8 a1, V8 a2, V8 a3)                              \
{                                                                              \
    /* lanes 0-3 | 4-7: j + (j+4) of planes 0 | 1 (c0) and 2 | 3 (c1) */       \
    V8 c0 = __builtin_shufflevector(a0, a1, 0, 1, 2, 3, 8, 9, 10, 11)          \
          + __builtin_shufflevector(a0, a1, 4, 5, 6, 7, 12, 13, 14, 15);       \
    V8 c1 = __builtin_shufflevector(a2, a3, 0, 1, 2, 3, 8, 9, 10, 11)          \
          + __builtin_shufflevector(a2, a3, 4, 5, 6, 7, 12, 13, 14, 15);       \
    /* pairs: j + (j+2) of planes 0, 1, 2, 3; then j + (j+1) */                \
    V8 d = __builtin_shufflevector(c0, c1, 0, 1, 4, 5, 8, 9, 12, 13)           \
         + __builtin_shufflevector(c0, c1, 2, 3, 6, 7, 10, 11, 14, 15);        \
    return __builtin_shufflevector(d, d, 0, 2, 4, 6)                           \
         + __builtin_shufflevector(d, d, 1, 3, 5, 7);                          \
}
#define CKBN_PL_HS4_4(NAME, V4)                                                \
static inline V4 NAME(V4 a0, V4 a1, V4 a2, V4 a3)                              \
{                                                                              \
    /* pairs: j + (j+2) of planes 0 | 1 (c0) and 2 | 3 (c1); then j + (j+1) */ \
    V4 c0 = __builtin_shufflevector(a0, a1, 0, 1, 4, 5)                        \
          + __builtin_shufflevector(a0, a1, 2, 3, 6, 7);                       \
    V4 c1 = __builtin_shufflevector(a2, a3, 0, 1, 4, 5)                        \
          + __builtin_shufflevector(a2, a3, 2, 3, 6, 7);                       \
    return __builtin_shufflevector(c0, c1, 0, 2, 4, 6)                         \
         + __builtin_shufflevector(c0, c1, 1, 3, 5, 7);                        \
}
#if CKBN_CF_VBYTES == 64
CKBN_PL_HS4_8(ckbn_pl_hs4_d8, ckbn_pl_d8, ckbn_pl_d4)
#elif CKBN_CF_VBYTES == 32
CKBN_PL_HS4_8(ckbn_pl_hs4_f8, ckbn_pl_f8, ckbn_pl_f4)
CKBN_PL_HS4_4(ckbn_pl_hs4_d4, ckbn_pl_d4)
#else
CKBN_PL_HS4_4(ckbn_pl_hs4_f4, ckbn_pl_f4)
#endif
#if CKBN_CF_VBYTES == 64
#define CKBN_PL_HS4_F(a0, a1, a2, a3) \
    ckbn_pl_hs4_f16((ckbn_pl_f16) (a0), (ckbn_pl_f16) (a1), (ckbn_pl_f16) (a2), \
                   (ckbn_pl_f16) (a3))
#define CKBN_PL_HS4_D(a0, a1, a2, a3) \
    ckbn_pl_hs4_d8((ckbn_pl_d8) (a0), (ckbn_pl_d8) (a1), (ckbn_pl_d8) (a2), \
                  (ckbn_pl_d8) (a3))
#elif CKBN_CF_VBYTES == 32
#define CKBN_PL_HS4_F(a0, a1, a2, a3) \
    ckbn_pl_hs4_f8((ckbn_pl_f8) (a0), (ckbn_pl_f8) (a1), (ckbn_pl_f8) (a2), \
                  (ckbn_pl_f8) (a3))
#define CKBN_PL_HS4_D(a0, a1, a2, a3) \
    ckbn_pl_hs4_d4((ckbn_pl_d4) (a0), (ckbn_pl_d4) (a1), (ckbn_pl_d4) (a2), \
                  (ckbn_pl_d4) (a3))
#else   /* 16-byte vectors: floats four at a time, doubles one plane at a time */
#define CKBN_PL_HS4_F(a0, a1, a2, a3) \
    ckbn_pl_hs4_f4((ckbn_pl_f4) (a0), (ckbn_pl_f4) (a1), (ckbn_pl_f4) (a2), \
                  (ckbn_pl_f4) (a3))
#endif
#endif
/* CKBN_PL_N4_F / _D: whether four planes are reduced at a time (else the
   HS4 macro is a placeholder the code never reaches). */
#ifdef CKBN_PL_HS4_F
#define CKBN_PL_N4_F 1
#else
#define CKBN_PL_N4_F 0
#define CKBN_PL_HS4_F(a0, a1, a2, a3) ((ckbn_pl_d4) {0, 0, 0, 0})
#endif
#ifdef CKBN_PL_HS4_D
#define CKBN_PL_N4_D 1
#else
#define CKBN_PL_N4_D 0
#define CKBN_PL_HS4_D(a0, a1, a2, a3) ((ckbn_pl_d4) {0, 0, 0, 0})
#endif

/* TERM 0: the statistics' terms, 1: the backward sums' terms, 2: the
   backward sums of e = d * act'(z), z = x * za[g] + zb[g], act'(z) = z > 0 ?
   (z < hi ? 1 : 0) : slope (ReLU, ReLU6, leaky ReLU; the expression of
   _pw_d in _k_rows.pxi).  A lane sums at most CKBN_PL_BLOCK vectors in the
   data type before the block's sum goes to float64 (as the rows' BLOCK in
   _k_common.pxi).

   Planes of one block (R <= CKBN_PL_BLOCK vectors): the last R % lanes
   elements are taken from the vector that ends the plane, the lanes before
   them cleared (selected out, so an infinity there cannot turn into a NaN),
   and added to the plane's vector sums; then the plane's two sums are
   reduced by halves, four planes at a time where four channels follow one
   another (the same value as one at a time), and added to s1[g], s2[g] in
   float64.  Each plane's value depends on R and the vector width alone.
   Against summing the last elements one by one after the reduction (AMD
   Zen 4, avx512, C probe, one read of x first): 64x2048x7x7 statistics
   1.83x against 2.13x a read, 64x2048x6x6 2.34x against 3.40x, 64x1024x8x8
   1.56x against 2.08x.  Larger planes keep their order: whole vectors in
   blocks, each block reduced, then the last elements one by one. */
#define CKBN_PL_BLOCK 64
/* sp[q] += plane q's reduced sum (v0 .. v3 by HS4), q = 0..3, in float64:
   the four converted and added as one vector (the same adds, lane for lane;
   lane by lane, the extracts and scalar adds took as long as the reduction). */
typedef double ckbn_pl_d4u __attribute__((vector_size(32), aligned(8), may_alias));
#define CKBN_PL_ADD4(sp, HS4, v0, v1, v2, v3)                                  \
    do {                                                                       \
        __auto_type r4_ = HS4(v0, v1, v2, v3);                                 \
        *(ckbn_pl_d4u *) (sp) += __builtin_convertvector(r4_, ckbn_pl_d4u);   \
    } while (0)
#define CKBN_PL_STEP(TERM, V, VI, a, b, xv, dv, m)                             \
    do {                                                                       \
        if (TERM == 0) {                                                       \
            const V u_ = CKBN_SEL(V, VI, m, xv - kv, zero);                    \
            a += u_;                                                           \
            b += u_ * u_;                                                      \
        } else {                                                               \
            V e_ = dv;                                                         \
            if (TERM == 2) {                                                   \
                const V z_ = xv * av + bv;                                     \
                e_ = e_ * CKBN_SEL(V, VI, z_ > zero,                           \
                                   CKBN_SEL(V, VI, z_ < hv, one, zero), sv);   \
            }                                                                  \
            e_ = CKBN_SEL(V, VI, m, e_, zero);                                 \
            a += e_;                                                           \
            b += e_ * CKBN_SEL(V, VI, m, xv - kv, zero);                       \
        }                                                                      \
    } while (0)
/* One plane of one block: a, b = the plane's vector sums, channel g. */
#define CKBN_PL_ONE(TERM, T, V, VI, xp, dp, g, a, b)                           \
    do {                                                                       \
        const V kv = CKBN_SPLAT(V, k[g]);                                      \
        const V av = CKBN_SPLAT(V, TERM == 2 ? za[g] : 0);                     \
        const V bv = CKBN_SPLAT(V, TERM == 2 ? zb[g] : 0);                     \
        ptrdiff_t i_;                                                          \
        (void) av; (void) bv;                                                  \
        a = zero;                                                              \
        b = zero;                                                              \
        for (i_ = 0; i_ < NV; i_++)                                            \
            CKBN_PL_STEP(TERM, V, VI, a, b, *(const V *) ((xp) + i_ * L),      \
                         *(const V *) ((dp) + i_ * L), all);                   \
        if (NV * L < R)                                                        \
            CKBN_PL_STEP(TERM, V, VI, a, b, *(const V *) ((xp) + R - L),       \
                         *(const V *) ((dp) + R - L), tail);                   \
    } while (0)
/* Planes of one block: NAME##_one with NV = R / L whole vectors per plane,
   a constant where NAME dispatches planes of 1-4 vectors (and a tail), so
   that each plane's loop is unrolled. */
#define CKBN_PL_RED(NAME, T, V, VI, HS, HS4, N4, TERM)                           \
static inline __attribute__((always_inline)) void                              \
NAME##_one(const T *x, const T *d, ptrdiff_t np, ptrdiff_t R, ptrdiff_t G,     \
           T *k, ptrdiff_t nk, const T *za, const T *zb, T slope, T hi,         \
           double *s1, double *s2, const ptrdiff_t NV)                         \
{                                                                              \
    enum { L = CKBN_CF_VBYTES / sizeof(T) };                                   \
    const V zero = CKBN_SPLAT(V, 0), one = CKBN_SPLAT(V, 1);                   \
    const V sv = CKBN_SPLAT(V, slope), hv = CKBN_SPLAT(V, hi);                 \
    ptrdiff_t s, g = 0, i;                                                     \
    (void) za; (void) zb; (void) one; (void) sv; (void) hv;                    \
    VI all, tail;                                                              \
    for (i = 0; i < L; i++) {                                                  \
        all[i] = -1;                                                           \
        tail[i] = i >= L - R % L ? -1 : 0;                                     \
    }                                                                          \
    for (s = 0; s < np;) {                                                     \
        if (N4 && s + 4 <= np && g + 4 <= G) {                                 \
            V a, b, a0, b0, a1, b1, a2, b2;                                    \
            if (TERM == 0 && s < nk) {     /* s == g: the first run */         \
                k[g] = x[0];                                                   \
                k[g + 1] = x[R];                                               \
                k[g + 2] = x[2 * R];                                           \
                k[g + 3] = x[3 * R];                                           \
            }                                                                  \
            CKBN_PL_ONE(TERM, T, V, VI, x, d, g, a0, b0);                      \
            CKBN_PL_ONE(TERM, T, V, VI, x + R, d + R, g + 1, a1, b1);          \
            CKBN_PL_ONE(TERM, T, V, VI, x + 2 * R, d + 2 * R, g + 2, a2, b2);  \
            CKBN_PL_ONE(TERM, T, V, VI, x + 3 * R, d + 3 * R, g + 3, a, b);    \
            CKBN_PL_ADD4(s1 + g, HS4, a0, a1, a2, a);                          \
            CKBN_PL_ADD4(s2 + g, HS4, b0, b1, b2, b);                          \
            s += 4; x += 4 * R; d += 4 * R; g += 4;                            \
        } else {                                                               \
            V a, b;                                                            \
            if (TERM == 0 && s < nk)                                           \
                k[g] = x[0];                                                   \
            CKBN_PL_ONE(TERM, T, V, VI, x, d, g, a, b);                        \
            s1[g] += (double) HS(a);                                           \
            s2[g] += (double) HS(b);                                           \
            s += 1; x += R; d += R; g += 1;                                    \
        }                                                                      \
        if (g == G)                                                            \
            g = 0;                                                             \
    }                                                                          \
}                                                                              \
static void NAME(const T *x, const T *d, ptrdiff_t np, ptrdiff_t R,            \
                 ptrdiff_t G, T *k, ptrdiff_t nk, const T *za, const T *zb,    \
                 T slope, T hi, double *s1, double *s2)                        \
{                                                                              \
    enum { L = CKBN_CF_VBYTES / sizeof(T) };                                   \
    const V zero = CKBN_SPLAT(V, 0), one = CKBN_SPLAT(V, 1);                   \
    const V sv = CKBN_SPLAT(V, slope), hv = CKBN_SPLAT(V, hi);                 \
    ptrdiff_t s, g = 0, i, e;                                                  \
    (void) za; (void) zb; (void) one; (void) sv; (void) hv;                    \
    if (R <= CKBN_PL_BLOCK * L) {                                              \
        switch (R / L) {                                                       \
        case 1: NAME##_one(x, d, np, R, G, k, nk, za, zb, slope, hi, s1, s2, 1); break; \
        case 2: NAME##_one(x, d, np, R, G, k, nk, za, zb, slope, hi, s1, s2, 2); break; \
        case 3: NAME##_one(x, d, np, R, G, k, nk, za, zb, slope, hi, s1, s2, 3); break; \
        case 4: NAME##_one(x, d, np, R, G, k, nk, za, zb, slope, hi, s1, s2, 4); break; \
        default: NAME##_one(x, d, np, R, G, k, nk, za, zb, slope, hi, s1, s2, R / L); \
        }                                                                      \
        return;                                                                \
    }                                                                          \
    for (s = 0; s < np; s++, x += R, d += R) {                                 \
        if (TERM == 0 && s < nk)                                               \
            k[g] = x[0];                                                       \
        const V kv = CKBN_SPLAT(V, k[g]);                                      \
        const V av = CKBN_SPLAT(V, TERM == 2 ? za[g] : 0);                     \
        const V bv = CKBN_SPLAT(V, TERM == 2 ? zb[g] : 0);                     \
        double u1 = 0.0, u2 = 0.0;                                             \
        T t1 = 0, t2 = 0;                                                      \
        for (i = 0; i + L <= R;) {                                             \
            V a = zero, b = zero;                                              \
            e = i + CKBN_PL_BLOCK * L;                                         \
            if (e > R)                                                         \
                e = R;                                                         \
            for (; i + L <= e; i += L) {                                       \
                const V xv = *(const V *) (x + i);                             \
                if (TERM == 0) {                                               \
                    const V u = xv - kv;                                       \
                    a += u;                                                    \
                    b += u * u;                                                \
                } else {                                                       \
                    V dv = *(const V *) (d + i);                               \
                    if (TERM == 2) {                                           \
                        const V z = xv * av + bv;                              \
                        dv = dv * CKBN_SEL(V, VI, z > zero,                    \
                                           CKBN_SEL(V, VI, z < hv, one, zero), \
                                           sv);                                \
                    }                                                          \
                    a += dv;                                                   \
                    b += dv * (xv - kv);                                       \
                }                                                              \
            }                                                                  \
            u1 += (double) HS(a);                                              \
            u2 += (double) HS(b);                                              \
        }                                                                      \
        for (; i < R; i++) {                                                   \
            const T u = x[i] - k[g];                                           \
            if (TERM == 0) {                                                   \
                t1 += u;                                                       \
                t2 += u * u;                                                   \
            } else {                                                           \
                T ev = d[i];                                                   \
                if (TERM == 2) {                                               \
                    const T z = x[i] * za[g] + zb[g];                          \
                    ev = ev * (z > 0 ? (z < hi ? (T) 1 : (T) 0) : slope);      \
                }                                                              \
                t1 += ev;                                                      \
                t2 += ev * u;                                                  \
            }                                                                  \
        }                                                                      \
        s1[g] += u1 + (double) t1;                                             \
        s2[g] += u2 + (double) t2;                                             \
        g = g + 1 == G ? 0 : g + 1;                                            \
    }                                                                          \
}
CKBN_PL_RED(ckbn_pl_mom_f32, float, ckbn_cf_vf, ckbn_cf_vi32, CKBN_PL_HS_F, CKBN_PL_HS4_F, CKBN_PL_N4_F, 0)
CKBN_PL_RED(ckbn_pl_gs_f32, float, ckbn_cf_vf, ckbn_cf_vi32, CKBN_PL_HS_F, CKBN_PL_HS4_F, CKBN_PL_N4_F, 1)
CKBN_PL_RED(ckbn_pl_gsa_f32, float, ckbn_cf_vf, ckbn_cf_vi32, CKBN_PL_HS_F, CKBN_PL_HS4_F, CKBN_PL_N4_F, 2)
CKBN_PL_RED(ckbn_pl_mom_f64, double, ckbn_cf_vd, ckbn_cf_vi64, CKBN_PL_HS_D, CKBN_PL_HS4_D, CKBN_PL_N4_D, 0)
CKBN_PL_RED(ckbn_pl_gs_f64, double, ckbn_cf_vd, ckbn_cf_vi64, CKBN_PL_HS_D, CKBN_PL_HS4_D, CKBN_PL_N4_D, 1)
CKBN_PL_RED(ckbn_pl_gsa_f64, double, ckbn_cf_vd, ckbn_cf_vi64, CKBN_PL_HS_D, CKBN_PL_HS4_D, CKBN_PL_N4_D, 2)
#else
/* Without vector extensions: one lane, element by element. */
#define CKBN_PL_RED(NAME, T, TERM)                                             \
static void NAME(const T *x, const T *d, ptrdiff_t np, ptrdiff_t R,            \
                 ptrdiff_t G, T *k, ptrdiff_t nk, const T *za, const T *zb,    \
                 T slope, T hi, double *s1, double *s2)                        \
{                                                                              \
    for (ptrdiff_t s = 0; s < np; s++) {                                       \
        ptrdiff_t g = s % G;                                                   \
        T t1 = 0, t2 = 0;                                                      \
        if (TERM == 0 && s < nk)                                               \
            k[g] = x[s * R];                                                   \
        for (ptrdiff_t i = s * R; i < (s + 1) * R; i++) {                      \
            T u = x[i] - k[g], ev = d[i];                                      \
            if (TERM == 2) {                                                   \
                T z = x[i] * za[g] + zb[g];                                    \
                ev = ev * (z > 0 ? (z < hi ? (T) 1 : (T) 0) : slope);          \
            }                                                                  \
            t1 += TERM == 0 ? u : ev;                                          \
            t2 += TERM == 0 ? u * u : ev * u;                                  \
        }                                                                      \
        s1[g] += (double) t1;                                                  \
        s2[g] += (double) t2;                                                  \
    }                                                                          \
}
CKBN_PL_RED(ckbn_pl_mom_f32, float, 0)
CKBN_PL_RED(ckbn_pl_gs_f32, float, 1)
CKBN_PL_RED(ckbn_pl_gsa_f32, float, 2)
CKBN_PL_RED(ckbn_pl_mom_f64, double, 0)
CKBN_PL_RED(ckbn_pl_gs_f64, double, 1)
CKBN_PL_RED(ckbn_pl_gsa_f64, double, 2)
#endif
/* term: 0 statistics, 1 backward sums, 2 backward sums through the
   piecewise-linear activation (za, zb, slope, hi read only then). */
#define CKBN_PL_DISPATCH(SFX, T)                                               \
static void ckbn_pl_red_##SFX(int term, const T *x, const T *d, ptrdiff_t np,  \
                              ptrdiff_t R, ptrdiff_t G, T *k, ptrdiff_t nk,    \
                              const T *za, const T *zb, T slope, T hi,         \
                              double *s1, double *s2)                          \
{                                                                              \
    if (term == 0)                                                             \
        ckbn_pl_mom_##SFX(x, d, np, R, G, k, nk, za, zb, slope, hi, s1, s2);   \
    else if (term == 1)                                                        \
        ckbn_pl_gs_##SFX(x, d, np, R, G, k, nk, za, zb, slope, hi, s1, s2);    \
    else                                                                       \
        ckbn_pl_gsa_##SFX(x, d, np, R, G, k, nk, za, zb, slope, hi, s1, s2);   \
}
CKBN_PL_DISPATCH(f32, float)
CKBN_PL_DISPATCH(f64, double)

/* ---- non-temporal row copies (issue 18, session 8; _k_elementwise.pxi) --
 * ckbn_nt_copy: n bytes from src (a row piece just computed into the
 * thread's scratch, in L1) to dst, the whole 64-byte lines of dst with
 * non-temporal stores, the partial lines at the ends with plain stores (a
 * line written partly non-temporally, partly plainly took 2.5-9.5x the copy's
 * time, float32 NHWC C=64-2048, 1 thread, busy: the write-combining buffer
 * is flushed as a partial line).  The
 * element-wise pass of a large output (EW_NT_BYTES) writes through it: a
 * plain store first reads the line it fills (the copy's and the loop's
 * traffic is 3 bytes per byte of output), a non-temporal one does not.
 * benchmarks/results/zen4-issue18-s8/probe_ew.c, AMD EPYC Zen 4, float32,
 * 1 thread, busy (load 3.1-3.8): rows of 64-1024 lanes with non-temporal
 * stores at 0.75-0.82x the copy's time on 16.8-25.7 MB, 0.95-1.07x on
 * 8.4-12.6 MB and 1.36-1.74x on 3.1 MB (the output no longer stays in L3).
 * ckbn_nt_fence orders the stores before the pass returns. */
#if defined(__SSE2__)
#include <emmintrin.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif
static inline void ckbn_nt_copy(void *dst, const void *src, size_t n)
{
    char *d = (char *) dst;
    const char *s = (const char *) src;
    size_t h = (64 - ((size_t) d) % 64) % 64, i;
    if (h > n)
        h = n;
    memcpy(d, s, h);
    for (i = h; i + 64 <= n; i += 64) {
#if defined(__AVX__)
        _mm256_stream_si256((__m256i *) (d + i), _mm256_loadu_si256((const __m256i *) (s + i)));
        _mm256_stream_si256((__m256i *) (d + i + 32),
                            _mm256_loadu_si256((const __m256i *) (s + i + 32)));
#else
        for (size_t k = 0; k < 64; k += 16)
            _mm_stream_si128((__m128i *) (d + i + k), _mm_loadu_si128((const __m128i *) (s + i + k)));
#endif
    }
    memcpy(d + i, s + i, n - i);
}
static inline void ckbn_nt_fence(void)
{
    _mm_sfence();
}
#else
static inline void ckbn_nt_copy(void *dst, const void *src, size_t n)
{
    memcpy(dst, src, n);
}
static inline void ckbn_nt_fence(void)
{
}
#endif

/* Whether the n bytes of an output at p already have memory behind them:
   its first, middle and last pages resident (mincore).  A new allocation's
   pages are not, and the operating system zeroes each one, into the cache,
   when it is first written; a non-temporal store then writes those lines a
   second time (NumPy's 51 MB outputs, mapped afresh by glibc on every
   call: 1.2-1.5x the time of plain stores, against 0.6-0.9x into reused
   memory; AMD Zen 4, benchmarks/RESULTS.md, issue 18, session 18).  The
   passes that stream a large output ask first.  1 (resident) where the
   system cannot tell. */
#if defined(__linux__) || defined(__APPLE__)
#include <sys/mman.h>
static int ckbn_pages_resident(const void *p, size_t n)
{
    long pg = sysconf(_SC_PAGESIZE);
    const char *q[3];
    if (pg <= 0 || n == 0)
        return 1;
    q[0] = (const char *) p;
    q[1] = (const char *) p + n / 2;
    q[2] = (const char *) p + (n - 1);
    for (int i = 0; i < 3; i++) {
        unsigned char v = 0;
        void *base = (void *) ((uintptr_t) q[i] & ~(uintptr_t) (pg - 1));
        if (mincore(base, 1, (void *) &v) != 0)
            return 1;
        if (!(v & 1))
            return 0;
    }
    return 1;
}
#else
static int ckbn_pages_resident(const void *p, size_t n)
{
    (void) p;
    (void) n;
    return 1;
}
#endif

#endif /* CKBN_KERNEL_HELPERS_H */
