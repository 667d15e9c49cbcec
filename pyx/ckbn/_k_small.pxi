# Compiled entries for the common case of ckbn.nn's fused ops, which skip the
# Python-level validation and conversions.  The common case: an exact
# numpy.ndarray of float32, C-contiguous, not empty; channels last ("NHWC" at
# rank 4, "NC" at rank 2) or first ("NCHW" at rank 4); per-channel arrays
# None or exact float32 ndarrays of shape (channels,); epsilon a finite float
# >= 0; is_training a bool; out None, x itself, or a writeable C-contiguous
# float32 array of x's shape that does not overlap x; the activation None or
# the kernels' (slope, hi, kind), which ckbn.nn maps from its arguments with
# the general path's mapping.  Anything else returns None and ckbn.nn takes
# its general path, with every check and error it has.
#
# Paths.  common_forward and common_backward serve every size, with the
# thread count the general path would use: given by the caller, or, for
# n_threads 0 (ckbn.nn's calls), one thread below PARALLEL_MIN elements (the
# kernels run one thread there anyway) and ckbn._config.kernel_threads' count
# from PARALLEL_MIN on (_auto_threads); outputs of PARALLEL_MIN elements and
# more come from ckbn._memory.empty_aligned, as the general path's do.  The
# results are those of the general path, bit for bit (same kernels, same
# thread count).  small_layer_train does the same for an eager training call
# of ckbn.BatchNormalization on fewer than PARALLEL_MIN elements
# (ckbn/_normalization.py decides when), moving-average steps included.
#
# common_backward on small channels-first data with small planes (fewer than
# PARALLEL_MIN elements, NCHW, 2 <= H*W <= LANE_PLANE_MAX, at least two
# channels, no activation: the inputs the general path reads as
# "chunks-lanes") runs _small_bwd_cf instead of _bwd: the same per-lane sums
# in the same order, the same fold, coefficients and dx expression, so the
# same bits, with a cheaper traversal (see there).

cimport numpy as cnp
cnp.import_array()


cdef inline bint _plain_f32(object a) noexcept:
    return (type(a) is cnp.ndarray
            and cnp.PyArray_TYPE(<cnp.ndarray> a) == cnp.NPY_FLOAT32
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray> a))


cdef bint _entry_dims(cnp.ndarray x, object data_format, Py_ssize_t* d):
    """d = (P, G, R, C) of the common case; False when x is not one."""
    cdef int nd = cnp.PyArray_NDIM(x)
    cdef cnp.npy_intp* sh = cnp.PyArray_DIMS(x)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    if n == 0:
        return False
    if (nd == 4 and data_format == "NHWC") or (nd == 2 and data_format == "NC"):
        d[0] = 1
        d[1] = 1
        d[3] = sh[nd - 1]
        d[2] = n // d[3]
        return True
    if nd == 4 and data_format == "NCHW":
        d[0] = sh[0]
        d[1] = sh[1]
        d[2] = sh[2] * sh[3]
        d[3] = 1
        return True
    return False


cdef bint _entry_vec(object p, Py_ssize_t n, double dflt, double* dst):
    """dst[:n] = p (exact float32 ndarray of shape (n,)) or dflt for None."""
    cdef Py_ssize_t i
    cdef const float* v
    if p is None:
        for i in range(n):
            dst[i] = dflt
        return True
    if not _plain_f32(p) or cnp.PyArray_NDIM(<cnp.ndarray> p) != 1 \
            or cnp.PyArray_DIMS(<cnp.ndarray> p)[0] != n:
        return False
    v = <const float*> cnp.PyArray_DATA(<cnp.ndarray> p)
    for i in range(n):
        dst[i] = v[i]
    return True


cdef inline bint _entry_eps(object eps) noexcept:
    return type(eps) is float and 0.0 <= <double> eps < INFINITY


cdef object _empty_aligned = None     # ckbn._memory.empty_aligned, imported on first use
cdef object _config = None            # ckbn._config, imported on first use


cdef object _auto_threads(Py_ssize_t size, int* n_threads):
    """For n_threads[0] == 0, the general path's thread count for a call on
    size elements: 1 below PARALLEL_MIN (returns None), else the count of a
    ckbn._config.kernel_threads context, entered here and returned for the
    caller to exit when the kernels are done.  Any other n_threads[0] stays."""
    global _config
    cdef object ctx
    if n_threads[0] != 0:
        return None
    if size < PARALLEL_MIN:
        n_threads[0] = 1
        return None
    if _config is None:
        from ckbn import _config as config
        _config = config
    ctx = _config.kernel_threads(None, size)
    n_threads[0] = ctx.__enter__()
    return ctx


cdef cnp.ndarray _entry_new(cnp.ndarray x):
    """A new float32 array of x's shape for an output: NumPy's own below
    PARALLEL_MIN elements, else ckbn._memory.empty_aligned's (64-byte aligned
    from 4 MiB on), as the general path allocates it."""
    global _empty_aligned
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    if n < PARALLEL_MIN:
        return cnp.PyArray_EMPTY(cnp.PyArray_NDIM(x), cnp.PyArray_DIMS(x), cnp.NPY_FLOAT32, 0)
    if _empty_aligned is None:
        from ckbn._memory import empty_aligned
        _empty_aligned = empty_aligned
    return _empty_aligned(n, "float32").reshape((<object> x).shape)


cdef cnp.ndarray _entry_out(object out, cnp.ndarray x):
    """out when it qualifies, a new array for None, else None."""
    cdef cnp.ndarray o
    cdef char* a
    cdef char* b
    cdef Py_ssize_t nbytes = cnp.PyArray_NBYTES(x)
    if out is None:
        return _entry_new(x)
    if out is x:
        return x
    if not _plain_f32(out):
        return None
    o = <cnp.ndarray> out
    if cnp.PyArray_NDIM(o) != cnp.PyArray_NDIM(x) or not cnp.PyArray_ISWRITEABLE(o):
        return None
    for i in range(cnp.PyArray_NDIM(x)):
        if cnp.PyArray_DIMS(o)[i] != cnp.PyArray_DIMS(x)[i]:
            return None
    a = <char*> cnp.PyArray_DATA(o)
    b = <char*> cnp.PyArray_DATA(x)
    if a < b + nbytes and b < a + nbytes:
        return None
    return o


cdef cnp.ndarray _entry_stat(const double* v, Py_ssize_t n):
    cdef cnp.npy_intp dims[1]
    cdef Py_ssize_t i
    dims[0] = n
    cdef cnp.ndarray a = cnp.PyArray_EMPTY(1, dims, cnp.NPY_FLOAT32, 0)
    cdef float* p = <float*> cnp.PyArray_DATA(a)
    for i in range(n):
        p[i] = <float> v[i]
    return a


cdef Act _entry_act(object act) except *:
    """The kernels' activation of an entry's ``act``: None (off) or the
    ``(slope, hi, kind)`` ckbn._ops.kernel_act gives."""
    if act is None:
        return _act(False, 0.0, INFINITY)
    slope, hi, kind = act
    return _act_kind(True, slope, hi, kind)


def common_forward(x, scale, offset, mean, variance, epsilon, data_format, is_training,
                   out, act, int n_threads):
    """``ckbn.nn.fused_batch_norm`` without ``axis`` for the common case (see
    the top of _k_small.pxi), with ``act`` None or the kernels' ``(slope, hi,
    kind)`` and ``n_threads`` the general path's thread count (0: the entry
    takes it, see the top of _k_small.pxi): ``(y, batch_mean, batch_var)``,
    or None when the call is not the common case."""
    cdef Py_ssize_t d[4]
    cdef Py_ssize_t n
    cdef double* w
    cdef cnp.ndarray xa, y
    cdef object ctx = None
    cdef int status
    cdef double eps
    cdef bint training
    cdef const float* px
    cdef float* py
    cdef Act ac = _entry_act(act)
    if not _plain_f32(x) or not _entry_eps(epsilon) or type(is_training) is not bool:
        return None
    eps = epsilon
    training = is_training
    xa = <cnp.ndarray> x
    if not _entry_dims(xa, data_format, d):
        return None
    n = d[1] * d[3]
    w = <double*> malloc(sizeof(double) * 4 * n)
    if w == NULL:
        raise MemoryError("common_forward: out of memory")
    try:
        # w: scale, offset, mean, var
        if not (_entry_vec(scale, n, 1.0, w) and _entry_vec(offset, n, 0.0, w + n)):
            return None
        if not is_training and not (_entry_vec(mean, n, 0.0, w + 2 * n)
                                    and _entry_vec(variance, n, 1.0, w + 3 * n)
                                    and mean is not None and variance is not None):
            return None
        y = _entry_out(out, xa)
        if y is None:
            return None
        px = <const float*> cnp.PyArray_DATA(xa)
        py = <float*> cnp.PyArray_DATA(y)
        ctx = _auto_threads(cnp.PyArray_SIZE(xa), &n_threads)
        with nogil:
            if training:
                status = _fwd_train(px, d[0], d[1], d[2], d[3], w, w + n, eps, &ac, py,
                                    w + 2 * n, w + 3 * n, n_threads)
            else:
                status = _fwd_infer(px, d[0], d[1], d[2], d[3], w, w + n, w + 2 * n,
                                    w + 3 * n, eps, &ac, py, n_threads)
        _raise_status(status, "common_forward")
        return y, _entry_stat(w + 2 * n, n), _entry_stat(w + 3 * n, n)
    finally:
        free(w)
        if ctx is not None:
            ctx.__exit__(None, None, None)


cdef enum:
    # Most lanes (channels x plane elements) _small_bwd_cf sums in one block:
    # its block sums and shifts (float32) and float64 sums take 28 bytes per
    # lane, 56 KiB at 2048 lanes.
    SMALL_CF_LANES = 2048


cdef inline void _gs_cols(int nt, bint dh, const float* d, const float* x, Py_ssize_t S,
                          Py_ssize_t nr, const float* mu, float* b1, float* b2,
                          bint fresh) noexcept nogil:
    """ckbn_gs_cols3_f32 (nt 3) or ckbn_gs_cols2_f32 (nt 2), ``dh``: their
    walks that load d's vectors in halves (ckbn_gs_cols3h_f32, ...)."""
    if nt == 3:
        if dh:
            ckbn_gs_cols3h_f32(d, x, S, nr, mu, b1, b2, fresh)
        else:
            ckbn_gs_cols3_f32(d, x, S, nr, mu, b1, b2, fresh)
    elif dh:
        ckbn_gs_cols2h_f32(d, x, S, nr, mu, b1, b2, fresh)
    else:
        ckbn_gs_cols2_f32(d, x, S, nr, mu, b1, b2, fresh)


cdef int _small_bwd_cf(const float* dy, const float* x, Py_ssize_t P, Py_ssize_t G,
                       Py_ssize_t R, const double* scale, const double* mean,
                       const double* var, double eps, bint training,
                       float* dx,            # OUT (P, G, R)
                       double* dscale,       # OUT (G,)
                       double* doffset       # OUT (G,)
                       ) noexcept nogil:
    """The backward of channels-first float32 data with small planes (2 <= R
    <= LANE_PLANE_MAX, G >= 2) on one thread, bit for bit _bwd's result on
    its "chunks-lanes" path, cheaper:

    * blocks of up to SMALL_CF_LANES lanes of whole channels (the whole
      16x32x8x8 batch is one block) instead of chunks of at most CF_LANES
      lanes sized for L2: fewer set-ups, flushes and folds;
    * each lane sums its P values in sample order in the data type,
      flushed to float64 every BLOCK rows, as the register tiles of
      _cf_reduce do, so the sums, the fold of a channel's R lanes, dscale
      and doffset are _cf_reduce's.  The tiles walk ROW_GROUP // 2 rows at a
      time, or, where the variant has the registers (CKBN_GS_COLS_TILES 3,
      AVX-512), three tiles side by side walk all the block's rows at once
      (ckbn_gs_cols3_f32): dy and x at the same offset modulo 4 KiB, as NumPy
      usually places them, crowd fewer lines into each L1 set; the tiles
      start from x's first vector-aligned lane (_tile_start, the lanes
      before it summed by _gs1, each lane as the tiles sum it): with x and
      dy 16 or 48 bytes past a line, 0.82-0.88x the call's time (session 17);
    * a batch of BLOCK samples or fewer (one flush) keeps no float64 running
      sums: the three-tile walk starts its sums from +0.0 in registers (no
      clearing), and each channel folds from its float32 block sums, widened
      in registers (ckbn_fold_f32 for planes of 8 to 256 elements, a power
      of two; _fold_chans on the widened lanes otherwise) -- the same values, as
      0.0 + b is b for sums that start from +0.0 (16x32x8x8 on AMD Zen 4:
      clearing, flush and fold 2.0-2.5 us before, 0.7 us after);
    * dx plane by plane with the channel's three coefficients in registers
      (_seg_dx, as _cf_apply writes planes of CF_SEG_MIN and more) for every
      plane size, in a plain loop from the plane's first element (no split
      at the output's first 64-byte boundary, which _ew_seg makes for planes
      of 64 elements and more: two loops and a tail per 8x8 plane); samples
      in reverse order, from the rows the sums read last.

    Measured together (AMD EPYC, benchmarks/RESULTS.md, session 6): 0.96x
    the general path's time on 16x32x8x8, 0.83x on 16x32x7x7; the register
    fold then took the call (ckbn.nn) from 10.1 to 8.7 us (session 15).

    Returns CKBN_OK or CKBN_ERR_NOMEM (nothing written)."""
    cdef Py_ssize_t S = G * R, TL = CKBN_TILE_F32
    cdef Py_ssize_t kb = SMALL_CF_LANES // R, L, LM, g0, g1, k, g, j, i, t, c, q, off
    cdef Py_ssize_t cw, h, sl, LF, FL = 64 // sizeof(float)
    cdef double n = <double> (P * R)
    # the whole batch in one block of rows (BLOCK or fewer): one flush, so
    # no float64 running sums
    cdef bint one = P <= BLOCK
    cdef bint dh
    cdef char* buf
    cdef double* s1
    cdef double* s2
    cdef float* mu0
    cdef float* b10
    cdef float* b20
    cdef float* mu
    cdef float* b1
    cdef float* b2
    cdef float* kk
    cdef const float* pd
    cdef const float* px
    if kb > G:
        kb = G
    LM = kb * R
    # mu, b1, b2 (float32, per lane, each on a 64-byte line with FL lanes to
    # spare, so that the lane the tiles start from is on a line too), s1, s2
    # (float64, per lane), k1, k2, k3
    LF = (LM + 2 * FL - 1) // FL * FL
    buf = <char*> malloc(64 + 3 * LF * sizeof(float) + LM * 2 * sizeof(double)
                         + 3 * kb * sizeof(float))
    if buf == NULL:
        return CKBN_ERR_NOMEM
    mu0 = <float*> (buf + (64 - (<size_t> buf) % 64))
    b10 = mu0 + LF
    b20 = b10 + LF
    s1 = <double*> (b20 + LF)
    s2 = s1 + LM
    kk = <float*> (s2 + LM)
    g0 = 0
    while g0 < G:
        g1 = g0 + kb if g0 + kb < G else G
        k = g1 - g0
        L = k * R
        # The tiles start at lane h, the block's first on a vector boundary
        # of x (_tile_start), and mu, b1 and b2 are placed to put it on a
        # 64-byte line of theirs: loads that split lines took the walk
        # 1.2-1.5x the time.
        h = _tile_start(x + g0 * R, S, L, TL, sizeof(float))
        sl = (FL - h) % FL      # the scratch lanes before lane 0
        # dy's tiles off 64-byte lines (NumPy places each array 0, 16, 32 or
        # 48 bytes into a line, x's tiles start on one): the walk loads dy's
        # vectors in halves, which split lines half as often
        # (ckbn_gs_cols3h_f32)
        dh = (<size_t> (dy + g0 * R + h)) % 64 != 0
        mu = mu0 + sl
        b1 = b10 + sl
        b2 = b20 + sl
        # Sums of the block's lanes over the batch (lane l: channel g0 + l // R).
        for g in range(k):
            for j in range(R):
                mu[g * R + j] = <float> mean[g0 + g]
        # One walk of fresh sums covers the lanes h to cw (the three- and
        # two-tile walks); the rest start from cleared b1, b2.
        cw = h
        if CKBN_GS_COLS_TILES == 3 and one:
            cw = h + (L - h) // (3 * TL) * (3 * TL)
            if cw + 2 * TL <= L:
                cw += 2 * TL
        for j in range(h):
            b1[j] = 0
            b2[j] = 0
        for j in range(cw, L):
            b1[j] = 0
            b2[j] = 0
        i = 0
        while i < P:
            t = P - i
            if t > BLOCK - i % BLOCK:
                t = BLOCK - i % BLOCK
            if t > ROW_GROUP // 2 and CKBN_GS_COLS_TILES == 1:
                t = ROW_GROUP // 2
            pd = dy + i * S + g0 * R
            px = x + i * S + g0 * R
            if h > 0:
                for q in range(t):
                    _gs1(pd + q * S, px + q * S, h, mu, b1, b2)
            c = h
            if CKBN_GS_COLS_TILES == 3:
                # the block's rows in one walk, three tiles across
                while c + 3 * TL <= L:
                    _gs_cols(3, dh, pd + c, px + c, S, t, mu + c, b1 + c, b2 + c, c < cw)
                    c += 3 * TL
                if c + 2 * TL <= L:
                    _gs_cols(2, dh, pd + c, px + c, S, t, mu + c, b1 + c, b2 + c, c < cw)
                    c += 2 * TL
            if TL > 0:
                while c + TL <= L:
                    _gs_tile(pd + c, px + c, S, t, mu + c, b1 + c, b2 + c, NULL, NULL, 0, dh)
                    c += TL
            if c < L:
                for q in range(t):
                    _gs1(pd + q * S + c, px + q * S + c, L - c, mu + c, b1 + c, b2 + c)
            i += t
            if not one:
                _block_end(b1, b2, s1, s2, L, i)
        if not one:
            _block_close(b1, b2, s1, s2, L, P)
        # one flush would add b1, b2 to cleared float64 sums: 0.0 + b is b
        # widened (sums from +0.0 are never -0.0), so the fold reads b1, b2
        # themselves
        if not (one and ckbn_fold_f32(b1, b2, R, k, s1, s2)):
            if one:
                _widen(b1, b2, s1, s2, L)
            _fold_chans(s1, s2, R, k)
        for g in range(k):
            off = g * R
            doffset[g0 + g] = s1[off]
            dscale[g0 + g] = _sum_exc(s1[off], s2[off], <double> mu[off], mean[g0 + g])
        # dscale becomes sum(dy * xhat); kk: k1, k2, k3 of the block's channels
        _bwd_coefs(scale + g0, mean + g0, var + g0, eps, training, n, doffset + g0,
                   dscale + g0, kk, k)
        for i in range(P - 1, -1, -1):
            for g in range(k):
                off = i * S + (g0 + g) * R
                _seg_dx(dy + off, x + off, dx + off, R, kk[g], kk[k + g], kk[2 * k + g])
        g0 = g1
    free(buf)
    return CKBN_OK


cdef inline bint _small_cf(Py_ssize_t P, Py_ssize_t G, Py_ssize_t R,
                           Py_ssize_t C) noexcept nogil:
    """Whether common_backward without an activation runs _small_bwd_cf on
    the (P, G, R, C) view of a common-case input: fewer than PARALLEL_MIN
    elements (one thread), channels first, small planes."""
    return C == 1 and G >= 2 and 2 <= R <= LANE_PLANE_MAX and P * G * R < PARALLEL_MIN


def common_backward_path(Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C):
    """The pass common_backward without an activation runs for a common-case
    input of the (P, G, R, C) view, for tests and benchmarks:
    ``"channels-first blocks"`` (_small_bwd_cf) or ``"general"`` (the
    general path's kernels)."""
    return "channels-first blocks" if _small_cf(P, G, R, C) else "general"


def common_backward(dy, x, scale, batch_mean, batch_var, epsilon, data_format,
                    is_training, offset, act, int n_threads):
    """``ckbn.nn.fused_batch_norm_grad`` without ``axis`` for the common
    case, with ``act`` and ``n_threads`` as in common_forward (``offset``
    read only with an activation): ``(dx, dscale, doffset)``, or None."""
    cdef Py_ssize_t d[4]
    cdef Py_ssize_t n, i
    cdef double* w
    cdef cnp.ndarray xa, da, dx
    cdef object ctx = None
    cdef int status
    cdef double eps
    cdef bint training
    cdef const float* px
    cdef const float* pd
    cdef float* po
    cdef Act ac = _entry_act(act)
    if not _plain_f32(x) or not _plain_f32(dy) or not _entry_eps(epsilon) \
            or type(is_training) is not bool or batch_mean is None or batch_var is None:
        return None
    eps = epsilon
    training = is_training
    xa = <cnp.ndarray> x
    da = <cnp.ndarray> dy
    if cnp.PyArray_NDIM(da) != cnp.PyArray_NDIM(xa):
        return None
    for i in range(cnp.PyArray_NDIM(xa)):
        if cnp.PyArray_DIMS(da)[i] != cnp.PyArray_DIMS(xa)[i]:
            return None
    if not _entry_dims(xa, data_format, d):
        return None
    n = d[1] * d[3]
    w = <double*> malloc(sizeof(double) * 6 * n)
    if w == NULL:
        raise MemoryError("common_backward: out of memory")
    try:
        # w: scale, mean, var, dscale, doffset, offset (read with an activation)
        if not (_entry_vec(scale, n, 1.0, w) and _entry_vec(batch_mean, n, 0.0, w + n)
                and _entry_vec(batch_var, n, 1.0, w + 2 * n)):
            return None
        if ac.on and not _entry_vec(offset, n, 0.0, w + 5 * n):
            return None
        dx = _entry_new(xa)
        pd = <const float*> cnp.PyArray_DATA(da)
        px = <const float*> cnp.PyArray_DATA(xa)
        po = <float*> cnp.PyArray_DATA(dx)
        ctx = _auto_threads(cnp.PyArray_SIZE(xa), &n_threads)
        with nogil:
            if not ac.on and _small_cf(d[0], d[1], d[2], d[3]):
                status = _small_bwd_cf(pd, px, d[0], d[1], d[2], w, w + n, w + 2 * n, eps,
                                       training, po, w + 3 * n, w + 4 * n)
            else:
                status = _bwd(pd, px, d[0], d[1], d[2], d[3], w,
                              <const double*> (w + 5 * n) if ac.on else <const double*> NULL,
                              w + n, w + 2 * n, eps, training, &ac, po, w + 3 * n,
                              w + 4 * n, n_threads)
        _raise_status(status, "common_backward")
        return dx, _entry_stat(w + 3 * n, n), _entry_stat(w + 4 * n, n)
    finally:
        free(w)
        if ctx is not None:
            ctx.__exit__(None, None, None)


cdef cnp.ndarray _small_f64(const double* v, Py_ssize_t n):
    cdef cnp.npy_intp dims[1]
    cdef Py_ssize_t i
    dims[0] = n
    cdef cnp.ndarray a = cnp.PyArray_EMPTY(1, dims, cnp.NPY_FLOAT64, 0)
    cdef double* p = <double*> cnp.PyArray_DATA(a)
    for i in range(n):
        p[i] = v[i]
    return a


cdef object _small_ema(object moving, const double* stat, double factor, float rate,
                       Py_ssize_t n):
    """moving - (moving - float32(stat * factor)) * rate as a new float32 array of
    moving's shape (moving: an exact float32 C-contiguous ndarray of n elements,
    checked by the caller)."""
    cdef cnp.ndarray m = <cnp.ndarray> moving
    cdef cnp.ndarray a = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(m), cnp.PyArray_DIMS(m),
                                           cnp.NPY_FLOAT32, 0)
    cdef const float* v = <const float*> cnp.PyArray_DATA(m)
    cdef float* o = <float*> cnp.PyArray_DATA(a)
    cdef Py_ssize_t i
    for i in range(n):
        o[i] = ckbn_ema_f32(v[i], <float> (stat[i] * factor), rate)
    return a


cdef inline bint _small_moving(object m, Py_ssize_t n) noexcept:
    return m is None or (_plain_f32(m) and cnp.PyArray_SIZE(<cnp.ndarray> m) == n)


def small_layer_train(x, Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
                      scale, offset, epsilon, moving_mean, moving_var, rate,
                      double var_factor):
    """The eager training call of ``ckbn.BatchNormalization`` for the common
    case: ``x`` an exact C-contiguous float32 ndarray of P*G*R*C elements
    (fewer than PARALLEL_MIN), ``scale``/``offset`` None or exact float32
    arrays of shape (G*C,), ``moving_mean``/``moving_var`` both None (no
    update) or exact float32 C-contiguous arrays of G*C elements, ``epsilon``
    and ``rate`` (``1 - momentum`` rounded to float32) Python floats.

    Returns ``(y, mean, var, scale64, new_mean, new_var)``: ``y`` of x's
    shape, the batch mean and biased variance and the scale (1 for None) as
    float64 (G*C,) arrays, and the moving statistics after one step,
    ``v - (v - float32(s)) * rate`` with ``s`` the batch mean and ``var *
    var_factor``, as new float32 arrays of their shapes (None without
    update); or None when the call is not the common case.  The results are
    those of the layer's general path, bit for bit (same kernel, one thread).
    """
    cdef Py_ssize_t n
    cdef double* w
    cdef cnp.ndarray xa, y
    cdef int status
    cdef double eps
    cdef const float* px
    cdef float* py
    cdef Act none = _act(False, 0.0, INFINITY)
    if not _plain_f32(x) or not _entry_eps(epsilon) or type(rate) is not float:
        return None
    xa = <cnp.ndarray> x
    if P < 1 or G < 1 or R < 1 or C < 1 or cnp.PyArray_SIZE(xa) != P * G * R * C \
            or P * G * R * C >= PARALLEL_MIN:
        return None
    n = G * C
    if (moving_mean is None) != (moving_var is None) or not _small_moving(moving_mean, n) \
            or not _small_moving(moving_var, n):
        return None
    eps = epsilon
    w = <double*> malloc(sizeof(double) * 4 * n)
    if w == NULL:
        raise MemoryError("small_layer_train: out of memory")
    try:
        # w: scale, offset, mean, var
        if not (_entry_vec(scale, n, 1.0, w) and _entry_vec(offset, n, 0.0, w + n)):
            return None
        y = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(xa), cnp.PyArray_DIMS(xa), cnp.NPY_FLOAT32, 0)
        px = <const float*> cnp.PyArray_DATA(xa)
        py = <float*> cnp.PyArray_DATA(y)
        with nogil:
            status = _fwd_train(px, P, G, R, C, w, w + n, eps, &none, py, w + 2 * n,
                                w + 3 * n, 1)
        _raise_status(status, "small_layer_train")
        if moving_mean is None:
            nm = nv = None
        else:
            nm = _small_ema(moving_mean, w + 2 * n, 1.0, <float> rate, n)
            nv = _small_ema(moving_var, w + 3 * n, var_factor, <float> rate, n)
        return (y, _small_f64(w + 2 * n, n), _small_f64(w + 3 * n, n), _small_f64(w, n),
                nm, nv)
    finally:
        free(w)
