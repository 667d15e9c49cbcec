# Reductions on the unit paths ("rows", "tiles", "lanes") and on
# channels-first planes in memory order ("planes"; the chunked channels-first
# paths are in _k_chunks.pxi): per-channel statistics (_stats) and backward
# sums (_grad_sums).  Two drivers, _red_core for the units and _pl_core for
# the planes, run their units in parallel, each writing its partial row; the
# partials are merged in unit order (the Chan merge for statistics, ordered
# sums for the backward).

cdef inline size_t _red_scratch(const Units* u, size_t item) noexcept nogil:
    """Bytes of one thread's scratch for _red_unit: two float64 rows and five
    rows of the data type, u.W lanes each, and SET_SPAN to place the latter
    (_half_page)."""
    return u.W * (2 * sizeof(double) + 5 * item) + SET_SPAN


cdef void _red_unit(int kind, const Act* act, const floating* x, const floating* dy,
                    const double* mean,          # IN  (G*C,) RED_SUMS
                    const floating* za,          # IN  (G*C,) RED_SUMS with act
                    const floating* zb,
                    const Units* u, Py_ssize_t k,
                    double* o1,                  # OUT partial table (G*n_rc, C)
                    double* o2,                  # OUT partial table (G*n_rc, C)
                    double* pn,                  # OUT counts (G*n_rc,)
                    char* scr) noexcept nogil:   # the thread's _red_scratch bytes
    """Unit k of a reduction.  RED_STATS writes each partial's mean and M2
    (from sums of d = x - K, K the unit's first value per channel); RED_SUMS
    its sum(e) and sum(e * (x - mean))."""
    cdef Unit t = _unit(u, k)
    cdef Py_ssize_t W = u.W, C = u.C
    cdef Py_ssize_t j, c, p, q, q1, nrows, tail, done = 0, n_el, row, off, ch
    cdef Py_ssize_t width = t.c1 - t.c0
    cdef const floating* first
    cdef double n, inv
    # The thread's scratch (_red_scratch): float64 sums s1, s2, then the
    # per-lane shift (the mean rounded to the data type for RED_SUMS), the
    # activation's coefficients and the block sums in the data type; u.W
    # lanes each, the last five half a page from the unit's first lane in x
    # (_half_page: out of the L1d sets the tile's rows of x share).
    cdef double* s1 = <double*> scr
    cdef double* s2 = s1 + u.W
    cdef floating* sh = <floating*> _half_page(
        <char*> (s2 + u.W), x + _row_offset(u, t.g, t.q0, t.c0) if u.tiled else x)
    cdef floating* la = sh + u.W
    cdef floating* lb = la + u.W
    cdef floating* b1 = lb + u.W
    cdef floating* b2 = b1 + u.W
    cdef bint lanes_act = kind == RED_SUMS and act.on
    cdef bint hint
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
    # s1, s2 are set by the first flush (_block_end, _block_close)
    for j in range(W):
        b1[j] = 0
        b2[j] = 0
    if u.tiled:
        # The tiles hint the next group's lines (_tile_pf) where the
        # reduction reads more than half of L3 (x, and dy for the sums).
        hint = ((2 if kind == RED_SUMS else 1) * u.P * u.G * u.R * u.C
                * <Py_ssize_t> sizeof(floating) > _L3 // 2)
        # Runs of rows inside one segment are C apart.
        q = t.q0
        while q < t.q1:
            q1 = q + (u.R - q % u.R)
            if q1 > t.q1:
                q1 = t.q1
            off = _row_offset(u, t.g, q, t.c0)
            done = _red_run(kind, act, x + off, dy + off, q1 - q, C, W, sh, la, lb,
                            b1, b2, s1, s2, done, hint)
            q = q1
        _block_close(b1, b2, s1, s2, W, done)
        n = <double> (t.q1 - t.q0)
    else:
        n_el = t.l1 - t.l0
        nrows = n_el // W
        tail = n_el - nrows * W
        for p in range(t.p0, t.p1):
            off = (p * u.G + t.g) * u.L + t.l0
            done = _red_run(kind, act, x + off, dy + off, nrows, W, W, sh, la, lb,
                            b1, b2, s1, s2, done, False)
            if tail > 0:
                off = off + nrows * W
                _red_one(kind, act, x + off, dy + off, tail, sh, la, lb, b1, b2)
                done = _block_end(b1, b2, s1, s2, W, done + 1)
        n = <double> ((t.p1 - t.p0) * (n_el // C))
        _block_close(b1, b2, s1, s2, W, done)
        _fold(s1, s2, W, C)
        width = C
    row = t.g * u.n_rc + t.rc
    inv = 1.0 / n
    for c in range(width):
        ch = t.c0 + c if u.tiled else c
        if kind == RED_STATS:
            _moments(<double> sh[c], s1[c], s2[c], inv, o1 + row * C + ch, o2 + row * C + ch)
        else:
            o1[row * C + ch] = s1[c]
            o2[row * C + ch] = _sum_exc(s1[c], s2[c], <double> sh[c], mean[t.g * C + ch])
    if t.c0 == 0:
        pn[row] = n


cdef int _red_core(int kind, const Act* act, const floating* x, const floating* dy,
                   const double* mean, const floating* za, const floating* zb,
                   Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
                   double* out1, double* out2, int n_threads) noexcept nogil:
    """A reduction over the units of (P, G, R, C) ("rows" and "tiles"),
    merged in unit order:
    RED_STATS  out1 = mean, out2 = biased variance (the Chan merge);
    RED_SUMS   out1 = sum(e), out2 = sum(e * (x - mean)) (ordered sums)."""
    cdef Units u = _make_units(P, G, R, C, MIN_LANES, True, sizeof(floating))
    cdef Py_ssize_t k, g, c, rc, row
    cdef int nt = _n_threads(&u, n_threads)
    cdef Py_ssize_t nrow = G * u.n_rc
    cdef double* part
    cdef double* p1
    cdef double* p2
    cdef double* pn
    cdef double a1, a2
    cdef Scratch sc
    if _scratch_new(&sc, nt, _red_scratch(&u, sizeof(floating))) != CKBN_OK:
        return CKBN_ERR_NOMEM
    part = <double*> malloc(sizeof(double) * nrow * (2 * C + 1))
    if part == NULL:
        free(sc.base)
        return CKBN_ERR_NOMEM
    p1 = part
    p2 = part + nrow * C
    pn = part + 2 * nrow * C
    if nt == 1:     # no OpenMP region: it costs about a microsecond
        for k in range(u.n_units):
            _red_unit(kind, act, x, dy, mean, za, zb, &u, k, p1, p2, pn, sc.base)
    else:
        for k in prange(u.n_units, nogil=True, num_threads=nt, schedule="static"):
            _red_unit(kind, act, x, dy, mean, za, zb, &u, k, p1, p2, pn, _scratch_mine(&sc))
    free(sc.base)
    for g in range(G):
        if kind == RED_STATS:
            _chan_merge(p1 + g * u.n_rc * C, p2 + g * u.n_rc * C, pn + g * u.n_rc, u.n_rc,
                        C, C, out1 + g * C, out2 + g * C)
            continue
        for c in range(C):
            a1 = 0.0
            a2 = 0.0
            for rc in range(u.n_rc):
                row = g * u.n_rc + rc
                a1 = a1 + p1[row * C + c]
                a2 = a2 + p2[row * C + c]
            out1[g * C + c] = a1
            out2[g * C + c] = a2
    free(part)
    return CKBN_OK


cdef extern from "ckbn_kernel_helpers.h" nogil:
    void ckbn_pl_red_f32(int term, const float* x, const float* d, Py_ssize_t np,
                         Py_ssize_t R, Py_ssize_t G, float* k, Py_ssize_t nk,
                         const float* za, const float* zb, float slope, float hi,
                         double* s1, double* s2) noexcept
    void ckbn_pl_red_f64(int term, const double* x, const double* d, Py_ssize_t np,
                         Py_ssize_t R, Py_ssize_t G, double* k, Py_ssize_t nk,
                         const double* za, const double* zb, double slope, double hi,
                         double* s1, double* s2) noexcept


cdef inline bint _pl_act(const Act* act) noexcept nogil:
    """Whether the planes path's backward sums take this activation: none,
    or the piecewise-linear family (swish's backward first forms e = dy *
    swish'(z), _act_e in _k_ops.pxi, then sums e without one)."""
    return not act.on or act.kind != ACT_SWISH


cdef void _pl_unit(int kind, const Act* act, const floating* x, const floating* dy,
                   const double* mean, const floating* za, const floating* zb,
                   Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t spu,
                   Py_ssize_t nc, Py_ssize_t gpu, Py_ssize_t q, floating* ks,
                   double* o1, double* o2, double* pn) noexcept nogil:
    """Unit q of the planes path (_pl_units: nc ranges of gpu channels per
    unit of spu samples): samples [k*spu, (k+1)*spu) of channels [g0, g1),
    k = q // nc, g0 = (q % nc) * gpu, into row k of the partial tables (o1,
    o2: G columns).  RED_STATS writes
    each channel's mean and M2 (sums of d = x - K, K the channel's first
    value in the unit, kept in row k of ks) and, for g0 == 0, the row's
    count; RED_SUMS sum(e) and sum(e * (x - mean)) (ks: the mean rounded to
    the data type; e = dy, or dy * act'(x * za + zb) with a piecewise-linear
    activation).  Each channel's planes are summed in sample order whatever
    the channel range, so the rows do not depend on how channels are split."""
    cdef Py_ssize_t k = q // nc, g0 = (q % nc) * gpu
    cdef Py_ssize_t g1 = g0 + gpu if g0 + gpu < G else G
    cdef Py_ssize_t p0 = k * spu, p1 = p0 + spu, g, p, off, gc = g1 - g0, npl, nrun, nk
    cdef double* s1 = o1 + k * G
    cdef double* s2 = o2 + k * G
    cdef floating sl = <floating> act.slope, hi = <floating> act.hi
    cdef int term = 0 if kind == RED_STATS else (2 if act.on else 1)
    cdef const floating* a = za + g0 if za != NULL else NULL
    cdef const floating* b = zb + g0 if zb != NULL else NULL
    cdef double n, inv
    if p1 > P:
        p1 = P
    off = p0 * G * R
    n = <double> ((p1 - p0) * R)
    for g in range(g0, g1):
        s1[g] = 0.0
        s2[g] = 0.0
    if kind == RED_STATS:
        ks = ks + k * G     # set by the first run's planes (nk)
        dy = x
    # all channels: the unit's samples are one run of planes; a channel
    # range: one run of gc planes per sample
    npl = (p1 - p0) * G if gc == G else gc
    nrun = 1 if gc == G else p1 - p0
    for p in range(p0, p0 + nrun):
        off = (p * G + g0) * R
        nk = gc if kind == RED_STATS and p == p0 else 0
        if floating is float:
            ckbn_pl_red_f32(term, x + off, dy + off, npl, R, gc, ks + g0, nk, a, b, sl,
                            hi, s1 + g0, s2 + g0)
        else:
            ckbn_pl_red_f64(term, x + off, dy + off, npl, R, gc, ks + g0, nk, a, b, sl,
                            hi, s1 + g0, s2 + g0)
    if kind == RED_STATS:
        inv = 1.0 / n
        for g in range(g0, g1):
            _moments(<double> ks[g], s1[g], s2[g], inv, s1 + g, s2 + g)
        if g0 == 0:
            pn[k] = n
        return
    for g in range(g0, g1):
        s2[g] = _sum_exc(s1[g], s2[g], <double> ks[g], mean[g])


cdef inline Py_ssize_t _pl_units(Py_ssize_t P, Py_ssize_t G, Py_ssize_t R,
                                 Py_ssize_t* spu, Py_ssize_t* nu,
                                 Py_ssize_t* gpu) noexcept nogil:
    """The units of the planes path, from the shape alone (so the sums do not
    depend on the thread count): nu units of spu samples (_unit_rows), each
    cut into ranges of gpu channels where the samples make fewer than
    TILE_MIN_UNITS units -- enough ranges to make that many, each of at
    least UNIT_TARGET elements (a batch of 2 samples of 2048 7x7 channels: 6
    units, not 2).  Returns the number of units."""
    cdef Py_ssize_t nc, cap
    spu[0] = _unit_rows(P, G * R)
    nu[0] = (P + spu[0] - 1) // spu[0]
    nc = (TILE_MIN_UNITS + nu[0] - 1) // nu[0]
    cap = (spu[0] if spu[0] < P else P) * G * R // UNIT_TARGET
    if nc > cap:
        nc = cap
    if nc > G:
        nc = G
    gpu[0] = G if nc <= 1 else (G + nc - 1) // nc
    return nu[0] * ((G + gpu[0] - 1) // gpu[0])


cdef int _pl_core(int kind, const Act* act, const floating* x, const floating* dy,
                  const double* mean, const floating* za, const floating* zb,
                  Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, double* out1, double* out2,
                  int n_threads) noexcept nogil:
    """The planes path (_pl_path in _k_plan.pxi): a reduction of
    channels-first (P, G, R) data read in memory order, in units of whole
    samples, and of channel ranges where the samples are too few for the
    threads (_pl_units), merged in order of the units of samples
    like _red_core's (the Chan merge for statistics, ordered sums for the
    backward; ``act``, ``za``, ``zb``: the backward sums' activation, see
    _pl_unit)."""
    cdef Py_ssize_t spu, nu, gpu, k, g, q
    cdef Py_ssize_t n_units = _pl_units(P, G, R, &spu, &nu, &gpu)
    cdef Py_ssize_t nc = n_units // nu
    cdef int nt = _threads(P * G * R, n_units, n_threads)
    cdef Py_ssize_t nk = nu * G if kind == RED_STATS else G
    cdef double* part = <double*> malloc(sizeof(double) * (2 * nu * G + nu)
                                         + sizeof(floating) * nk)
    cdef double* p1
    cdef double* p2
    cdef double* pn
    cdef floating* ks
    cdef double a1, a2
    if part == NULL:
        return CKBN_ERR_NOMEM
    p1 = part
    p2 = part + nu * G
    pn = part + 2 * nu * G
    ks = <floating*> (pn + nu)
    if kind == RED_SUMS:
        for g in range(G):
            ks[g] = <floating> mean[g]
    if nt == 1:     # no OpenMP region: it costs about a microsecond
        for q in range(n_units):
            _pl_unit(kind, act, x, dy, mean, za, zb, P, G, R, spu, nc, gpu, q, ks, p1, p2, pn)
    else:
        for q in prange(n_units, nogil=True, num_threads=nt, schedule="static"):
            _pl_unit(kind, act, x, dy, mean, za, zb, P, G, R, spu, nc, gpu, q, ks, p1, p2, pn)
    if kind == RED_STATS:
        _chan_merge(p1, p2, pn, nu, G, G, out1, out2)
    else:
        for g in range(G):
            a1 = 0.0
            a2 = 0.0
            for k in range(nu):
                a1 = a1 + p1[k * G + g]
                a2 = a2 + p2[k * G + g]
            out1[g] = a1
            out2[g] = a2
    free(part)
    return CKBN_OK


cdef int _stats(const floating* x, Py_ssize_t P, Py_ssize_t G, Py_ssize_t R,
                Py_ssize_t C, double* mean, double* var, int n_threads) noexcept nogil:
    """Per-channel mean and biased variance, on the path reduction_path names."""
    cdef Py_ssize_t g, r, n
    cdef double* lm
    cdef int status
    cdef Chunks ch
    cdef Pass ps
    cdef Act none = _act(False, 0.0, 0.0)
    if _pl_path(P, G, R, C):
        return _pl_core(RED_STATS, &none, x, x, NULL, NULL, NULL, P, G, R, mean, var,
                        n_threads)
    if _cf_plan(P, G, R, C, True, &ch):
        _pass_init(&ps, &none)
        ps.mean = mean
        ps.var = var
        return _cf_pass(CF_STATS, &ch, x, x, <floating*> NULL, &ps, n_threads)
    if not _expand(G, R, C):
        return _red_core(RED_STATS, &none, x, x, NULL, NULL, NULL, P, G, R, C, mean, var,
                         n_threads)
    # Lanes: every lane (g, r) holds P values; its (mean, M2) are merged into
    # channel g like any other parts.
    n = G * R
    lm = <double*> malloc(sizeof(double) * (2 * n + R))
    if lm == NULL:
        return CKBN_ERR_NOMEM
    status = _red_core(RED_STATS, &none, x, x, NULL, NULL, NULL, 1, 1, P, n, lm, lm + n,
                       n_threads)
    if status == CKBN_OK:
        for r in range(n):
            lm[n + r] = lm[n + r] * P           # biased variance -> M2
        for r in range(R):
            lm[2 * n + r] = <double> P
        for g in range(G):
            _chan_merge(lm + g * R, lm + n + g * R, lm + 2 * n, R, 1, 1, mean + g, var + g)
    free(lm)
    return status


cdef int _grad_sums(const floating* dy, const floating* x, const double* mean,
                    const floating* za, const floating* zb, const Act* act,
                    Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
                    double* sum_e, double* sum_exc, int n_threads) noexcept nogil:
    """Per-channel sum(e) and sum(e * (x - mean)), on the path reduction_path
    names (za, zb: the pre-activation's coefficients, read with act.on)."""
    cdef Py_ssize_t g, r, n
    cdef double* buf
    cdef floating* ez
    cdef double a1, a2
    cdef int status
    cdef Chunks ch
    cdef Pass ps
    if _pl_act(act) and _pl_path(P, G, R, C):
        return _pl_core(RED_SUMS, act, x, dy, mean, za, zb, P, G, R, sum_e, sum_exc,
                        n_threads)
    if not act.on and _cf_plan(P, G, R, C, True, &ch):
        _pass_init(&ps, act)
        ps.mean = <double*> mean
        ps.sum_e = sum_e
        ps.sum_exc = sum_exc
        return _cf_pass(CF_SUMS, &ch, x, dy, <floating*> NULL, &ps, n_threads)
    if not _expand(G, R, C):
        return _red_core(RED_SUMS, act, x, dy, mean, za, zb, P, G, R, C, sum_e, sum_exc,
                         n_threads)
    # Lanes: per-lane sums, added into channels in lane order.
    n = G * R
    buf = <double*> malloc(sizeof(double) * 3 * n)
    # The pre-activation's coefficients per lane, only with an activation (no
    # uninitialized buffer is handed down without one).
    ez = <floating*> malloc(sizeof(floating) * 2 * n) if act.on else NULL
    if buf == NULL or (act.on and ez == NULL):
        free(buf)
        free(ez)
        return CKBN_ERR_NOMEM
    for g in range(G):
        for r in range(R):
            buf[g * R + r] = mean[g]
    if act.on:
        _expand_into(za, G, R, ez)
        _expand_into(zb, G, R, ez + n)
    status = _red_core(RED_SUMS, act, x, dy, buf, ez, ez + n if act.on else NULL, 1, 1, P,
                       n, buf + n, buf + 2 * n, n_threads)
    if status == CKBN_OK:
        for g in range(G):
            a1 = 0.0
            a2 = 0.0
            for r in range(R):
                a1 = a1 + buf[n + g * R + r]
                a2 = a2 + buf[2 * n + g * R + r]
            sum_e[g] = a1
            sum_exc[g] = a2
    free(buf)
    free(ez)
    return status
