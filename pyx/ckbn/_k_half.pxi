# float16 data, a slice at a time: one driver (_h_slices) for the four
# primitives, H_STATS, H_SUMS, H_AFFINE and H_DX, which the float16 ops
# (_h_fwd_train, _h_fwd_infer, _h_bwd, _h_sums, _h_bwd_dx) compose exactly as
# the float32/64 ops in _k_ops.pxi compose _stats, _grad_sums, _affine and
# _grad_dx.
#
# The canonical float16 array is cut along P into slices of about _f16_slice
# elements (from the shape and the L2 size).  Each thread widens its slice's
# inputs into
# its own float32 scratch (which stays in its L2 cache), runs the one-thread
# float32 primitive on it and, for the element-wise primitives, rounds the
# result straight into the float16 output.  Per-slice statistics are merged
# by the one Chan merge, per-slice sums added, in slice order, so results do
# not depend on the thread count.

cdef enum:
    H_STATS = 0
    H_SUMS = 1
    H_AFFINE = 2
    H_DX = 3


cdef inline Py_ssize_t _slice_rows(Py_ssize_t per) noexcept nogil:
    """P-rows per slice (at least one)."""
    return _f16_slice // per if per < _f16_slice else 1


cdef int _h_slice(int kind, Py_ssize_t s, Py_ssize_t rows, const unsigned short* dy,
                  const unsigned short* h, Py_ssize_t P, Py_ssize_t G, Py_ssize_t R,
                  Py_ssize_t C, const float** cf, const double* mean, const Act* ac,
                  unsigned short* out, double* part, float* buf) noexcept nogil:
    """Slice s of _h_slices; returns 0, or 1 when a scratch allocation failed."""
    cdef Py_ssize_t per = G * R * C, gc = G * C
    cdef Py_ssize_t p0 = s * rows, p1 = p0 + rows if p0 + rows < P else P
    cdef Py_ssize_t m = (p1 - p0) * per, slot = rows * per
    cdef float* xb = buf                 # h widened
    cdef float* db = buf + slot          # dy widened (H_SUMS, H_DX)
    cdef float* ob = buf + 2 * slot      # the float32 result (H_AFFINE, H_DX)
    cdef int st
    ckbn_h2f(h + p0 * per, xb, m)
    if kind == H_SUMS or kind == H_DX:
        ckbn_h2f(dy + p0 * per, db, m)
    if kind == H_STATS:
        st = _stats(xb, p1 - p0, G, R, C, part + 3 * s * gc, part + (3 * s + 1) * gc, 1)
    elif kind == H_SUMS:
        st = _grad_sums(db, xb, mean, cf[3], cf[4], ac, p1 - p0, G, R, C,
                        part + 3 * s * gc, part + (3 * s + 1) * gc, 1)
    elif kind == H_AFFINE:
        st = _affine(xb, cf[0], cf[1], ob, p1 - p0, G, R, C, ac, False, 1)
    else:
        st = _grad_dx(db, xb, cf[0], cf[1], cf[2], cf[3], cf[4], ob, p1 - p0, G, R, C, ac,
                      False, 1)
    if st != CKBN_OK:
        return 1
    if kind == H_AFFINE or kind == H_DX:
        ckbn_f2h(ob, out + p0 * per, m)
    elif kind == H_STATS:
        part[3 * ((P + rows - 1) // rows) * gc + s] = <double> ((p1 - p0) * R)
    return 0


cdef int _h_slices(int kind, const unsigned short* dy, const unsigned short* h,
                   Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
                   const float** cf,        # IN  H_AFFINE: a, b; H_DX: k1, k2, k3, za, zb;
                                            #     H_SUMS: cf[3], cf[4] = za, zb (with ac.on)
                   const double* mean,      # IN  H_SUMS
                   const Act* ac,
                   unsigned short* out,     # OUT H_AFFINE, H_DX
                   double* r1, double* r2,  # OUT H_STATS: mean, var; H_SUMS: sum_e, sum_exc
                   int n_threads) noexcept nogil:
    """The float16 primitive ``kind`` over the slices of (P, G, R, C)."""
    cdef Py_ssize_t per = G * R * C, gc = G * C
    cdef Py_ssize_t rows = _slice_rows(per)
    cdef Py_ssize_t ns = (P + rows - 1) // rows
    cdef int nt = _threads(P * per, ns, n_threads)
    cdef bint reduce = kind == H_STATS or kind == H_SUMS
    cdef double* part = NULL
    cdef Scratch sc
    cdef Py_ssize_t s, c
    cdef int bad = 0
    if reduce:
        # per slice s at 3*s*gc: (mean, var, -) or (sum_e, sum_exc, -);
        # the slices' counts at 3*ns*gc
        part = <double*> malloc(sizeof(double) * (ns * 3 * gc + ns))
        if part == NULL:
            return CKBN_ERR_NOMEM
    if _scratch_new(&sc, nt, sizeof(float) * 3 * rows * per) != CKBN_OK:
        free(part)
        return CKBN_ERR_NOMEM
    for s in prange(ns, nogil=True, num_threads=nt, schedule="static"):
        bad += _h_slice(kind, s, rows, dy, h, P, G, R, C, cf, mean, ac, out, part,
                        <float*> _scratch_mine(&sc))
    free(sc.base)
    if bad == 0 and kind == H_STATS:
        for s in range(ns):
            for c in range(gc):
                part[(3 * s + 1) * gc + c] *= part[3 * ns * gc + s]   # variance -> M2
        _chan_merge(part, part + gc, part + 3 * ns * gc, ns, 3 * gc, gc, r1, r2)
    elif bad == 0 and kind == H_SUMS:
        for c in range(gc):
            r1[c] = 0.0
            r2[c] = 0.0
        for s in range(ns):
            for c in range(gc):
                r1[c] += part[3 * s * gc + c]
                r2[c] += part[(3 * s + 1) * gc + c]
    free(part)
    return CKBN_OK if bad == 0 else CKBN_ERR_NOMEM
