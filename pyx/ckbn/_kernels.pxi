# Batch-normalization kernels on the canonical (P, G, R, C) layout.
#
# This file is included by _kernels_base.pyx, _kernels_avx2.pyx and
# _kernels_avx512.pyx: the same source compiled for several instruction sets,
# chosen at run time by ckbn/_dispatch.py.
#
# Layout: a flat C-contiguous array whose element (p, g, r, c) sits at
# ((p*G + g)*R + r)*C + c.  Statistics are kept per channel (g, c) and reduced
# over p and r.  For one (p, g) the R*C elements form a contiguous *segment*
# that starts at channel 0.  A segment is read as rows of W = C*k elements
# (k >= 1 chosen so that W >= 16), so that narrow channel counts (C = 1 for
# NCHW planes, C = 3 for RGB images) still fill vector registers: lane j of a
# row belongs to channel j % C.
#
# Work is cut into *units* of about UNIT_TARGET elements, from the shape alone
# (never from the thread count).  Each unit writes its own float64 partial
# result; partials are merged serially in unit order.  Results are therefore
# bitwise identical for any number of threads.
#
# Variance: each unit accumulates sums of d = x - K and d*d in float64, with
# K the unit's first value of each channel, so that E[x^2] - E[x]^2 is never
# formed on unshifted data; the units' (count, mean, M2) are merged with
# Chan's formula.
#
# Every memoryview is flat and C-contiguous; `# IN` views are const.

from cython.parallel cimport prange, parallel
from libc.stdlib cimport malloc, free, abort
from libc.string cimport memcpy

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

# Elements per work unit: large enough to amortize a unit's set-up and its
# partial row, small enough to split mid-sized inputs across threads.
cdef enum:
    UNIT_TARGET = 32768
# Below this many elements one thread does everything (thread start-up costs
# more than it saves).
cdef enum:
    PARALLEL_MIN = 65536
# Minimum row width in lanes.
cdef enum:
    MIN_WIDTH = 16


def openmp_enabled():
    """True when this kernel module was compiled with OpenMP."""
    return bool(CKBN_HAVE_OPENMP)


cdef struct Units:
    Py_ssize_t P, G, R, C
    Py_ssize_t L         # segment length R*C
    Py_ssize_t W         # row width in lanes, a multiple of C
    Py_ssize_t per_seg   # units per segment when a segment is split (else 0)
    Py_ssize_t seg_len   # elements per split piece (multiple of W), when split
    Py_ssize_t pc        # segments per unit, when not split
    Py_ssize_t per_g     # units per channel group g
    Py_ssize_t n_units


cdef inline Units _make_units(Py_ssize_t P, Py_ssize_t G, Py_ssize_t R,
                              Py_ssize_t C) noexcept nogil:
    cdef Units u
    u.P = P
    u.G = G
    u.R = R
    u.C = C
    u.L = R * C
    if C >= MIN_WIDTH:
        u.W = C
    else:
        u.W = C * ((MIN_WIDTH + C - 1) // C)
    if u.L <= UNIT_TARGET:
        u.per_seg = 0
        u.seg_len = u.L
        u.pc = UNIT_TARGET // u.L if u.L > 0 else 1
        if u.pc < 1:
            u.pc = 1
        u.per_g = (P + u.pc - 1) // u.pc
    else:
        u.pc = 1
        u.seg_len = (UNIT_TARGET // u.W) * u.W
        if u.seg_len < u.W:
            u.seg_len = u.W
        u.per_seg = (u.L + u.seg_len - 1) // u.seg_len
        u.per_g = P * u.per_seg
    u.n_units = G * u.per_g
    return u


cdef inline void _unit_bounds(const Units* u, Py_ssize_t k, Py_ssize_t* g,
                              Py_ssize_t* p0, Py_ssize_t* p1,
                              Py_ssize_t* l0, Py_ssize_t* l1) noexcept nogil:
    """Unit k covers segments [p0, p1) of group g, elements [l0, l1) of each."""
    cdef Py_ssize_t rem, j
    g[0] = k // u.per_g
    rem = k % u.per_g
    if u.per_seg == 0:
        p0[0] = rem * u.pc
        p1[0] = p0[0] + u.pc
        if p1[0] > u.P:
            p1[0] = u.P
        l0[0] = 0
        l1[0] = u.L
    else:
        p0[0] = rem // u.per_seg
        p1[0] = p0[0] + 1
        j = rem % u.per_seg
        l0[0] = j * u.seg_len
        l1[0] = l0[0] + u.seg_len
        if l1[0] > u.L:
            l1[0] = u.L


cdef inline int _n_threads(const Units* u, int n_threads) noexcept nogil:
    if u.P * u.G * u.L < PARALLEL_MIN:
        return 1
    if n_threads > u.n_units:
        return <int> u.n_units
    return n_threads if n_threads > 0 else 1


# ---------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------

cdef inline void _acc_moments(const floating* row,          # IN
                              Py_ssize_t nrows, Py_ssize_t W,
                              const double* sh,             # IN
                              double* s1,                   # IN/OUT
                              double* s2) noexcept nogil:   # IN/OUT
    """s1[j] += sum_i (row[i, j] - sh[j]); s2[j] += the squares (4 rows at a time)."""
    cdef Py_ssize_t i = 0, j
    cdef const floating* r0
    cdef const floating* r1
    cdef const floating* r2
    cdef const floating* r3
    cdef double d0, d1, d2, d3
    while i + 4 <= nrows:
        r0 = row + i * W
        r1 = r0 + W
        r2 = r1 + W
        r3 = r2 + W
        for j in range(W):
            d0 = <double> r0[j] - sh[j]
            d1 = <double> r1[j] - sh[j]
            d2 = <double> r2[j] - sh[j]
            d3 = <double> r3[j] - sh[j]
            s1[j] += (d0 + d1) + (d2 + d3)
            s2[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
        i += 4
    while i < nrows:
        r0 = row + i * W
        for j in range(W):
            d0 = <double> r0[j] - sh[j]
            s1[j] += d0
            s2[j] += d0 * d0
        i += 1


cdef void _stats_unit(const floating* x,        # IN
                      const Units* u, Py_ssize_t k,
                      double* buf,              # scratch, 3 * W
                      double* pmean,            # OUT, row k of (n_units, C)
                      double* pm2,              # OUT, row k of (n_units, C)
                      double* pn) noexcept nogil:  # OUT, entry k
    cdef Py_ssize_t g, p0, p1, l0, l1, p, j, c, nrows, tail, n_el
    cdef Py_ssize_t W = u.W, C = u.C
    cdef double* sh = buf
    cdef double* s1 = buf + W
    cdef double* s2 = buf + 2 * W
    cdef const floating* seg
    cdef double d, n, S1, S2
    _unit_bounds(u, k, &g, &p0, &p1, &l0, &l1)
    seg = x + (p0 * u.G + g) * u.L + l0
    for j in range(W):
        sh[j] = <double> seg[j % C]
        s1[j] = 0.0
        s2[j] = 0.0
    n_el = l1 - l0
    nrows = n_el // W
    tail = n_el - nrows * W
    for p in range(p0, p1):
        seg = x + (p * u.G + g) * u.L + l0
        _acc_moments(seg, nrows, W, sh, s1, s2)
        seg = seg + nrows * W
        for j in range(tail):
            d = <double> seg[j] - sh[j]
            s1[j] += d
            s2[j] += d * d
    n = <double> ((p1 - p0) * (n_el // C))
    for c in range(C):
        S1 = 0.0
        S2 = 0.0
        j = c
        while j < W:
            S1 += s1[j]
            S2 += s2[j]
            j += C
        pmean[c] = sh[c] + S1 / n
        d = S2 - S1 * S1 / n
        pm2[c] = d if d > 0.0 else 0.0 * d   # keeps NaN, drops rounding below 0
    pn[0] = n


cdef void _stats(const floating* x, Py_ssize_t P, Py_ssize_t G, Py_ssize_t R,
                 Py_ssize_t C, double* mean, double* var,
                 int n_threads) noexcept nogil:
    cdef Units u = _make_units(P, G, R, C)
    cdef Py_ssize_t k, g, c, kk
    cdef int nt = _n_threads(&u, n_threads)
    cdef double* part = <double*> malloc(sizeof(double) * u.n_units * (2 * C + 1))
    cdef double* buf = NULL
    cdef double* pmean
    cdef double* pm2
    cdef double* pn
    cdef double na, nb, nab, ma, m2a, delta
    if part == NULL:
        abort()
    pmean = part
    pm2 = part + u.n_units * C
    pn = part + 2 * u.n_units * C
    with parallel(num_threads=nt):
        buf = <double*> malloc(sizeof(double) * 3 * u.W)
        if buf == NULL:
            abort()
        for k in prange(u.n_units, schedule="static"):
            _stats_unit(x, &u, k, buf, pmean + k * C, pm2 + k * C, pn + k)
        free(buf)
    # Ordered Chan merge of the units of each group.
    for g in range(G):
        for c in range(C):
            na = 0.0
            ma = 0.0
            m2a = 0.0
            for kk in range(u.per_g):
                k = g * u.per_g + kk
                nb = pn[k]
                nab = na + nb
                delta = pmean[k * C + c] - ma
                ma = ma + delta * (nb / nab)
                m2a = m2a + pm2[k * C + c] + delta * delta * (na * nb / nab)
                na = nab
            mean[g * C + c] = ma
            var[g * C + c] = m2a / na
    free(part)


def bn_stats(const floating[::1] x,      # IN  (P*G*R*C,)
             Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
             double[::1] mean,           # OUT (G*C,)
             double[::1] var,            # OUT (G*C,)
             int n_threads):
    """Per-channel mean and biased variance of ``x`` viewed as (P, G, R, C)."""
    if x.shape[0] != P * G * R * C or P * R == 0:
        raise ValueError("bn_stats: bad dimensions")
    if mean.shape[0] != G * C or var.shape[0] != G * C:
        raise ValueError("bn_stats: bad statistic size")
    with nogil:
        _stats(&x[0], P, G, R, C, &mean[0], &var[0], n_threads)


# ---------------------------------------------------------------------------
# Affine map y = x * a[ch] + b[ch]
# ---------------------------------------------------------------------------

cdef void _affine_unit(const floating* x,       # IN
                       const floating* a,       # IN (G*C,)
                       const floating* b,       # IN (G*C,)
                       floating* y,             # OUT
                       const Units* u, Py_ssize_t k,
                       floating* buf) noexcept nogil:  # scratch, 2 * W
    cdef Py_ssize_t g, p0, p1, l0, l1, p, i, j, n_el
    cdef Py_ssize_t W = u.W, C = u.C
    cdef floating* aw = buf
    cdef floating* bw = buf + W
    cdef const floating* xs
    cdef floating* ys
    cdef Py_ssize_t off
    _unit_bounds(u, k, &g, &p0, &p1, &l0, &l1)
    for j in range(W):
        aw[j] = a[g * C + j % C]
        bw[j] = b[g * C + j % C]
    n_el = l1 - l0
    for p in range(p0, p1):
        off = (p * u.G + g) * u.L + l0
        xs = x + off
        ys = y + off
        i = 0
        while i + W <= n_el:
            for j in range(W):
                ys[i + j] = xs[i + j] * aw[j] + bw[j]
            i += W
        for j in range(n_el - i):
            ys[i + j] = xs[i + j] * aw[j] + bw[j]


cdef void _affine(const floating* x, const floating* a, const floating* b,
                  floating* y, Py_ssize_t P, Py_ssize_t G, Py_ssize_t R,
                  Py_ssize_t C, int n_threads) noexcept nogil:
    cdef Units u = _make_units(P, G, R, C)
    cdef Py_ssize_t k
    cdef int nt = _n_threads(&u, n_threads)
    cdef floating* buf = NULL
    with parallel(num_threads=nt):
        buf = <floating*> malloc(sizeof(floating) * 2 * u.W)
        if buf == NULL:
            abort()
        for k in prange(u.n_units, schedule="static"):
            _affine_unit(x, a, b, y, &u, k, buf)
        free(buf)


def bn_affine(const floating[::1] x,     # IN  (P*G*R*C,)
              Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
              const floating[::1] a,     # IN  (G*C,)
              const floating[::1] b,     # IN  (G*C,)
              floating[::1] y,           # OUT (P*G*R*C,)
              int n_threads):
    """``y = x * a[ch] + b[ch]`` with ``x`` and ``y`` viewed as (P, G, R, C)."""
    if x.shape[0] != P * G * R * C or y.shape[0] != x.shape[0]:
        raise ValueError("bn_affine: bad dimensions")
    if a.shape[0] != G * C or b.shape[0] != G * C:
        raise ValueError("bn_affine: bad coefficient size")
    if x.shape[0] == 0:
        return
    with nogil:
        _affine(&x[0], &a[0], &b[0], &y[0], P, G, R, C, n_threads)


# ---------------------------------------------------------------------------
# Backward: per-channel sums, then dx = dy * k1 + x * k2 + k3
# ---------------------------------------------------------------------------

cdef inline void _acc_grad(const floating* dy,    # IN
                           const floating* x,     # IN
                           Py_ssize_t nrows, Py_ssize_t W,
                           const double* mu,      # IN
                           double* t1,            # IN/OUT
                           double* t2) noexcept nogil:  # IN/OUT
    """t1[j] += sum_i dy[i, j]; t2[j] += sum_i dy[i, j] * (x[i, j] - mu[j])."""
    cdef Py_ssize_t i = 0, j, o
    cdef double e0, e1, e2, e3
    while i + 4 <= nrows:
        o = i * W
        for j in range(W):
            e0 = <double> dy[o + j]
            e1 = <double> dy[o + W + j]
            e2 = <double> dy[o + 2 * W + j]
            e3 = <double> dy[o + 3 * W + j]
            t1[j] += (e0 + e1) + (e2 + e3)
            t2[j] += ((e0 * (<double> x[o + j] - mu[j])
                       + e1 * (<double> x[o + W + j] - mu[j]))
                      + (e2 * (<double> x[o + 2 * W + j] - mu[j])
                         + e3 * (<double> x[o + 3 * W + j] - mu[j])))
        i += 4
    while i < nrows:
        o = i * W
        for j in range(W):
            e0 = <double> dy[o + j]
            t1[j] += e0
            t2[j] += e0 * (<double> x[o + j] - mu[j])
        i += 1


cdef void _grad_sums_unit(const floating* dy, const floating* x,
                          const double* mean,      # IN (G*C,)
                          const Units* u, Py_ssize_t k,
                          double* buf,             # scratch, 3 * W
                          double* p1s,             # OUT row k
                          double* p2s) noexcept nogil:  # OUT row k
    cdef Py_ssize_t g, p0, p1, l0, l1, p, j, c, nrows, tail, n_el, off
    cdef Py_ssize_t W = u.W, C = u.C
    cdef double* mu = buf
    cdef double* t1 = buf + W
    cdef double* t2 = buf + 2 * W
    cdef double e, S1, S2
    _unit_bounds(u, k, &g, &p0, &p1, &l0, &l1)
    for j in range(W):
        mu[j] = mean[g * C + j % C]
        t1[j] = 0.0
        t2[j] = 0.0
    n_el = l1 - l0
    nrows = n_el // W
    tail = n_el - nrows * W
    for p in range(p0, p1):
        off = (p * u.G + g) * u.L + l0
        _acc_grad(dy + off, x + off, nrows, W, mu, t1, t2)
        off = off + nrows * W
        for j in range(tail):
            e = <double> dy[off + j]
            t1[j] += e
            t2[j] += e * (<double> x[off + j] - mu[j])
    for c in range(C):
        S1 = 0.0
        S2 = 0.0
        j = c
        while j < W:
            S1 += t1[j]
            S2 += t2[j]
            j += C
        p1s[c] = S1
        p2s[c] = S2


cdef void _grad_sums(const floating* dy, const floating* x, const double* mean,
                     Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
                     double* sum_dy, double* sum_dyxc,
                     int n_threads) noexcept nogil:
    cdef Units u = _make_units(P, G, R, C)
    cdef Py_ssize_t k, g, c, kk
    cdef int nt = _n_threads(&u, n_threads)
    cdef double* part = <double*> malloc(sizeof(double) * u.n_units * 2 * C)
    cdef double* buf = NULL
    cdef double a1, a2
    if part == NULL:
        abort()
    with parallel(num_threads=nt):
        buf = <double*> malloc(sizeof(double) * 3 * u.W)
        if buf == NULL:
            abort()
        for k in prange(u.n_units, schedule="static"):
            _grad_sums_unit(dy, x, mean, &u, k, buf, part + k * C,
                            part + (u.n_units + k) * C)
        free(buf)
    for g in range(G):
        for c in range(C):
            a1 = 0.0
            a2 = 0.0
            for kk in range(u.per_g):
                k = g * u.per_g + kk
                a1 = a1 + part[k * C + c]
                a2 = a2 + part[(u.n_units + k) * C + c]
            sum_dy[g * C + c] = a1
            sum_dyxc[g * C + c] = a2
    free(part)


def bn_grad_sums(const floating[::1] dy,   # IN  (P*G*R*C,)
                 const floating[::1] x,    # IN  (P*G*R*C,)
                 Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
                 const double[::1] mean,   # IN  (G*C,)
                 double[::1] sum_dy,       # OUT (G*C,)
                 double[::1] sum_dyxc,     # OUT (G*C,)
                 int n_threads):
    """Per-channel ``sum(dy)`` and ``sum(dy * (x - mean))`` in float64."""
    if x.shape[0] != P * G * R * C or dy.shape[0] != x.shape[0] or P * R == 0:
        raise ValueError("bn_grad_sums: bad dimensions")
    if mean.shape[0] != G * C or sum_dy.shape[0] != G * C or sum_dyxc.shape[0] != G * C:
        raise ValueError("bn_grad_sums: bad statistic size")
    with nogil:
        _grad_sums(&dy[0], &x[0], &mean[0], P, G, R, C, &sum_dy[0],
                   &sum_dyxc[0], n_threads)


cdef void _grad_dx_unit(const floating* dy, const floating* x,
                        const floating* k1, const floating* k2,
                        const floating* k3, floating* dx,
                        const Units* u, Py_ssize_t k,
                        floating* buf) noexcept nogil:  # scratch, 3 * W
    cdef Py_ssize_t g, p0, p1, l0, l1, p, i, j, n_el, off
    cdef Py_ssize_t W = u.W, C = u.C
    cdef floating* w1 = buf
    cdef floating* w2 = buf + W
    cdef floating* w3 = buf + 2 * W
    cdef const floating* ds
    cdef const floating* xs
    cdef floating* os
    _unit_bounds(u, k, &g, &p0, &p1, &l0, &l1)
    for j in range(W):
        w1[j] = k1[g * C + j % C]
        w2[j] = k2[g * C + j % C]
        w3[j] = k3[g * C + j % C]
    n_el = l1 - l0
    for p in range(p0, p1):
        off = (p * u.G + g) * u.L + l0
        ds = dy + off
        xs = x + off
        os = dx + off
        i = 0
        while i + W <= n_el:
            for j in range(W):
                os[i + j] = ds[i + j] * w1[j] + (xs[i + j] * w2[j] + w3[j])
            i += W
        for j in range(n_el - i):
            os[i + j] = ds[i + j] * w1[j] + (xs[i + j] * w2[j] + w3[j])


cdef void _grad_dx(const floating* dy, const floating* x, const floating* k1,
                   const floating* k2, const floating* k3, floating* dx,
                   Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
                   int n_threads) noexcept nogil:
    cdef Units u = _make_units(P, G, R, C)
    cdef Py_ssize_t k
    cdef int nt = _n_threads(&u, n_threads)
    cdef floating* buf = NULL
    with parallel(num_threads=nt):
        buf = <floating*> malloc(sizeof(floating) * 3 * u.W)
        if buf == NULL:
            abort()
        for k in prange(u.n_units, schedule="static"):
            _grad_dx_unit(dy, x, k1, k2, k3, dx, &u, k, buf)
        free(buf)


def bn_grad_dx(const floating[::1] dy,   # IN  (P*G*R*C,)
               const floating[::1] x,    # IN  (P*G*R*C,)
               Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
               const floating[::1] k1,   # IN  (G*C,)
               const floating[::1] k2,   # IN  (G*C,)
               const floating[::1] k3,   # IN  (G*C,)
               floating[::1] dx,         # OUT (P*G*R*C,)
               int n_threads):
    """``dx = dy * k1[ch] + (x * k2[ch] + k3[ch])`` on the (P, G, R, C) view."""
    if x.shape[0] != P * G * R * C or dy.shape[0] != x.shape[0] or dx.shape[0] != x.shape[0]:
        raise ValueError("bn_grad_dx: bad dimensions")
    if k1.shape[0] != G * C or k2.shape[0] != G * C or k3.shape[0] != G * C:
        raise ValueError("bn_grad_dx: bad coefficient size")
    if x.shape[0] == 0:
        return
    with nogil:
        _grad_dx(&dy[0], &x[0], &k1[0], &k2[0], &k3[0], &dx[0], P, G, R, C,
                 n_threads)
