# The fused ops as nogil cores on raw pointers, written once for every data
# type: float32 and float64 run the primitives of _k_reduce.pxi and
# _k_elementwise.pxi (or the chunked passes of _k_chunks.pxi for
# channels-first data), float16 the slice driver of _k_half.pxi.  They serve
# the def entry points (_k_entry.pxi) and the C-level table (_k_table.pxi).
# Each returns CKBN_OK or CKBN_ERR_NOMEM.
#
#   _fwd_train   statistics, then y = act(x * a + b)
#   _fwd_infer   y = act(x * a + b) with given statistics
#   _bwd         backward sums, then dx (or, inference without an
#                activation, dx = dy * k1); with swish, first e = dy *
#                swish'(z) into dx (_act_e), then the plain backward of e
#   _sums        the backward sums alone (synchronized training)
#   _bwd_dx      dx from given (global) sums (synchronized training)

ctypedef unsigned short f16_bits

ctypedef fused data:
    float
    double
    f16_bits        # float16 bits, computed in float32


cdef inline size_t _wsize(const data* tag) noexcept nogil:
    """Bytes of the compute type of ``data`` (float64 for double, else float32)."""
    if data is double:
        return sizeof(double)
    else:
        return sizeof(float)


cdef inline void _coefs_norm(const data* tag, const double* scale, const double* offset,
                             const double* mean, const double* var, double eps,
                             Py_ssize_t n, void* a, void* b) noexcept nogil:
    if data is double:
        _norm_coefs(scale, offset, mean, var, eps, n, <double*> a, <double*> b)
    else:
        _norm_coefs(scale, offset, mean, var, eps, n, <float*> a, <float*> b)


cdef inline void _coefs_bwd(const data* tag, const double* scale, const double* mean,
                            const double* var, double eps, bint training, double cnt,
                            const double* sum_e, double* sdx, void* kk,
                            Py_ssize_t n) noexcept nogil:
    if data is double:
        _bwd_coefs(scale, mean, var, eps, training, cnt, sum_e, sdx, <double*> kk, n)
    else:
        _bwd_coefs(scale, mean, var, eps, training, cnt, sum_e, sdx, <float*> kk, n)


# The four primitives on any data type.  Coefficient arrays (void*) are of
# the compute type, n = G*C each, consecutive: (a, b) or (k1, k2, k3, za, zb).

cdef inline int _p_stats(const data* x, Py_ssize_t P, Py_ssize_t G, Py_ssize_t R,
                         Py_ssize_t C, double* mean, double* var, int nt) noexcept nogil:
    cdef Act none = _act(False, 0.0, 0.0)
    if data is f16_bits:
        return _h_slices(H_STATS, x, x, P, G, R, C, NULL, NULL, &none, NULL, mean, var, nt)
    else:
        return _stats(x, P, G, R, C, mean, var, nt)


cdef inline int _p_sums(const data* dy, const data* x, Py_ssize_t P, Py_ssize_t G,
                        Py_ssize_t R, Py_ssize_t C, const double* mean, const void* z,
                        const Act* ac, double* sum_e, double* sum_exc,
                        int nt) noexcept nogil:
    """z: za, zb (read with an activation; may be NULL without)."""
    cdef Py_ssize_t n = G * C
    cdef const float* cf[MAX_COEF]
    if data is f16_bits:
        cf[3] = <const float*> z
        cf[4] = cf[3] + n if z != NULL else NULL
        return _h_slices(H_SUMS, dy, x, P, G, R, C, cf, mean, ac, NULL, sum_e, sum_exc, nt)
    elif data is float:
        return _grad_sums(dy, x, mean, <const float*> z, <const float*> z + n if z != NULL
                          else NULL, ac, P, G, R, C, sum_e, sum_exc, nt)
    else:
        return _grad_sums(dy, x, mean, <const double*> z, <const double*> z + n if z != NULL
                          else NULL, ac, P, G, R, C, sum_e, sum_exc, nt)


cdef inline int _p_affine(const data* x, Py_ssize_t P, Py_ssize_t G, Py_ssize_t R,
                          Py_ssize_t C, const void* ab, const Act* ac, data* y,
                          bint rev, int nt) noexcept nogil:
    cdef Py_ssize_t n = G * C
    cdef const float* cf[MAX_COEF]
    if data is f16_bits:
        cf[0] = <const float*> ab
        cf[1] = cf[0] + n
        return _h_slices(H_AFFINE, x, x, P, G, R, C, cf, NULL, ac, y, NULL, NULL, nt)
    elif data is float:
        return _affine(x, <const float*> ab, <const float*> ab + n, y, P, G, R, C, ac, rev, nt)
    else:
        return _affine(x, <const double*> ab, <const double*> ab + n, y, P, G, R, C, ac, rev,
                       nt)


cdef inline int _p_dx(const data* dy, const data* x, Py_ssize_t P, Py_ssize_t G,
                      Py_ssize_t R, Py_ssize_t C, const void* kk, const Act* ac, data* dx,
                      bint rev, int nt) noexcept nogil:
    cdef Py_ssize_t n = G * C
    cdef const float* cf[MAX_COEF]
    cdef const float* kf = <const float*> kk
    cdef const double* kd = <const double*> kk
    cdef int q
    if data is f16_bits:
        for q in range(MAX_COEF):
            cf[q] = kf + q * n
        return _h_slices(H_DX, dy, x, P, G, R, C, cf, NULL, ac, dx, NULL, NULL, nt)
    elif data is float:
        return _grad_dx(dy, x, kf, kf + n, kf + 2 * n, kf + 3 * n, kf + 4 * n, dx,
                        P, G, R, C, ac, rev, nt)
    else:
        return _grad_dx(dy, x, kd, kd + n, kd + 2 * n, kd + 3 * n, kd + 4 * n, dx,
                        P, G, R, C, ac, rev, nt)


# The ops.

cdef int _fwd_train(const data* x, Py_ssize_t P, Py_ssize_t G, Py_ssize_t R,
                    Py_ssize_t C, const double* scale, const double* offset, double eps,
                    const Act* ac, data* y, double* mean, double* var,
                    int n_threads) noexcept nogil:
    cdef Py_ssize_t n = G * C
    cdef Chunks ch
    cdef Pass ps
    cdef char* ab
    cdef char* raw
    cdef int status
    if data is not f16_bits:
        if _cf_plan(P, G, R, C, True, &ch):
            # Channels first: each chunk normalized while it is in cache.
            _pass_init(&ps, ac)
            ps.scale = scale
            ps.offset = offset
            ps.eps = eps
            ps.mean = mean
            ps.var = var
            return _cf_pass(CF_FORWARD, &ch, x, x, y, &ps, n_threads)
    ab = _coefs_new(_wsize(x) * 2 * n, x, &raw)
    if ab == NULL:
        return CKBN_ERR_NOMEM
    status = _p_stats(x, P, G, R, C, mean, var, n_threads)
    if status == CKBN_OK:
        _coefs_norm(x, scale, offset, mean, var, eps, n, ab, ab + _wsize(x) * n)
        status = _p_affine(x, P, G, R, C, ab, ac, y, True, n_threads)
    free(raw)
    return status


cdef int _fwd_infer(const data* x, Py_ssize_t P, Py_ssize_t G, Py_ssize_t R,
                    Py_ssize_t C, const double* scale, const double* offset,
                    const double* mean, const double* var, double eps, const Act* ac,
                    data* y, int n_threads) noexcept nogil:
    cdef Py_ssize_t n = G * C
    cdef char* raw
    cdef char* ab = _coefs_new(_wsize(x) * 2 * n, x, &raw)
    cdef int status
    if ab == NULL:
        return CKBN_ERR_NOMEM
    _coefs_norm(x, scale, offset, mean, var, eps, n, ab, ab + _wsize(x) * n)
    status = _p_affine(x, P, G, R, C, ab, ac, y, False, n_threads)
    free(raw)
    return status


cdef int _act_e(const data* dy, const data* x, Py_ssize_t P, Py_ssize_t G,
                Py_ssize_t R, Py_ssize_t C, const double* scale, const double* offset,
                const double* mean, const double* var, double eps, const Act* ac,
                data* e, int n_threads) noexcept nogil:
    """e = dy * act'(z), z = x * za + zb (e may be dy, not x): the dx pass with
    k1 = 1 and k2 = k3 = 0, so e is the product the fused passes form, to the
    bit.  Its last units are written first (rev), so the sums pass that
    follows finds its first rows in cache."""
    cdef Py_ssize_t n = G * C, c
    cdef size_t w = _wsize(x)
    cdef char* kk = <char*> calloc(5 * n, w)        # k2 = k3 = 0
    cdef int status
    if kk == NULL:
        return CKBN_ERR_NOMEM
    for c in range(n):
        if data is double:
            (<double*> kk)[c] = 1
        else:
            (<float*> kk)[c] = 1
    _coefs_norm(x, scale, offset, mean, var, eps, n, kk + 3 * w * n, kk + 4 * w * n)
    status = _p_dx(dy, x, P, G, R, C, kk, ac, e, True, n_threads)
    free(kk)
    return status


cdef int _bwd(const data* dy, const data* x, Py_ssize_t P, Py_ssize_t G,
              Py_ssize_t R, Py_ssize_t C, const double* scale, const double* offset,
              const double* mean, const double* var, double eps, bint training,
              const Act* ac, data* dx, double* dscale, double* doffset,
              int n_threads) noexcept nogil:
    cdef Py_ssize_t n = G * C
    cdef size_t w = _wsize(x)
    cdef Chunks ch
    cdef Pass ps
    cdef char* kk
    cdef char* raw
    cdef int status
    cdef Act none
    if data is not f16_bits:
        if ac.on and ac.kind == ACT_SWISH and <const void*> dx != <const void*> x:
            # swish'(z) once: e = dy * swish'(z) into dx, then the plain
            # backward of e (in place).  The sums and dx passes would each
            # evaluate the sigmoid, and it, not the memory traffic, is what
            # the swish backward costs.
            status = _act_e(dy, x, P, G, R, C, scale, offset, mean, var, eps, ac, dx,
                            n_threads)
            if status != CKBN_OK:
                return status
            none = _act(False, 0.0, 0.0)
            return _bwd(dx, x, P, G, R, C, scale, offset, mean, var, eps, training, &none,
                        dx, dscale, doffset, n_threads)
        if not ac.on and _cf_plan(P, G, R, C, True, &ch):
            # Channels first: each chunk's dx written while it is in cache.
            _pass_init(&ps, ac)
            ps.scale = scale
            ps.eps = eps
            ps.training = training
            ps.mean = <double*> mean
            ps.var = <double*> var
            ps.sum_e = doffset
            ps.sum_exc = dscale
            return _cf_pass(CF_BACKWARD, &ch, x, dy, dx, &ps, n_threads)
    # kk: k1, k2, k3, then za, zb (the pre-activation's coefficients)
    kk = _coefs_new(w * 5 * n, x, &raw)
    if kk == NULL:
        return CKBN_ERR_NOMEM
    if ac.on:
        _coefs_norm(x, scale, offset, mean, var, eps, n, kk + 3 * w * n, kk + 4 * w * n)
    status = _p_sums(dy, x, P, G, R, C, mean, kk + 3 * w * n, ac, doffset, dscale,
                     n_threads)
    if status == CKBN_OK:
        _coefs_bwd(x, scale, mean, var, eps, training, <double> (P * R), doffset, dscale,
                   kk, n)
        if training or ac.on:
            status = _p_dx(dy, x, P, G, R, C, kk, ac, dx, True, n_threads)
        else:
            # dx = dy * k1 + 0
            status = _p_affine(dy, P, G, R, C, kk, ac, dx, True, n_threads)
    free(raw)
    return status


cdef int _sums(const data* dy, const data* x, Py_ssize_t P, Py_ssize_t G,
               Py_ssize_t R, Py_ssize_t C, const double* scale, const double* offset,
               const double* mean, const double* var, double eps, const Act* ac,
               double* sum_e, double* sum_exc, int n_threads) noexcept nogil:
    cdef Py_ssize_t n = G * C
    cdef size_t w = _wsize(x)
    cdef char* raw
    cdef char* z = _coefs_new(w * 2 * n, x, &raw)
    cdef int status
    if z == NULL:
        return CKBN_ERR_NOMEM
    if ac.on:
        _coefs_norm(x, scale, offset, mean, var, eps, n, z, z + w * n)
    status = _p_sums(dy, x, P, G, R, C, mean, z, ac, sum_e, sum_exc, n_threads)
    free(raw)
    return status


cdef int _bwd_dx(const data* dy, const data* x, Py_ssize_t P, Py_ssize_t G,
                 Py_ssize_t R, Py_ssize_t C, const double* scale, const double* offset,
                 const double* mean, const double* var, double eps, double count,
                 const double* sum_e, const double* sum_exc, const Act* ac,
                 data* dx, double* dscale, int n_threads) noexcept nogil:
    cdef Py_ssize_t n = G * C, c
    cdef size_t w = _wsize(x)
    cdef char* raw
    cdef char* kk = _coefs_new(w * 5 * n, x, &raw)
    cdef double* sd = <double*> malloc(sizeof(double) * n)
    cdef int status
    if kk == NULL or sd == NULL:
        free(raw)
        free(sd)
        return CKBN_ERR_NOMEM
    for c in range(n):
        sd[c] = sum_exc[c]
    if ac.on:
        _coefs_norm(x, scale, offset, mean, var, eps, n, kk + 3 * w * n, kk + 4 * w * n)
    _coefs_bwd(x, scale, mean, var, eps, True, count, sum_e, sd, kk, n)
    status = _p_dx(dy, x, P, G, R, C, kk, ac, dx, True, n_threads)
    if status == CKBN_OK and dscale != NULL:
        for c in range(n):
            dscale[c] = sd[c]
    free(raw)
    free(sd)
    return status
