# Channels first, chunked ("chunks-lanes", "chunks-planes"): statistics and
# normalization from cache.
#
# Channels-first data (C == 1: NCHW and the like) whose channels are not too
# large is cut into chunks of whole channels (from the shape alone, _cf_plan).
# A chunk owns its channels over the whole batch, so no partial results are
# merged across chunks and the results do not depend on the thread count.
# The fused passes compute a chunk's statistics (or backward sums) and then
# write its output while the chunk is still in the core's L2 cache: x (and
# dy) are read from memory once instead of twice.  One driver, _cf_pass, runs
# one of five kinds of chunk work:
#
#   CF_STATS     x -> mean, var
#   CF_FORWARD   x -> mean, var, then out = act(x * a + b)
#   CF_SUMS      dy, x, mean -> sum_e, sum_exc
#   CF_BACKWARD  dy, x, mean, var -> sum_e (doffset), dscale, out = dx
#   CF_APPLY     an element-wise op with given coefficients (_ew_chunks)
#
# Small planes (R <= LANE_PLANE_MAX) are read as rows of the chunk's planes
# side by side, one row per sample (lane l of channel g0 + l // R); larger
# planes as rows of MIN_LANES lanes inside each plane.  The element-wise
# part writes planes shorter than CF_SEG_MIN through lanes too (coefficients
# expanded to the chunk's lanes), longer ones plane by plane with the
# channel's coefficients in registers (one load per input vector instead of
# one per input and per coefficient).
#
# Scratch per thread (_cf_scratch): first the reduction's float64 sums s1, s2
# and its lanes sh, b1, b2, or, reusing the same bytes, the element-wise op's
# MAX_COEF coefficient rows expanded to lanes; then (_cf_coefs) the chunk's
# own per-channel coefficients.

cdef enum:
    CF_STATS = 0
    CF_FORWARD = 1
    CF_SUMS = 2
    CF_BACKWARD = 3


cdef inline size_t _cf_lanes_bytes(size_t item) noexcept nogil:
    return 2 * CF_LANES * sizeof(double) + MAX_COEF * CF_LANES * item


cdef inline size_t _cf_scratch(size_t item) noexcept nogil:
    """Bytes of one thread's chunk scratch for data items of ``item`` bytes."""
    return _cf_lanes_bytes(item) + MAX_COEF * CF_LANES * item


cdef void _cf_reduce(int kind, const floating* x, const floating* dy, const Chunks* ch,
                     Py_ssize_t g0, Py_ssize_t g1,
                     const double* mean,            # IN  RED_SUMS
                     double* out1, double* out2,    # OUT per channel, as _red_core's
                     char* scr) noexcept nogil:
    """The reduction ``kind`` (see _red_core) of channels [g0, g1) over the
    whole batch: RED_STATS gives the mean and biased variance, RED_SUMS
    sum(dy) and sum(dy * (x - mean))."""
    cdef Py_ssize_t R = ch.R, S = ch.G * ch.R, L, W, g, r, p, done, nrows, tail, off
    cdef double* s1 = <double*> scr
    cdef double* s2
    cdef floating* sh
    cdef floating* b1
    cdef floating* b2
    cdef double n = <double> (ch.P * R)
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
        _block_close(b1, b2, s1, s2, L,
                     _red_run(kind, &none, x + g0 * R, dy + g0 * R, ch.P, S, L, sh, NULL,
                              NULL, b1, b2, s1, s2, 0, False))
        # Each channel's R lanes into its lane 0 (_fold_chans).
        _fold_chans(s1, s2, R, g1 - g0)
        for g in range(g0, g1):
            off = (g - g0) * R
            _cf_out(kind, sh[off], s1[off], s2[off], n, mean, g, out1, out2)
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
        done = 0
        for p in range(ch.P):
            off = p * S + g * R
            done = _red_run(kind, &none, x + off, dy + off, nrows, W, W, sh, NULL, NULL,
                            b1, b2, s1, s2, done, False)
            if tail > 0:
                off = off + nrows * W
                _red_one(kind, &none, x + off, dy + off, tail, sh, NULL, NULL, b1, b2)
                done = _block_end(b1, b2, s1, s2, W, done + 1)
        _block_close(b1, b2, s1, s2, W, done)
        _fold(s1, s2, W, 1)
        _cf_out(kind, sh[0], s1[0], s2[0], n, mean, g, out1, out2)


cdef inline void _cf_out(int kind, floating k, double S1, double S2, double n,
                         const double* mean, Py_ssize_t g, double* out1,
                         double* out2) noexcept nogil:
    """Channel g's results from the sums of its shifted values (shift k)."""
    if kind == RED_STATS:
        _moments(<double> k, S1, S2, 1.0 / n, out1 + g, out2 + g)
        out2[g] = out2[g] / n
    else:
        out1[g] = S1
        out2[g] = _sum_exc(S1, S2, <double> k, mean[g])


cdef void _cf_apply(int op, const Act* act, const floating* x, const floating* d,
                    floating* o, const Chunks* ch, Py_ssize_t g0, Py_ssize_t g1,
                    const floating** cf, char* scr) noexcept nogil:
    """The element-wise pass ``op`` on channels [g0, g1) (coefficients
    cf[i][g - g0]).  Where the pass may stream its output (ch.nt, _nt_out)
    and planes have a vector or more (no swish): each plane one stream with
    non-temporal stores (_ew_stream), as the planes path writes them."""
    cdef Py_ssize_t R = ch.R, S = ch.G * ch.R, L = (g1 - g0) * R, g, p, off
    cdef int nc = _n_coef(op, act.on), q
    cdef floating* lanes = <floating*> scr
    cdef const floating* w[MAX_COEF]
    cdef floating v[MAX_COEF]
    cdef floating s = <floating> act.slope, h = <floating> act.hi
    if (ch.nt and _act_mode(act) != AM_SWISH
            and R * <Py_ssize_t> sizeof(floating) >= CKBN_VBYTES):
        for p in range(ch.P):
            for g in range(g0, g1):
                for q in range(nc):
                    w[q] = cf[q] + (g - g0)
                off = p * S + g * R
                _ew_stream(op, act, x + off, d + off, o + off, w, 0, R, R, 1, True)
        ckbn_nt_fence()
        return
    if ch.lanes and R < CF_SEG_MIN:
        for q in range(nc):
            _expand_into(cf[q], g1 - g0, R, lanes + q * L)
            w[q] = lanes + q * L
        for p in range(ch.P):
            off = p * S + g0 * R
            _ew_run(op, _act_mode(act), x + off, d + off, o + off, L, w, s, h)
        return
    for p in range(ch.P):
        for g in range(g0, g1):
            for q in range(nc):
                v[q] = cf[q][g - g0]
            off = p * S + g * R
            _ew_seg(op, _act_mode(act), x + off, d + off, o + off, R, v, s, h)


cdef void _cf_chunk(int what, const Chunks* ch, Py_ssize_t j, const floating* x,
                    const floating* dy, floating* out, const Pass* ps,
                    char* scr) noexcept nogil:
    """Chunk j of the pass ``what``."""
    cdef Py_ssize_t g0 = j * ch.k, g1 = g0 + ch.k, k, c
    cdef floating* kk
    cdef const floating* cf[MAX_COEF]
    if g1 > ch.G:
        g1 = ch.G
    k = g1 - g0
    for c in range(MAX_COEF):
        cf[c] = NULL
    kk = <floating*> (scr + _cf_lanes_bytes(sizeof(floating)))
    if what == CF_STATS or what == CF_FORWARD:
        _cf_reduce(RED_STATS, x, x, ch, g0, g1, NULL, ps.mean, ps.var, scr)
        if what == CF_STATS:
            return
        _norm_coefs(ps.scale + g0, ps.offset + g0, ps.mean + g0, ps.var + g0, ps.eps, k,
                    kk, kk + k)
        for c in range(2):
            cf[c] = kk + c * k
        _cf_apply(OP_AFFINE, ps.act, x, x, out, ch, g0, g1, cf, scr)
        return
    _cf_reduce(RED_SUMS, x, dy, ch, g0, g1, ps.mean, ps.sum_e, ps.sum_exc, scr)
    if what == CF_SUMS:
        return
    _bwd_coefs(ps.scale + g0, ps.mean + g0, ps.var + g0, ps.eps, ps.training,
               <double> (ch.P * ch.R), ps.sum_e + g0, ps.sum_exc + g0, kk, k)
    for c in range(3):
        cf[c] = kk + c * k
    _cf_apply(OP_DX, ps.act, x, dy, out, ch, g0, g1, cf, scr)


cdef int _cf_pass(int what, const Chunks* ch, const floating* x, const floating* dy,
                  floating* out, const Pass* ps, int n_threads) noexcept nogil:
    """Run ``what`` (see the top of this file) over every chunk."""
    cdef Py_ssize_t j
    cdef int nt = _threads(ch.P * ch.G * ch.R, ch.n, n_threads)
    cdef Scratch sc
    cdef Chunks c = ch[0]
    c.nt = what != CF_STATS and what != CF_SUMS and _nt_out(
        out, ch.P * ch.G * ch.R * <Py_ssize_t> sizeof(floating))
    if _scratch_new(&sc, nt, _cf_scratch(sizeof(floating))) != CKBN_OK:
        return CKBN_ERR_NOMEM
    if nt == 1:     # no OpenMP region: it costs about a microsecond
        for j in range(c.n):
            _cf_chunk(what, &c, j, x, dy, out, ps, sc.base)
    else:
        with parallel(num_threads=nt):
            for j in prange(c.n, schedule="static"):
                _cf_chunk(what, &c, j, x, dy, out, ps, _scratch_mine(&sc))
    free(sc.base)
    return CKBN_OK


cdef void _cf_apply_chunk(int op, const Act* act, const floating* x, const floating* d,
                          floating* o, const floating** cf, const Chunks* ch, Py_ssize_t j,
                          char* scr) noexcept nogil:
    """Chunk j of an element-wise op with given coefficients cf[i][g]."""
    cdef Py_ssize_t g0 = j * ch.k, g1 = g0 + ch.k
    cdef int q
    cdef const floating* ccf[MAX_COEF]
    if g1 > ch.G:
        g1 = ch.G
    for q in range(_n_coef(op, act.on)):
        ccf[q] = cf[q] + g0
    _cf_apply(op, act, x, d, o, ch, g0, g1, ccf, scr)


cdef int _ew_chunks(int op, const Act* act, const floating* x, const floating* d,
                    floating* o, const floating** cf, const Chunks* ch,
                    int n_threads) noexcept nogil:
    """The element-wise pass ``op`` chunk by chunk: each chunk's coefficients
    are expanded to its own lanes only."""
    cdef Py_ssize_t j
    cdef int nt = _threads(ch.P * ch.G * ch.R, ch.n, n_threads)
    cdef Scratch sc
    cdef Chunks c = ch[0]
    c.nt = _nt_out(o, ch.P * ch.G * ch.R * <Py_ssize_t> sizeof(floating))
    if _scratch_new(&sc, nt, _cf_scratch(sizeof(floating))) != CKBN_OK:
        return CKBN_ERR_NOMEM
    if nt == 1:     # no OpenMP region: it costs about a microsecond
        for j in range(c.n):
            _cf_apply_chunk(op, act, x, d, o, cf, &c, j, sc.base)
    else:
        with parallel(num_threads=nt):
            for j in prange(c.n, schedule="static"):
                _cf_apply_chunk(op, act, x, d, o, cf, &c, j, _scratch_mine(&sc))
    free(sc.base)
    return CKBN_OK
