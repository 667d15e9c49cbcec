# Batch-normalization kernels on the canonical (P, G, R, C) layout.
#
# This file is included by _kernels_base.pyx, _kernels_avx2.pyx and
# _kernels_avx512.pyx: the same source compiled for several instruction sets,
# chosen at run time by ckbn/_dispatch.py.
#
# Layout: a flat C-contiguous array whose element (p, g, r, c) sits at
# ((p*G + g)*R + r)*C + c.  Statistics are kept per channel (g, c) and reduced
# over p and r.  For one (p, g) the L = R*C elements form a contiguous
# *segment* that starts at channel 0.
#
# Rows.  The reductions walk *rows* of W lanes and keep one accumulator per
# lane.  Two cases:
#   * narrow channels (C <= TILE_MAX): a segment is read as consecutive rows
#     of W = C*k lanes (k >= 1 chosen so that W >= MIN_LANES), so that C = 1
#     (NCHW planes) or C = 3 (RGB) still fill vector registers; lane j belongs
#     to channel j % C.  The segment's last, shorter row is a *tail*.
#   * wide channels (C > TILE_MAX): rows are the R*P rows of C channels, cut
#     into channel tiles of at most TILE_MAX lanes so that the accumulators
#     stay in L1.
# The element-wise passes never tile: a row is W = C*k >= MIN_LANES_EW lanes
# (the coefficients are used in place when W == C), and channels-first
# segments (C == 1) are one scalar multiply-add loop each.
#
# Units.  Work is cut into units of about UNIT_TARGET elements from the shape
# alone (never from the thread count).  A unit covers one channel group g, one
# channel tile, and a chunk of rows.  It writes its own float64 partial row;
# partials are merged serially in chunk order.  Results are therefore bitwise
# identical for any number of threads.  The element-wise passes, which keep
# no partials, cut short segments (G > 1) in memory order instead: a unit is
# a run of consecutive segments, whatever their groups.
#
# Precision.  Each unit accumulates, per lane, sums of d = x - K and d*d, with
# K the unit's first value of the lane's channel (so E[x^2] - E[x]^2 is never
# formed on unshifted data).  Register tiles of lanes (four vectors) walk a
# block of rows with their sums in registers, then add them to per-lane block
# sums kept in the data type (stack arrays, in L1); every BLOCK rows the block
# sums are added to float64 accumulators; units are merged in float64 with
# Chan's formula.  The backward sums work the same way.
#
# Every memoryview is flat and C-contiguous; `# IN` views are const.

cimport cython
cimport cython.view
from cython.parallel cimport prange, parallel
from libc.stdlib cimport malloc, free, abort
from libc.math cimport sqrt, INFINITY

ctypedef fused floating:
    float
    double

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define CKBN_HAVE_OPENMP 1
    #else
    #define CKBN_HAVE_OPENMP 0
    #endif
    """
    bint CKBN_HAVE_OPENMP
    # float64 accumulator rows that alias nothing else: spares the compiler a
    # run-time alias check before each vectorized row loop.
    ctypedef double* acc_ptr "double * __restrict__"

# float16 <-> float32 conversion.  Cython has no half-precision type, so
# the two row converters are C helpers on the F16C instructions (compiled in
# the variants built with -mf16c, round to nearest even like NumPy's astype).
# They serve f16_to_f32 / f32_to_f16 and the *_f16 passes at the end of this
# file; without F16C, ckbn converts with NumPy (f16c_enabled() says which).
cdef extern from *:
    """
    #if defined(__F16C__) && defined(__AVX__)
    #include <immintrin.h>
    #define CKBN_HAVE_F16C 1
    static void ckbn_h2f(const unsigned short *s, float *d, Py_ssize_t n) {
        Py_ssize_t i = 0;
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (s + i))));
        for (; i < n; i++)
            d[i] = _cvtsh_ss(s[i]);
    }
    static void ckbn_f2h(const float *s, unsigned short *d, Py_ssize_t n) {
        Py_ssize_t i = 0;
        for (; i + 8 <= n; i += 8)
            _mm_storeu_si128((__m128i *) (d + i),
                             _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
        for (; i < n; i++)
            d[i] = _cvtss_sh(s[i], _MM_FROUND_TO_NEAREST_INT);
    }
    #else
    #define CKBN_HAVE_F16C 0
    static void ckbn_h2f(const unsigned short *s, float *d, Py_ssize_t n) {
        (void) s; (void) d; (void) n;
    }
    static void ckbn_f2h(const float *s, unsigned short *d, Py_ssize_t n) {
        (void) s; (void) d; (void) n;
    }
    #endif
    """
    bint CKBN_HAVE_F16C
    void ckbn_h2f(const unsigned short* s, float* d, Py_ssize_t n) noexcept nogil
    void ckbn_f2h(const float* s, unsigned short* d, Py_ssize_t n) noexcept nogil

# Register tiles for the reductions.  A tile is four vectors of lanes (64
# float32 lanes with AVX-512, 32 with AVX2, 16 with SSE2; half as many
# float64 lanes); its sums stay in registers while it walks a block of rows,
# and are added to the block sums in memory once per block.  Written with the
# compiler's vector extensions (GCC, Clang), so each kernel variant gets its
# own width; other compilers use the plain row loops.
cdef extern from *:
    """
    #if defined(__GNUC__)
    #define CKBN_HAVE_TILES 1
    #if defined(__AVX512F__)
    #define CKBN_VBYTES 64
    #elif defined(__AVX__)
    #define CKBN_VBYTES 32
    #else
    #define CKBN_VBYTES 16
    #endif
    typedef float ckbn_vf __attribute__((vector_size(CKBN_VBYTES), aligned(4), may_alias));
    typedef double ckbn_vd __attribute__((vector_size(CKBN_VBYTES), aligned(8), may_alias));
    #define CKBN_TILE_F32 (CKBN_VBYTES)
    #define CKBN_TILE_F64 (CKBN_VBYTES / 2)

    /* b1 += sum_i (x_i - sh), b2 += sum_i (x_i - sh)^2 over rows x + i*S. */
    #define CKBN_MOM_TILE(NAME, T, V)                                              \
    static void NAME(const T *x, Py_ssize_t S, Py_ssize_t nr, const T *sh,         \
                     T *b1, T *b2) {                                               \
        const V *k = (const V *) sh;                                               \
        V *p1 = (V *) b1, *p2 = (V *) b2;                                          \
        V k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3];                              \
        V a0 = p1[0], a1 = p1[1], a2 = p1[2], a3 = p1[3];                          \
        V q0 = p2[0], q1 = p2[1], q2 = p2[2], q3 = p2[3];                          \
        for (Py_ssize_t i = 0; i < nr; i++) {                                      \
            const V *r = (const V *) (x + i * S);                                  \
            V d0 = r[0] - k0, d1 = r[1] - k1, d2 = r[2] - k2, d3 = r[3] - k3;      \
            a0 += d0; a1 += d1; a2 += d2; a3 += d3;                                \
            q0 += d0 * d0; q1 += d1 * d1; q2 += d2 * d2; q3 += d3 * d3;            \
        }                                                                          \
        p1[0] = a0; p1[1] = a1; p1[2] = a2; p1[3] = a3;                            \
        p2[0] = q0; p2[1] = q1; p2[2] = q2; p2[3] = q3;                            \
    }

    /* b1 += sum_i e_i, b2 += sum_i e_i * (x_i - mu) over rows e + i*S, x + i*S. */
    #define CKBN_GS_TILE(NAME, T, V)                                               \
    static void NAME(const T *e, const T *x, Py_ssize_t S, Py_ssize_t nr,          \
                     const T *mu, T *b1, T *b2) {                                  \
        const V *m = (const V *) mu;                                               \
        V *p1 = (V *) b1, *p2 = (V *) b2;                                          \
        V m0 = m[0], m1 = m[1], m2 = m[2], m3 = m[3];                              \
        V a0 = p1[0], a1 = p1[1], a2 = p1[2], a3 = p1[3];                          \
        V q0 = p2[0], q1 = p2[1], q2 = p2[2], q3 = p2[3];                          \
        for (Py_ssize_t i = 0; i < nr; i++) {                                      \
            const V *d = (const V *) (e + i * S);                                  \
            const V *r = (const V *) (x + i * S);                                  \
            V e0 = d[0], e1 = d[1], e2 = d[2], e3 = d[3];                          \
            a0 += e0; a1 += e1; a2 += e2; a3 += e3;                                \
            q0 += e0 * (r[0] - m0); q1 += e1 * (r[1] - m1);                        \
            q2 += e2 * (r[2] - m2); q3 += e3 * (r[3] - m3);                        \
        }                                                                          \
        p1[0] = a0; p1[1] = a1; p1[2] = a2; p1[3] = a3;                            \
        p2[0] = q0; p2[1] = q1; p2[2] = q2; p2[3] = q3;                            \
    }
    CKBN_MOM_TILE(ckbn_mom_tile_f32, float, ckbn_vf)
    CKBN_MOM_TILE(ckbn_mom_tile_f64, double, ckbn_vd)
    CKBN_GS_TILE(ckbn_gs_tile_f32, float, ckbn_vf)
    CKBN_GS_TILE(ckbn_gs_tile_f64, double, ckbn_vd)
    #else
    #define CKBN_HAVE_TILES 0
    #define CKBN_TILE_F32 0
    #define CKBN_TILE_F64 0
    static void ckbn_mom_tile_f32(const float *x, Py_ssize_t S, Py_ssize_t nr,
                                  const float *sh, float *b1, float *b2) {}
    static void ckbn_mom_tile_f64(const double *x, Py_ssize_t S, Py_ssize_t nr,
                                  const double *sh, double *b1, double *b2) {}
    static void ckbn_gs_tile_f32(const float *e, const float *x, Py_ssize_t S,
                                 Py_ssize_t nr, const float *mu, float *b1, float *b2) {}
    static void ckbn_gs_tile_f64(const double *e, const double *x, Py_ssize_t S,
                                 Py_ssize_t nr, const double *mu, double *b1, double *b2) {}
    #endif
    """
    bint CKBN_HAVE_TILES
    Py_ssize_t CKBN_TILE_F32
    Py_ssize_t CKBN_TILE_F64
    void ckbn_mom_tile_f32(const float* x, Py_ssize_t S, Py_ssize_t nr, const float* sh,
                           float* b1, float* b2) noexcept nogil
    void ckbn_mom_tile_f64(const double* x, Py_ssize_t S, Py_ssize_t nr, const double* sh,
                           double* b1, double* b2) noexcept nogil
    void ckbn_gs_tile_f32(const float* e, const float* x, Py_ssize_t S, Py_ssize_t nr,
                          const float* mu, float* b1, float* b2) noexcept nogil
    void ckbn_gs_tile_f64(const double* e, const double* x, Py_ssize_t S, Py_ssize_t nr,
                          const double* mu, double* b1, double* b2) noexcept nogil


# The C-level table's types and constants (ckbn/include/ckbn_kernels.h).
from libc.stdint cimport int64_t, uint64_t

cdef extern from "ckbn_kernels.h" nogil:
    enum:
        CKBN_TABLE_ABI
        CKBN_FLOAT16
        CKBN_FLOAT32
        CKBN_FLOAT64
        CKBN_OK
        CKBN_ERR_NOMEM
        CKBN_ERR_ARG
        CKBN_ERR_DTYPE
    const char* CKBN_TABLE_CAPSULE
    ctypedef struct ckbn_dims:
        Py_ssize_t P, G, R, C
    ctypedef struct ckbn_act:
        int on
        double slope
        double hi
    ctypedef struct ckbn_kernel_table:
        int abi
        const char* variant
        int has_float16
        int (*forward_train)(int, const void*, ckbn_dims, const double*, const double*,
                             double, const ckbn_act*, void*, double*, double*,
                             int) noexcept nogil
        int (*forward_infer)(int, const void*, ckbn_dims, const double*, const double*,
                             const double*, const double*, double, const ckbn_act*, void*,
                             int) noexcept nogil
        int (*backward)(int, const void*, const void*, ckbn_dims, const double*,
                        const double*, const double*, const double*, double, int,
                        const ckbn_act*, void*, double*, double*, int) noexcept nogil
        int (*stats)(int, const void*, ckbn_dims, double*, double*, int) noexcept nogil
        int (*grad_sums)(int, const void*, const void*, ckbn_dims, const double*,
                         const double*, const double*, const double*, double,
                         const ckbn_act*, double*, double*, int) noexcept nogil
        int (*backward_dx)(int, const void*, const void*, ckbn_dims, const double*,
                           const double*, const double*, const double*, double, double,
                           const double*, const double*, const ckbn_act*, void*, double*,
                           int) noexcept nogil
    int ckbn_layout(int ndim, const int64_t* shape, uint64_t channel_mask, ckbn_dims* d)


cdef enum:
    # Elements per work unit: large enough to amortize a unit's set-up and its
    # partial row, small enough to split mid-sized inputs across threads.
    UNIT_TARGET = 32768
    # Below this many elements one thread does everything (thread start-up
    # costs more than it saves on small inputs).
    PARALLEL_MIN = 65536
    # Minimum lanes per row in the reductions and in the element-wise passes.
    MIN_LANES = 64
    MIN_LANES_EW = 256
    # Channel tile width for wide rows.
    TILE_MAX = 512
    # Rows summed in the data type before adding to float64.
    BLOCK = 64
    # Largest channels-first plane read through lane expansion (see below).
    LANE_PLANE_MAX = 256


# Below this many elements a call runs on one thread (read by ckbn._config).
PARALLEL_MIN_ELEMENTS = PARALLEL_MIN


def openmp_enabled():
    """True when this kernel module was compiled with OpenMP."""
    return bool(CKBN_HAVE_OPENMP)


cdef struct Units:
    Py_ssize_t P, G, R, C
    Py_ssize_t L         # segment length R*C
    bint tiled          # wide channels: rows of C cut into tiles
    Py_ssize_t W         # narrow: lanes per row (a multiple of C); tiled: tile width
    Py_ssize_t n_ct      # channel tiles (1 when narrow)
    Py_ssize_t n_rc      # row chunks per (g, tile)
    # narrow, whole segments per unit (split == 0) or pieces of one segment
    Py_ssize_t split     # pieces per segment, 0 when units hold whole segments
    Py_ssize_t piece     # elements per piece (a multiple of W) when split
    Py_ssize_t pc        # segments per unit when not split
    # element-wise passes on short segments: units are runs of whole
    # segments in memory order (segment s = p*G + g)
    bint seg
    # tiled
    Py_ssize_t rpu       # rows per unit
    Py_ssize_t per_g     # units per channel group: n_ct * n_rc
    Py_ssize_t n_units


cdef inline Units _make_units(Py_ssize_t P, Py_ssize_t G, Py_ssize_t R,
                              Py_ssize_t C, Py_ssize_t min_lanes,
                              bint tiles) noexcept nogil:
    cdef Units u
    if G == 1:
        # One channel group: consecutive segments are contiguous, so the whole
        # array is one segment (rows may then run across the old boundaries).
        R = P * R
        P = 1
    u.P = P
    u.G = G
    u.R = R
    u.C = C
    u.L = R * C
    u.split = 0
    u.piece = 0
    u.pc = 1
    u.rpu = 1
    u.seg = False
    if tiles and C > TILE_MAX:
        u.tiled = True
        u.W = TILE_MAX
        u.n_ct = (C + TILE_MAX - 1) // TILE_MAX
        u.rpu = UNIT_TARGET // TILE_MAX
        u.n_rc = (P * R + u.rpu - 1) // u.rpu
    else:
        u.tiled = False
        u.n_ct = 1
        u.W = C * ((min_lanes + C - 1) // C) if C < min_lanes else C
        if u.W > u.L:
            u.W = u.L   # short segments (e.g. 7x7 planes): one row each
        if u.L <= UNIT_TARGET and G > 1 and not tiles:
            # Element-wise passes (tiles is False only for them) need no
            # per-channel accumulators, so a unit can take the next segments
            # in memory order, all groups alike, instead of the segments of
            # one group G*L elements apart.
            u.seg = True
            u.pc = UNIT_TARGET // u.L
            u.n_rc = P
            u.per_g = 0
            u.n_units = (P * G + u.pc - 1) // u.pc
            return u
        if u.L <= UNIT_TARGET:
            u.pc = UNIT_TARGET // u.L
            u.n_rc = (P + u.pc - 1) // u.pc
        else:
            u.piece = (UNIT_TARGET // u.W) * u.W
            if u.piece < u.W:
                u.piece = u.W
            u.split = (u.L + u.piece - 1) // u.piece
            u.n_rc = P * u.split
    u.per_g = u.n_ct * u.n_rc
    u.n_units = G * u.per_g
    return u


cdef inline int _n_threads(const Units* u, int n_threads) noexcept nogil:
    if u.P * u.G * u.L < PARALLEL_MIN or n_threads < 1:
        return 1
    if n_threads > u.n_units:
        return <int> u.n_units
    return n_threads


cdef struct Unit:
    Py_ssize_t g, rc, c0, c1
    # narrow: segments [p0, p1), elements [l0, l1) of each
    Py_ssize_t p0, p1, l0, l1
    # tiled: rows [q0, q1) of group g (row q = p*R + r)
    Py_ssize_t q0, q1


cdef inline Unit _unit(const Units* u, Py_ssize_t k) noexcept nogil:
    cdef Unit t
    cdef Py_ssize_t rem, ct
    t.p0 = 0
    t.p1 = 0
    t.l0 = 0
    t.l1 = 0
    t.q0 = 0
    t.q1 = 0
    t.g = k // u.per_g
    rem = k % u.per_g
    # Tiles vary fastest: a thread's consecutive units cover the same rows,
    # which are still in cache when the next tile reads them.
    t.rc = rem // u.n_ct
    ct = rem % u.n_ct
    t.c0 = ct * u.W if u.tiled else 0
    t.c1 = t.c0 + u.W if u.tiled else u.C
    if t.c1 > u.C:
        t.c1 = u.C
    if u.tiled:
        t.q0 = t.rc * u.rpu
        t.q1 = t.q0 + u.rpu
        if t.q1 > u.P * u.R:
            t.q1 = u.P * u.R
    elif u.split == 0:
        t.p0 = t.rc * u.pc
        t.p1 = t.p0 + u.pc
        if t.p1 > u.P:
            t.p1 = u.P
        t.l0 = 0
        t.l1 = u.L
    else:
        t.p0 = t.rc // u.split
        t.p1 = t.p0 + 1
        t.l0 = (t.rc % u.split) * u.piece
        t.l1 = t.l0 + u.piece
        if t.l1 > u.L:
            t.l1 = u.L
    return t


cdef inline void _repeat(const floating* src, Py_ssize_t C, Py_ssize_t W,
                         floating* dst) noexcept nogil:
    """dst[j] = src[j % C] for j < W (W a multiple of C), without a division
    per lane.  dst may be src (the first C values are then kept)."""
    cdef Py_ssize_t j, c
    cdef floating v
    if C == 1:
        v = src[0]
        for j in range(W):
            dst[j] = v
        return
    j = 0
    if dst == src:
        j = C
    while j < W:
        for c in range(C):
            dst[j + c] = src[c]
        j += C


cdef inline void _fold(double* s1, double* s2, Py_ssize_t W, Py_ssize_t C) noexcept nogil:
    """Sum the lanes of each channel (lane j belongs to channel j % C) into
    lanes 0..C-1: halve the row while it holds an even number of copies of
    the channels (vectorized adds), then add the remaining copies in order."""
    cdef Py_ssize_t h, j, k = W // C
    while k % 2 == 0:
        k = k // 2
        h = k * C
        for j in range(h):
            s1[j] += s1[j + h]
            s2[j] += s2[j + h]
    for j in range(C, k * C):
        s1[j % C] += s1[j]
        s2[j % C] += s2[j]


cdef inline Unit _seg_unit(const Units* u, Py_ssize_t s) noexcept nogil:
    """Segment mode: segment s = p*G + g as a unit of its own."""
    cdef Unit t
    t.g = s % u.G
    t.rc = s // u.G
    t.c0 = 0
    t.c1 = u.C
    t.p0 = t.rc
    t.p1 = t.rc + 1
    t.l0 = 0
    t.l1 = u.L
    t.q0 = 0
    t.q1 = 0
    return t


cdef inline Py_ssize_t _seg_end(const Units* u, Py_ssize_t k) noexcept nogil:
    """Segment mode: one past the last segment of unit k."""
    cdef Py_ssize_t s1 = (k + 1) * u.pc
    return s1 if s1 < u.P * u.G else u.P * u.G


cdef inline Py_ssize_t _row_offset(const Units* u, Py_ssize_t g, Py_ssize_t q,
                                   Py_ssize_t c0) noexcept nogil:
    """Offset of row q (= p*R + r) of group g, channel c0, in the tiled case."""
    return ((q // u.R) * u.G + g) * u.L + (q % u.R) * u.C + c0


# ---------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------

cdef inline Py_ssize_t _tile_lanes(const floating* p) noexcept nogil:
    """Lanes per register tile for the data type (0: no tiles)."""
    if floating is float:
        return CKBN_TILE_F32
    else:
        return CKBN_TILE_F64


cdef inline void _mom_tile(const floating* x, Py_ssize_t S, Py_ssize_t nr,
                           const floating* sh, floating* b1, floating* b2) noexcept nogil:
    if floating is float:
        ckbn_mom_tile_f32(x, S, nr, sh, b1, b2)
    else:
        ckbn_mom_tile_f64(x, S, nr, sh, b1, b2)


cdef inline void _mom1(const floating* r, Py_ssize_t W, const floating* sh,
                       floating* b1, floating* b2) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating d
    for j in range(W):
        d = r[j] - sh[j]
        b1[j] += d
        b2[j] += d * d


cdef inline void _flush(floating* b1, floating* b2, double* s1, double* s2,
                        Py_ssize_t W) noexcept nogil:
    """Add the block sums b1, b2 to the float64 sums s1, s2 and clear them."""
    cdef Py_ssize_t j
    for j in range(W):
        s1[j] += <double> b1[j]
        s2[j] += <double> b2[j]
        b1[j] = 0
        b2[j] = 0


cdef inline Py_ssize_t _mom_run(const floating* r, Py_ssize_t nr, Py_ssize_t S,
                                Py_ssize_t W, const floating* sh,
                                floating* b1, floating* b2, double* s1, double* s2,
                                Py_ssize_t nb) noexcept nogil:
    """Accumulate nr rows r + i*S of W lanes into the block sums b1, b2 (nb
    rows are already in them); every BLOCK rows they are added to s1, s2.
    Register tiles take the lanes they cover, the row loop the rest."""
    cdef Py_ssize_t i = 0, q, c, take
    cdef Py_ssize_t TL = _tile_lanes(r)
    cdef Py_ssize_t Wt = (W // TL) * TL if TL > 0 else 0
    while i < nr:
        take = nr - i
        if take > BLOCK - nb:
            take = BLOCK - nb
        c = 0
        while c < Wt:
            _mom_tile(r + i * S + c, S, take, sh + c, b1 + c, b2 + c)
            c += TL
        if Wt < W:
            for q in range(i, i + take):
                _mom1(r + q * S + Wt, W - Wt, sh + Wt, b1 + Wt, b2 + Wt)
        i += take
        nb += take
        if nb >= BLOCK:
            _flush(b1, b2, s1, s2, W)
            nb = 0
    return nb


cdef inline void _chan_row(const double* pm, const double* pm2, acc_ptr mean,
                           acc_ptr m2, Py_ssize_t C, double wb, double wd) noexcept nogil:
    """Merge one chunk's (mean, M2) into running (mean, M2): Chan et al."""
    cdef Py_ssize_t c
    cdef double delta
    for c in range(C):
        delta = pm[c] - mean[c]
        mean[c] = mean[c] + delta * wb
        m2[c] = m2[c] + pm2[c] + delta * delta * wd


cdef inline int _check_dims(Py_ssize_t n, Py_ssize_t P, Py_ssize_t G,
                            Py_ssize_t R, Py_ssize_t C) except -1:
    if P < 1 or G < 1 or R < 1 or C < 1 or n != P * G * R * C:
        raise ValueError(f"kernel: {n} elements do not form (P, G, R, C) = "
                         f"({P}, {G}, {R}, {C})")
    return 0


def bn_stats(const floating[::1] x,      # IN  (P*G*R*C,)
             Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
             double[::1] mean,           # OUT (G*C,)
             double[::1] var,            # OUT (G*C,)
             int n_threads):
    """Per-channel mean and biased variance of ``x`` viewed as (P, G, R, C)."""
    _check_dims(x.shape[0], P, G, R, C)
    if mean.shape[0] != G * C or var.shape[0] != G * C:
        raise ValueError("bn_stats: bad statistic size")
    with nogil:
        _stats(&x[0], P, G, R, C, &mean[0], &var[0], n_threads)


# ---------------------------------------------------------------------------
# Element-wise passes, one driver for both families:
#   OP_AFFINE  out = act(x * c0[ch] + c1[ch])
#   OP_DX      out = (dy * m) * c0[ch] + (x * c1[ch] + c2[ch]),
#              m = act'(x * c3[ch] + c4[ch]) when an activation is given, else 1
# The activation act(z) = z > 0 ? min(z, hi) : slope * z covers ReLU
# (slope 0, hi inf), ReLU6 (slope 0, hi 6) and leaky ReLU (slope s, hi inf);
# its derivative act'(z) = z > 0 ? (z < hi) : slope.  The backward pass
# recomputes z from x with the forward's coefficients and the same
# expression, so its mask agrees with the forward's output.
# ---------------------------------------------------------------------------

cdef enum:
    OP_AFFINE = 0
    OP_DX = 1
    MAX_COEF = 5


cdef struct Act:
    bint on
    double slope
    double hi


cdef inline Act _act(bint on, double slope, double hi) noexcept nogil:
    cdef Act a
    a.on = on
    a.slope = slope
    a.hi = hi
    return a


cdef inline const floating* _lanes(const floating* src, Py_ssize_t g,
                                   Py_ssize_t C, Py_ssize_t W,
                                   floating* buf) noexcept nogil:
    """Per-lane coefficients of group g: src itself when lanes are channels,
    else buf filled with buf[j] = src[g*C + j % C]."""
    if W == C:
        return src + g * C
    _repeat(src + g * C, C, W, buf)
    return buf


cdef inline void _row_affine(const floating* x, floating* y, Py_ssize_t n,
                             const floating* a, const floating* b) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        y[j] = x[j] * a[j] + b[j]


cdef inline void _row_affine_act(const floating* x, floating* y, Py_ssize_t n,
                                 const floating* a, const floating* b,
                                 floating s, floating h) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating z
    for j in range(n):
        z = x[j] * a[j] + b[j]
        # + 0 turns the -0.0 of slope 0 into +0.0, as max(z, 0) gives.
        y[j] = (z if z < h else h) if z > 0 else z * s + 0


cdef inline void _row_dx(const floating* d, const floating* x, floating* o,
                         Py_ssize_t n, const floating* k1, const floating* k2,
                         const floating* k3) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        o[j] = d[j] * k1[j] + (x[j] * k2[j] + k3[j])


cdef inline void _row_dx_act(const floating* d, const floating* x, floating* o,
                             Py_ssize_t n, const floating* k1, const floating* k2,
                             const floating* k3, const floating* za,
                             const floating* zb, floating s, floating h) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating z, m
    for j in range(n):
        z = x[j] * za[j] + zb[j]
        m = (<floating> 1 if z < h else <floating> 0) if z > 0 else s
        o[j] = (d[j] * m) * k1[j] + (x[j] * k2[j] + k3[j])


# Channels-first segments (C == 1): one coefficient set per segment.

cdef inline void _seg_affine(const floating* x, floating* y, Py_ssize_t n,
                             floating a, floating b) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        y[j] = x[j] * a + b


cdef inline void _seg_affine_act(const floating* x, floating* y, Py_ssize_t n,
                                 floating a, floating b, floating s,
                                 floating h) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating z
    for j in range(n):
        z = x[j] * a + b
        y[j] = (z if z < h else h) if z > 0 else z * s + 0


cdef inline void _seg_dx(const floating* d, const floating* x, floating* o,
                         Py_ssize_t n, floating k1, floating k2,
                         floating k3) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        o[j] = d[j] * k1 + (x[j] * k2 + k3)


cdef inline void _seg_dx_act(const floating* d, const floating* x, floating* o,
                             Py_ssize_t n, floating k1, floating k2, floating k3,
                             floating za, floating zb, floating s,
                             floating h) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating z, m
    for j in range(n):
        z = x[j] * za + zb
        m = (<floating> 1 if z < h else <floating> 0) if z > 0 else s
        o[j] = (d[j] * m) * k1 + (x[j] * k2 + k3)


cdef inline Py_ssize_t _head(const void* o, Py_ssize_t n, Py_ssize_t size) noexcept nogil:
    """Elements before the first 64-byte boundary of o (0 for short runs), so
    that the vector stores after them never split a cache line."""
    cdef Py_ssize_t k = <Py_ssize_t> ((64 - (<size_t> o) % 64) % 64)
    if k % size != 0 or n < 4 * 64 // size:
        return 0
    return k // size


cdef inline void _ew_run(int op, bint act, const floating* x, const floating* d,
                         floating* o, Py_ssize_t n, const floating** w,
                         floating s, floating h) noexcept nogil:
    """One run of n elements with per-lane coefficients w[i][j]; the output
    is written from its first 64-byte boundary on with whole vectors."""
    cdef Py_ssize_t k = _head(o, n, sizeof(floating))
    cdef const floating* ws[MAX_COEF]
    cdef int q
    if k > 0:
        _ew_run1(op, act, x, d, o, k, w, s, h)
        for q in range(_n_coef(op, act)):
            ws[q] = w[q] + k
        _ew_run1(op, act, x + k, d + k, o + k, n - k, ws, s, h)
    else:
        _ew_run1(op, act, x, d, o, n, w, s, h)


cdef inline void _ew_run1(int op, bint act, const floating* x, const floating* d,
                          floating* o, Py_ssize_t n, const floating** w,
                          floating s, floating h) noexcept nogil:
    if op == OP_AFFINE:
        if act:
            _row_affine_act(x, o, n, w[0], w[1], s, h)
        else:
            _row_affine(x, o, n, w[0], w[1])
    elif act:
        _row_dx_act(d, x, o, n, w[0], w[1], w[2], w[3], w[4], s, h)
    else:
        _row_dx(d, x, o, n, w[0], w[1], w[2])


cdef inline void _ew_seg(int op, bint act, const floating* x, const floating* d,
                         floating* o, Py_ssize_t n, const floating* v,
                         floating s, floating h) noexcept nogil:
    """One channels-first segment with scalar coefficients v[i] (output
    aligned as in _ew_run)."""
    cdef Py_ssize_t k = _head(o, n, sizeof(floating))
    if k > 0:
        _ew_seg1(op, act, x, d, o, k, v, s, h)
        _ew_seg1(op, act, x + k, d + k, o + k, n - k, v, s, h)
    else:
        _ew_seg1(op, act, x, d, o, n, v, s, h)


cdef inline void _ew_seg1(int op, bint act, const floating* x, const floating* d,
                          floating* o, Py_ssize_t n, const floating* v,
                          floating s, floating h) noexcept nogil:
    if op == OP_AFFINE:
        if act:
            _seg_affine_act(x, o, n, v[0], v[1], s, h)
        else:
            _seg_affine(x, o, n, v[0], v[1])
    elif act:
        _seg_dx_act(d, x, o, n, v[0], v[1], v[2], v[3], v[4], s, h)
    else:
        _seg_dx(d, x, o, n, v[0], v[1], v[2])


cdef inline int _n_coef(int op, bint act) noexcept nogil:
    if op == OP_AFFINE:
        return 2
    return 5 if act else 3


cdef void _ew_part(int op, const Act* act, const floating* x, const floating* d,
                   floating* o, const Units* u, Unit t, const floating** cf,
                   floating* buf) noexcept nogil:
    cdef Py_ssize_t W = u.W, C = u.C, p, i, n_el, off
    cdef int nc = _n_coef(op, act.on), q
    cdef const floating* w[MAX_COEF]
    cdef floating v[MAX_COEF]
    cdef floating s = <floating> act.slope, h = <floating> act.hi
    n_el = t.l1 - t.l0
    if C == 1:
        for q in range(nc):
            v[q] = cf[q][t.g]
        for p in range(t.p0, t.p1):
            off = (p * u.G + t.g) * u.L + t.l0
            _ew_seg(op, act.on, x + off, d + off, o + off, n_el, v, s, h)
        return
    for q in range(nc):
        w[q] = _lanes(cf[q], t.g, C, W, buf + q * W)
    for p in range(t.p0, t.p1):
        off = (p * u.G + t.g) * u.L + t.l0
        i = 0
        while i + W <= n_el:
            _ew_run(op, act.on, x + off + i, d + off + i, o + off + i, W, w, s, h)
            i += W
        if i < n_el:
            _ew_run(op, act.on, x + off + i, d + off + i, o + off + i, n_el - i, w, s, h)


cdef void _ew_unit(int op, const Act* act, const floating* x, const floating* d,
                   floating* o, const Units* u, Py_ssize_t k, const floating** cf,
                   floating* buf) noexcept nogil:
    cdef Py_ssize_t s
    if u.seg:
        for s in range(k * u.pc, _seg_end(u, k)):
            _ew_part(op, act, x, d, o, u, _seg_unit(u, s), cf, buf)
    else:
        _ew_part(op, act, x, d, o, u, _unit(u, k), cf, buf)


cdef void _ew_core(int op, const Act* act, const floating* x, const floating* d,
                   floating* o, const floating** cf, Py_ssize_t P, Py_ssize_t G,
                   Py_ssize_t R, Py_ssize_t C, int n_threads) noexcept nogil:
    """The element-wise pass ``op`` over the (P, G, R, C) view.  ``d`` is dy
    for OP_DX (for OP_AFFINE pass x: it is not read)."""
    cdef Units u = _make_units(P, G, R, C, MIN_LANES_EW, False)
    cdef Py_ssize_t k
    cdef int nt = _n_threads(&u, n_threads)
    cdef Py_ssize_t nbuf = MAX_COEF * u.W
    cdef floating* buf = NULL
    if nt == 1:     # no OpenMP region: it costs about a microsecond
        buf = <floating*> malloc(sizeof(floating) * nbuf)
        if buf == NULL:
            abort()
        for k in range(u.n_units):
            _ew_unit(op, act, x, d, o, &u, k, cf, buf)
        free(buf)
        return
    with parallel(num_threads=nt):
        buf = <floating*> malloc(sizeof(floating) * nbuf)
        if buf == NULL:
            abort()
        for k in prange(u.n_units, schedule="static"):
            _ew_unit(op, act, x, d, o, &u, k, cf, buf)
        free(buf)


cdef void _ew_chunks(int op, const Act* act, const floating* x, const floating* d,
                     floating* o, const floating** cf, const Chunks* ch,
                     int n_threads) noexcept nogil:
    """The element-wise pass chunk by chunk (channels first, see _cf_plan):
    each chunk's coefficients are expanded to its own lanes only."""
    cdef Py_ssize_t j
    cdef int nt = n_threads
    cdef char* scr = NULL
    cdef size_t nbytes = MAX_COEF * CF_LANES * sizeof(floating)
    if ch.P * ch.G * ch.R < PARALLEL_MIN or nt < 1:
        nt = 1
    if nt > ch.n:
        nt = <int> ch.n
    if nt == 1:     # no OpenMP region: it costs about a microsecond
        scr = <char*> malloc(nbytes)
        if scr == NULL:
            abort()
        for j in range(ch.n):
            _ew_chunk(op, act, x, d, o, cf, ch, j, scr)
        free(scr)
        return
    with parallel(num_threads=nt):
        scr = <char*> malloc(nbytes)
        if scr == NULL:
            abort()
        for j in prange(ch.n, schedule="static"):
            _ew_chunk(op, act, x, d, o, cf, ch, j, scr)
        free(scr)


cdef void _ew_chunk(int op, const Act* act, const floating* x, const floating* d,
                    floating* o, const floating** cf, const Chunks* ch, Py_ssize_t j,
                    char* scr) noexcept nogil:
    cdef Py_ssize_t g0 = j * ch.k, g1 = g0 + ch.k
    cdef int q
    cdef const floating* ccf[MAX_COEF]
    if g1 > ch.G:
        g1 = ch.G
    for q in range(_n_coef(op, act.on)):
        ccf[q] = cf[q] + g0
    _cf_apply(op, act, x, d, o, ch, g0, g1, ccf, scr)


cdef void _ew(int op, const Act* act, const floating* x, const floating* d,
              floating* o, const floating** cf, Py_ssize_t P, Py_ssize_t G,
              Py_ssize_t R, Py_ssize_t C, int n_threads) noexcept nogil:
    """_ew_core, with channels-first data in chunks (see _cf_plan) or, for
    small planes, read in lane expansion (see _expand)."""
    cdef int nc = _n_coef(op, act.on), q
    cdef floating* e
    cdef const floating* ecf[MAX_COEF]
    cdef Chunks ch
    if _cf_plan(P, G, R, C, &ch) and ch.lanes:
        _ew_chunks(op, act, x, d, o, cf, &ch, n_threads)
        return
    if not _expand(G, R, C):
        _ew_core(op, act, x, d, o, cf, P, G, R, C, n_threads)
        return
    e = <floating*> malloc(sizeof(floating) * nc * G * R)
    if e == NULL:
        abort()
    for q in range(nc):
        _expand_into(cf[q], G, R, e + q * G * R)
        ecf[q] = e + q * G * R
    _ew_core(op, act, x, d, o, ecf, 1, 1, P, G * R, n_threads)
    free(e)


cdef inline void _affine(const floating* x, const floating* a, const floating* b,
                         floating* y, Py_ssize_t P, Py_ssize_t G, Py_ssize_t R,
                         Py_ssize_t C, const Act* act, int n_threads) noexcept nogil:
    cdef const floating* cf[2]
    cf[0] = a
    cf[1] = b
    _ew(OP_AFFINE, act, x, x, y, cf, P, G, R, C, n_threads)


cdef inline void _grad_dx(const floating* dy, const floating* x, const floating* k1,
                          const floating* k2, const floating* k3, const floating* za,
                          const floating* zb, floating* dx, Py_ssize_t P, Py_ssize_t G,
                          Py_ssize_t R, Py_ssize_t C, const Act* act,
                          int n_threads) noexcept nogil:
    cdef const floating* cf[MAX_COEF]
    cf[0] = k1
    cf[1] = k2
    cf[2] = k3
    cf[3] = za
    cf[4] = zb
    _ew(OP_DX, act, x, dy, dx, cf, P, G, R, C, n_threads)


def bn_affine(const floating[::1] x,     # IN  (P*G*R*C,)
              Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
              const floating[::1] a,     # IN  (G*C,)
              const floating[::1] b,     # IN  (G*C,)
              floating[::1] y,           # OUT (P*G*R*C,)
              int n_threads, bint act=False, double slope=0.0, double hi=INFINITY):
    """``y = act(x * a[ch] + b[ch])`` with ``x`` and ``y`` viewed as (P, G, R, C).

    ``act`` applies ``z > 0 ? min(z, hi) : slope * z`` (ReLU, ReLU6, leaky ReLU).
    """
    _check_dims(x.shape[0], P, G, R, C)
    if y.shape[0] != x.shape[0]:
        raise ValueError("bn_affine: y has the wrong size")
    if a.shape[0] != G * C or b.shape[0] != G * C:
        raise ValueError("bn_affine: bad coefficient size")
    cdef Act ac = _act(act, slope, hi)
    with nogil:
        _affine(&x[0], &a[0], &b[0], &y[0], P, G, R, C, &ac, n_threads)


def bn_grad_dx(const floating[::1] dy,   # IN  (P*G*R*C,)
               const floating[::1] x,    # IN  (P*G*R*C,)
               Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
               const floating[::1] k1,   # IN  (G*C,)
               const floating[::1] k2,   # IN  (G*C,)
               const floating[::1] k3,   # IN  (G*C,)
               floating[::1] dx,         # OUT (P*G*R*C,)
               int n_threads,
               const floating[::1] za=None,   # IN  (G*C,) with an activation
               const floating[::1] zb=None,   # IN  (G*C,) with an activation
               bint act=False, double slope=0.0, double hi=INFINITY):
    """``dx = (dy * m) * k1[ch] + (x * k2[ch] + k3[ch])`` on the (P, G, R, C) view.

    ``m`` is 1, or with ``act`` the activation's derivative at
    ``z = x * za[ch] + zb[ch]`` (the forward pass's pre-activation).
    """
    _check_dims(x.shape[0], P, G, R, C)
    if dy.shape[0] != x.shape[0] or dx.shape[0] != x.shape[0]:
        raise ValueError("bn_grad_dx: dy or dx has the wrong size")
    if k1.shape[0] != G * C or k2.shape[0] != G * C or k3.shape[0] != G * C:
        raise ValueError("bn_grad_dx: bad coefficient size")
    cdef const floating* pa = &k1[0]
    cdef const floating* pb = &k1[0]
    if act:
        if za is None or zb is None or za.shape[0] != G * C or zb.shape[0] != G * C:
            raise ValueError("bn_grad_dx: an activation needs za and zb of size G*C")
        pa = &za[0]
        pb = &zb[0]
    cdef Act ac = _act(act, slope, hi)
    with nogil:
        _grad_dx(&dy[0], &x[0], &k1[0], &k2[0], &k3[0], pa, pb, &dx[0], P, G, R, C,
                 &ac, n_threads)

# ---------------------------------------------------------------------------
# Backward sums: sum(dy) and sum(dy * (x - mean)) per channel
# ---------------------------------------------------------------------------

cdef inline void _gs_tile(const floating* d, const floating* x, Py_ssize_t S,
                          Py_ssize_t nr, const floating* mu, floating* b1,
                          floating* b2) noexcept nogil:
    if floating is float:
        ckbn_gs_tile_f32(d, x, S, nr, mu, b1, b2)
    else:
        ckbn_gs_tile_f64(d, x, S, nr, mu, b1, b2)


cdef inline void _gs1(const floating* d, const floating* x, Py_ssize_t W,
                      const floating* mu, floating* b1, floating* b2) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating e
    for j in range(W):
        e = d[j]
        b1[j] += e
        b2[j] += e * (x[j] - mu[j])


cdef inline void _gs1_act(const floating* d, const floating* x, Py_ssize_t W,
                          const floating* mu, const floating* za, const floating* zb,
                          floating s, floating h, floating* b1, floating* b2) noexcept nogil:
    """_gs1 of dy masked by the activation's derivative at z = x * za + zb."""
    cdef Py_ssize_t j
    cdef floating e, z
    for j in range(W):
        z = x[j] * za[j] + zb[j]
        e = d[j] * ((<floating> 1 if z < h else <floating> 0) if z > 0 else s)
        b1[j] += e
        b2[j] += e * (x[j] - mu[j])


cdef inline Py_ssize_t _gs_run_act(const floating* d, const floating* x, Py_ssize_t nr,
                                   Py_ssize_t S, Py_ssize_t W, const floating* mu,
                                   const floating* za, const floating* zb,
                                   floating s, floating h,
                                   floating* b1, floating* b2, double* t1, double* t2,
                                   Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(nr):
        _gs1_act(d + i * S, x + i * S, W, mu, za, zb, s, h, b1, b2)
        nb += 1
        if nb >= BLOCK:
            _flush(b1, b2, t1, t2, W)
            nb = 0
    return nb


cdef inline Py_ssize_t _gs_run(const floating* d, const floating* x, Py_ssize_t nr,
                               Py_ssize_t S, Py_ssize_t W, const floating* mu,
                               floating* b1, floating* b2, double* t1, double* t2,
                               Py_ssize_t nb) noexcept nogil:
    """Accumulate nr row pairs (d + i*S, x + i*S) into the block (nb rows so
    far), as _mom_run does."""
    cdef Py_ssize_t i = 0, q, c, take, off
    cdef Py_ssize_t TL = _tile_lanes(x)
    cdef Py_ssize_t Wt = (W // TL) * TL if TL > 0 else 0
    while i < nr:
        take = nr - i
        if take > BLOCK - nb:
            take = BLOCK - nb
        c = 0
        while c < Wt:
            off = i * S + c
            _gs_tile(d + off, x + off, S, take, mu + c, b1 + c, b2 + c)
            c += TL
        if Wt < W:
            for q in range(i, i + take):
                off = q * S + Wt
                _gs1(d + off, x + off, W - Wt, mu + Wt, b1 + Wt, b2 + Wt)
        i += take
        nb += take
        if nb >= BLOCK:
            _flush(b1, b2, t1, t2, W)
            nb = 0
    return nb


def bn_grad_sums(const floating[::1] dy,   # IN  (P*G*R*C,)
                 const floating[::1] x,    # IN  (P*G*R*C,)
                 Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
                 const double[::1] mean,   # IN  (G*C,)
                 double[::1] sum_dy,       # OUT (G*C,)
                 double[::1] sum_dyxc,     # OUT (G*C,)
                 int n_threads,
                 const floating[::1] za=None,   # IN  (G*C,) with an activation
                 const floating[::1] zb=None,   # IN  (G*C,) with an activation
                 bint act=False, double slope=0.0, double hi=INFINITY):
    """Per-channel ``sum(e)`` and ``sum(e * (x - mean))`` in float64, with
    ``e = dy``, or with ``act`` ``e = dy * act'(x * za[ch] + zb[ch])``."""
    _check_dims(x.shape[0], P, G, R, C)
    if dy.shape[0] != x.shape[0]:
        raise ValueError("bn_grad_sums: dy has the wrong size")
    if mean.shape[0] != G * C or sum_dy.shape[0] != G * C or sum_dyxc.shape[0] != G * C:
        raise ValueError("bn_grad_sums: bad statistic size")
    cdef const floating* pa = &x[0]
    cdef const floating* pb = &x[0]
    if act:
        if za is None or zb is None or za.shape[0] != G * C or zb.shape[0] != G * C:
            raise ValueError("bn_grad_sums: an activation needs za and zb of size G*C")
        pa = &za[0]
        pb = &zb[0]
    cdef Act ac = _act(act, slope, hi)
    with nogil:
        _grad_sums(&dy[0], &x[0], &mean[0], pa, pb, &ac, P, G, R, C, &sum_dy[0],
                   &sum_dyxc[0], n_threads)


# ---------------------------------------------------------------------------
# One driver for both reductions
#
#   RED_STATS  per channel: mean and biased variance of x
#   RED_SUMS   per channel: sum(e) and sum(e * (x - mean)), e = dy (masked by
#              the activation's derivative when one is given)
# ---------------------------------------------------------------------------

cdef enum:
    RED_STATS = 0
    RED_SUMS = 1


cdef inline Py_ssize_t _red_run(int kind, const Act* act, const floating* x,
                                const floating* d, Py_ssize_t nr, Py_ssize_t S,
                                Py_ssize_t W, const floating* sh, const floating* la,
                                const floating* lb, floating* b1, floating* b2,
                                double* s1, double* s2, Py_ssize_t nb) noexcept nogil:
    """nr rows (stride S) of W lanes into the block sums; see _mom_run."""
    if kind == RED_STATS:
        return _mom_run(x, nr, S, W, sh, b1, b2, s1, s2, nb)
    if act.on:
        return _gs_run_act(d, x, nr, S, W, sh, la, lb, <floating> act.slope,
                           <floating> act.hi, b1, b2, s1, s2, nb)
    return _gs_run(d, x, nr, S, W, sh, b1, b2, s1, s2, nb)


cdef inline void _red_one(int kind, const Act* act, const floating* x,
                          const floating* d, Py_ssize_t W, const floating* sh,
                          const floating* la, const floating* lb,
                          floating* b1, floating* b2) noexcept nogil:
    """One (short) row into the block sums."""
    if kind == RED_STATS:
        _mom1(x, W, sh, b1, b2)
    elif act.on:
        _gs1_act(d, x, W, sh, la, lb, <floating> act.slope, <floating> act.hi, b1, b2)
    else:
        _gs1(d, x, W, sh, b1, b2)


cdef void _red_unit(int kind, const Act* act, const floating* x, const floating* dy,
                    const double* mean,          # IN  (G*C,) RED_SUMS
                    const floating* za,          # IN  (G*C,) RED_SUMS with act
                    const floating* zb,
                    const Units* u, Py_ssize_t k,
                    double* o1,                  # OUT partial table (G*n_rc, C)
                    double* o2,                  # OUT partial table (G*n_rc, C)
                    double* pn) noexcept nogil:  # OUT counts (G*n_rc,)
    """Unit k of a reduction.  RED_STATS writes each partial's mean and M2
    (from sums of d = x - K, K the unit's first value per channel); RED_SUMS
    its sum(e) and sum(e * (x - mean))."""
    cdef Unit t = _unit(u, k)
    cdef Py_ssize_t W = u.W, C = u.C
    cdef Py_ssize_t j, c, p, q, q1, nrows, tail, nb = 0, n_el, row, off, ch
    cdef Py_ssize_t width = t.c1 - t.c0
    cdef const floating* first
    cdef double n, S1, S2, d, inv_n
    # Scratch on the stack (W <= TILE_MAX): per-lane shift (the mean rounded to
    # the data type for RED_SUMS), activation coefficients, block sums in the
    # data type and float64 sums.  Being local, they alias nothing.
    cdef floating sh[TILE_MAX]
    cdef floating la[TILE_MAX]
    cdef floating lb[TILE_MAX]
    cdef floating b1[TILE_MAX]
    cdef floating b2[TILE_MAX]
    cdef double s1[TILE_MAX]
    cdef double s2[TILE_MAX]
    cdef bint lanes_act = kind == RED_SUMS and act.on
    if u.tiled:
        W = width
        if kind == RED_STATS:
            first = x + _row_offset(u, t.g, t.q0, t.c0)
            for j in range(W):
                sh[j] = first[j]
        else:
            for j in range(W):
                sh[j] = <floating> mean[t.g * C + t.c0 + j]
        if lanes_act:
            for j in range(W):
                la[j] = za[t.g * C + t.c0 + j]
                lb[j] = zb[t.g * C + t.c0 + j]
    else:
        if kind == RED_STATS:
            _repeat(x + (t.p0 * u.G + t.g) * u.L + t.l0, C, W, sh)
        else:
            for j in range(C):
                sh[j] = <floating> mean[t.g * C + j]
            _repeat(sh, C, W, sh)
        if lanes_act:
            _repeat(za + t.g * C, C, W, la)
            _repeat(zb + t.g * C, C, W, lb)
    for j in range(W):
        b1[j] = 0
        b2[j] = 0
        s1[j] = 0.0
        s2[j] = 0.0
    if u.tiled:
        # Runs of rows inside one segment are C apart.
        q = t.q0
        while q < t.q1:
            q1 = q + (u.R - q % u.R)
            if q1 > t.q1:
                q1 = t.q1
            off = _row_offset(u, t.g, q, t.c0)
            nb = _red_run(kind, act, x + off, dy + off, q1 - q, C, W, sh, la, lb,
                          b1, b2, s1, s2, nb)
            q = q1
        _flush(b1, b2, s1, s2, W)
        n = <double> (t.q1 - t.q0)
    else:
        n_el = t.l1 - t.l0
        nrows = n_el // W
        tail = n_el - nrows * W
        for p in range(t.p0, t.p1):
            off = (p * u.G + t.g) * u.L + t.l0
            nb = _red_run(kind, act, x + off, dy + off, nrows, W, W, sh, la, lb,
                          b1, b2, s1, s2, nb)
            if tail > 0:
                off = off + nrows * W
                _red_one(kind, act, x + off, dy + off, tail, sh, la, lb, b1, b2)
                nb += 1
        n = <double> ((t.p1 - t.p0) * (n_el // C))
        _flush(b1, b2, s1, s2, W)
        _fold(s1, s2, W, C)
        width = C
    row = t.g * u.n_rc + t.rc
    inv_n = 1.0 / n
    for c in range(width):
        ch = t.c0 + c if u.tiled else c
        S1 = s1[c]
        S2 = s2[c]
        if kind == RED_STATS:
            o1[row * C + ch] = <double> sh[c] + S1 * inv_n
            d = S2 - S1 * S1 * inv_n
            o2[row * C + ch] = d if d > 0.0 else 0.0 * d  # 0.0 * d keeps NaN
        else:
            # sum e*(x - mean) = sum e*(x - mu) + (mu - mean) * sum e, with mu
            # the mean rounded to the data type: the correction restores
            # float64 accuracy.
            o1[row * C + ch] = S1
            o2[row * C + ch] = S2 + (<double> sh[c] - mean[t.g * C + ch]) * S1
    if t.c0 == 0:
        pn[row] = n


cdef void _red_core(int kind, const Act* act, const floating* x, const floating* dy,
                    const double* mean, const floating* za, const floating* zb,
                    Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
                    double* out1, double* out2, int n_threads) noexcept nogil:
    """A reduction over the units of (P, G, R, C), merged in unit order:
    RED_STATS  out1 = mean, out2 = biased variance (ordered Chan merge);
    RED_SUMS   out1 = sum(e), out2 = sum(e * (x - mean)) (ordered sums)."""
    cdef Units u = _make_units(P, G, R, C, MIN_LANES, True)
    cdef Py_ssize_t k, g, c, rc, row
    cdef int nt = _n_threads(&u, n_threads)
    cdef Py_ssize_t nrow = G * u.n_rc
    cdef double* part = <double*> malloc(sizeof(double) * nrow * (2 * C + 1))
    cdef double* p1
    cdef double* p2
    cdef double* pn
    cdef double na, nb, nab, wb, wd, a1, a2
    if part == NULL:
        abort()
    p1 = part
    p2 = part + nrow * C
    pn = part + 2 * nrow * C
    if nt == 1:     # no OpenMP region: it costs about a microsecond
        for k in range(u.n_units):
            _red_unit(kind, act, x, dy, mean, za, zb, &u, k, p1, p2, pn)
    else:
        for k in prange(u.n_units, nogil=True, num_threads=nt, schedule="static"):
            _red_unit(kind, act, x, dy, mean, za, zb, &u, k, p1, p2, pn)
    for g in range(G):
        if kind == RED_SUMS:
            for c in range(C):
                a1 = 0.0
                a2 = 0.0
                for rc in range(u.n_rc):
                    row = g * u.n_rc + rc
                    a1 = a1 + p1[row * C + c]
                    a2 = a2 + p2[row * C + c]
                out1[g * C + c] = a1
                out2[g * C + c] = a2
            continue
        # Ordered Chan merge of the row chunks of the group.  The weights
        # depend on the counts only, so they are computed once per chunk, and
        # the channel loop is division-free (and vectorizes).
        for c in range(C):
            out1[g * C + c] = 0.0
            out2[g * C + c] = 0.0
        na = 0.0
        for rc in range(u.n_rc):
            row = g * u.n_rc + rc
            nb = pn[row]
            nab = na + nb
            wb = nb / nab
            wd = na * nb / nab
            _chan_row(p1 + row * C, p2 + row * C, out1 + g * C, out2 + g * C, C, wb, wd)
            na = nab
        wb = 1.0 / na
        for c in range(C):
            out2[g * C + c] = out2[g * C + c] * wb
    free(part)


# Lane expansion.  Channels-first data with small planes (NCHW with 7x7 or
# 14x14 maps: C == 1, G channels, R <= LANE_PLANE_MAX) is read as P rows of
# G*R lanes, lane j belonging to channel j // R: the kernels then stream
# through memory in order instead of visiting short planes far apart.  Per-lane
# results are merged into channels in lane order (deterministic).

cdef inline bint _expand(Py_ssize_t G, Py_ssize_t R, Py_ssize_t C) noexcept nogil:
    return C == 1 and G > 1 and 1 < R <= LANE_PLANE_MAX


cdef void _stats(const floating* x, Py_ssize_t P, Py_ssize_t G, Py_ssize_t R,
                 Py_ssize_t C, double* mean, double* var,
                 int n_threads) noexcept nogil:
    cdef Py_ssize_t g, r, n
    cdef double* lm
    cdef double m, acc, d
    cdef Chunks ch
    cdef Act none = _act(False, 0.0, 0.0)
    if _cf_plan(P, G, R, C, &ch):
        _cf_pass(CF_STATS, &ch, x, x, NULL, NULL, NULL, 0.0, True, &none, mean, var,
                 NULL, NULL, n_threads)
        return
    if not _expand(G, R, C):
        _red_core(RED_STATS, &none, x, x, NULL, NULL, NULL, P, G, R, C, mean, var, n_threads)
        return
    n = G * R
    lm = <double*> malloc(sizeof(double) * 2 * n)
    if lm == NULL:
        abort()
    _red_core(RED_STATS, &none, x, x, NULL, NULL, NULL, 1, 1, P, n, lm, lm + n, n_threads)
    # Every lane holds P values: the channel mean is the mean of its lanes'
    # means, and its variance the mean of their variances plus the variance
    # of their means.
    for g in range(G):
        acc = 0.0
        for r in range(R):
            acc = acc + lm[g * R + r]
        m = acc / R
        acc = 0.0
        for r in range(R):
            d = lm[g * R + r] - m
            acc = acc + lm[n + g * R + r] + d * d
        mean[g] = m
        var[g] = acc / R
    free(lm)


cdef inline void _expand_into(const floating* a, Py_ssize_t G, Py_ssize_t R,
                              floating* out) noexcept nogil:
    """out[g*R + r] = a[g]: per-channel values, one per lane."""
    cdef Py_ssize_t g, r
    for g in range(G):
        for r in range(R):
            out[g * R + r] = a[g]


cdef void _grad_sums(const floating* dy, const floating* x, const double* mean,
                     const floating* za, const floating* zb, const Act* act,
                     Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
                     double* sum_dy, double* sum_dyxc,
                     int n_threads) noexcept nogil:
    cdef Py_ssize_t g, r, n
    cdef double* buf
    cdef floating* ez = NULL
    cdef double a1, a2
    cdef Chunks ch
    if not act.on and _cf_plan(P, G, R, C, &ch):
        _cf_pass(CF_SUMS, &ch, x, dy, NULL, NULL, NULL, 0.0, True, act, <double*> mean,
                 NULL, sum_dyxc, sum_dy, n_threads)
        return
    if not _expand(G, R, C):
        _red_core(RED_SUMS, act, x, dy, mean, za, zb, P, G, R, C, sum_dy, sum_dyxc, n_threads)
        return
    n = G * R
    buf = <double*> malloc(sizeof(double) * 3 * n)
    if buf == NULL:
        abort()
    for g in range(G):
        for r in range(R):
            buf[g * R + r] = mean[g]
    if act.on:
        ez = <floating*> malloc(sizeof(floating) * 2 * n)
        if ez == NULL:
            abort()
        _expand_into(za, G, R, ez)
        _expand_into(zb, G, R, ez + n)
        _red_core(RED_SUMS, act, x, dy, buf, ez, ez + n, 1, 1, P, n, buf + n, buf + 2 * n,
                  n_threads)
        free(ez)
    else:
        _red_core(RED_SUMS, act, x, dy, buf, za, zb, 1, 1, P, n, buf + n, buf + 2 * n,
                  n_threads)
    for g in range(G):
        a1 = 0.0
        a2 = 0.0
        for r in range(R):
            a1 = a1 + buf[n + g * R + r]
            a2 = a2 + buf[2 * n + g * R + r]
        sum_dy[g] = a1
        sum_dyxc[g] = a2
    free(buf)


# ---------------------------------------------------------------------------
# Channels first, chunked: statistics and normalization from cache
#
# Channels-first data (C == 1: NCHW and the like) whose channels are not too
# large is cut into chunks of whole channels (from the shape alone).  A chunk
# owns its channels over the whole batch, so no partial results are merged
# across chunks and the results do not depend on the thread count.  The fused
# passes compute a chunk's statistics (or backward sums) and then write its
# output while the chunk is still in the core's L2 cache: x (and dy) are read
# from memory once instead of twice.
#
# Small planes (R <= LANE_PLANE_MAX) are read as rows of the chunk's planes
# side by side, one row per sample (lane l of channel g0 + l // R); larger
# planes as rows of MIN_LANES lanes inside each plane.
# ---------------------------------------------------------------------------

cdef enum:
    CF_ELEMS = 65536      # elements of one array in a chunk (256 KiB of float32)
    CF_LANES = 1024       # most lanes of a small-plane chunk
    CF_MIN_CHUNKS = 8     # fewer chunks leave threads idle: use the unit path
    CF_STATS = 0
    CF_FORWARD = 1
    CF_SUMS = 2
    CF_BACKWARD = 3


cdef struct Chunks:
    Py_ssize_t P, G, R
    Py_ssize_t k          # channels per chunk
    Py_ssize_t n          # chunks
    bint lanes            # small planes, read side by side


cdef inline bint _cf_plan(Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
                          Chunks* ch) noexcept nogil:
    """Plan the chunks of a channels-first array; False when the unit path
    serves better (channels-last data, few or very large channels)."""
    cdef Py_ssize_t per = P * R, k
    if C != 1 or G < 2 or R < 2 or per > 4 * CF_ELEMS:
        return False
    k = CF_ELEMS // per
    ch.lanes = R <= LANE_PLANE_MAX
    if ch.lanes and k > CF_LANES // R:
        k = CF_LANES // R
    if k < 1:
        k = 1
    ch.P = P
    ch.G = G
    ch.R = R
    ch.k = k
    ch.n = (G + k - 1) // k
    return ch.n >= CF_MIN_CHUNKS


cdef inline void _moments(double K, double S1, double S2, double n,
                          double* mean, double* var) noexcept nogil:
    """Mean and biased variance from the sums of d = x - K and d*d."""
    cdef double d = S2 - S1 * S1 / n
    mean[0] = K + S1 / n
    var[0] = (d if d > 0.0 else 0.0 * d) / n   # 0.0 * d keeps NaN


cdef void _cf_reduce(int kind, const floating* x, const floating* dy, const Chunks* ch,
                     Py_ssize_t g0, Py_ssize_t g1,
                     const double* mean,            # IN  RED_SUMS
                     double* out1, double* out2,    # OUT per channel, as _red_core's
                     char* scr) noexcept nogil:
    """The reduction ``kind`` (see _red_core) of channels [g0, g1) over the
    whole batch: RED_STATS gives the mean and biased variance, RED_SUMS
    sum(dy) and sum(dy * (x - mean))."""
    cdef Py_ssize_t R = ch.R, S = ch.G * ch.R, L, W, g, r, p, nb, nrows, tail, off
    cdef double* s1 = <double*> scr
    cdef double* s2
    cdef floating* sh
    cdef floating* b1
    cdef floating* b2
    cdef double n = <double> (ch.P * R), S1, S2
    cdef Act none = _act(False, 0.0, 0.0)
    L = (g1 - g0) * R if ch.lanes else MIN_LANES
    s2 = s1 + L
    sh = <floating*> (s2 + L)
    b1 = sh + L
    b2 = b1 + L
    if ch.lanes:
        # One row per sample: the chunk's planes side by side.
        for g in range(g0, g1):
            for r in range(R):
                sh[(g - g0) * R + r] = x[g * R] if kind == RED_STATS else <floating> mean[g]
        for r in range(L):
            b1[r] = 0
            b2[r] = 0
            s1[r] = 0.0
            s2[r] = 0.0
        _red_run(kind, &none, x + g0 * R, dy + g0 * R, ch.P, S, L, sh, NULL, NULL,
                 b1, b2, s1, s2, 0)
        _flush(b1, b2, s1, s2, L)
        for g in range(g0, g1):
            S1 = 0.0
            S2 = 0.0
            for r in range(R):
                S1 = S1 + s1[(g - g0) * R + r]
                S2 = S2 + s2[(g - g0) * R + r]
            _cf_out(kind, sh[(g - g0) * R], S1, S2, n, mean, g, out1, out2)
        return
    # Large planes: rows of MIN_LANES lanes inside each plane.
    W = MIN_LANES
    nrows = R // W
    tail = R - nrows * W
    for g in range(g0, g1):
        for r in range(W):
            sh[r] = x[g * R] if kind == RED_STATS else <floating> mean[g]
            b1[r] = 0
            b2[r] = 0
            s1[r] = 0.0
            s2[r] = 0.0
        nb = 0
        for p in range(ch.P):
            off = p * S + g * R
            nb = _red_run(kind, &none, x + off, dy + off, nrows, W, W, sh, NULL, NULL,
                          b1, b2, s1, s2, nb)
            if tail > 0:
                off = off + nrows * W
                _red_one(kind, &none, x + off, dy + off, tail, sh, NULL, NULL, b1, b2)
                nb += 1
        _flush(b1, b2, s1, s2, W)
        _fold(s1, s2, W, 1)
        _cf_out(kind, sh[0], s1[0], s2[0], n, mean, g, out1, out2)


cdef inline void _cf_out(int kind, floating k, double S1, double S2, double n,
                         const double* mean, Py_ssize_t g, double* out1,
                         double* out2) noexcept nogil:
    """Channel g's results from the sums of its shifted values (shift k)."""
    if kind == RED_STATS:
        _moments(<double> k, S1, S2, n, out1 + g, out2 + g)
    else:
        # k is the mean rounded to the data type: correct to float64.
        out1[g] = S1
        out2[g] = S2 + (<double> k - mean[g]) * S1


cdef void _cf_apply(int op, const Act* act, const floating* x, const floating* d,
                    floating* o, const Chunks* ch, Py_ssize_t g0, Py_ssize_t g1,
                    const floating** cf, char* scr) noexcept nogil:
    """The element-wise pass ``op`` on channels [g0, g1) (coefficients
    cf[i][g - g0])."""
    cdef Py_ssize_t R = ch.R, S = ch.G * ch.R, L = (g1 - g0) * R, g, p, off
    cdef int nc = _n_coef(op, act.on), q
    cdef floating* lanes = <floating*> scr
    cdef const floating* w[MAX_COEF]
    cdef floating v[MAX_COEF]
    cdef floating s = <floating> act.slope, h = <floating> act.hi
    if ch.lanes:
        for q in range(nc):
            _expand_into(cf[q], g1 - g0, R, lanes + q * L)
            w[q] = lanes + q * L
        for p in range(ch.P):
            off = p * S + g0 * R
            _ew_run(op, act.on, x + off, d + off, o + off, L, w, s, h)
        return
    for p in range(ch.P):
        for g in range(g0, g1):
            for q in range(nc):
                v[q] = cf[q][g - g0]
            off = p * S + g * R
            _ew_seg(op, act.on, x + off, d + off, o + off, R, v, s, h)


cdef void _cf_chunk(int what, const Chunks* ch, Py_ssize_t j, const floating* x,
                    const floating* dy, floating* out, const double* scale,
                    const double* offset, double eps, bint training, const Act* act,
                    double* m1, double* m2, double* r1, double* r2,
                    char* scr) noexcept nogil:
    """One chunk of the pass ``what`` (see _cf_pass)."""
    cdef Py_ssize_t g0 = j * ch.k, g1 = g0 + ch.k, k, c
    cdef floating* kk
    cdef const floating* cf[MAX_COEF]
    if g1 > ch.G:
        g1 = ch.G
    k = g1 - g0
    for c in range(MAX_COEF):
        cf[c] = NULL
    # Coefficients of the chunk's channels sit past the largest lane scratch.
    kk = <floating*> (scr + 2 * CF_LANES * sizeof(double) + MAX_COEF * CF_LANES * sizeof(floating))
    if what == CF_STATS or what == CF_FORWARD:
        _cf_reduce(RED_STATS, x, x, ch, g0, g1, NULL, m1, m2, scr)
        if what == CF_STATS:
            return
        _norm_coefs(scale + g0, offset + g0, m1 + g0, m2 + g0, eps, k, kk, kk + k)
        for c in range(2):
            cf[c] = kk + c * k
        _cf_apply(OP_AFFINE, act, x, x, out, ch, g0, g1, cf, scr)
        return
    _cf_reduce(RED_SUMS, x, dy, ch, g0, g1, m1, r2, r1, scr)
    if what == CF_SUMS:
        return
    _bwd_coefs(scale + g0, m1 + g0, m2 + g0, eps, training, <double> (ch.P * ch.R),
               r2 + g0, r1 + g0, kk, k)
    for c in range(3):
        cf[c] = kk + c * k
    _cf_apply(OP_DX, act, x, dy, out, ch, g0, g1, cf, scr)


cdef void _cf_pass(int what, const Chunks* ch, const floating* x, const floating* dy,
                   floating* out, const double* scale, const double* offset, double eps,
                   bint training, const Act* act, double* m1, double* m2, double* r1,
                   double* r2, int n_threads) noexcept nogil:
    """Run ``what`` over every chunk:

    CF_STATS     x -> m1 = mean, m2 = biased variance
    CF_FORWARD   also out = act(x * a + b) with a, b from scale, offset, eps
    CF_SUMS      dy, x, m1 = mean -> r2 = sum(dy), r1 = sum(dy * (x - mean))
    CF_BACKWARD  also out = dx (m2 = var), r1 = dscale, r2 = doffset
    """
    cdef Py_ssize_t j
    cdef size_t nbytes = 2 * CF_LANES * sizeof(double) \
        + (MAX_COEF + 3) * CF_LANES * sizeof(floating)
    cdef int nt = n_threads
    cdef char* scr = NULL
    if ch.P * ch.G * ch.R < PARALLEL_MIN or nt < 1:
        nt = 1
    if nt > ch.n:
        nt = <int> ch.n
    if nt == 1:
        scr = <char*> malloc(nbytes)
        if scr == NULL:
            abort()
        for j in range(ch.n):
            _cf_chunk(what, ch, j, x, dy, out, scale, offset, eps, training, act,
                      m1, m2, r1, r2, scr)
        free(scr)
        return
    with parallel(num_threads=nt):
        scr = <char*> malloc(nbytes)
        if scr == NULL:
            abort()
        for j in prange(ch.n, schedule="static"):
            _cf_chunk(what, ch, j, x, dy, out, scale, offset, eps, training, act,
                      m1, m2, r1, r2, scr)
        free(scr)


def work_plan(Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C):
    """How (P, G, R, C) is cut into work (from the shape alone), for the
    benchmarks' scaling model: the reduction path, and the number of units the
    reductions and the element-wise passes hand to threads (chunks on the
    chunked channels-first path, which runs every pass per chunk)."""
    cdef Chunks ch
    cdef Units ur, ue
    cdef Py_ssize_t RR = R, CC = C, PP = P, GG = G
    path = reduction_path(P, G, R, C)
    if _cf_plan(P, G, R, C, &ch):
        return {"path": path, "reduction_units": ch.n, "elementwise_units": ch.n}
    if _expand(G, R, C):
        PP, GG, RR, CC = 1, 1, P, G * R
    ur = _make_units(PP, GG, RR, CC, MIN_LANES, True)
    ue = _make_units(PP, GG, RR, CC, MIN_LANES_EW, False)
    return {"path": path, "reduction_units": ur.n_units, "elementwise_units": ue.n_units}


def reduction_path(Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C):
    """Name of the path the reductions take for (P, G, R, C), for tests and
    benchmarks: ``"chunks-lanes"`` / ``"chunks-planes"`` (channels first,
    chunked and fused; small planes side by side or large planes in rows),
    ``"lanes"`` (channels first, small planes read side by side),
    ``"tiles"`` (rows wider than TILE_MAX, cut into channel tiles) or
    ``"rows"`` (rows of W >= MIN_LANES lanes)."""
    cdef Chunks ch
    if _cf_plan(P, G, R, C, &ch):
        return "chunks-lanes" if ch.lanes else "chunks-planes"
    if _expand(G, R, C):
        return "lanes"
    return "tiles" if C > TILE_MAX else "rows"


# ---------------------------------------------------------------------------
# Fused entry points: the whole op in one call (no per-channel NumPy work)
# ---------------------------------------------------------------------------


cdef inline void _norm_coefs(const double* scale, const double* offset,
                             const double* mean, const double* var, double eps,
                             Py_ssize_t n, floating* a, floating* b) noexcept nogil:
    """a = scale / sqrt(var + eps), b = offset - mean * a, rounded once to the
    data type.  The forward passes and the backward's recomputation of the
    pre-activation use these same values."""
    cdef Py_ssize_t c
    cdef double k
    for c in range(n):
        k = scale[c] / sqrt(var[c] + eps)
        a[c] = <floating> k
        b[c] = <floating> (offset[c] - mean[c] * k)


cdef inline void _bwd_coefs(const double* scale, const double* mean, const double* var,
                            double eps, bint training, double cnt,
                            const double* sum_dy,   # IN  (n,)
                            double* sdx,            # IN  sum(dy * (x - mean)); OUT dscale
                            floating* kk,           # OUT k1, k2, k3 (3n,)
                            Py_ssize_t n) noexcept nogil:
    """The backward's per-channel coefficients, from the sums over the batch:
    dx = dy*k1 + (x*k2 + k3) and dscale = sum(dy * xhat)."""
    cdef Py_ssize_t c
    cdef double inv, k1, k2
    for c in range(n):
        inv = 1.0 / sqrt(var[c] + eps)
        k1 = scale[c] * inv
        kk[c] = <floating> k1
        if training:
            k2 = -k1 * inv * inv * sdx[c] / cnt
            kk[n + c] = <floating> k2
            kk[2 * n + c] = <floating> (-k1 * sum_dy[c] / cnt - k2 * mean[c])
        else:
            kk[n + c] = 0
            kk[2 * n + c] = 0
        sdx[c] = sdx[c] * inv


# The fused ops as nogil cores on raw pointers.  They serve the def entry
# points below and the C-level table (end of this file).  Each returns
# CKBN_OK, or CKBN_ERR_NOMEM when its scratch cannot be allocated.

cdef int _fwd_train(const floating* x, Py_ssize_t P, Py_ssize_t G, Py_ssize_t R,
                    Py_ssize_t C, const double* scale, const double* offset, double eps,
                    const Act* ac, floating* y, double* mean, double* var,
                    int n_threads) noexcept nogil:
    cdef Py_ssize_t n = G * C
    cdef Chunks ch
    cdef floating* ab
    if _cf_plan(P, G, R, C, &ch):
        # Channels first: each chunk normalized while it is in cache.
        _cf_pass(CF_FORWARD, &ch, x, x, y, scale, offset, eps, True, ac, mean, var,
                 NULL, NULL, n_threads)
        return CKBN_OK
    ab = <floating*> malloc(sizeof(floating) * 2 * n)
    if ab == NULL:
        return CKBN_ERR_NOMEM
    _stats(x, P, G, R, C, mean, var, n_threads)
    _norm_coefs(scale, offset, mean, var, eps, n, ab, ab + n)
    _affine(x, ab, ab + n, y, P, G, R, C, ac, n_threads)
    free(ab)
    return CKBN_OK


cdef int _fwd_infer(const floating* x, Py_ssize_t P, Py_ssize_t G, Py_ssize_t R,
                    Py_ssize_t C, const double* scale, const double* offset,
                    const double* mean, const double* var, double eps, const Act* ac,
                    floating* y, int n_threads) noexcept nogil:
    cdef Py_ssize_t n = G * C
    cdef floating* ab = <floating*> malloc(sizeof(floating) * 2 * n)
    if ab == NULL:
        return CKBN_ERR_NOMEM
    _norm_coefs(scale, offset, mean, var, eps, n, ab, ab + n)
    _affine(x, ab, ab + n, y, P, G, R, C, ac, n_threads)
    free(ab)
    return CKBN_OK


cdef int _bwd(const floating* dy, const floating* x, Py_ssize_t P, Py_ssize_t G,
              Py_ssize_t R, Py_ssize_t C, const double* scale, const double* offset,
              const double* mean, const double* var, double eps, bint training,
              const Act* ac, floating* dx, double* dscale, double* doffset,
              int n_threads) noexcept nogil:
    cdef Py_ssize_t n = G * C
    cdef Chunks ch
    cdef floating* kk
    if not ac.on and _cf_plan(P, G, R, C, &ch):
        # Channels first: each chunk's dx written while it is in cache.
        _cf_pass(CF_BACKWARD, &ch, x, dy, dx, scale, NULL, eps, training, ac,
                 <double*> mean, <double*> var, dscale, doffset, n_threads)
        return CKBN_OK
    kk = <floating*> malloc(sizeof(floating) * 5 * n)
    if kk == NULL:
        return CKBN_ERR_NOMEM
    if ac.on:
        _norm_coefs(scale, offset, mean, var, eps, n, kk + 3 * n, kk + 4 * n)
    _grad_sums(dy, x, mean, kk + 3 * n, kk + 4 * n, ac, P, G, R, C, doffset, dscale,
               n_threads)
    _bwd_coefs(scale, mean, var, eps, training, <double> (P * R), doffset, dscale, kk, n)
    if training or ac.on:
        _grad_dx(dy, x, kk, kk + n, kk + 2 * n, kk + 3 * n, kk + 4 * n, dx,
                 P, G, R, C, ac, n_threads)
    else:
        _affine(dy, kk, kk + n, dx, P, G, R, C, ac, n_threads)
    free(kk)
    return CKBN_OK


cdef int _sums(const floating* dy, const floating* x, Py_ssize_t P, Py_ssize_t G,
               Py_ssize_t R, Py_ssize_t C, const double* scale, const double* offset,
               const double* mean, const double* var, double eps, const Act* ac,
               double* sum_e, double* sum_exc, int n_threads) noexcept nogil:
    cdef Py_ssize_t n = G * C
    cdef floating* z
    if not ac.on:
        _grad_sums(dy, x, mean, x, x, ac, P, G, R, C, sum_e, sum_exc, n_threads)
        return CKBN_OK
    z = <floating*> malloc(sizeof(floating) * 2 * n)
    if z == NULL:
        return CKBN_ERR_NOMEM
    _norm_coefs(scale, offset, mean, var, eps, n, z, z + n)
    _grad_sums(dy, x, mean, z, z + n, ac, P, G, R, C, sum_e, sum_exc, n_threads)
    free(z)
    return CKBN_OK


cdef int _bwd_dx(const floating* dy, const floating* x, Py_ssize_t P, Py_ssize_t G,
                 Py_ssize_t R, Py_ssize_t C, const double* scale, const double* offset,
                 const double* mean, const double* var, double eps, double count,
                 const double* sum_e, const double* sum_exc, const Act* ac,
                 floating* dx, double* dscale, int n_threads) noexcept nogil:
    cdef Py_ssize_t n = G * C, c
    cdef floating* kk = <floating*> malloc(sizeof(floating) * 5 * n)
    cdef double* sd = <double*> malloc(sizeof(double) * n)
    if kk == NULL or sd == NULL:
        free(kk)
        free(sd)
        return CKBN_ERR_NOMEM
    for c in range(n):
        sd[c] = sum_exc[c]
    if ac.on:
        _norm_coefs(scale, offset, mean, var, eps, n, kk + 3 * n, kk + 4 * n)
    _bwd_coefs(scale, mean, var, eps, True, count, sum_e, sd, kk, n)
    _grad_dx(dy, x, kk, kk + n, kk + 2 * n, kk + 3 * n, kk + 4 * n, dx, P, G, R, C, ac,
             n_threads)
    if dscale != NULL:
        for c in range(n):
            dscale[c] = sd[c]
    free(kk)
    free(sd)
    return CKBN_OK


cdef inline int _raise_status(int status, str where) except -1:
    if status == CKBN_ERR_NOMEM:
        raise MemoryError(f"{where}: out of memory for the kernel's scratch")
    if status != CKBN_OK:
        raise ValueError(f"{where}: kernel status {status}")
    return 0


def bn_forward_train(const floating[::1] x,      # IN  (P*G*R*C,)
                     Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
                     const double[::1] scale,    # IN  (G*C,)
                     const double[::1] offset,   # IN  (G*C,)
                     double eps,
                     floating[::1] y,            # OUT (P*G*R*C,)
                     double[::1] mean,           # OUT (G*C,)
                     double[::1] var,            # OUT (G*C,) biased
                     int n_threads,
                     bint act=False, double slope=0.0, double hi=INFINITY):
    """Training forward: batch statistics, then
    ``y = act((x - mean) * scale / sqrt(var + eps) + offset)``.

    ``act`` applies ``z > 0 ? min(z, hi) : slope * z`` in the same pass;
    ``y`` may be ``x`` itself.
    """
    _check_dims(x.shape[0], P, G, R, C)
    cdef Py_ssize_t n = G * C
    if y.shape[0] != x.shape[0] or scale.shape[0] != n or offset.shape[0] != n \
            or mean.shape[0] != n or var.shape[0] != n:
        raise ValueError("bn_forward_train: bad sizes")
    cdef Act ac = _act(act, slope, hi)
    cdef int status
    with nogil:
        status = _fwd_train(&x[0], P, G, R, C, &scale[0], &offset[0], eps, &ac, &y[0],
                            &mean[0], &var[0], n_threads)
    _raise_status(status, "bn_forward_train")


def bn_forward_infer(const floating[::1] x,      # IN  (P*G*R*C,)
                     Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
                     const double[::1] scale,    # IN  (G*C,)
                     const double[::1] offset,   # IN  (G*C,)
                     const double[::1] mean,     # IN  (G*C,)
                     const double[::1] var,      # IN  (G*C,)
                     double eps,
                     floating[::1] y,            # OUT (P*G*R*C,)
                     int n_threads,
                     bint act=False, double slope=0.0, double hi=INFINITY):
    """Inference: ``y = act((x - mean) * scale / sqrt(var + eps) + offset)`` in one pass."""
    _check_dims(x.shape[0], P, G, R, C)
    cdef Py_ssize_t n = G * C
    if y.shape[0] != x.shape[0] or scale.shape[0] != n or offset.shape[0] != n \
            or mean.shape[0] != n or var.shape[0] != n:
        raise ValueError("bn_forward_infer: bad sizes")
    cdef Act ac = _act(act, slope, hi)
    cdef int status
    with nogil:
        status = _fwd_infer(&x[0], P, G, R, C, &scale[0], &offset[0], &mean[0], &var[0],
                            eps, &ac, &y[0], n_threads)
    _raise_status(status, "bn_forward_infer")


def bn_backward(const floating[::1] dy,          # IN  (P*G*R*C,)
                const floating[::1] x,           # IN  (P*G*R*C,)
                Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
                const double[::1] scale,         # IN  (G*C,)
                const double[::1] mean,          # IN  (G*C,)
                const double[::1] var,           # IN  (G*C,)
                double eps, bint training,
                floating[::1] dx,                # OUT (P*G*R*C,)
                double[::1] dscale,              # OUT (G*C,)
                double[::1] doffset,             # OUT (G*C,)
                int n_threads,
                const double[::1] offset=None,   # IN  (G*C,) with an activation
                bint act=False, double slope=0.0, double hi=INFINITY):
    """Gradients of the forward pass with respect to x, scale and offset.

    Training: ``dx = scale*inv*(e - mean(e) - xhat*mean(e*xhat))``; inference:
    ``dx = e*scale*inv``; with ``inv = 1/sqrt(var + eps)``,
    ``xhat = (x - mean)*inv``, and ``e = dy``, or with ``act`` the gradient
    ``dy * act'(z)`` at the forward's pre-activation ``z`` (recomputed from
    ``x``, ``offset`` and the statistics).  Two passes over ``x`` and ``dy``.
    """
    _check_dims(x.shape[0], P, G, R, C)
    cdef Py_ssize_t n = G * C
    if dy.shape[0] != x.shape[0] or dx.shape[0] != x.shape[0] or scale.shape[0] != n \
            or mean.shape[0] != n or var.shape[0] != n or dscale.shape[0] != n \
            or doffset.shape[0] != n:
        raise ValueError("bn_backward: bad sizes")
    if act and (offset is None or offset.shape[0] != n):
        raise ValueError("bn_backward: an activation needs offset of size G*C")
    cdef Act ac = _act(act, slope, hi)
    cdef const double* po = &offset[0] if act else NULL
    cdef int status
    with nogil:
        status = _bwd(&dy[0], &x[0], P, G, R, C, &scale[0], po, &mean[0], &var[0], eps,
                      training, &ac, &dx[0], &dscale[0], &doffset[0], n_threads)
    _raise_status(status, "bn_backward")


# ---------------------------------------------------------------------------
# float16 <-> float32 (the kernels compute float16 data in float32)
# ---------------------------------------------------------------------------

def f16c_enabled():
    """True when this module converts float16 with the F16C instructions."""
    return bool(CKBN_HAVE_F16C)


def f16_to_f32(const unsigned short[::1] src,   # IN  float16 bits (n,)
               float[::1] dst,                  # OUT (n,)
               int n_threads):
    """``dst[:] = src`` widened from float16 (exact).

    The float16 passes below convert with the same helper; this entry point
    lets the tests check it bit for bit against NumPy.
    """
    cdef Py_ssize_t n = src.shape[0], k, lo, hi
    cdef Py_ssize_t nb = (n + UNIT_TARGET - 1) // UNIT_TARGET
    cdef int nt = n_threads if n >= PARALLEL_MIN else 1
    if not CKBN_HAVE_F16C:
        raise RuntimeError("f16_to_f32: this kernel module was built without F16C")
    if dst.shape[0] != n:
        raise ValueError("f16_to_f32: sizes differ")
    if n == 0:
        return
    with nogil:
        if nt == 1:
            ckbn_h2f(&src[0], &dst[0], n)
        else:
            for k in prange(nb, num_threads=nt, schedule="static"):
                lo = k * UNIT_TARGET
                hi = lo + UNIT_TARGET if lo + UNIT_TARGET < n else n
                ckbn_h2f(&src[0] + lo, &dst[0] + lo, hi - lo)


def f32_to_f16(const float[::1] src,            # IN  (n,)
               unsigned short[::1] dst,         # OUT float16 bits (n,)
               int n_threads):
    """``dst[:] = src`` rounded to float16 (to nearest, ties to even).

    The float16 passes below round with the same helper; this entry point
    lets the tests check it bit for bit against NumPy.
    """
    cdef Py_ssize_t n = src.shape[0], k, lo, hi
    cdef Py_ssize_t nb = (n + UNIT_TARGET - 1) // UNIT_TARGET
    cdef int nt = n_threads if n >= PARALLEL_MIN else 1
    if not CKBN_HAVE_F16C:
        raise RuntimeError("f32_to_f16: this kernel module was built without F16C")
    if dst.shape[0] != n:
        raise ValueError("f32_to_f16: sizes differ")
    if n == 0:
        return
    with nogil:
        if nt == 1:
            ckbn_f2h(&src[0], &dst[0], n)
        else:
            for k in prange(nb, num_threads=nt, schedule="static"):
                lo = k * UNIT_TARGET
                hi = lo + UNIT_TARGET if lo + UNIT_TARGET < n else n
                ckbn_f2h(&src[0] + lo, &dst[0] + lo, hi - lo)


# ---------------------------------------------------------------------------
# float16 data, a slice at a time
#
# The canonical float16 array is cut along P into slices of about F16_SLICE
# elements (from the shape only).  Each thread widens its slice into a private
# float32 buffer that stays in its L2 cache, runs the one-thread float32
# kernel on it, and (element-wise passes) rounds the result straight into the
# float16 output.  Per-slice statistics are merged in slice order, so results
# do not depend on the thread count.  The four slice drivers (_h_*) are nogil
# cores; the fused float16 ops compose them, and the def entry points and the
# C-level table call those.
# ---------------------------------------------------------------------------

cdef enum:
    F16_SLICE = 65536


cdef inline Py_ssize_t _slice_rows(Py_ssize_t per) noexcept nogil:
    """P-rows per slice (at least one)."""
    return F16_SLICE // per if per < F16_SLICE else 1


cdef inline int _f16_threads(Py_ssize_t n, Py_ssize_t n_slices, int n_threads) noexcept nogil:
    if n < PARALLEL_MIN or n_threads < 1:
        return 1
    return <int> n_slices if n_threads > n_slices else n_threads


cdef inline int _f16_check(Py_ssize_t n, Py_ssize_t P, Py_ssize_t G, Py_ssize_t R,
                           Py_ssize_t C) except -1:
    if not CKBN_HAVE_F16C:
        raise RuntimeError("float16 kernels: this kernel module was built without F16C")
    _check_dims(n, P, G, R, C)
    return 0


cdef int _h_stats(const unsigned short* h, Py_ssize_t P, Py_ssize_t G, Py_ssize_t R,
                  Py_ssize_t C, double* mean, double* var, int n_threads) noexcept nogil:
    cdef Py_ssize_t per = G * R * C, gc = G * C
    cdef Py_ssize_t rows = _slice_rows(per)
    cdef Py_ssize_t ns = (P + rows - 1) // rows
    cdef int nt = _f16_threads(P * per, ns, n_threads)
    cdef double* part = <double*> malloc(sizeof(double) * ns * 2 * gc)
    cdef float* buf = NULL
    cdef Py_ssize_t s, p0, p1, c
    cdef double na, nb, tot
    if part == NULL:
        return CKBN_ERR_NOMEM
    with parallel(num_threads=nt):
        buf = <float*> malloc(sizeof(float) * rows * per)
        if buf == NULL:
            abort()
        for s in prange(ns, schedule="static"):
            p0 = s * rows
            p1 = p0 + rows if p0 + rows < P else P
            ckbn_h2f(h + p0 * per, buf, (p1 - p0) * per)
            _stats(buf, p1 - p0, G, R, C, part + 2 * s * gc, part + (2 * s + 1) * gc, 1)
        free(buf)
    # The ordered Chan merge of _red_core, on the slices' (mean, M2).
    for c in range(gc):
        mean[c] = 0.0
        var[c] = 0.0
    na = 0.0
    for s in range(ns):
        p0 = s * rows
        p1 = p0 + rows if p0 + rows < P else P
        nb = <double> ((p1 - p0) * R)
        for c in range(gc):
            part[(2 * s + 1) * gc + c] *= nb        # biased variance -> M2
        tot = na + nb
        _chan_row(part + 2 * s * gc, part + (2 * s + 1) * gc, mean, var, gc,
                  nb / tot, na * nb / tot)
        na = tot
    for c in range(gc):
        var[c] = var[c] / na
    free(part)
    return CKBN_OK


cdef int _h_affine(const unsigned short* h, Py_ssize_t P, Py_ssize_t G, Py_ssize_t R,
                   Py_ssize_t C, const float* a, const float* b, unsigned short* out,
                   const Act* ac, int n_threads) noexcept nogil:
    cdef Py_ssize_t per = G * R * C
    cdef Py_ssize_t rows = _slice_rows(per)
    cdef Py_ssize_t ns = (P + rows - 1) // rows
    cdef int nt = _f16_threads(P * per, ns, n_threads)
    cdef float* buf = NULL
    cdef Py_ssize_t s, p0, p1, m
    with parallel(num_threads=nt):
        buf = <float*> malloc(sizeof(float) * 2 * rows * per)
        if buf == NULL:
            abort()
        for s in prange(ns, schedule="static"):
            p0 = s * rows
            p1 = p0 + rows if p0 + rows < P else P
            m = (p1 - p0) * per
            ckbn_h2f(h + p0 * per, buf, m)
            _affine(buf, a, b, buf + rows * per, p1 - p0, G, R, C, ac, 1)
            ckbn_f2h(buf + rows * per, out + p0 * per, m)
        free(buf)
    return CKBN_OK


cdef int _h_grad_sums(const unsigned short* dy, const unsigned short* h, Py_ssize_t P,
                      Py_ssize_t G, Py_ssize_t R, Py_ssize_t C, const double* mean,
                      const float* za, const float* zb, const Act* ac,
                      double* sum_dy, double* sum_dyxc, int n_threads) noexcept nogil:
    """za, zb: the pre-activation's coefficients (read only with an activation)."""
    cdef Py_ssize_t per = G * R * C, gc = G * C
    cdef Py_ssize_t rows = _slice_rows(per)
    cdef Py_ssize_t ns = (P + rows - 1) // rows
    cdef int nt = _f16_threads(P * per, ns, n_threads)
    cdef double* part = <double*> malloc(sizeof(double) * ns * 2 * gc)
    cdef float* buf = NULL
    cdef Py_ssize_t s, p0, p1, m, c
    if part == NULL:
        return CKBN_ERR_NOMEM
    with parallel(num_threads=nt):
        buf = <float*> malloc(sizeof(float) * 2 * rows * per)
        if buf == NULL:
            abort()
        for s in prange(ns, schedule="static"):
            p0 = s * rows
            p1 = p0 + rows if p0 + rows < P else P
            m = (p1 - p0) * per
            ckbn_h2f(dy + p0 * per, buf, m)
            ckbn_h2f(h + p0 * per, buf + rows * per, m)
            _grad_sums(buf, buf + rows * per, mean, za, zb, ac, p1 - p0, G, R, C,
                       part + 2 * s * gc, part + (2 * s + 1) * gc, 1)
        free(buf)
    for c in range(gc):
        sum_dy[c] = 0.0
        sum_dyxc[c] = 0.0
    for s in range(ns):
        for c in range(gc):
            sum_dy[c] += part[2 * s * gc + c]
            sum_dyxc[c] += part[(2 * s + 1) * gc + c]
    free(part)
    return CKBN_OK


cdef int _h_grad_dx(const unsigned short* dy, const unsigned short* h, Py_ssize_t P,
                    Py_ssize_t G, Py_ssize_t R, Py_ssize_t C, const float* k1,
                    const float* k2, const float* k3, const float* za, const float* zb,
                    const Act* ac, unsigned short* dx, int n_threads) noexcept nogil:
    cdef Py_ssize_t per = G * R * C
    cdef Py_ssize_t rows = _slice_rows(per)
    cdef Py_ssize_t ns = (P + rows - 1) // rows
    cdef int nt = _f16_threads(P * per, ns, n_threads)
    cdef float* buf = NULL
    cdef Py_ssize_t s, p0, p1, m
    with parallel(num_threads=nt):
        buf = <float*> malloc(sizeof(float) * 3 * rows * per)
        if buf == NULL:
            abort()
        for s in prange(ns, schedule="static"):
            p0 = s * rows
            p1 = p0 + rows if p0 + rows < P else P
            m = (p1 - p0) * per
            ckbn_h2f(dy + p0 * per, buf, m)
            ckbn_h2f(h + p0 * per, buf + rows * per, m)
            _grad_dx(buf, buf + rows * per, k1, k2, k3, za, zb, buf + 2 * rows * per,
                     p1 - p0, G, R, C, ac, 1)
            ckbn_f2h(buf + 2 * rows * per, dx + p0 * per, m)
        free(buf)
    return CKBN_OK


cdef int _h_fwd_train(const unsigned short* h, Py_ssize_t P, Py_ssize_t G, Py_ssize_t R,
                      Py_ssize_t C, const double* scale, const double* offset, double eps,
                      const Act* ac, unsigned short* out, double* mean, double* var,
                      int n_threads) noexcept nogil:
    cdef int status = _h_stats(h, P, G, R, C, mean, var, n_threads)
    if status != CKBN_OK:
        return status
    return _h_fwd_infer(h, P, G, R, C, scale, offset, mean, var, eps, ac, out, n_threads)


cdef int _h_fwd_infer(const unsigned short* h, Py_ssize_t P, Py_ssize_t G, Py_ssize_t R,
                      Py_ssize_t C, const double* scale, const double* offset,
                      const double* mean, const double* var, double eps, const Act* ac,
                      unsigned short* out, int n_threads) noexcept nogil:
    cdef Py_ssize_t n = G * C
    cdef float* ab = <float*> malloc(sizeof(float) * 2 * n)
    if ab == NULL:
        return CKBN_ERR_NOMEM
    _norm_coefs(scale, offset, mean, var, eps, n, ab, ab + n)
    _h_affine(h, P, G, R, C, ab, ab + n, out, ac, n_threads)
    free(ab)
    return CKBN_OK


cdef int _h_sums(const unsigned short* dy, const unsigned short* h, Py_ssize_t P,
                 Py_ssize_t G, Py_ssize_t R, Py_ssize_t C, const double* scale,
                 const double* offset, const double* mean, const double* var, double eps,
                 const Act* ac, double* sum_e, double* sum_exc, int n_threads) noexcept nogil:
    cdef Py_ssize_t n = G * C
    cdef float* z = <float*> malloc(sizeof(float) * 2 * n)
    cdef int status
    if z == NULL:
        return CKBN_ERR_NOMEM
    if ac.on:
        _norm_coefs(scale, offset, mean, var, eps, n, z, z + n)
    status = _h_grad_sums(dy, h, P, G, R, C, mean, z, z + n, ac, sum_e, sum_exc, n_threads)
    free(z)
    return status


cdef int _h_bwd(const unsigned short* dy, const unsigned short* h, Py_ssize_t P,
                Py_ssize_t G, Py_ssize_t R, Py_ssize_t C, const double* scale,
                const double* offset, const double* mean, const double* var, double eps,
                bint training, const Act* ac, unsigned short* dx, double* dscale,
                double* doffset, int n_threads) noexcept nogil:
    cdef Py_ssize_t n = G * C
    cdef float* kk = <float*> malloc(sizeof(float) * 5 * n)
    cdef int status
    if kk == NULL:
        return CKBN_ERR_NOMEM
    if ac.on:
        _norm_coefs(scale, offset, mean, var, eps, n, kk + 3 * n, kk + 4 * n)
    status = _h_grad_sums(dy, h, P, G, R, C, mean, kk + 3 * n, kk + 4 * n, ac, doffset,
                          dscale, n_threads)
    if status == CKBN_OK:
        _bwd_coefs(scale, mean, var, eps, training, <double> (P * R), doffset, dscale, kk, n)
        if training or ac.on:
            _h_grad_dx(dy, h, P, G, R, C, kk, kk + n, kk + 2 * n, kk + 3 * n, kk + 4 * n,
                       ac, dx, n_threads)
        else:
            _h_affine(dy, P, G, R, C, kk, kk + n, dx, ac, n_threads)
    free(kk)
    return status


cdef int _h_bwd_dx(const unsigned short* dy, const unsigned short* h, Py_ssize_t P,
                   Py_ssize_t G, Py_ssize_t R, Py_ssize_t C, const double* scale,
                   const double* offset, const double* mean, const double* var, double eps,
                   double count, const double* sum_e, const double* sum_exc, const Act* ac,
                   unsigned short* dx, double* dscale, int n_threads) noexcept nogil:
    cdef Py_ssize_t n = G * C, c
    cdef float* kk = <float*> malloc(sizeof(float) * 5 * n)
    cdef double* sd = <double*> malloc(sizeof(double) * n)
    if kk == NULL or sd == NULL:
        free(kk)
        free(sd)
        return CKBN_ERR_NOMEM
    for c in range(n):
        sd[c] = sum_exc[c]
    if ac.on:
        _norm_coefs(scale, offset, mean, var, eps, n, kk + 3 * n, kk + 4 * n)
    _bwd_coefs(scale, mean, var, eps, True, count, sum_e, sd, kk, n)
    _h_grad_dx(dy, h, P, G, R, C, kk, kk + n, kk + 2 * n, kk + 3 * n, kk + 4 * n, ac, dx,
               n_threads)
    if dscale != NULL:
        for c in range(n):
            dscale[c] = sd[c]
    free(kk)
    free(sd)
    return CKBN_OK


def bn_stats_f16(const unsigned short[::1] h,    # IN  float16 bits (P*G*R*C,)
                 Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
                 double[::1] mean,              # OUT (G*C,)
                 double[::1] var,               # OUT (G*C,)
                 int n_threads):
    """:func:`bn_stats` of float16 data, computed in float32 slice by slice."""
    _f16_check(h.shape[0], P, G, R, C)
    if mean.shape[0] != G * C or var.shape[0] != G * C:
        raise ValueError("bn_stats_f16: bad statistic size")
    cdef int status
    with nogil:
        status = _h_stats(&h[0], P, G, R, C, &mean[0], &var[0], n_threads)
    _raise_status(status, "bn_stats_f16")


def bn_affine_f16(const unsigned short[::1] h,   # IN  float16 bits (P*G*R*C,)
                  Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
                  const float[::1] a,           # IN  (G*C,)
                  const float[::1] b,           # IN  (G*C,)
                  unsigned short[::1] out,      # OUT float16 bits (P*G*R*C,)
                  int n_threads, bint act=False, double slope=0.0, double hi=INFINITY):
    """:func:`bn_affine` for float16 data, in float32 slice by slice."""
    _f16_check(h.shape[0], P, G, R, C)
    if out.shape[0] != h.shape[0] or a.shape[0] != G * C or b.shape[0] != G * C:
        raise ValueError("bn_affine_f16: bad sizes")
    cdef Act ac = _act(act, slope, hi)
    with nogil:
        _h_affine(&h[0], P, G, R, C, &a[0], &b[0], &out[0], &ac, n_threads)


def bn_grad_sums_f16(const unsigned short[::1] dy,   # IN  float16 bits
                     const unsigned short[::1] h,    # IN  float16 bits
                     Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
                     const double[::1] mean,        # IN  (G*C,)
                     double[::1] sum_dy,            # OUT (G*C,)
                     double[::1] sum_dyxc,          # OUT (G*C,)
                     int n_threads,
                     const float[::1] za=None,      # IN  (G*C,) with an activation
                     const float[::1] zb=None,      # IN  (G*C,) with an activation
                     bint act=False, double slope=0.0, double hi=INFINITY):
    """:func:`bn_grad_sums` of float16 data, in float32 slice by slice."""
    _f16_check(h.shape[0], P, G, R, C)
    cdef Py_ssize_t gc = G * C
    if dy.shape[0] != h.shape[0]:
        raise ValueError("bn_grad_sums_f16: dy has the wrong size")
    if mean.shape[0] != gc or sum_dy.shape[0] != gc or sum_dyxc.shape[0] != gc:
        raise ValueError("bn_grad_sums_f16: bad statistic size")
    cdef const float* pa = NULL
    cdef const float* pb = NULL
    if act:
        if za is None or zb is None or za.shape[0] != gc or zb.shape[0] != gc:
            raise ValueError("bn_grad_sums_f16: an activation needs za and zb of size G*C")
        pa = &za[0]
        pb = &zb[0]
    cdef Act ac = _act(act, slope, hi)
    cdef int status
    with nogil:
        status = _h_grad_sums(&dy[0], &h[0], P, G, R, C, &mean[0], pa, pb, &ac,
                              &sum_dy[0], &sum_dyxc[0], n_threads)
    _raise_status(status, "bn_grad_sums_f16")


def bn_grad_dx_f16(const unsigned short[::1] dy,     # IN  float16 bits
                   const unsigned short[::1] h,      # IN  float16 bits
                   Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
                   const float[::1] k1,             # IN  (G*C,)
                   const float[::1] k2,             # IN  (G*C,)
                   const float[::1] k3,             # IN  (G*C,)
                   unsigned short[::1] dx,          # OUT float16 bits
                   int n_threads,
                   const float[::1] za=None,        # IN  (G*C,) with an activation
                   const float[::1] zb=None,        # IN  (G*C,) with an activation
                   bint act=False, double slope=0.0, double hi=INFINITY):
    """:func:`bn_grad_dx` for float16 data, in float32 slice by slice."""
    _f16_check(h.shape[0], P, G, R, C)
    cdef Py_ssize_t gc = G * C
    if dy.shape[0] != h.shape[0] or dx.shape[0] != h.shape[0]:
        raise ValueError("bn_grad_dx_f16: dy or dx has the wrong size")
    if k1.shape[0] != gc or k2.shape[0] != gc or k3.shape[0] != gc:
        raise ValueError("bn_grad_dx_f16: bad coefficient size")
    cdef const float* pa = &k1[0]
    cdef const float* pb = &k1[0]
    if act:
        if za is None or zb is None or za.shape[0] != gc or zb.shape[0] != gc:
            raise ValueError("bn_grad_dx_f16: an activation needs za and zb of size G*C")
        pa = &za[0]
        pb = &zb[0]
    cdef Act ac = _act(act, slope, hi)
    with nogil:
        _h_grad_dx(&dy[0], &h[0], P, G, R, C, &k1[0], &k2[0], &k3[0], pa, pb, &ac, &dx[0],
                   n_threads)


def bn_forward_train_f16(const unsigned short[::1] h,   # IN  float16 bits
                         Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
                         const double[::1] scale,      # IN  (G*C,)
                         const double[::1] offset,     # IN  (G*C,)
                         double eps,
                         unsigned short[::1] out,      # OUT float16 bits
                         double[::1] mean,             # OUT (G*C,)
                         double[::1] var,              # OUT (G*C,) biased
                         int n_threads,
                         bint act=False, double slope=0.0, double hi=INFINITY):
    """:func:`bn_forward_train` of float16 data (float32 slice by slice)."""
    _f16_check(h.shape[0], P, G, R, C)
    cdef Py_ssize_t n = G * C
    if out.shape[0] != h.shape[0] or scale.shape[0] != n or offset.shape[0] != n \
            or mean.shape[0] != n or var.shape[0] != n:
        raise ValueError("bn_forward_train_f16: bad sizes")
    cdef Act ac = _act(act, slope, hi)
    cdef int status
    with nogil:
        status = _h_fwd_train(&h[0], P, G, R, C, &scale[0], &offset[0], eps, &ac, &out[0],
                              &mean[0], &var[0], n_threads)
    _raise_status(status, "bn_forward_train_f16")


def bn_forward_infer_f16(const unsigned short[::1] h,   # IN  float16 bits
                         Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
                         const double[::1] scale,      # IN  (G*C,)
                         const double[::1] offset,     # IN  (G*C,)
                         const double[::1] mean,       # IN  (G*C,)
                         const double[::1] var,        # IN  (G*C,)
                         double eps,
                         unsigned short[::1] out,      # OUT float16 bits
                         int n_threads,
                         bint act=False, double slope=0.0, double hi=INFINITY):
    """:func:`bn_forward_infer` of float16 data (float32 slice by slice)."""
    _f16_check(h.shape[0], P, G, R, C)
    cdef Py_ssize_t n = G * C
    if out.shape[0] != h.shape[0] or scale.shape[0] != n or offset.shape[0] != n \
            or mean.shape[0] != n or var.shape[0] != n:
        raise ValueError("bn_forward_infer_f16: bad sizes")
    cdef Act ac = _act(act, slope, hi)
    cdef int status
    with nogil:
        status = _h_fwd_infer(&h[0], P, G, R, C, &scale[0], &offset[0], &mean[0], &var[0],
                              eps, &ac, &out[0], n_threads)
    _raise_status(status, "bn_forward_infer_f16")


def bn_backward_f16(const unsigned short[::1] dy,       # IN  float16 bits
                    const unsigned short[::1] h,        # IN  float16 bits
                    Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
                    const double[::1] scale,           # IN  (G*C,)
                    const double[::1] mean,            # IN  (G*C,)
                    const double[::1] var,             # IN  (G*C,)
                    double eps, bint training,
                    unsigned short[::1] dx,            # OUT float16 bits
                    double[::1] dscale,                # OUT (G*C,)
                    double[::1] doffset,               # OUT (G*C,)
                    int n_threads,
                    const double[::1] offset=None,     # IN  (G*C,) with an activation
                    bint act=False, double slope=0.0, double hi=INFINITY):
    """:func:`bn_backward` of float16 data (float32 slice by slice)."""
    _f16_check(h.shape[0], P, G, R, C)
    cdef Py_ssize_t n = G * C
    if dy.shape[0] != h.shape[0] or dx.shape[0] != h.shape[0] or scale.shape[0] != n \
            or mean.shape[0] != n or var.shape[0] != n or dscale.shape[0] != n \
            or doffset.shape[0] != n:
        raise ValueError("bn_backward_f16: bad sizes")
    if act and (offset is None or offset.shape[0] != n):
        raise ValueError("bn_backward_f16: an activation needs offset of size G*C")
    cdef Act ac = _act(act, slope, hi)
    cdef const double* po = &offset[0] if act else NULL
    cdef int status
    with nogil:
        status = _h_bwd(&dy[0], &h[0], P, G, R, C, &scale[0], po, &mean[0], &var[0], eps,
                        training, &ac, &dx[0], &dscale[0], &doffset[0], n_threads)
    _raise_status(status, "bn_backward_f16")


# ---------------------------------------------------------------------------
# The C-level table (ckbn/include/ckbn_kernels.h)
#
# The same cores as the def entry points above, behind plain C function
# pointers, for native framework ops: `kernel_table` is a PyCapsule named
# CKBN_TABLE_CAPSULE holding this module's table.  Each entry checks the dims
# and the dtype, then runs one core without the GIL.
# ---------------------------------------------------------------------------

from cpython.pycapsule cimport PyCapsule_New


cdef inline int _dims_status(ckbn_dims d) noexcept nogil:
    if d.P < 1 or d.G < 1 or d.R < 1 or d.C < 1:
        return CKBN_ERR_ARG
    return CKBN_OK


cdef inline Act _c_act(const ckbn_act* a) noexcept nogil:
    if a == NULL or not a.on:
        return _act(False, 0.0, INFINITY)
    return _act(True, a.slope, a.hi)


cdef inline bint _f16_ok(int dtype) noexcept nogil:
    return dtype == CKBN_FLOAT16 and CKBN_HAVE_F16C


cdef int _tab_forward_train(int dtype, const void* x, ckbn_dims d, const double* scale,
                            const double* offset, double eps, const ckbn_act* act, void* y,
                            double* mean, double* var, int n_threads) noexcept nogil:
    cdef int s = _dims_status(d)
    cdef Act ac = _c_act(act)
    if s != CKBN_OK:
        return s
    if dtype == CKBN_FLOAT32:
        return _fwd_train(<const float*> x, d.P, d.G, d.R, d.C, scale, offset, eps, &ac,
                          <float*> y, mean, var, n_threads)
    if dtype == CKBN_FLOAT64:
        return _fwd_train(<const double*> x, d.P, d.G, d.R, d.C, scale, offset, eps, &ac,
                          <double*> y, mean, var, n_threads)
    if _f16_ok(dtype):
        return _h_fwd_train(<const unsigned short*> x, d.P, d.G, d.R, d.C, scale, offset,
                            eps, &ac, <unsigned short*> y, mean, var, n_threads)
    return CKBN_ERR_DTYPE


cdef int _tab_forward_infer(int dtype, const void* x, ckbn_dims d, const double* scale,
                            const double* offset, const double* mean, const double* var,
                            double eps, const ckbn_act* act, void* y,
                            int n_threads) noexcept nogil:
    cdef int s = _dims_status(d)
    cdef Act ac = _c_act(act)
    if s != CKBN_OK:
        return s
    if dtype == CKBN_FLOAT32:
        return _fwd_infer(<const float*> x, d.P, d.G, d.R, d.C, scale, offset, mean, var,
                          eps, &ac, <float*> y, n_threads)
    if dtype == CKBN_FLOAT64:
        return _fwd_infer(<const double*> x, d.P, d.G, d.R, d.C, scale, offset, mean, var,
                          eps, &ac, <double*> y, n_threads)
    if _f16_ok(dtype):
        return _h_fwd_infer(<const unsigned short*> x, d.P, d.G, d.R, d.C, scale, offset,
                            mean, var, eps, &ac, <unsigned short*> y, n_threads)
    return CKBN_ERR_DTYPE


cdef int _tab_backward(int dtype, const void* dy, const void* x, ckbn_dims d,
                       const double* scale, const double* offset, const double* mean,
                       const double* var, double eps, int training, const ckbn_act* act,
                       void* dx, double* dscale, double* doffset,
                       int n_threads) noexcept nogil:
    cdef int s = _dims_status(d)
    cdef Act ac = _c_act(act)
    if s != CKBN_OK:
        return s
    if ac.on and offset == NULL:
        return CKBN_ERR_ARG
    if dtype == CKBN_FLOAT32:
        return _bwd(<const float*> dy, <const float*> x, d.P, d.G, d.R, d.C, scale, offset,
                    mean, var, eps, training != 0, &ac, <float*> dx, dscale, doffset,
                    n_threads)
    if dtype == CKBN_FLOAT64:
        return _bwd(<const double*> dy, <const double*> x, d.P, d.G, d.R, d.C, scale,
                    offset, mean, var, eps, training != 0, &ac, <double*> dx, dscale,
                    doffset, n_threads)
    if _f16_ok(dtype):
        return _h_bwd(<const unsigned short*> dy, <const unsigned short*> x, d.P, d.G, d.R,
                      d.C, scale, offset, mean, var, eps, training != 0, &ac,
                      <unsigned short*> dx, dscale, doffset, n_threads)
    return CKBN_ERR_DTYPE


cdef int _tab_stats(int dtype, const void* x, ckbn_dims d, double* mean, double* var,
                    int n_threads) noexcept nogil:
    cdef int s = _dims_status(d)
    if s != CKBN_OK:
        return s
    if dtype == CKBN_FLOAT32:
        _stats(<const float*> x, d.P, d.G, d.R, d.C, mean, var, n_threads)
        return CKBN_OK
    if dtype == CKBN_FLOAT64:
        _stats(<const double*> x, d.P, d.G, d.R, d.C, mean, var, n_threads)
        return CKBN_OK
    if _f16_ok(dtype):
        return _h_stats(<const unsigned short*> x, d.P, d.G, d.R, d.C, mean, var, n_threads)
    return CKBN_ERR_DTYPE


cdef int _tab_grad_sums(int dtype, const void* dy, const void* x, ckbn_dims d,
                        const double* scale, const double* offset, const double* mean,
                        const double* var, double eps, const ckbn_act* act,
                        double* sum_e, double* sum_exc, int n_threads) noexcept nogil:
    cdef int s = _dims_status(d)
    cdef Act ac = _c_act(act)
    if s != CKBN_OK:
        return s
    if ac.on and (scale == NULL or offset == NULL or var == NULL):
        return CKBN_ERR_ARG
    if dtype == CKBN_FLOAT32:
        return _sums(<const float*> dy, <const float*> x, d.P, d.G, d.R, d.C, scale, offset,
                     mean, var, eps, &ac, sum_e, sum_exc, n_threads)
    if dtype == CKBN_FLOAT64:
        return _sums(<const double*> dy, <const double*> x, d.P, d.G, d.R, d.C, scale,
                     offset, mean, var, eps, &ac, sum_e, sum_exc, n_threads)
    if _f16_ok(dtype):
        return _h_sums(<const unsigned short*> dy, <const unsigned short*> x, d.P, d.G, d.R,
                       d.C, scale, offset, mean, var, eps, &ac, sum_e, sum_exc, n_threads)
    return CKBN_ERR_DTYPE


cdef int _tab_backward_dx(int dtype, const void* dy, const void* x, ckbn_dims d,
                          const double* scale, const double* offset, const double* mean,
                          const double* var, double eps, double count, const double* sum_e,
                          const double* sum_exc, const ckbn_act* act, void* dx,
                          double* dscale, int n_threads) noexcept nogil:
    cdef int s = _dims_status(d)
    cdef Act ac = _c_act(act)
    if s != CKBN_OK:
        return s
    if not (count > 0.0) or (ac.on and offset == NULL):
        return CKBN_ERR_ARG
    if dtype == CKBN_FLOAT32:
        return _bwd_dx(<const float*> dy, <const float*> x, d.P, d.G, d.R, d.C, scale,
                       offset, mean, var, eps, count, sum_e, sum_exc, &ac, <float*> dx,
                       dscale, n_threads)
    if dtype == CKBN_FLOAT64:
        return _bwd_dx(<const double*> dy, <const double*> x, d.P, d.G, d.R, d.C, scale,
                       offset, mean, var, eps, count, sum_e, sum_exc, &ac, <double*> dx,
                       dscale, n_threads)
    if _f16_ok(dtype):
        return _h_bwd_dx(<const unsigned short*> dy, <const unsigned short*> x, d.P, d.G,
                         d.R, d.C, scale, offset, mean, var, eps, count, sum_e, sum_exc, &ac,
                         <unsigned short*> dx, dscale, n_threads)
    return CKBN_ERR_DTYPE


cdef bytes _VARIANT = __name__.rpartition("_")[2].encode()
cdef ckbn_kernel_table _TABLE
_TABLE.abi = CKBN_TABLE_ABI
_TABLE.variant = _VARIANT
_TABLE.has_float16 = CKBN_HAVE_F16C
_TABLE.forward_train = _tab_forward_train
_TABLE.forward_infer = _tab_forward_infer
_TABLE.backward = _tab_backward
_TABLE.stats = _tab_stats
_TABLE.grad_sums = _tab_grad_sums
_TABLE.backward_dx = _tab_backward_dx

#: This module's ckbn_kernel_table, for native ops (see ckbn_kernels.h).
kernel_table = PyCapsule_New(&_TABLE, CKBN_TABLE_CAPSULE, NULL)


def layout_dims(shape, channel_axes):
    """``(P, G, R, C)`` of ``shape`` with ``channel_axes``, or None when the
    channel axes must first be moved to the end: ``ckbn_layout()`` of the C
    header, the one rule for ckbn's own layouts and the native ops."""
    cdef int64_t dims_[64]
    cdef uint64_t mask = 0
    cdef ckbn_dims d
    cdef int nd = len(shape), i
    if nd > 64:
        raise ValueError(f"at most 64 dimensions, got {nd}")
    for i in range(nd):
        dims_[i] = shape[i]
    for a in channel_axes:
        mask |= (<uint64_t> 1) << (<int> a)
    if ckbn_layout(nd, dims_, mask, &d) != 0:
        return None
    return (d.P, d.G, d.R, d.C)
