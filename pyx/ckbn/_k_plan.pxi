# How a pass cuts (P, G, R, C) into work, from the shape alone (never from
# the thread count), and which path it takes.
#
# Layout: a flat C-contiguous array whose element (p, g, r, c) sits at
# ((p*G + g)*R + r)*C + c.  Statistics are kept per channel (g, c) and reduced
# over p and r.  For one (p, g) the L = R*C elements form a contiguous
# *segment* that starts at channel 0.
#
# The reductions take one of five paths (reduction_path names them):
#   "rows"           narrow channels (C <= TILE_MAX): a segment is read as
#                    rows of W = C*k lanes (k >= 1 so that W >= MIN_LANES;
#                    lane j belongs to channel j % C); the last, shorter row
#                    of a segment is a tail.
#   "tiles"          wide channels (C > TILE_MAX): rows of C channels, read
#                    whole when their accumulators fit in L1 (_tile_width),
#                    else cut into equal channel tiles; register tiles walk
#                    ROW_GROUP rows at a time (concurrent sequential streams).
#   "lanes"          channels first (C == 1) with small planes (R <=
#                    LANE_PLANE_MAX) and too few channels to chunk: read as P
#                    rows of G*R lanes, merged into channels after.
#   "chunks-lanes"   channels first, chunked (Chunks): each chunk of whole
#   "chunks-planes"  channels is reduced and then normalized (or its dx
#                    written) while in L2; small planes side by side, large
#                    planes in rows of MIN_LANES lanes.
# The element-wise passes take the same Units without tiles (rows of W = C*k
# lanes from _ew_lanes in _k_elementwise.pxi; channels-first segments one
# scalar loop each; short segments of several groups in memory order, whole
# planes as one stream), or the chunks.
#
# Units.  A unit covers one channel group g, one channel tile, and a chunk of
# rows (about UNIT_TARGET elements).  It writes its own float64 partial row;
# partials are merged serially in unit order, so results are bitwise
# identical for any number of threads.

cdef struct Units:
    Py_ssize_t P, G, R, C
    Py_ssize_t L         # segment length R*C
    bint tiled          # wide channels: rows of C cut into tiles
    Py_ssize_t W         # narrow: lanes per row (a multiple of C); tiled: tile width
    Py_ssize_t n_ct      # channel tiles (1 when narrow)
    Py_ssize_t n_rc      # row chunks per (g, tile)
    # narrow, whole segments per unit (split == 0) or pieces of one segment
    Py_ssize_t split     # pieces per segment, 0 when units hold whole segments
    Py_ssize_t piece     # elements per piece (a multiple of W) when split
    Py_ssize_t pc        # segments per unit when not split
    # element-wise passes on short segments: units are runs of whole
    # segments in memory order (segment s = p*G + g)
    bint seg
    # tiled
    Py_ssize_t rpu       # rows per unit
    Py_ssize_t per_g     # units per channel group: n_ct * n_rc
    Py_ssize_t n_units


cdef inline Py_ssize_t _unit_rows(Py_ssize_t rows, Py_ssize_t W) noexcept nogil:
    """Rows per unit of a reduction over ``rows`` rows of W elements that
    each unit sums into a row of per-channel accumulators (tiles of wide
    rows, samples of the planes path; TILE_UNIT_MIN, TILE_UNIT_MAX,
    TILE_MIN_UNITS: _k_common.pxi); from the shape alone, so the sums do not
    depend on the thread count."""
    cdef Py_ssize_t lo = TILE_UNIT_MIN // W, hi = TILE_UNIT_MAX // W
    cdef Py_ssize_t n = rows // TILE_MIN_UNITS
    if n > hi:
        n = hi
    if n < lo:
        n = lo
    return n if n > 1 else 1


cdef inline Units _make_units(Py_ssize_t P, Py_ssize_t G, Py_ssize_t R,
                              Py_ssize_t C, Py_ssize_t min_lanes,
                              bint tiles, size_t item) noexcept nogil:
    cdef Units u
    if G == 1:
        # One channel group: consecutive segments are contiguous, so the whole
        # array is one segment (rows may then run across the old boundaries).
        R = P * R
        P = 1
    u.P = P
    u.G = G
    u.R = R
    u.C = C
    u.L = R * C
    u.split = 0
    u.piece = 0
    u.pc = 1
    u.rpu = 1
    u.seg = False
    if tiles and C > TILE_MAX:
        u.tiled = True
        u.W = _tile_width(C, item)
        u.n_ct = (C + u.W - 1) // u.W
        u.rpu = _unit_rows(P * R, u.W)
        u.n_rc = (P * R + u.rpu - 1) // u.rpu
    else:
        u.tiled = False
        u.n_ct = 1
        u.W = C * ((min_lanes + C - 1) // C) if C < min_lanes else C
        if u.W > u.L:
            u.W = u.L   # short segments (e.g. 7x7 planes): one row each
        if u.L <= UNIT_TARGET and G > 1 and not tiles:
            # Element-wise passes (tiles is False only for them) need no
            # per-channel accumulators, so a unit can take the next segments
            # in memory order, all groups alike, instead of the segments of
            # one group G*L elements apart.
            u.seg = True
            u.pc = UNIT_TARGET // u.L
            u.n_rc = P
            u.per_g = 0
            u.n_units = (P * G + u.pc - 1) // u.pc
            return u
        if u.L <= UNIT_TARGET:
            u.pc = UNIT_TARGET // u.L
            u.n_rc = (P + u.pc - 1) // u.pc
        else:
            u.piece = (UNIT_TARGET // u.W) * u.W
            if u.piece < u.W:
                u.piece = u.W
            u.split = (u.L + u.piece - 1) // u.piece
            u.n_rc = P * u.split
    u.per_g = u.n_ct * u.n_rc
    u.n_units = G * u.per_g
    return u


cdef inline int _n_threads(const Units* u, int n_threads) noexcept nogil:
    return _threads(u.P * u.G * u.L, u.n_units, n_threads)


cdef struct Unit:
    Py_ssize_t g, rc, c0, c1
    # narrow: segments [p0, p1), elements [l0, l1) of each
    Py_ssize_t p0, p1, l0, l1
    # tiled: rows [q0, q1) of group g (row q = p*R + r)
    Py_ssize_t q0, q1


cdef inline Unit _unit(const Units* u, Py_ssize_t k) noexcept nogil:
    cdef Unit t
    cdef Py_ssize_t rem, ct
    t.p0 = 0
    t.p1 = 0
    t.l0 = 0
    t.l1 = 0
    t.q0 = 0
    t.q1 = 0
    t.g = k // u.per_g
    rem = k % u.per_g
    # Tiles vary fastest: a thread's consecutive units cover the same rows,
    # which are still in cache when the next tile reads them.
    t.rc = rem // u.n_ct
    ct = rem % u.n_ct
    t.c0 = ct * u.W if u.tiled else 0
    t.c1 = t.c0 + u.W if u.tiled else u.C
    if t.c1 > u.C:
        t.c1 = u.C
    if u.tiled:
        t.q0 = t.rc * u.rpu
        t.q1 = t.q0 + u.rpu
        if t.q1 > u.P * u.R:
            t.q1 = u.P * u.R
    elif u.split == 0:
        t.p0 = t.rc * u.pc
        t.p1 = t.p0 + u.pc
        if t.p1 > u.P:
            t.p1 = u.P
        t.l0 = 0
        t.l1 = u.L
    else:
        t.p0 = t.rc // u.split
        t.p1 = t.p0 + 1
        t.l0 = (t.rc % u.split) * u.piece
        t.l1 = t.l0 + u.piece
        if t.l1 > u.L:
            t.l1 = u.L
    return t


cdef inline Unit _seg_unit(const Units* u, Py_ssize_t s) noexcept nogil:
    """Segment mode: segment s = p*G + g as a unit of its own."""
    cdef Unit t
    t.g = s % u.G
    t.rc = s // u.G
    t.c0 = 0
    t.c1 = u.C
    t.p0 = t.rc
    t.p1 = t.rc + 1
    t.l0 = 0
    t.l1 = u.L
    t.q0 = 0
    t.q1 = 0
    return t


cdef inline Py_ssize_t _seg_end(const Units* u, Py_ssize_t k) noexcept nogil:
    """Segment mode: one past the last segment of unit k."""
    cdef Py_ssize_t s1 = (k + 1) * u.pc
    return s1 if s1 < u.P * u.G else u.P * u.G


cdef inline Py_ssize_t _row_offset(const Units* u, Py_ssize_t g, Py_ssize_t q,
                                   Py_ssize_t c0) noexcept nogil:
    """Offset of row q (= p*R + r) of group g, channel c0, in the tiled case."""
    return ((q // u.R) * u.G + g) * u.L + (q % u.R) * u.C + c0


cdef struct Chunks:
    Py_ssize_t P, G, R
    Py_ssize_t k          # channels per chunk
    Py_ssize_t n          # chunks
    bint lanes            # small planes, read side by side
    bint nt               # the output may be streamed (_nt_out), set per pass


cdef struct Pass:
    # The per-channel arrays of a fused pass (NULL where it does not use them).
    const double* scale       # IN
    const double* offset      # IN
    double eps
    bint training
    const Act* act
    double* mean              # OUT of the statistics; IN of the backward
    double* var               # OUT of the statistics; IN of the backward
    double* sum_e             # OUT sum(e) (the backward's doffset)
    double* sum_exc           # OUT sum(e * (x - mean)); the backward turns it
                              # into dscale = sum(e * xhat)


cdef inline void _pass_init(Pass* ps, const Act* act) noexcept nogil:
    ps.scale = NULL
    ps.offset = NULL
    ps.eps = 0.0
    ps.training = True
    ps.act = act
    ps.mean = NULL
    ps.var = NULL
    ps.sum_e = NULL
    ps.sum_exc = NULL


cdef inline bint _pl_path(Py_ssize_t P, Py_ssize_t G, Py_ssize_t R,
                          Py_ssize_t C) noexcept nogil:
    """Whether the reductions of channels-first planes of R elements take
    the planes path (_pl_core, _k_reduce.pxi): each plane summed whole, in
    memory order.  Then the training passes are a reduction and an
    element-wise pass (planes in memory order too), not the fused chunks.

    The chunks walk P runs of a few KB, G*R elements apart, which the
    hardware prefetchers follow badly, and their per-lane accumulators cost
    as much as the data where P is small; the planes path pays a reduction
    across the vector per plane instead.  Measured (AMD EPYC Zen 4, float32,
    avx512 and avx2 kernels, 1 and 2 threads; benchmarks/RESULTS.md, issue
    18 session 11): training and backward 0.55-0.85x the chunks' time for
    planes of 64 to 4096 elements; planes of 49 in 3.2 MB 0.97-1.08x
    (in 6.4-25.7 MB 0.68-0.88x); 8x112x112 planes (12544) 0.99x / 1.09x, so
    PLANE_RED_MAX; 4x4 planes (two AVX2 vectors) 1.17x.  Hence: planes of
    PLANE_RED_VECS float32 vectors, or of PLANE_RED_MIN_VECS in inputs of
    at least as many elements as L2 has bytes (4 MiB of float32 on 1 MiB
    of L2: beyond L2, where the chunks' traversal costs most), or in
    batches of at most R / PLANE_RED_PER samples: the chunks' per-lane work
    (clearing, flushing and folding G*R lanes) is the same for any batch,
    the planes' per-plane reductions grow with it.  Measured in session 15
    (AMD EPYC Zen 4, float32, 1 thread, ckbn.nn on NCHW, planes ÷ chunks,
    training / backward): avx512 kernels, 7x7 planes (three vectors and a
    lane), 2 / 4 / 8 / 12 / 16 samples of 2048, 2048, 2048, 1024, 1024
    channels 0.41 / 0.58 / 0.80 / 0.90 / 0.89 and 0.42 / 0.54 / 0.69 / 0.74
    / 0.80, 6x6 planes 4 / 8 / 64 / 128 samples 0.63 / 0.91 / 1.16-1.39 /
    1.22 and 0.59 / 0.70 / 0.92-1.02 / 1.02; avx2 kernels (the same CPU),
    4x4 planes 2 / 4 / 8 / 16 samples 0.47 / 0.75 / 1.19 / 1.46 and 0.52 /
    0.64 / 0.91 / 1.07, 5x5 planes 4 / 8 / 32 samples 0.70 / 1.03 / 0.96 and
    0.67 / 0.87 / 1.00.  Session 16 made the planes' reductions cheaper
    (their last elements in the vector sums, four planes reduced together,
    ckbn_pl_red_*), and planes of PLANE_RED_BYTES (48 float32: 7x7) now take
    the planes path at any size with AVX-512 too (same CPU, inputs under L2,
    ab_force.py: the path forced either way; ab_red.py: the session's start
    against its end): avx512 kernels, 7x7 planes, 16 to 128 samples,
    training 0.86-0.97x, backward 0.75-0.89x of the chunks.  Three vectors
    of the other widths did not gain: avx2 5x5 planes training 1.06-1.14x in
    ab_force.py but 1.35x at 32x512x5x5 against the start (backward
    0.76-0.97x), the portable build's 3x5 and 3x4 planes training 1.31-1.48x
    and backward 1.01-1.14x; two-vector planes 6x6 (avx512) 0.94-1.27x and 4x4
    (avx2) 1.30-1.49x in training.  So the rule is four vectors or 192 bytes,
    whichever is fewer, which changes it for AVX-512 only.  Inputs under
    PARALLEL_MIN elements keep the chunks (one thread; the compiled small
    backward, _k_small.pxi, sums as they do).  Counted in float32 vectors and elements for every data type, so a
    shape takes one path whatever its dtype."""
    if C != 1 or G < 2 or R > PLANE_RED_MAX or P * G * R < PARALLEL_MIN:
        return False
    if R * 4 >= PLANE_RED_VECS * CKBN_VBYTES or R * 4 >= PLANE_RED_BYTES:
        return True
    return (R * 4 >= PLANE_RED_MIN_VECS * CKBN_VBYTES
            and (P * G * R >= _L2 or P * PLANE_RED_PER <= R))


cdef inline bint _cf_plan(Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C,
                          bint fused, Chunks* ch) noexcept nogil:
    """Plan the chunks of a channels-first array; False when another path
    serves better (channels-last data, very large channels, the planes path
    for a fused pass, or too few chunks to share among threads)."""
    cdef Py_ssize_t per = P * R, k
    if C != 1 or G < 2 or R < 2 or per > CF_MAX_CHANNEL:
        return False
    if fused and _pl_path(P, G, R, C):
        return False
    # A fused pass reads a chunk twice: it must stay in L2 (_cf_elems); an
    # element-wise pass alone reads it once, in rows of up to CF_LANES lanes.
    k = _cf_elems // per if fused else CF_LANES
    ch.lanes = R <= LANE_PLANE_MAX
    ch.nt = False
    if ch.lanes and k > CF_LANES // R:
        k = CF_LANES // R
    if k < 1:
        k = 1
    ch.P = P
    ch.G = G
    ch.R = R
    ch.k = k
    ch.n = (G + k - 1) // k
    # Fewer chunks than CF_MIN_CHUNKS would leave threads idle, unless the
    # input is small enough to run on one thread anyway.
    return ch.n >= CF_MIN_CHUNKS or P * G * R < PARALLEL_MIN



cdef inline bint _expand(Py_ssize_t G, Py_ssize_t R, Py_ssize_t C) noexcept nogil:
    """Whether channels-first data with small planes is read in lane expansion
    (the "lanes" path)."""
    return C == 1 and G > 1 and 1 < R <= LANE_PLANE_MAX


def reduction_path(Py_ssize_t P, Py_ssize_t G, Py_ssize_t R, Py_ssize_t C):
    """Name of the path the reductions take for (P, G, R, C), for tests and
    benchmarks: ``"planes"`` (channels first, each plane summed whole in
    memory order, _pl_path), ``"chunks-lanes"`` / ``"chunks-planes"``
    (channels first, chunked and fused; small planes side by side or large
    planes in rows),
    ``"lanes"`` (channels first, small planes read side by side),
    ``"tiles"`` (rows wider than TILE_MAX, read in tiles of at most
    ``tuning()["tile_lanes_f32"]`` lanes) or
    ``"rows"`` (rows of W >= MIN_LANES lanes)."""
    cdef Chunks ch
    if _pl_path(P, G, R, C):
        return "planes"
    if _cf_plan(P, G, R, C, True, &ch):
        return "chunks-lanes" if ch.lanes else "chunks-planes"
    if _expand(G, R, C):
        return "lanes"
    return "tiles" if C > TILE_MAX else "rows"

