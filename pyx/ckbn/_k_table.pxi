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
    cdef Act ac
    if a == NULL or not a.on:
        return _act(False, 0.0, INFINITY)
    ac = _act(True, a.slope, a.hi)
    ac.kind = a.kind
    return ac


cdef inline int _act_status(const Act* a) noexcept nogil:
    """CKBN_ERR_ARG for an activation of an unknown kind."""
    if a.on and a.kind != ACT_PIECEWISE and a.kind != ACT_SWISH:
        return CKBN_ERR_ARG
    return CKBN_OK


cdef inline bint _f16_ok(int dtype) noexcept nogil:
    return dtype == CKBN_FLOAT16 and CKBN_HAVE_F16C


cdef int _tab_forward_train(int dtype, const void* x, ckbn_dims d, const double* scale,
                            const double* offset, double eps, const ckbn_act* act, void* y,
                            double* mean, double* var, int n_threads) noexcept nogil:
    cdef int s = _dims_status(d)
    cdef Act ac = _c_act(act)
    if s == CKBN_OK:
        s = _act_status(&ac)
    if s != CKBN_OK:
        return s
    if dtype == CKBN_FLOAT32:
        return _fwd_train(<const float*> x, d.P, d.G, d.R, d.C, scale, offset, eps, &ac,
                          <float*> y, mean, var, n_threads)
    if dtype == CKBN_FLOAT64:
        return _fwd_train(<const double*> x, d.P, d.G, d.R, d.C, scale, offset, eps, &ac,
                          <double*> y, mean, var, n_threads)
    if _f16_ok(dtype):
        return _fwd_train(<const f16_bits*> x, d.P, d.G, d.R, d.C, scale, offset,
                            eps, &ac, <f16_bits*> y, mean, var, n_threads)
    return CKBN_ERR_DTYPE


cdef int _tab_forward_infer(int dtype, const void* x, ckbn_dims d, const double* scale,
                            const double* offset, const double* mean, const double* var,
                            double eps, const ckbn_act* act, void* y,
                            int n_threads) noexcept nogil:
    cdef int s = _dims_status(d)
    cdef Act ac = _c_act(act)
    if s == CKBN_OK:
        s = _act_status(&ac)
    if s != CKBN_OK:
        return s
    if dtype == CKBN_FLOAT32:
        return _fwd_infer(<const float*> x, d.P, d.G, d.R, d.C, scale, offset, mean, var,
                          eps, &ac, <float*> y, n_threads)
    if dtype == CKBN_FLOAT64:
        return _fwd_infer(<const double*> x, d.P, d.G, d.R, d.C, scale, offset, mean, var,
                          eps, &ac, <double*> y, n_threads)
    if _f16_ok(dtype):
        return _fwd_infer(<const f16_bits*> x, d.P, d.G, d.R, d.C, scale, offset,
                            mean, var, eps, &ac, <f16_bits*> y, n_threads)
    return CKBN_ERR_DTYPE


cdef int _tab_backward(int dtype, const void* dy, const void* x, ckbn_dims d,
                       const double* scale, const double* offset, const double* mean,
                       const double* var, double eps, int training, const ckbn_act* act,
                       void* dx, double* dscale, double* doffset,
                       int n_threads) noexcept nogil:
    cdef int s = _dims_status(d)
    cdef Act ac = _c_act(act)
    if s == CKBN_OK:
        s = _act_status(&ac)
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
        return _bwd(<const f16_bits*> dy, <const f16_bits*> x, d.P, d.G, d.R,
                      d.C, scale, offset, mean, var, eps, training != 0, &ac,
                      <f16_bits*> dx, dscale, doffset, n_threads)
    return CKBN_ERR_DTYPE


cdef int _tab_stats(int dtype, const void* x, ckbn_dims d, double* mean, double* var,
                    int n_threads) noexcept nogil:
    cdef int s = _dims_status(d)
    if s != CKBN_OK:
        return s
    if dtype == CKBN_FLOAT32:
        return _stats(<const float*> x, d.P, d.G, d.R, d.C, mean, var, n_threads)
    if dtype == CKBN_FLOAT64:
        return _stats(<const double*> x, d.P, d.G, d.R, d.C, mean, var, n_threads)
    if _f16_ok(dtype):
        return _p_stats(<const f16_bits*> x, d.P, d.G, d.R, d.C, mean, var, n_threads)
    return CKBN_ERR_DTYPE


cdef int _tab_grad_sums(int dtype, const void* dy, const void* x, ckbn_dims d,
                        const double* scale, const double* offset, const double* mean,
                        const double* var, double eps, const ckbn_act* act,
                        double* sum_e, double* sum_exc, int n_threads) noexcept nogil:
    cdef int s = _dims_status(d)
    cdef Act ac = _c_act(act)
    if s == CKBN_OK:
        s = _act_status(&ac)
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
        return _sums(<const f16_bits*> dy, <const f16_bits*> x, d.P, d.G, d.R,
                       d.C, scale, offset, mean, var, eps, &ac, sum_e, sum_exc, n_threads)
    return CKBN_ERR_DTYPE


cdef int _tab_backward_dx(int dtype, const void* dy, const void* x, ckbn_dims d,
                          const double* scale, const double* offset, const double* mean,
                          const double* var, double eps, double count, const double* sum_e,
                          const double* sum_exc, const ckbn_act* act, void* dx,
                          double* dscale, int n_threads) noexcept nogil:
    cdef int s = _dims_status(d)
    cdef Act ac = _c_act(act)
    if s == CKBN_OK:
        s = _act_status(&ac)
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
        return _bwd_dx(<const f16_bits*> dy, <const f16_bits*> x, d.P, d.G,
                         d.R, d.C, scale, offset, mean, var, eps, count, sum_e, sum_exc, &ac,
                         <f16_bits*> dx, dscale, n_threads)
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

