# The def entry points: check sizes, release the GIL, run one core, raise on
# its status.  Each is typed on flat C-contiguous memoryviews (`# IN` views
# const); ckbn/_ops.py and ckbn/_half.py are their only callers.

cdef inline int _check_dims(Py_ssize_t n, Py_ssize_t P, Py_ssize_t G,
                            Py_ssize_t R, Py_ssize_t C) except -1:
    if P < 1 or G < 1 or R < 1 or C < 1 or n != P * G * R * C:
        raise ValueError(f"kernel: {n} elements do not form (P, G, R, C) = "
                         f"({P}, {G}, {R}, {C})")
    return 0


def work_plan(Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C):
    """How float32 (P, G, R, C) is cut into work (from the shape alone), for
    tests and benchmarks: the reduction path, the number of units the
    reductions hand to threads (chunks on the chunked channels-first paths,
    where the training passes also write their outputs chunk by chunk), and
    the number of units of an element-wise pass that runs on its own
    (inference, ``bn_affine``, without swish), on the path _ew takes."""
    cdef Chunks ch
    cdef Units ur, ue
    cdef Py_ssize_t spu, nu, gpu
    cdef Act none = _act(False, 0.0, INFINITY)
    path = reduction_path(P, G, R, C)
    ew = _ew_path(&none, P, G, R, C, 4, &ch)
    if ew == EW_CHUNKS:
        n_ew = ch.n
    elif ew == EW_LANES:
        ue = _make_units(1, 1, P, G * R, _ew_lanes(G * R, 4), False, 4)
        n_ew = ue.n_units
    else:
        ue = _make_units(P, G, R, C, _ew_lanes(C, 4), False, 4)
        n_ew = ue.n_units
    if _pl_path(P, G, R, C):
        n_red = _pl_units(P, G, R, &spu, &nu, &gpu)
    elif _cf_plan(P, G, R, C, True, &ch):
        n_red = ch.n
    else:
        if _expand(G, R, C):
            ur = _make_units(1, 1, P, G * R, MIN_LANES, True, 4)
        else:
            ur = _make_units(P, G, R, C, MIN_LANES, True, 4)
        n_red = ur.n_units
    return {"path": path, "reduction_units": n_red, "elementwise_units": n_ew}


def half_page_offset(size_t p, size_t x):
    """The bytes past address ``p`` at which the kernels start per-channel
    rows read beside the rows of an array at address ``x`` (_half_page: x's
    offset in a page plus half a page, to a 64-byte line), for tests."""
    return <size_t> _half_page(<char*> p, <const void*> x) - p


def bn_stats(const floating[::1] x,      # IN  (P*G*R*C,)
             Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
             double[::1] mean,           # OUT (G*C,)
             double[::1] var,            # OUT (G*C,)
             int n_threads):
    """Per-channel mean and biased variance of ``x`` viewed as (P, G, R, C)."""
    _check_dims(x.shape[0], P, G, R, C)
    if mean.shape[0] != G * C or var.shape[0] != G * C:
        raise ValueError("bn_stats: bad statistic size")
    cdef int status
    with nogil:
        status = _stats(&x[0], P, G, R, C, &mean[0], &var[0], n_threads)
    _raise_status(status, "bn_stats")



def bn_affine(const floating[::1] x,     # IN  (P*G*R*C,)
              Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
              const floating[::1] a,     # IN  (G*C,)
              const floating[::1] b,     # IN  (G*C,)
              floating[::1] y,           # OUT (P*G*R*C,)
              int n_threads, bint act=False, double slope=0.0, double hi=INFINITY,
              int kind=ACT_PIECEWISE):
    """``y = act(x * a[ch] + b[ch])`` with ``x`` and ``y`` viewed as (P, G, R, C).

    ``act`` applies ``z > 0 ? min(z, hi) : slope * z`` (ReLU, ReLU6, leaky ReLU),
    or with ``kind`` ACT_SWISH (1) ``z * sigmoid(z)``.
    """
    _check_dims(x.shape[0], P, G, R, C)
    if y.shape[0] != x.shape[0]:
        raise ValueError("bn_affine: y has the wrong size")
    if a.shape[0] != G * C or b.shape[0] != G * C:
        raise ValueError("bn_affine: bad coefficient size")
    cdef Act ac = _act_kind(act, slope, hi, kind)
    cdef int status
    with nogil:
        status = _affine(&x[0], &a[0], &b[0], &y[0], P, G, R, C, &ac, False, n_threads)
    _raise_status(status, "bn_affine")


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
               bint act=False, double slope=0.0, double hi=INFINITY,
               int kind=ACT_PIECEWISE):
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
    cdef Act ac = _act_kind(act, slope, hi, kind)
    cdef int status
    with nogil:
        status = _grad_dx(&dy[0], &x[0], &k1[0], &k2[0], &k3[0], pa, pb, &dx[0], P, G, R, C,
                          &ac, False, n_threads)
    _raise_status(status, "bn_grad_dx")


def bn_grad_sums(const floating[::1] dy,   # IN  (P*G*R*C,)
                 const floating[::1] x,    # IN  (P*G*R*C,)
                 Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
                 const double[::1] mean,   # IN  (G*C,)
                 double[::1] sum_dy,       # OUT (G*C,)
                 double[::1] sum_dyxc,     # OUT (G*C,)
                 int n_threads,
                 const floating[::1] za=None,   # IN  (G*C,) with an activation
                 const floating[::1] zb=None,   # IN  (G*C,) with an activation
                 bint act=False, double slope=0.0, double hi=INFINITY,
                 int kind=ACT_PIECEWISE):
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
    cdef Act ac = _act_kind(act, slope, hi, kind)
    cdef int status
    with nogil:
        status = _grad_sums(&dy[0], &x[0], &mean[0], pa, pb, &ac, P, G, R, C, &sum_dy[0],
                            &sum_dyxc[0], n_threads)
    _raise_status(status, "bn_grad_sums")



def bn_forward_train(const floating[::1] x,      # IN  (P*G*R*C,)
                     Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
                     const double[::1] scale,    # IN  (G*C,)
                     const double[::1] offset,   # IN  (G*C,)
                     double eps,
                     floating[::1] y,            # OUT (P*G*R*C,)
                     double[::1] mean,           # OUT (G*C,)
                     double[::1] var,            # OUT (G*C,) biased
                     int n_threads,
                     bint act=False, double slope=0.0, double hi=INFINITY,
                     int kind=ACT_PIECEWISE):
    """Training forward: batch statistics, then
    ``y = act((x - mean) * scale / sqrt(var + eps) + offset)``.

    ``act`` applies ``z > 0 ? min(z, hi) : slope * z`` (or with ``kind`` 1,
    swish, ``z * sigmoid(z)``) in the same pass;
    ``y`` may be ``x`` itself.
    """
    _check_dims(x.shape[0], P, G, R, C)
    cdef Py_ssize_t n = G * C
    if y.shape[0] != x.shape[0] or scale.shape[0] != n or offset.shape[0] != n \
            or mean.shape[0] != n or var.shape[0] != n:
        raise ValueError("bn_forward_train: bad sizes")
    cdef Act ac = _act_kind(act, slope, hi, kind)
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
                     bint act=False, double slope=0.0, double hi=INFINITY,
                     int kind=ACT_PIECEWISE):
    """Inference: ``y = act((x - mean) * scale / sqrt(var + eps) + offset)`` in one pass."""
    _check_dims(x.shape[0], P, G, R, C)
    cdef Py_ssize_t n = G * C
    if y.shape[0] != x.shape[0] or scale.shape[0] != n or offset.shape[0] != n \
            or mean.shape[0] != n or var.shape[0] != n:
        raise ValueError("bn_forward_infer: bad sizes")
    cdef Act ac = _act_kind(act, slope, hi, kind)
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
                bint act=False, double slope=0.0, double hi=INFINITY,
                int kind=ACT_PIECEWISE):
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
    cdef Act ac = _act_kind(act, slope, hi, kind)
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
    cdef int nt = _threads(n, nb, n_threads)
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
    cdef int nt = _threads(n, nb, n_threads)
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



cdef inline int _f16_check(Py_ssize_t n, Py_ssize_t P, Py_ssize_t G, Py_ssize_t R,
                           Py_ssize_t C) except -1:
    if not CKBN_HAVE_F16C:
        raise RuntimeError("float16 kernels: this kernel module was built without F16C")
    _check_dims(n, P, G, R, C)
    return 0


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
        status = _p_stats(<const f16_bits*> &h[0], P, G, R, C, &mean[0], &var[0], n_threads)
    _raise_status(status, "bn_stats_f16")


def bn_affine_f16(const unsigned short[::1] h,   # IN  float16 bits (P*G*R*C,)
                  Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
                  const float[::1] a,           # IN  (G*C,)
                  const float[::1] b,           # IN  (G*C,)
                  unsigned short[::1] out,      # OUT float16 bits (P*G*R*C,)
                  int n_threads, bint act=False, double slope=0.0, double hi=INFINITY,
                  int kind=ACT_PIECEWISE):
    """:func:`bn_affine` for float16 data, in float32 slice by slice."""
    _f16_check(h.shape[0], P, G, R, C)
    if out.shape[0] != h.shape[0] or a.shape[0] != G * C or b.shape[0] != G * C:
        raise ValueError("bn_affine_f16: bad sizes")
    cdef Act ac = _act_kind(act, slope, hi, kind)
    cdef const float* cf[MAX_COEF]
    cdef int status
    cf[0] = &a[0]
    cf[1] = &b[0]
    with nogil:
        status = _h_slices(H_AFFINE, &h[0], &h[0], P, G, R, C, cf, NULL, &ac, &out[0],
                           NULL, NULL, n_threads)
    _raise_status(status, "bn_affine_f16")


def bn_grad_sums_f16(const unsigned short[::1] dy,   # IN  float16 bits
                     const unsigned short[::1] h,    # IN  float16 bits
                     Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
                     const double[::1] mean,        # IN  (G*C,)
                     double[::1] sum_dy,            # OUT (G*C,)
                     double[::1] sum_dyxc,          # OUT (G*C,)
                     int n_threads,
                     const float[::1] za=None,      # IN  (G*C,) with an activation
                     const float[::1] zb=None,      # IN  (G*C,) with an activation
                     bint act=False, double slope=0.0, double hi=INFINITY,
                     int kind=ACT_PIECEWISE):
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
    cdef Act ac = _act_kind(act, slope, hi, kind)
    cdef const float* cf[MAX_COEF]
    cdef int status
    cf[3] = pa
    cf[4] = pb
    with nogil:
        status = _h_slices(H_SUMS, &dy[0], &h[0], P, G, R, C, cf, &mean[0], &ac, NULL,
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
                   bint act=False, double slope=0.0, double hi=INFINITY,
                   int kind=ACT_PIECEWISE):
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
    cdef Act ac = _act_kind(act, slope, hi, kind)
    cdef const float* cf[MAX_COEF]
    cdef int status
    cf[0] = &k1[0]
    cf[1] = &k2[0]
    cf[2] = &k3[0]
    cf[3] = pa
    cf[4] = pb
    with nogil:
        status = _h_slices(H_DX, &dy[0], &h[0], P, G, R, C, cf, NULL, &ac, &dx[0], NULL, NULL,
                           n_threads)
    _raise_status(status, "bn_grad_dx_f16")


def bn_forward_train_f16(const unsigned short[::1] h,   # IN  float16 bits
                         Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
                         const double[::1] scale,      # IN  (G*C,)
                         const double[::1] offset,     # IN  (G*C,)
                         double eps,
                         unsigned short[::1] out,      # OUT float16 bits
                         double[::1] mean,             # OUT (G*C,)
                         double[::1] var,              # OUT (G*C,) biased
                         int n_threads,
                         bint act=False, double slope=0.0, double hi=INFINITY,
                         int kind=ACT_PIECEWISE):
    """:func:`bn_forward_train` of float16 data (float32 slice by slice)."""
    _f16_check(h.shape[0], P, G, R, C)
    cdef Py_ssize_t n = G * C
    if out.shape[0] != h.shape[0] or scale.shape[0] != n or offset.shape[0] != n \
            or mean.shape[0] != n or var.shape[0] != n:
        raise ValueError("bn_forward_train_f16: bad sizes")
    cdef Act ac = _act_kind(act, slope, hi, kind)
    cdef int status
    with nogil:
        status = _fwd_train(<const f16_bits*> &h[0], P, G, R, C, &scale[0], &offset[0], eps, &ac, &out[0],
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
                         bint act=False, double slope=0.0, double hi=INFINITY,
                         int kind=ACT_PIECEWISE):
    """:func:`bn_forward_infer` of float16 data (float32 slice by slice)."""
    _f16_check(h.shape[0], P, G, R, C)
    cdef Py_ssize_t n = G * C
    if out.shape[0] != h.shape[0] or scale.shape[0] != n or offset.shape[0] != n \
            or mean.shape[0] != n or var.shape[0] != n:
        raise ValueError("bn_forward_infer_f16: bad sizes")
    cdef Act ac = _act_kind(act, slope, hi, kind)
    cdef int status
    with nogil:
        status = _fwd_infer(<const f16_bits*> &h[0], P, G, R, C, &scale[0], &offset[0], &mean[0], &var[0],
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
                    bint act=False, double slope=0.0, double hi=INFINITY,
                    int kind=ACT_PIECEWISE):
    """:func:`bn_backward` of float16 data (float32 slice by slice)."""
    _f16_check(h.shape[0], P, G, R, C)
    cdef Py_ssize_t n = G * C
    if dy.shape[0] != h.shape[0] or dx.shape[0] != h.shape[0] or scale.shape[0] != n \
            or mean.shape[0] != n or var.shape[0] != n or dscale.shape[0] != n \
            or doffset.shape[0] != n:
        raise ValueError("bn_backward_f16: bad sizes")
    if act and (offset is None or offset.shape[0] != n):
        raise ValueError("bn_backward_f16: an activation needs offset of size G*C")
    cdef Act ac = _act_kind(act, slope, hi, kind)
    cdef const double* po = &offset[0] if act else NULL
    cdef int status
    with nogil:
        status = _bwd(<const f16_bits*> &dy[0], <const f16_bits*> &h[0], P, G, R, C, &scale[0], po, &mean[0], &var[0], eps,
                        training, &ac, &dx[0], &dscale[0], &doffset[0], n_threads)
    _raise_status(status, "bn_backward_f16")

