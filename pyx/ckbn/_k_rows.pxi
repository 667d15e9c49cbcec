# The inner loops: each walks one row (or a run of rows) with no branches
# in the lane loop, so the compiler vectorizes it for the variant's width.
#
#   Reductions (block sums in the data type, flushed to float64 every BLOCK
#   rows of a unit by one rule, _block_end / _block_close; contiguous rows
#   of 5 to CKBN_ROWS_MAXV vectors run whole with every
#   accumulator in registers, one stream in memory order (_mom_rows,
#   _gs_rows); otherwise register tiles of four vectors from
#   ckbn_kernel_helpers.h take the lanes they cover, and blocks of narrow
#   contiguous rows of four tiles or more are read in memory order first,
#   _touch_rows):
#     RED_STATS  sums of d = x - K and d*d (K: a per-lane shift)
#     RED_SUMS   sums of e and e * (x - mu), e = dy (times act'(z) with an
#                activation)
#   Element-wise (one row of per-lane coefficients, or one channels-first
#   segment with scalar coefficients; outputs written from their first
#   64-byte boundary with whole vectors):
#     OP_AFFINE  out = act(x * c0 + c1)
#     OP_DX      out = (dy * m) * c0 + (x * c1 + c2), m = act'(x * c3 + c4)
#                with an activation, else 1
#   The backward recomputes z from x with the forward's coefficients and the
#   same expression, so its mask agrees with the forward's output.
#   Swish (AM_SWISH) runs the C helpers ckbn_sw_* (ckbn_kernel_helpers.h):
#   z a block at a time, turned into swish(z) or swish'(z) in whole vectors;
#   not inlined, so the exp stays out of the other modes' loops.

cdef enum:
    RED_STATS = 0
    RED_SUMS = 1
    OP_AFFINE = 0
    OP_DX = 1


# -- the piecewise activation ----------------------------------------------------

cdef inline floating _pw(floating z, floating s, floating h) noexcept nogil:
    """act(z) = z > 0 ? min(z, h) : z * s + 0 (the + 0 turns the -0.0 of slope
    0 into +0.0, as max(z, 0) gives).  Both sides are computed and one of them
    selected, which compilers turn into min, multiply, compare and blend; the
    nested conditional compiled to masked compares, 1.9x the loop's time with
    AVX-512 and 1.4x with AVX2 on AMD Zen 4 (same bits)."""
    cdef floating m = z if z < h else h
    cdef floating t = z * s + 0
    return m if z > 0 else t


cdef inline floating _pw_d(floating z, floating s, floating h) noexcept nogil:
    """act'(z) = z > 0 ? (z < h) : s, written as _pw is (both sides, one select)."""
    cdef floating m = <floating> 1 if z < h else <floating> 0
    return m if z > 0 else s


# -- lanes and channels -------------------------------------------------------

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


cdef inline Py_ssize_t _fold_halve(double* s1, double* s2, Py_ssize_t W) noexcept nogil:
    """The first part of one channel's fold (_fold_chans): W lanes halved
    pairwise while W is even (vector adds); the last three halvings of a
    power of two, from 8 lanes, written out in registers (the same adds in
    the same order: as short loops through memory each waited on the store
    before it).  Returns the lanes left for the in-order adds (1: done)."""
    cdef Py_ssize_t h, j
    while W % 2 == 0 and W > 8:
        h = W // 2
        for j in range(h):
            s1[j] += s1[j + h]
            s2[j] += s2[j + h]
        W = h
    if W == 8:
        s1[0] = (((s1[0] + s1[4]) + (s1[2] + s1[6]))
                 + ((s1[1] + s1[5]) + (s1[3] + s1[7])))
        s2[0] = (((s2[0] + s2[4]) + (s2[2] + s2[6]))
                 + ((s2[1] + s2[5]) + (s2[3] + s2[7])))
        return 1
    if W == 4:
        s1[0] = (s1[0] + s1[2]) + (s1[1] + s1[3])
        s2[0] = (s2[0] + s2[2]) + (s2[1] + s2[3])
        return 1
    while W % 2 == 0:
        h = W // 2
        for j in range(h):
            s1[j] += s1[j + h]
            s2[j] += s2[j + h]
        W = h
    return W


cdef inline void _fold_chans(double* s1, double* s2, Py_ssize_t R,
                             Py_ssize_t n) noexcept nogil:
    """_fold for n channels of R lanes each (channel g at s1 + g*R, C == 1):
    each channel's lanes summed into its lane 0, halved pairwise while even
    (_fold_halve), then the W odd lanes left added in order, a1 = lane 0,
    a1 + lane 1, ...  That last part is one dependent chain per channel (48
    adds for 7x7 planes), so four channels' chains run side by side (the
    same adds in the same order for each): one channel at a time, the fold
    of 2048 channels of 49 lanes took about 100 us on AMD Zen 4."""
    cdef Py_ssize_t g, j, W = R
    cdef double a0, a1, a2, a3, q0, q1, q2, q3
    cdef double* p
    cdef double* q
    for g in range(n):
        W = _fold_halve(s1 + g * R, s2 + g * R, R)
    if W == 1:
        return
    g = 0
    while g + 4 <= n:
        p = s1 + g * R
        q = s2 + g * R
        a0 = p[0]
        a1 = p[R]
        a2 = p[2 * R]
        a3 = p[3 * R]
        q0 = q[0]
        q1 = q[R]
        q2 = q[2 * R]
        q3 = q[3 * R]
        for j in range(1, W):
            a0 = a0 + p[j]
            a1 = a1 + p[R + j]
            a2 = a2 + p[2 * R + j]
            a3 = a3 + p[3 * R + j]
            q0 = q0 + q[j]
            q1 = q1 + q[R + j]
            q2 = q2 + q[2 * R + j]
            q3 = q3 + q[3 * R + j]
        p[0] = a0
        p[R] = a1
        p[2 * R] = a2
        p[3 * R] = a3
        q[0] = q0
        q[R] = q1
        q[2 * R] = q2
        q[3 * R] = q3
        g += 4
    while g < n:
        p = s1 + g * R
        q = s2 + g * R
        a0 = p[0]
        q0 = q[0]
        for j in range(1, W):
            a0 = a0 + p[j]
            q0 = q0 + q[j]
        p[0] = a0
        q[0] = q0
        g += 1


cdef inline void _expand_into(const floating* a, Py_ssize_t G, Py_ssize_t R,
                              floating* out) noexcept nogil:
    """out[g*R + r] = a[g]: per-channel values, one per lane."""
    cdef Py_ssize_t g, r
    for g in range(G):
        for r in range(R):
            out[g * R + r] = a[g]


# -- reductions: statistics ---------------------------------------------------

cdef inline Py_ssize_t _tile_lanes(const floating* p) noexcept nogil:
    """Lanes per register tile for the data type (0: no tiles)."""
    if floating is float:
        return CKBN_TILE_F32
    else:
        return CKBN_TILE_F64


cdef enum:
    # Bytes of a row from which the backward sums' tiles start on x's vector
    # boundary (_tile_start): one vector's lanes through the row loop instead
    # of a tile is then at most an eighth of a row of AVX-512 tiles.
    ALIGN_ROW_MIN = 2048


cdef inline Py_ssize_t _tile_start(const void* r, Py_ssize_t S, Py_ssize_t W,
                                   Py_ssize_t TL, size_t item) noexcept nogil:
    """The lane the backward sums' register tiles start from: the first on a
    vector boundary of the row r (x's; the tiles' vectors, 64 bytes with
    AVX-512, 32 with AVX2), when every row (S items apart) starts at the
    same place against it and a tile still fits, else 0.  The lanes before
    it go through the row loop, which sums each lane as the tiles do (the
    same expression, lane by lane), so the sums do not depend on where the
    data starts.  Tiles whose loads of dy and x split lines took 1.05-1.5x
    the time of aligned ones on 64x1024 to 392x2048 float32 (AMD Zen 4,
    benchmarks/results/zen4-issue18-s17/).  Rows of fewer than
    ALIGN_ROW_MIN bytes keep lane 0: the lanes the row loop takes instead of
    a tile cost more there (AVX2 tiles, rows of 64 lanes: 1.42x the time).
    The statistics (one array) keep their tiles at lane 0: with a head and a
    longer tail per row they lost more than the aligned loads gained (up to
    1.27x)."""
    cdef Py_ssize_t h, vb = TL * <Py_ssize_t> item // 4     # a vector's bytes
    if (TL == 0 or W * <Py_ssize_t> item < ALIGN_ROW_MIN
            or (S * <Py_ssize_t> item) % vb != 0 or (<size_t> r) % item != 0):
        return 0
    h = <Py_ssize_t> (((vb - (<size_t> r) % vb) % vb) // item)
    if W - h < TL:
        return 0
    return h


cdef inline Py_ssize_t _touch_rows(Py_ssize_t S, Py_ssize_t W, Py_ssize_t TL,
                                   size_t item, int arrays) noexcept nogil:
    """Rows of each of ``arrays`` arrays a reduction reads in memory order
    (ckbn_touch) just before its register tiles walk them, 0 for none.
    Contiguous rows (S == W) of TOUCH_TILES or more register tiles are
    walked tile by tile, column-wise, a pattern that the hardware
    prefetchers follow badly (AMD EPYC Zen 4, the 25.7 MB of 32x28x28x256
    NHWC, statistics in a C probe, four AVX-512 tiles a row: 2.0-3.1x one
    read, against 0.9-1.6x for the same memory read as rows of one tile).
    Read in memory order first, the rows are in cache when the tiles walk
    them.  Rows of two tiles (32x56x56x64 with AVX2 tiles) are walked nearly
    in memory order already: there the backward sums took 1.2-1.4x longer
    with the extra read, so they are left alone.  Rules:

    * the statistics (one array) touch a quarter of L1d, so the tiles read
      the rows from L1 (Zen 4, 32 KiB L1d: 8 KiB, 8 rows of 256 float32
      lanes).  Against a quarter of L2 (64 rows, capped by BLOCK), with x
      cold or read just before: AVX2 tiles 0.67-0.85x the time on 128, 256
      and 512 lanes, AVX-512 tiles 0.93-1.06x on 320 to 512 lanes
      (benchmarks/results/zen4-issue18-s16/);
    * the backward sums (two arrays) touch a quarter of L2 over both: a
      quarter of L1d of each was 0.83-0.87x the time for 128 lanes with AVX2
      tiles but 0.99-1.19x for 256 to 512 lanes, and half or twice that did
      no better.

    Strided or wider rows keep their ROW_GROUP walk."""
    cdef Py_ssize_t n
    if TL <= 0 or W < TOUCH_TILES * TL or S != W or W > TILE_MAX:
        return 0
    if arrays == 1:
        n = (_L1 // 4) // (W * <Py_ssize_t> item)
    else:
        n = (_L2 // 4) // (W * <Py_ssize_t> item * arrays)
    return n if n > 1 else 1


cdef inline void _mom_tile(const floating* x, Py_ssize_t S, Py_ssize_t nr,
                           const floating* sh, floating* b1, floating* b2,
                           const floating* pf, Py_ssize_t pfs) noexcept nogil:
    if floating is float:
        ckbn_mom_tile_f32(x, S, nr, sh, b1, b2, pf, pfs)
    else:
        ckbn_mom_tile_f64(x, S, nr, sh, b1, b2, pf, pfs)


cdef inline Py_ssize_t _next_group(bint pf, Py_ssize_t S, Py_ssize_t W, Py_ssize_t i,
                                   Py_ssize_t take, Py_ssize_t nr) noexcept nogil:
    """The offset of the next group's first element (rows i + take ...) when
    the tiles hint it: ``pf``, rows contiguous (S == W) and a whole next
    group of ``take`` rows in the run; else -1."""
    return (i + take) * S if pf and S == W and i + 2 * take <= nr else -1


cdef inline const floating* _tile_pf(const floating* a, Py_ssize_t nxt, Py_ssize_t c,
                                     Py_ssize_t TL, Py_ssize_t take) noexcept nogil:
    """The first element of array ``a`` the register tile at lane c of a
    group of ``take`` rows hints, given ``nxt``, the next group's offset
    (_next_group; -1: none, NULL returned): the tiles of the group take the
    next group's tile rows in memory order, ``take`` each, one per row they
    walk (CKBN_PF_TILE), so the group's walk asks for all of the next
    group's lines.

    Taken by the reductions of wide rows (tiled units, _red_unit).  On AMD
    EPYC Zen 4, float32, 1 thread, with x cold, read just before or warm
    (ab_cond.py, benchmarks/results/zen4-issue18-s14/): 64x7x7x2048 and
    32x14x14x1024 NHWC (in DRAM), against session 13's hints (1 KiB ahead
    along the walk, statistics only): statistics 0.74-0.95x the time,
    backward sums 0.68-0.87x, backward 0.85-0.97x; 32x7x7x2048 and 2048x1024
    (L3), against no hints: statistics 0.76-0.96x, backward sums 0.73-0.91x,
    backward 0.85-0.96x; 256x1024 (L2): 0.87-1.06x.  Since session 19 the
    hints are given only where the reduction reads more than half of L3 (x,
    or x and dy: _red_unit).  On the same CPU, then, 392x2048 (3.2 MB)
    took 0.84-0.91x the time with avx512 kernels (0.92-0.96x with avx2),
    and 1568x1024 and 2048x1024 0.94-1.02x (0.96-1.02x), while the hinted
    sizes were unchanged (benchmarks/results/zen4-issue18-s19/ab_hints*.txt).
    Backward sums of 1568x2048 (25.7 MB read) took 1.24-1.33x without the
    hints, and the statistics of 2352x2048 1.08-1.09x."""
    if nxt < 0:
        return NULL
    return a + nxt + (c // TL) * take * TL


cdef inline void _mom1(const floating* r, Py_ssize_t W, const floating* sh,
                       floating* b1, floating* b2) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating d
    for j in range(W):
        d = r[j] - sh[j]
        b1[j] += d
        b2[j] += d * d


cdef inline void _flush(floating* b1, floating* b2, double* s1, double* s2,
                        Py_ssize_t W, bint first) noexcept nogil:
    """Add the block sums b1, b2 to the float64 sums s1, s2 and clear them;
    ``first``: the unit's first block, which sets s1, s2 to b1, b2 widened
    (_widen: the same values as added to cleared sums), so that s1, s2 are
    never cleared beforehand."""
    cdef Py_ssize_t j
    if first:
        for j in range(W):
            s1[j] = b1[j]
            s2[j] = b2[j]
            b1[j] = 0
            b2[j] = 0
        return
    for j in range(W):
        s1[j] += <double> b1[j]
        s2[j] += <double> b2[j]
        b1[j] = 0
        b2[j] = 0


cdef inline Py_ssize_t _block_end(floating* b1, floating* b2, double* s1, double* s2,
                                  Py_ssize_t W, Py_ssize_t done) noexcept nogil:
    """The reductions' one flush rule.  ``done``: the rows a unit has put
    into its block sums so far; at every BLOCK rows the block is flushed
    into the float64 sums (the first block widened into them: _flush).
    Returns ``done``."""
    if done % BLOCK == 0:
        _flush(b1, b2, s1, s2, W, done == BLOCK)
    return done


cdef inline void _block_close(floating* b1, floating* b2, double* s1, double* s2,
                              Py_ssize_t W, Py_ssize_t done) noexcept nogil:
    """The float64 sums of a unit's ``done`` rows (done > 0): the rows past
    the last full block flushed (_flush; fewer than BLOCK rows in all: the
    first block, widened)."""
    if done % BLOCK != 0:
        _flush(b1, b2, s1, s2, W, done < BLOCK)


cdef inline void _widen(const floating* b1, const floating* b2, double* s1, double* s2,
                        Py_ssize_t W) noexcept nogil:
    """s1, s2 = b1, b2 in float64: the one flush of a batch of fewer than
    BLOCK rows into cleared float64 sums, without the clearing -- 0.0 + b is
    b widened, as block sums that start from +0.0 are never -0.0."""
    cdef Py_ssize_t j
    for j in range(W):
        s1[j] = b1[j]
        s2[j] = b2[j]


cdef inline bint _mom_rows(const floating* x, Py_ssize_t nr, Py_ssize_t W,
                           const floating* sh, floating* b1, floating* b2) noexcept nogil:
    """nr contiguous rows of W lanes into b1, b2 with every accumulator in
    registers (ckbn_mom_rows_*); False, and nothing done, where the variant
    cannot hold W lanes in registers (``ckbn_rows_fit`` says beforehand)."""
    if floating is float:
        return ckbn_mom_rows_f32(x, nr, W, sh, b1, b2)
    else:
        return ckbn_mom_rows_f64(x, nr, W, sh, b1, b2)


cdef inline Py_ssize_t _mom_run(const floating* r, Py_ssize_t nr, Py_ssize_t S,
                                Py_ssize_t W, const floating* sh,
                                floating* b1, floating* b2, double* s1, double* s2,
                                Py_ssize_t done, bint pf) noexcept nogil:
    """Accumulate nr rows r + i*S of W lanes into the block sums b1, b2,
    flushed into s1, s2 by _block_end (``done``: the unit's rows before
    these; returns them after).  Register tiles take the lanes they cover,
    the row loop the rest; ``pf``: the tiles hint the next group's lines as
    they walk (_tile_pf)."""
    cdef Py_ssize_t i = 0, q, c, take, nxt
    cdef Py_ssize_t TL = _tile_lanes(r)
    cdef Py_ssize_t Wt = (W // TL) * TL if TL > 0 else 0
    cdef Py_ssize_t tr = _touch_rows(S, W, TL, sizeof(floating), 1)
    if S == W and ckbn_rows_fit(W, sizeof(floating)):
        # whole rows in registers, one stream in memory order
        while i < nr:
            take = nr - i
            if take > BLOCK - done % BLOCK:
                take = BLOCK - done % BLOCK
            _mom_rows(r + i * S, take, W, sh, b1, b2)
            i += take
            done = _block_end(b1, b2, s1, s2, W, done + take)
        return done
    while i < nr:
        take = nr - i
        if take > BLOCK - done % BLOCK:
            take = BLOCK - done % BLOCK
        if (S > W or W > TILE_MAX) and take > ROW_GROUP:
            take = ROW_GROUP
        if tr > 0:
            if take > tr:
                take = tr
            ckbn_touch(r + i * S, take * W * sizeof(floating), 0, 1)
        nxt = _next_group(pf, S, W, i, take, nr)
        c = 0
        while c < Wt:
            _mom_tile(r + i * S + c, S, take, sh + c, b1 + c, b2 + c,
                      _tile_pf(r, nxt, c, TL, take), TL)
            c += TL
        if Wt < W:
            for q in range(i, i + take):
                _mom1(r + q * S + Wt, W - Wt, sh + Wt, b1 + Wt, b2 + Wt)
        i += take
        done = _block_end(b1, b2, s1, s2, W, done + take)
    return done


# -- reductions: backward sums ------------------------------------------------

cdef inline void _gs_tile(const floating* d, const floating* x, Py_ssize_t S,
                          Py_ssize_t nr, const floating* mu, floating* b1,
                          floating* b2, const floating* pfd, const floating* pfx,
                          Py_ssize_t pfs, bint dh) noexcept nogil:
    """One register tile of the backward sums (``dh``: d's vectors loaded in
    halves, ckbn_gs_tileh_f32, for float32 d off the lines x's tiles start
    on)."""
    if floating is float:
        if dh:
            ckbn_gs_tileh_f32(d, x, S, nr, mu, b1, b2, pfd, pfx, pfs)
        else:
            ckbn_gs_tile_f32(d, x, S, nr, mu, b1, b2, pfd, pfx, pfs)
    else:
        ckbn_gs_tile_f64(d, x, S, nr, mu, b1, b2, pfd, pfx, pfs)


cdef inline bint _gs_rows(const floating* d, const floating* x, Py_ssize_t nr,
                          Py_ssize_t W, const floating* mu, floating* b1,
                          floating* b2) noexcept nogil:
    """_mom_rows for the backward sums (ckbn_gs_rows_*)."""
    if floating is float:
        return ckbn_gs_rows_f32(d, x, nr, W, mu, b1, b2)
    else:
        return ckbn_gs_rows_f64(d, x, nr, W, mu, b1, b2)


cdef inline void _gs1(const floating* d, const floating* x, Py_ssize_t W,
                      const floating* mu, floating* b1, floating* b2) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating e
    for j in range(W):
        e = d[j]
        b1[j] += e
        b2[j] += e * (x[j] - mu[j])


cdef inline void _gs1_swish(const floating* d, const floating* x, Py_ssize_t W,
                            const floating* mu, const floating* za, const floating* zb,
                            floating* b1, floating* b2) noexcept nogil:
    """_gs1 of dy times swish'(z), z = x * za + zb."""
    if floating is float:
        ckbn_sw_gs_row_f32(d, x, W, mu, za, zb, b1, b2)
    else:
        ckbn_sw_gs_row_f64(d, x, W, mu, za, zb, b1, b2)


cdef inline void _gs1_act(const floating* d, const floating* x, Py_ssize_t W,
                          const floating* mu, const floating* za, const floating* zb,
                          floating s, floating h, floating* b1, floating* b2,
                          bint sw) noexcept nogil:
    """_gs1 of dy times the activation's derivative at z = x * za + zb
    (swish with ``sw``, else piecewise linear)."""
    cdef Py_ssize_t j
    cdef floating e, z
    if sw:
        _gs1_swish(d, x, W, mu, za, zb, b1, b2)
        return
    for j in range(W):
        z = x[j] * za[j] + zb[j]
        e = d[j] * _pw_d(z, s, h)
        b1[j] += e
        b2[j] += e * (x[j] - mu[j])


cdef inline void _gs_act_tile(const floating* d, const floating* x, Py_ssize_t S,
                              Py_ssize_t nr, const floating* mu, const floating* za,
                              const floating* zb, floating s, floating h,
                              floating* b1, floating* b2, const floating* pfd,
                              const floating* pfx, Py_ssize_t pfs) noexcept nogil:
    if floating is float:
        ckbn_gs_act_tile_f32(d, x, S, nr, mu, za, zb, s, h, b1, b2, pfd, pfx, pfs)
    else:
        ckbn_gs_act_tile_f64(d, x, S, nr, mu, za, zb, s, h, b1, b2, pfd, pfx, pfs)


cdef inline void _gs_act_vecs(const floating* d, const floating* x, Py_ssize_t S,
                              Py_ssize_t nr, const floating* mu, const floating* za,
                              const floating* zb, floating s, floating h,
                              floating* b1, floating* b2, Py_ssize_t nv) noexcept nogil:
    if floating is float:
        ckbn_gs_act_vecs_f32(d, x, S, nr, mu, za, zb, s, h, b1, b2, nv)
    else:
        ckbn_gs_act_vecs_f64(d, x, S, nr, mu, za, zb, s, h, b1, b2, nv)


cdef inline bint _gs_act_rows(const floating* d, const floating* x, Py_ssize_t nr,
                              Py_ssize_t W, const floating* mu, const floating* za,
                              const floating* zb, floating s, floating h, floating* b1,
                              floating* b2) noexcept nogil:
    """_gs_rows through a piecewise-linear activation (ckbn_gs_act_rows_*)."""
    if floating is float:
        return ckbn_gs_act_rows_f32(d, x, nr, W, mu, za, zb, s, h, b1, b2)
    else:
        return ckbn_gs_act_rows_f64(d, x, nr, W, mu, za, zb, s, h, b1, b2)


cdef inline Py_ssize_t _gs_run_act(const floating* d, const floating* x, Py_ssize_t nr,
                                   Py_ssize_t S, Py_ssize_t W, const floating* mu,
                                   const floating* za, const floating* zb,
                                   floating s, floating h, bint sw,
                                   floating* b1, floating* b2, double* t1, double* t2,
                                   Py_ssize_t done, bint pf) noexcept nogil:
    """_gs_run through the activation: for the piecewise-linear ones, whole
    contiguous rows in registers where the variant holds them, else
    register tiles over the lanes they cover, then single vectors, then the
    row loop _gs1_act for the last lanes (fewer than a vector); swish runs
    the row loop throughout.  ``pf``: the tiles hint the next group of both
    arrays (_tile_pf)."""
    cdef Py_ssize_t i = 0, q, c, take, off, nxt
    cdef Py_ssize_t TL = 0 if sw else _tile_lanes(x)
    cdef Py_ssize_t VL = TL // 4        # lanes of one vector (tiles are four)
    cdef Py_ssize_t Wt = (W // TL) * TL if TL > 0 else 0
    cdef Py_ssize_t Wv = Wt + ((W - Wt) // VL) * VL if TL > 0 else 0
    if not sw and S == W and ckbn_rows_fit(W, sizeof(floating)):
        # whole rows in registers (as _gs_run)
        while i < nr:
            take = nr - i
            if take > BLOCK - done % BLOCK:
                take = BLOCK - done % BLOCK
            _gs_act_rows(d + i * S, x + i * S, take, W, mu, za, zb, s, h, b1, b2)
            i += take
            done = _block_end(b1, b2, t1, t2, W, done + take)
        return done
    while i < nr:
        take = nr - i
        if take > BLOCK - done % BLOCK:
            take = BLOCK - done % BLOCK
        # Row groups also when lanes are left after the tiles: their passes
        # then find the group's rows still in L1.
        if (S > W or W > TILE_MAX or Wt < W) and take > ROW_GROUP:
            take = ROW_GROUP
        nxt = _next_group(pf, S, W, i, take, nr)
        c = 0
        while c < Wt:
            off = i * S + c
            _gs_act_tile(d + off, x + off, S, take, mu + c, za + c, zb + c, s, h,
                         b1 + c, b2 + c, _tile_pf(d, nxt, c, TL, take),
                         _tile_pf(x, nxt, c, TL, take), TL)
            c += TL
        if Wt < Wv:
            off = i * S + Wt
            _gs_act_vecs(d + off, x + off, S, take, mu + Wt, za + Wt, zb + Wt, s, h,
                         b1 + Wt, b2 + Wt, (Wv - Wt) // VL)
        if Wv < W:
            for q in range(i, i + take):
                off = q * S + Wv
                _gs1_act(d + off, x + off, W - Wv, mu + Wv, za + Wv, zb + Wv, s, h,
                         b1 + Wv, b2 + Wv, sw)
        i += take
        done = _block_end(b1, b2, t1, t2, W, done + take)
    return done


cdef inline Py_ssize_t _gs_run(const floating* d, const floating* x, Py_ssize_t nr,
                               Py_ssize_t S, Py_ssize_t W, const floating* mu,
                               floating* b1, floating* b2, double* t1, double* t2,
                               Py_ssize_t done, bint pf) noexcept nogil:
    """Accumulate nr row pairs (d + i*S, x + i*S) into the block sums, as
    _mom_run does (``pf``: both arrays' next groups hinted)."""
    cdef Py_ssize_t i = 0, q, c, take, off, nxt
    cdef Py_ssize_t TL = _tile_lanes(x)
    cdef Py_ssize_t h = _tile_start(x, S, W, TL, sizeof(floating))
    cdef Py_ssize_t Wt = h + ((W - h) // TL) * TL if TL > 0 else 0
    cdef Py_ssize_t tr = _touch_rows(S, W, TL, sizeof(floating), 2)
    # d's tiles off 64-byte lines where x's start on one: d's vectors load in
    # halves (_gs_tile; AVX-512, rows of 512-1024 lanes in L2 with d 16-48
    # bytes off a line: 0.93-0.97x the time, AMD Zen 4, session 18)
    cdef bint dh = ((<size_t> (x + h)) % 64 == 0 and (<size_t> (d + h)) % 64 != 0
                    and (S * <Py_ssize_t> sizeof(floating)) % 64 == 0)
    if S == W and ckbn_rows_fit(W, sizeof(floating)):
        # whole rows in registers, two streams in memory order
        while i < nr:
            take = nr - i
            if take > BLOCK - done % BLOCK:
                take = BLOCK - done % BLOCK
            _gs_rows(d + i * S, x + i * S, take, W, mu, b1, b2)
            i += take
            done = _block_end(b1, b2, t1, t2, W, done + take)
        return done
    while i < nr:
        take = nr - i
        if take > BLOCK - done % BLOCK:
            take = BLOCK - done % BLOCK
        if (S > W or W > TILE_MAX) and take > ROW_GROUP // 2:
            take = ROW_GROUP // 2     # ROW_GROUP streams over the two arrays
        if tr > 0:
            if take > tr:
                take = tr
            ckbn_touch(d + i * S, take * W * sizeof(floating), 0, 1)
            ckbn_touch(x + i * S, take * W * sizeof(floating), 0, 1)
        nxt = _next_group(pf, S, W, i, take, nr)
        if h > 0:
            for q in range(i, i + take):
                _gs1(d + q * S, x + q * S, h, mu, b1, b2)
        c = h
        while c < Wt:
            off = i * S + c
            _gs_tile(d + off, x + off, S, take, mu + c, b1 + c, b2 + c,
                     _tile_pf(d, nxt, c, TL, take), _tile_pf(x, nxt, c, TL, take), TL,
                     dh)
            c += TL
        if Wt < W:
            for q in range(i, i + take):
                off = q * S + Wt
                _gs1(d + off, x + off, W - Wt, mu + Wt, b1 + Wt, b2 + Wt)
        i += take
        done = _block_end(b1, b2, t1, t2, W, done + take)
    return done


# -- reductions: one entry for both kinds --------------------------------------

cdef inline Py_ssize_t _red_run(int kind, const Act* act, const floating* x,
                                const floating* d, Py_ssize_t nr, Py_ssize_t S,
                                Py_ssize_t W, const floating* sh, const floating* la,
                                const floating* lb, floating* b1, floating* b2,
                                double* s1, double* s2, Py_ssize_t done,
                                bint pf) noexcept nogil:
    """nr rows (stride S) of W lanes into the block sums, ``done`` rows of
    the unit before them (returned after them); see _mom_run."""
    if kind == RED_STATS:
        return _mom_run(x, nr, S, W, sh, b1, b2, s1, s2, done, pf)
    if act.on:
        return _gs_run_act(d, x, nr, S, W, sh, la, lb, <floating> act.slope,
                           <floating> act.hi, act.kind == ACT_SWISH, b1, b2, s1, s2, done, pf)
    return _gs_run(d, x, nr, S, W, sh, b1, b2, s1, s2, done, pf)


cdef inline void _red_one(int kind, const Act* act, const floating* x,
                          const floating* d, Py_ssize_t W, const floating* sh,
                          const floating* la, const floating* lb,
                          floating* b1, floating* b2) noexcept nogil:
    """One (short) row into the block sums."""
    if kind == RED_STATS:
        _mom1(x, W, sh, b1, b2)
    elif act.on:
        _gs1_act(d, x, W, sh, la, lb, <floating> act.slope, <floating> act.hi, b1, b2,
                 act.kind == ACT_SWISH)
    else:
        _gs1(d, x, W, sh, b1, b2)


# -- element-wise ---------------------------------------------------------------

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
        y[j] = _pw(z, s, h)


cdef inline void _row_affine_swish(const floating* x, floating* y, Py_ssize_t n,
                                   const floating* a, const floating* b) noexcept nogil:
    if floating is float:
        ckbn_sw_affine_row_f32(x, y, n, a, b)
    else:
        ckbn_sw_affine_row_f64(x, y, n, a, b)


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
        m = _pw_d(z, s, h)
        o[j] = (d[j] * m) * k1[j] + (x[j] * k2[j] + k3[j])


cdef inline void _row_dx_swish(const floating* d, const floating* x, floating* o,
                               Py_ssize_t n, const floating* k1, const floating* k2,
                               const floating* k3, const floating* za,
                               const floating* zb) noexcept nogil:
    if floating is float:
        ckbn_sw_dx_row_f32(d, x, o, n, k1, k2, k3, za, zb)
    else:
        ckbn_sw_dx_row_f64(d, x, o, n, k1, k2, k3, za, zb)


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
        y[j] = _pw(z, s, h)


cdef inline void _seg_affine_swish(const floating* x, floating* y, Py_ssize_t n,
                                   floating a, floating b) noexcept nogil:
    if floating is float:
        ckbn_sw_affine_seg_f32(x, y, n, a, b)
    else:
        ckbn_sw_affine_seg_f64(x, y, n, a, b)


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
        m = _pw_d(z, s, h)
        o[j] = (d[j] * m) * k1 + (x[j] * k2 + k3)


cdef inline void _seg_dx_swish(const floating* d, const floating* x, floating* o,
                               Py_ssize_t n, floating k1, floating k2, floating k3,
                               floating za, floating zb) noexcept nogil:
    if floating is float:
        ckbn_sw_dx_seg_f32(d, x, o, n, k1, k2, k3, za, zb)
    else:
        ckbn_sw_dx_seg_f64(d, x, o, n, k1, k2, k3, za, zb)


cdef inline Py_ssize_t _head(const void* o, Py_ssize_t n, Py_ssize_t size) noexcept nogil:
    """Elements before the first 64-byte boundary of o (0 for short runs), so
    that the vector stores after them never split a cache line."""
    cdef Py_ssize_t k = <Py_ssize_t> ((64 - (<size_t> o) % 64) % 64)
    if k % size != 0 or n < 4 * 64 // size:
        return 0
    return k // size


cdef inline int _n_coef(int op, int act) noexcept nogil:
    if op == OP_AFFINE:
        return 2
    return 5 if act else 3


cdef inline void _ew_run1(int op, int act, const floating* x, const floating* d,
                          floating* o, Py_ssize_t n, const floating** w,
                          floating s, floating h) noexcept nogil:
    if act == AM_SWISH:
        if op == OP_AFFINE:
            _row_affine_swish(x, o, n, w[0], w[1])
        else:
            _row_dx_swish(d, x, o, n, w[0], w[1], w[2], w[3], w[4])
    elif op == OP_AFFINE:
        if act:
            _row_affine_act(x, o, n, w[0], w[1], s, h)
        else:
            _row_affine(x, o, n, w[0], w[1])
    elif act:
        _row_dx_act(d, x, o, n, w[0], w[1], w[2], w[3], w[4], s, h)
    else:
        _row_dx(d, x, o, n, w[0], w[1], w[2])


cdef inline void _ew_run(int op, int act, const floating* x, const floating* d,
                         floating* o, Py_ssize_t n, const floating** w,
                         floating s, floating h) noexcept nogil:
    """One run of n elements with per-lane coefficients w[i][j] (act: the
    mode, _act_mode); the output is written from its first 64-byte boundary
    on with whole vectors."""
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


cdef inline void _ew_seg1(int op, int act, const floating* x, const floating* d,
                          floating* o, Py_ssize_t n, const floating* v,
                          floating s, floating h) noexcept nogil:
    if act == AM_SWISH:
        if op == OP_AFFINE:
            _seg_affine_swish(x, o, n, v[0], v[1])
        else:
            _seg_dx_swish(d, x, o, n, v[0], v[1], v[2], v[3], v[4])
    elif op == OP_AFFINE:
        if act:
            _seg_affine_act(x, o, n, v[0], v[1], s, h)
        else:
            _seg_affine(x, o, n, v[0], v[1])
    elif act:
        _seg_dx_act(d, x, o, n, v[0], v[1], v[2], v[3], v[4], s, h)
    else:
        _seg_dx(d, x, o, n, v[0], v[1], v[2])


cdef inline void _ew_seg(int op, int act, const floating* x, const floating* d,
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
