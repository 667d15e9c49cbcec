# Element-wise passes: y = act(x * a + b) (OP_AFFINE) and the backward's dx
# (OP_DX), on the path of the shape:
#   planes     channels first (C == 1) with planes of at least one vector
#              (R * item >= CKBN_VBYTES, up to UNIT_TARGET elements): units
#              of whole planes in memory order, each unit one
#              stream of aligned vector stores with the coefficients in
#              registers (ckbn_cf_ew_*, ckbn_kernel_helpers.h), non-temporal
#              for outputs of _nt_bytes and more in memory already there
#              (_nt_out; no swish);
#   chunks     other channels-first small planes, chunk by chunk (_ew_chunks,
#              in _k_chunks.pxi), each chunk's coefficients expanded to lanes;
#   lanes      small channels-first planes, too few channels to chunk: the
#              coefficients expanded once to G*R lanes, then the units;
#   units      rows of W = C*k lanes (_ew_lanes: whole 64-byte lines of at
#              least EW_ROW_BYTES for narrow channels, C from MIN_LANES_EW
#              lanes on; coefficients repeated to W lanes and a head in the
#              thread's scratch, rows written from the output's first 64-byte
#              boundary; used in place for wide channels), channels-first
#              segments as scalar loops, short segments of several groups in
#              memory order; outputs of _nt_bytes and more (in memory
#              already there, _nt_out) with rows of at most EW_NT_ROW_MAX
#              bytes: each row piece into scratch, then streamed with
#              non-temporal stores (_ew_run_nt); with wider
#              rows (and no swish): EW_ROW_GROUP rows at a time, walked
#              across a line or a piece at a time (_ew_rows_rg).
#
# Why planes in memory order: the chunks walk the P samples of a chunk's
# channels G*R elements apart (64x2048x7x7: 64 runs of 3.9 KB, 400 KB
# apart), which the AMD EPYC Zen 4 (1 MiB L2) took 3.3x the time of a copy
# for; the memory-order stream of the same data runs at the copy's speed
# (benchmarks/RESULTS.md, issue 18 session 7).  The rule is from the vector
# width only (one plane boundary per vector at most), so it holds on every
# CPU: the stream is the traffic of a copy, with one multiply-add a lane and
# one blend a plane.

cdef extern from "ckbn_kernel_helpers.h" nogil:
    void ckbn_cf_ew_f32(int mode, const float* x, const float* d, float* o,
                        Py_ssize_t e0, Py_ssize_t e1, Py_ssize_t R, Py_ssize_t G,
                        const float** cf, float slope, float hi, int nt) noexcept
    void ckbn_cf_ew_f64(int mode, const double* x, const double* d, double* o,
                        Py_ssize_t e0, Py_ssize_t e1, Py_ssize_t R, Py_ssize_t G,
                        const double** cf, double slope, double hi, int nt) noexcept
    void ckbn_nt_copy(void* dst, const void* src, size_t n) noexcept
    void ckbn_nt_fence() noexcept

cdef enum:
    EW_PAD = 16     # lanes past W in a unit's coefficient rows (a row's head)
    EW_ROW_BYTES = 256   # fewest bytes of a channels-last row (below MIN_LANES_EW)
    EW_ROW_MAX = 2048    # most bytes of such a row (else MIN_LANES_EW's rule)
    EW_NT_PIECE = 1024   # bytes of a row piece computed in scratch, then streamed


# Outputs of at least _nt_bytes are written with non-temporal stores (rows
# of the units, y and dx, no swish): each row piece of EW_NT_PIECE bytes is computed
# by the same loop into the thread's scratch (so the bits are those of the
# plain path), then streamed to the output (ckbn_nt_copy).  The cause of
# channels-last inference's 1.2-1.6x a copy (issue 18): neither 4K aliasing
# nor the coefficient reloads -- in benchmarks/results/zen4-issue18-s8/
# probe_ew.c the offset of the coefficient rows mod 4096 moved rows of
# 64-2048 lanes by no more than the noise, and coefficients held in
# registers (64 lanes) ran at 1.02x a copy against 0.96-1.00x reloaded --
# but the stores: the loop's and the copy's both read each output line
# before writing it, and the loop's extra loads keep fewer of those reads in
# flight; non-temporal stores skip the read (AMD EPYC Zen 4, 25.7 MB,
# float32, 1 thread, busy: 0.75-0.82x the copy for rows of 64-1024 lanes).
# Below about L3's half the output is read again from L3 and the stores
# must stay plain (3.1 MB: 1.36-1.74x a copy with non-temporal stores).
# Rows (and coefficient rows) of more than EW_NT_ROW_MAX bytes keep the
# plain stores: 64x7x7x2048 NHWC (8 KiB rows) took 0.85-1.25x the old time
# in four busy runs, against 0.58-0.61x for C=64 and 0.67-0.77x for C=1024
# (float32, 1 thread, load 4.0-4.3, benchmarks/results/zen4-issue18-s8/qt.py).
# The backward's dx pass takes the same rows: measured on a quiet machine
# (session 8, 14:25, the build with plain dx stores side by side, same bits),
# the whole backward took 0.84-0.91x its time on 32x56x56x64, 32x28x28x256
# and 8x112x112x64 NHWC with 1 thread and 0.85-0.89x with 2, the forward
# (unchanged code) 0.98-1.04x.  (Two earlier busy runs had shown 1.16-1.18x
# for 32x28x28x256, with the same bias on the unchanged statistics pass.)
# The threshold, _nt_bytes (_k_common.pxi), is half of L3 as this CPU
# reports it: 16 MiB on the Zen 4, where it was measured.
cdef enum:
    EW_NT_ROW_MAX = 4096     # most bytes of a unit's rows (W) written so


# Wider rows of such outputs (no activation) are written EW_ROW_GROUP rows
# at a time, one 64-byte line of lanes down the group (_ew_rows_rg), so
# each line of the coefficient rows is loaded once per group: two or three
# rows of 8 KiB for C = 2048 float32 do not stay in L1 beside the streams,
# and row by row were read again from L2 for every row.  The probe
# (benchmarks/results/zen4-issue18-s13/ewide.c, AMD EPYC Zen 4, float32, 1
# thread, 25.7 MB in DRAM): y = x*a + b at 1.05-1.10x a copy for C = 2048 and
# 4096 in groups of 4 rows, 1.36-1.57x row by row (C = 1280: 1.26x against
# 1.32x); groups of 2 and 8 rows did worse; narrow rows (2 KiB and less) and
# data that L3 holds did worse in groups.  In the kernels, 64x7x7x2048 NHWC:
# inference 0.88-0.97x, the backward 0.76-0.86x the time row by row
# (float64: 0.69x and 0.93x), the same bits.  With ReLU, ReLU6 or leaky ReLU
# the group walks pieces of EW_RG_PIECE bytes through the row loop (the
# probe: 64-lane pieces 1.18-1.21x a copy): the backward through ReLU
# 0.89-0.90x the time, inference with it 0.99-1.00x (avx2 variant: 0.95x,
# 0.92x).  Swish keeps its row loop.  The backward's dx groups (no
# activation) write with non-temporal stores (ckbn_dx_rg_*; session 14:
# the dx pass 0.79-0.85x the time), the affine's with plain ones below L3's
# size and non-temporal ones from it (EW_RG_STREAM; session 16).
cdef enum:
    # _ew_part's row-group modes (_ew_core's rule): off, plain stores for the
    # affine, non-temporal stores for the affine too (outputs of L3's size).
    EW_RG_OFF = 0
    EW_RG_PLAIN = 1
    EW_RG_STREAM = 2
    EW_ROW_GROUP = 4
    EW_RG_PIECE = 256    # bytes of a row a group's activation pass takes at a time


cdef inline Py_ssize_t _ew_lanes(Py_ssize_t C, size_t item) noexcept nogil:
    """The min_lanes of the element-wise units (_make_units), from which rows
    have W = C*k lanes.  Channels narrower than MIN_LANES_EW: the fewest
    whole channels that fill whole 64-byte lines and at least EW_ROW_BYTES,
    so that every row of a unit starts on a line boundary after its one head
    and the coefficient rows the loop reloads stay small (32x56x56x64 NHWC:
    rows of 64 lanes, 256 bytes, not 256 lanes; on the AMD EPYC Zen 4 the
    pass took 1.2-1.4x the time of a copy with 1 KiB coefficient rows and
    1.04x with 256-byte rows; the session-8 probe found no 4K aliasing
    between those reloads and the stores, see _nt_bytes).  Rows that would
    exceed EW_ROW_MAX bytes keep MIN_LANES_EW."""
    cdef Py_ssize_t b = C * <Py_ssize_t> item, k = 1, w
    if C >= MIN_LANES_EW:
        return MIN_LANES_EW
    while (b * k) % 64 != 0:
        k += 1
    w = b * k
    if w < EW_ROW_BYTES:
        w = w * ((EW_ROW_BYTES + w - 1) // w)
    if w > EW_ROW_MAX:
        return MIN_LANES_EW
    return w // <Py_ssize_t> item


cdef inline Py_ssize_t _ew_row(const Units* u) noexcept nogil:
    """Lanes of a unit's coefficient rows: W, then whole channels past it
    for a head of up to EW_PAD lanes."""
    return u.W + u.C * ((EW_PAD + u.C - 1) // u.C)


cdef inline bint _ew_planes(const Act* act, Py_ssize_t R, Py_ssize_t C,
                            size_t item) noexcept nogil:
    """Whether channels-first planes of R elements are written as one stream
    in memory order (ckbn_cf_ew_*): at least one vector per plane."""
    return C == 1 and R * <Py_ssize_t> item >= CKBN_VBYTES and R <= UNIT_TARGET


cdef inline void _ew_stream(int op, const Act* act, const floating* x,
                            const floating* d, floating* o, const floating** cf,
                            Py_ssize_t e0, Py_ssize_t e1, Py_ssize_t R,
                            Py_ssize_t G, bint nt) noexcept nogil:
    """Elements [e0, e1) of channels-first planes (plane s: channel s % G);
    ``nt``: the whole vectors with non-temporal stores."""
    cdef int am = _act_mode(act)
    cdef int mode = 4 + op if am == AM_SWISH else 2 * op + (1 if am == AM_PIECEWISE else 0)
    if floating is float:
        ckbn_cf_ew_f32(mode, x, d, o, e0, e1, R, G, cf, <float> act.slope,
                       <float> act.hi, nt)
    else:
        ckbn_cf_ew_f64(mode, x, d, o, e0, e1, R, G, cf, act.slope, act.hi, nt)


cdef inline void _ew_run_nt(int op, int am, const floating* x, const floating* d,
                            floating* o, Py_ssize_t n, const floating** w, floating s,
                            floating hi, floating* tmp) noexcept nogil:
    """_ew_run1 of n elements, EW_NT_PIECE bytes at a time into tmp, each
    piece then streamed to o (ckbn_nt_copy): the same loop, so the same bits.
    The pieces after the first start on o's 64-byte boundaries (a line is
    written by one piece only)."""
    cdef Py_ssize_t i = 0, m, piece = EW_NT_PIECE // sizeof(floating)
    cdef Py_ssize_t first = piece - _head(o, n, sizeof(floating))
    cdef const floating* ws[MAX_COEF]
    cdef int q, nc = _n_coef(op, am)
    while i < n:
        m = first if i == 0 else piece
        if m > n - i:
            m = n - i
        for q in range(nc):
            ws[q] = w[q] + i
        _ew_run1(op, am, x + i, d + i, tmp, m, ws, s, hi)
        ckbn_nt_copy(o + i, tmp, m * sizeof(floating))
        i += m


cdef inline void _ew_rows_rg(int op, int am, const floating* x, const floating* d,
                             floating* o, Py_ssize_t n_el, Py_ssize_t W,
                             const floating** w, floating s, floating hi,
                             bint stream) noexcept nogil:
    """n_el elements, whole rows of W lanes (a unit's rows are whole where
    W == C; W * item a multiple of 64, so every row has the same head), as
    _ew_run writes them row by row: each row's head up to the output's
    64-byte boundary (_ew_run1), then groups of EW_ROW_GROUP rows walked
    across: without an activation a 64-byte line of lanes at a time
    (ckbn_affine_rg_* / ckbn_dx_rg_*: the same expressions), with the
    piecewise-linear one EW_RG_PIECE bytes at a time through _ew_run1.  The
    same bits as row by row.  ``stream``: the affine's lines go out with
    non-temporal stores (the dx lines always do; ckbn_kernel_helpers.h)."""
    cdef Py_ssize_t k = _head(o, W, sizeof(floating))
    cdef Py_ssize_t nrow = n_el // W, i = 0, g, j, c, m, off
    cdef Py_ssize_t piece = EW_RG_PIECE // <Py_ssize_t> sizeof(floating)
    cdef const floating* ws[MAX_COEF]
    cdef int q, nc = _n_coef(op, am)
    while i < nrow:
        g = nrow - i if nrow - i < EW_ROW_GROUP else EW_ROW_GROUP
        if k > 0:
            for j in range(i, i + g):
                _ew_run1(op, am, x + j * W, d + j * W, o + j * W, k, w, s, hi)
        if am != AM_NONE:
            c = k
            while c < W:
                m = W - c if W - c < piece else piece
                for q in range(nc):
                    ws[q] = w[q] + c
                for j in range(i, i + g):
                    off = j * W + c
                    _ew_run1(op, am, x + off, d + off, o + off, m, ws, s, hi)
                c += m
            i += g
            continue
        j = i * W + k
        if floating is float:
            if op == OP_AFFINE:
                ckbn_affine_rg_f32(x + j, o + j, W, g, W - k, w[0] + k, w[1] + k, stream)
            else:
                ckbn_dx_rg_f32(d + j, x + j, o + j, W, g, W - k, w[0] + k, w[1] + k,
                               w[2] + k)
        else:
            if op == OP_AFFINE:
                ckbn_affine_rg_f64(x + j, o + j, W, g, W - k, w[0] + k, w[1] + k, stream)
            else:
                ckbn_dx_rg_f64(d + j, x + j, o + j, W, g, W - k, w[0] + k, w[1] + k,
                               w[2] + k)
        i += g


cdef void _ew_part(int op, const Act* act, const floating* x, const floating* d,
                   floating* o, const Units* u, Unit t, const floating** cf,
                   floating* buf, floating* tmp, int rg) noexcept nogil:
    """One unit of the units path; ``tmp`` (EW_NT_PIECE bytes, 64-byte
    aligned) or NULL: the rows go through it with non-temporal stores;
    ``rg``: wide rows in row groups (_ew_rows_rg, _ew_core's rule), EW_RG_OFF,
    EW_RG_PLAIN or EW_RG_STREAM (the affine's lines non-temporal too)."""
    cdef Py_ssize_t W = u.W, C = u.C, p, i, n_el, off, h
    cdef int nc = _n_coef(op, act.on), q
    cdef const floating* w[MAX_COEF]
    cdef const floating* ws[MAX_COEF]
    cdef floating v[MAX_COEF]
    cdef floating s = <floating> act.slope, hi = <floating> act.hi
    cdef int am = _act_mode(act)
    n_el = t.l1 - t.l0
    if C == 1:
        for q in range(nc):
            v[q] = cf[q][t.g]
        for p in range(t.p0, t.p1):
            off = (p * u.G + t.g) * u.L + t.l0
            _ew_seg(op, am, x + off, d + off, o + off, n_el, v, s, hi)
        return
    if W == C and C >= MIN_LANES_EW:
        # Rows of wide channels: the coefficients are used in place, and a
        # row's first 64-byte boundary is found row by row (_ew_run).  (The
        # repeated rows below were no faster for 256 channels: 32x28x28x256
        # NHWC, 80 rounds, 1.03 of this time, AMD EPYC Zen 4.)
        for q in range(nc):
            w[q] = cf[q] + t.g * C
        for p in range(t.p0, t.p1):
            off = (p * u.G + t.g) * u.L + t.l0
            i = 0
            if tmp != NULL:
                while i < n_el:
                    _ew_run_nt(op, am, x + off + i, d + off + i, o + off + i,
                               W if i + W <= n_el else n_el - i, w, s, hi, tmp)
                    i += W
                continue
            if rg:
                _ew_rows_rg(op, am, x + off, d + off, o + off, n_el, W, w, s, hi,
                            rg == EW_RG_STREAM)
                continue
            while i + W <= n_el:
                _ew_run(op, am, x + off + i, d + off + i, o + off + i, W, w, s, hi)
                i += W
            if i < n_el:
                _ew_run(op, am, x + off + i, d + off + i, o + off + i, n_el - i, w, s,
                        hi)
        return
    # Rows of W = C*k lanes (k >= 1): the coefficients repeated past W
    # (_ew_row).  One head up to the output's first 64-byte boundary, then
    # rows of W from there, each one loop with the coefficients shifted by
    # the head (lane h + j of the repeated row is channel (h + j) % C): the
    # rows start on 64-byte boundaries where W*item is a multiple of 64, with
    # no per-row split (which cost 4-12 % on rows of 256 lanes, AMD EPYC).
    for q in range(nc):
        _repeat(cf[q] + t.g * C, C, _ew_row(u), buf + q * _ew_row(u))
        w[q] = buf + q * _ew_row(u)
    for p in range(t.p0, t.p1):
        off = (p * u.G + t.g) * u.L + t.l0
        h = _head(o + off, n_el, sizeof(floating))
        if h > 0:
            _ew_run1(op, am, x + off, d + off, o + off, h, w, s, hi)
        for q in range(nc):
            ws[q] = w[q] + h
        i = h
        if tmp != NULL:
            while i + W <= n_el:
                _ew_run_nt(op, am, x + off + i, d + off + i, o + off + i, W, ws, s, hi,
                           tmp)
                i += W
        while i + W <= n_el:
            _ew_run1(op, am, x + off + i, d + off + i, o + off + i, W, ws, s, hi)
            i += W
        if i < n_el:
            _ew_run1(op, am, x + off + i, d + off + i, o + off + i, n_el - i, ws, s, hi)


cdef void _ew_unit(int op, const Act* act, const floating* x, const floating* d,
                   floating* o, const Units* u, Py_ssize_t k, const floating** cf,
                   floating* buf, floating* tmp, int rg, bint nt_planes) noexcept nogil:
    cdef Py_ssize_t s
    if u.seg and _ew_planes(act, u.R, u.C, sizeof(floating)):
        # whole planes k*pc .. in memory order, one stream
        _ew_stream(op, act, x, d, o, cf, k * u.pc * u.L, _seg_end(u, k) * u.L, u.R, u.G,
                   nt_planes)
        if nt_planes:
            ckbn_nt_fence()
    elif u.seg:
        for s in range(k * u.pc, _seg_end(u, k)):
            _ew_part(op, act, x, d, o, u, _seg_unit(u, s), cf, buf, NULL, EW_RG_OFF)
    else:
        _ew_part(op, act, x, d, o, u, _unit(u, k), cf, buf, tmp, rg)
        if tmp != NULL or rg:
            ckbn_nt_fence()


cdef inline char* _ew_tmp(char* mine, size_t cbytes, bint use_nt) noexcept nogil:
    """The 64-byte aligned row piece of a thread's scratch (NULL: plain stores)."""
    cdef char* p
    if not use_nt:
        return NULL
    p = mine + cbytes
    return p + (64 - (<size_t> p) % 64) % 64


cdef int _ew_core(int op, const Act* act, const floating* x, const floating* d,
                  floating* o, const floating** cf, Py_ssize_t P, Py_ssize_t G,
                  Py_ssize_t R, Py_ssize_t C, bint rev, int n_threads) noexcept nogil:
    """The element-wise pass ``op`` over the units of the (P, G, R, C) view.
    ``d`` is dy for OP_DX (for OP_AFFINE pass x: it is not read).  ``rev``:
    units in reverse order, for a pass that follows a reduction over the
    same data (training forward, backward): the last units it read are still
    in L2/L3."""
    cdef Units u = _make_units(P, G, R, C, _ew_lanes(C, sizeof(floating)), False,
                               sizeof(floating))
    cdef Py_ssize_t k
    cdef int nt = _n_threads(&u, n_threads)
    cdef Scratch sc
    cdef size_t cbytes = (sizeof(floating) * MAX_COEF * _ew_row(&u) + 63) // 64 * 64
    # non-temporal rows (_nt_bytes): a piece of scratch past the
    # coefficient rows, 64-byte aligned (malloc's base is not)
    cdef Py_ssize_t nbytes = P * G * R * C * <Py_ssize_t> sizeof(floating)
    # _nt_out: the output large enough to stream, in memory already there
    cdef bint stream = _act_mode(act) != AM_SWISH and _nt_out(o, nbytes)
    cdef bint use_nt = (stream and not u.seg
                        and u.W * <Py_ssize_t> sizeof(floating) <= EW_NT_ROW_MAX)
    # channels-first planes in one stream (ckbn_cf_ew_*): whole vectors
    # non-temporal
    cdef bint nt_planes = stream and u.seg and _ew_planes(act, R, C, sizeof(floating))
    # outputs of _nt_bytes and more with rows of more than EW_NT_ROW_MAX
    # bytes (W == C), no activation or a piecewise-linear one: row groups
    # (_ew_rows_rg), streamed from L3's size on where the output may be
    cdef int use_rg = EW_RG_OFF
    if (CKBN_HAVE_EW_RG and not u.seg and _act_mode(act) != AM_SWISH and u.W == C
            and C * <Py_ssize_t> sizeof(floating) > EW_NT_ROW_MAX
            and (C * <Py_ssize_t> sizeof(floating)) % 64 == 0 and nbytes >= _nt_bytes):
        use_rg = EW_RG_STREAM if stream and nbytes >= _L3 else EW_RG_PLAIN
    if _scratch_new(&sc, nt, cbytes + (EW_NT_PIECE + 64 if use_nt else 0)) != CKBN_OK:
        return CKBN_ERR_NOMEM
    if nt == 1:     # no OpenMP region: it costs about a microsecond
        for k in range(u.n_units):
            _ew_unit(op, act, x, d, o, &u, u.n_units - 1 - k if rev else k, cf,
                     <floating*> sc.base, <floating*> _ew_tmp(sc.base, cbytes, use_nt),
                     use_rg, nt_planes)
    else:
        with parallel(num_threads=nt):
            for k in prange(u.n_units, schedule="static"):
                _ew_unit(op, act, x, d, o, &u, u.n_units - 1 - k if rev else k, cf,
                         <floating*> _scratch_mine(&sc),
                         <floating*> _ew_tmp(_scratch_mine(&sc), cbytes, use_nt), use_rg,
                         nt_planes)
    free(sc.base)
    return CKBN_OK


cdef enum:
    # The paths of the element-wise passes (_ew_path; the top of this file).
    EW_UNITS = 0    # the units of the (P, G, R, C) view, planes in memory order included
    EW_CHUNKS = 1   # chunk by chunk (_ew_chunks)
    EW_LANES = 2    # the coefficients expanded to G*R lanes, then the units


cdef inline int _ew_path(const Act* act, Py_ssize_t P, Py_ssize_t G, Py_ssize_t R,
                         Py_ssize_t C, size_t item, Chunks* ch) noexcept nogil:
    """The path of an element-wise pass on (P, G, R, C) (``ch`` filled for
    EW_CHUNKS): _ew takes it, and work_plan counts its units."""
    if G > 1 and _ew_planes(act, R, C, item):
        return EW_UNITS     # whole planes in memory order (_make_units' segment mode)
    if _cf_plan(P, G, R, C, False, ch) and ch.lanes:
        return EW_CHUNKS
    if not _expand(G, R, C):
        return EW_UNITS
    return EW_LANES


cdef int _ew(int op, const Act* act, const floating* x, const floating* d,
             floating* o, const floating** cf, Py_ssize_t P, Py_ssize_t G,
             Py_ssize_t R, Py_ssize_t C, bint rev, int n_threads) noexcept nogil:
    """The element-wise pass ``op`` on the path of the shape (_ew_path):
    planes in memory order or other units, chunks, or lane expansion for small
    channels-first planes."""
    cdef int nc = _n_coef(op, act.on), q, status
    cdef floating* e
    cdef const floating* ecf[MAX_COEF]
    cdef Chunks ch
    cdef int path = _ew_path(act, P, G, R, C, sizeof(floating), &ch)
    if path == EW_UNITS:
        return _ew_core(op, act, x, d, o, cf, P, G, R, C, rev, n_threads)
    if path == EW_CHUNKS:
        return _ew_chunks(op, act, x, d, o, cf, &ch, n_threads)
    e = <floating*> malloc(sizeof(floating) * nc * G * R)
    if e == NULL:
        return CKBN_ERR_NOMEM
    for q in range(nc):
        _expand_into(cf[q], G, R, e + q * G * R)
        ecf[q] = e + q * G * R
    status = _ew_core(op, act, x, d, o, ecf, 1, 1, P, G * R, rev, n_threads)
    free(e)
    return status


cdef inline int _affine(const floating* x, const floating* a, const floating* b,
                        floating* y, Py_ssize_t P, Py_ssize_t G, Py_ssize_t R,
                        Py_ssize_t C, const Act* act, bint rev, int n_threads) noexcept nogil:
    """y = act(x * a[ch] + b[ch])."""
    cdef const floating* cf[2]
    cf[0] = a
    cf[1] = b
    return _ew(OP_AFFINE, act, x, x, y, cf, P, G, R, C, rev, n_threads)


cdef inline int _grad_dx(const floating* dy, const floating* x, const floating* k1,
                         const floating* k2, const floating* k3, const floating* za,
                         const floating* zb, floating* dx, Py_ssize_t P, Py_ssize_t G,
                         Py_ssize_t R, Py_ssize_t C, const Act* act, bint rev,
                         int n_threads) noexcept nogil:
    """dx = (dy * m) * k1[ch] + (x * k2[ch] + k3[ch]), m = act'(x * za + zb)."""
    cdef const floating* cf[MAX_COEF]
    cf[0] = k1
    cf[1] = k2
    cf[2] = k3
    cf[3] = za
    cf[4] = zb
    return _ew(OP_DX, act, x, dy, dx, cf, P, G, R, C, rev, n_threads)
