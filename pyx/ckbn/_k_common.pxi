# The ground rules every pass follows: types, tuning constants, the thread
# rule, the scratch rule, the allocation-failure policy, and the per-channel
# arithmetic shared by every path (the shifted moments, the one Chan merge,
# the normalization and backward coefficients).
#
# Thread rule (_threads).  A pass runs on one thread below PARALLEL_MIN
# elements, else on min(n_threads, units) threads; the units themselves come
# from the shape alone, so results never depend on the thread count.  A pass
# on one thread opens no OpenMP region.
#
# Scratch rule (Scratch).  A pass allocates all the scratch its threads need
# before it starts, as one block of nt slices of 64-byte multiples; a thread
# uses the slice of its own number (threadid()).  Small fixed-size scratch
# (at most TILE_MAX lanes) lives on the stack of the unit instead.
# Per-channel rows that a pass reads beside x's rows (a reduction's shift and
# block sums, the coefficient rows of the element-wise passes) start half a
# page from x's offset in a page (_half_page, _coefs_new).
#
# Allocation failure.  No kernel aborts: a failed malloc makes the pass return
# CKBN_ERR_NOMEM before it writes anything, every caller hands the status up,
# and the def entry points raise MemoryError (_raise_status).  Passes that run
# inside a parallel region (the float16 driver) count failures in an OpenMP
# reduction and return the status after the region.

cimport cython
from cython.parallel cimport prange, parallel, threadid
from libc.stdlib cimport malloc, calloc, free
from libc.math cimport sqrt, INFINITY
from libc.stdint cimport int64_t, uint64_t

ctypedef fused floating:
    float
    double

cdef extern from "ckbn_kernel_helpers.h" nogil:
    bint CKBN_HAVE_OPENMP
    bint CKBN_HAVE_F16C
    bint CKBN_HAVE_TILES
    Py_ssize_t CKBN_TILE_F32
    Py_ssize_t CKBN_TILE_F64
    Py_ssize_t CKBN_VBYTES
    long ckbn_cache_bytes(int level) noexcept
    int ckbn_pages_resident(const void* p, size_t n) noexcept
    void ckbn_h2f(const unsigned short* s, float* d, Py_ssize_t n) noexcept
    void ckbn_f2h(const float* s, unsigned short* d, Py_ssize_t n) noexcept
    void ckbn_mom_tile_f32(const float* x, Py_ssize_t S, Py_ssize_t nr, const float* sh,
                           float* b1, float* b2, const float* pf, Py_ssize_t pfs) noexcept
    void ckbn_mom_tile_f64(const double* x, Py_ssize_t S, Py_ssize_t nr, const double* sh,
                           double* b1, double* b2, const double* pf, Py_ssize_t pfs) noexcept
    void ckbn_gs_tile_f32(const float* e, const float* x, Py_ssize_t S, Py_ssize_t nr,
                          const float* mu, float* b1, float* b2, const float* pfe,
                          const float* pfx, Py_ssize_t pfs) noexcept
    void ckbn_gs_tileh_f32(const float* e, const float* x, Py_ssize_t S, Py_ssize_t nr,
                           const float* mu, float* b1, float* b2, const float* pfe,
                           const float* pfx, Py_ssize_t pfs) noexcept
    void ckbn_gs_tile_f64(const double* e, const double* x, Py_ssize_t S, Py_ssize_t nr,
                          const double* mu, double* b1, double* b2, const double* pfe,
                          const double* pfx, Py_ssize_t pfs) noexcept
    int CKBN_GS_COLS_TILES
    void ckbn_gs_cols3_f32(const float* e, const float* x, Py_ssize_t S, Py_ssize_t nr,
                           const float* mu, float* b1, float* b2, int fresh) noexcept
    void ckbn_gs_cols2_f32(const float* e, const float* x, Py_ssize_t S, Py_ssize_t nr,
                           const float* mu, float* b1, float* b2, int fresh) noexcept
    void ckbn_gs_cols3h_f32(const float* e, const float* x, Py_ssize_t S, Py_ssize_t nr,
                            const float* mu, float* b1, float* b2, int fresh) noexcept
    void ckbn_gs_cols2h_f32(const float* e, const float* x, Py_ssize_t S, Py_ssize_t nr,
                            const float* mu, float* b1, float* b2, int fresh) noexcept
    bint ckbn_fold_f32(const float* b1, const float* b2, Py_ssize_t W, Py_ssize_t n,
                       double* o1, double* o2) noexcept
    bint CKBN_HAVE_EW_RG
    void ckbn_affine_rg_f32(const float* x, float* y, Py_ssize_t S, Py_ssize_t nr,
                            Py_ssize_t n, const float* a, const float* b, int stream) noexcept
    void ckbn_affine_rg_f64(const double* x, double* y, Py_ssize_t S, Py_ssize_t nr,
                            Py_ssize_t n, const double* a, const double* b, int stream) noexcept
    void ckbn_dx_rg_f32(const float* d, const float* x, float* o, Py_ssize_t S,
                        Py_ssize_t nr, Py_ssize_t n, const float* k1, const float* k2,
                        const float* k3) noexcept
    void ckbn_dx_rg_f64(const double* d, const double* x, double* o, Py_ssize_t S,
                        Py_ssize_t nr, Py_ssize_t n, const double* k1, const double* k2,
                        const double* k3) noexcept
    bint ckbn_rows_fit(Py_ssize_t W, size_t item) noexcept
    int ckbn_mom_rows_f32(const float* x, Py_ssize_t nr, Py_ssize_t W, const float* sh,
                          float* b1, float* b2) noexcept
    int ckbn_mom_rows_f64(const double* x, Py_ssize_t nr, Py_ssize_t W, const double* sh,
                          double* b1, double* b2) noexcept
    int ckbn_gs_rows_f32(const float* e, const float* x, Py_ssize_t nr, Py_ssize_t W,
                         const float* mu, float* b1, float* b2) noexcept
    int ckbn_gs_rows_f64(const double* e, const double* x, Py_ssize_t nr, Py_ssize_t W,
                         const double* mu, double* b1, double* b2) noexcept
    int ckbn_gs_act_rows_f32(const float* e, const float* x, Py_ssize_t nr, Py_ssize_t W,
                             const float* mu, const float* za, const float* zb, float s,
                             float h, float* b1, float* b2) noexcept
    int ckbn_gs_act_rows_f64(const double* e, const double* x, Py_ssize_t nr, Py_ssize_t W,
                             const double* mu, const double* za, const double* zb,
                             double s, double h, double* b1, double* b2) noexcept
    float ckbn_ema_f32(float v, float s, float rate) noexcept
    void ckbn_swish_f32(float* z, Py_ssize_t n, int grad) noexcept
    void ckbn_swish_f64(double* z, Py_ssize_t n, int grad) noexcept
    void ckbn_sw_affine_row_f32(const float* x, float* y, Py_ssize_t n, const float* a,
                                const float* b) noexcept
    void ckbn_sw_affine_row_f64(const double* x, double* y, Py_ssize_t n, const double* a,
                                const double* b) noexcept
    void ckbn_sw_affine_seg_f32(const float* x, float* y, Py_ssize_t n, float a,
                                float b) noexcept
    void ckbn_sw_affine_seg_f64(const double* x, double* y, Py_ssize_t n, double a,
                                double b) noexcept
    void ckbn_sw_dx_row_f32(const float* d, const float* x, float* o, Py_ssize_t n,
                            const float* k1, const float* k2, const float* k3,
                            const float* za, const float* zb) noexcept
    void ckbn_sw_dx_row_f64(const double* d, const double* x, double* o, Py_ssize_t n,
                            const double* k1, const double* k2, const double* k3,
                            const double* za, const double* zb) noexcept
    void ckbn_sw_dx_seg_f32(const float* d, const float* x, float* o, Py_ssize_t n,
                            float k1, float k2, float k3, float za, float zb) noexcept
    void ckbn_sw_dx_seg_f64(const double* d, const double* x, double* o, Py_ssize_t n,
                            double k1, double k2, double k3, double za, double zb) noexcept
    void ckbn_sw_gs_row_f32(const float* d, const float* x, Py_ssize_t n, const float* mu,
                            const float* za, const float* zb, float* b1, float* b2) noexcept
    void ckbn_sw_gs_row_f64(const double* d, const double* x, Py_ssize_t n,
                            const double* mu, const double* za, const double* zb,
                            double* b1, double* b2) noexcept
    void ckbn_gs_act_tile_f32(const float* e, const float* x, Py_ssize_t S, Py_ssize_t nr,
                              const float* mu, const float* za, const float* zb, float s,
                              float h, float* b1, float* b2, const float* pfe,
                              const float* pfx, Py_ssize_t pfs) noexcept
    void ckbn_gs_act_tile_f64(const double* e, const double* x, Py_ssize_t S,
                              Py_ssize_t nr, const double* mu, const double* za,
                              const double* zb, double s, double h, double* b1,
                              double* b2, const double* pfe, const double* pfx,
                              Py_ssize_t pfs) noexcept
    void ckbn_gs_act_vecs_f32(const float* e, const float* x, Py_ssize_t S, Py_ssize_t nr,
                              const float* mu, const float* za, const float* zb, float s,
                              float h, float* b1, float* b2, Py_ssize_t nv) noexcept
    void ckbn_gs_act_vecs_f64(const double* e, const double* x, Py_ssize_t S,
                              Py_ssize_t nr, const double* mu, const double* za,
                              const double* zb, double s, double h, double* b1,
                              double* b2, Py_ssize_t nv) noexcept
    void ckbn_touch(const void* p, Py_ssize_t nbytes, Py_ssize_t S, Py_ssize_t nrows) noexcept

# The C-level table's types and constants (ckbn/include/ckbn_kernels.h).
cdef extern from "ckbn_kernels.h" nogil:
    enum:
        CKBN_TABLE_ABI
        CKBN_FLOAT16
        CKBN_FLOAT32
        CKBN_FLOAT64
        CKBN_OK
        CKBN_ERR_NOMEM
        CKBN_ERR_ARG
        CKBN_ERR_DTYPE
    const char* CKBN_TABLE_CAPSULE
    ctypedef struct ckbn_dims:
        Py_ssize_t P, G, R, C
    enum:
        CKBN_ACT_PIECEWISE
        CKBN_ACT_SWISH
    ctypedef struct ckbn_act:
        int on
        int kind
        double slope
        double hi
    ctypedef struct ckbn_kernel_table:
        int abi
        const char* variant
        int has_float16
        int (*forward_train)(int, const void*, ckbn_dims, const double*, const double*,
                             double, const ckbn_act*, void*, double*, double*,
                             int) noexcept nogil
        int (*forward_infer)(int, const void*, ckbn_dims, const double*, const double*,
                             const double*, const double*, double, const ckbn_act*, void*,
                             int) noexcept nogil
        int (*backward)(int, const void*, const void*, ckbn_dims, const double*,
                        const double*, const double*, const double*, double, int,
                        const ckbn_act*, void*, double*, double*, int) noexcept nogil
        int (*stats)(int, const void*, ckbn_dims, double*, double*, int) noexcept nogil
        int (*grad_sums)(int, const void*, const void*, ckbn_dims, const double*,
                         const double*, const double*, const double*, double,
                         const ckbn_act*, double*, double*, int) noexcept nogil
        int (*backward_dx)(int, const void*, const void*, ckbn_dims, const double*,
                           const double*, const double*, const double*, double, double,
                           const double*, const double*, const ckbn_act*, void*, double*,
                           int) noexcept nogil
    int ckbn_layout(int ndim, const int64_t* shape, uint64_t channel_mask, ckbn_dims* d)


cdef enum:
    # Elements per work unit: large enough to amortize a unit's set-up and its
    # partial row, small enough to split mid-sized inputs across threads.
    UNIT_TARGET = 32768
    # Below this many elements one thread does everything (thread start-up
    # costs more than it saves on small inputs).
    PARALLEL_MIN = 65536
    # Minimum lanes per row in the reductions and in the element-wise passes.
    MIN_LANES = 64
    MIN_LANES_EW = 256
    # Widest rows read as "rows" (wider rows are cut into tiles).
    TILE_MAX = 512
    # Rows summed in the data type before adding to float64.
    BLOCK = 64
    # Rows of C > TILE_MAX channels (tiled units): each unit copies its
    # shift row, zeroes four accumulator rows and writes a partial row of
    # moments that the Chan merge reads, so a unit takes TILE_UNIT_MIN
    # elements at least, and up to TILE_UNIT_MAX while the rows still make
    # TILE_MIN_UNITS units (for the threads).  64x7x7x2048 NHWC, 256 rows a
    # unit instead of 64: statistics 0.85x, training forward 0.94x, backward
    # 0.91x the time (AMD EPYC Zen 4, float32, 1 thread; benchmarks/RESULTS.md,
    # issue 18 session 11).
    TILE_UNIT_MIN = 4 * UNIT_TARGET
    TILE_UNIT_MAX = 16 * UNIT_TARGET
    TILE_MIN_UNITS = 16
    # Rows a register tile walks at a time when rows are strided (S > W) or
    # wider than TILE_MAX: that many concurrent streams (on wide rows they
    # hint the next group's lines as they go, _tile_pf in _k_rows.pxi)
    # instead of one stream per row of the block; the backward
    # sums, reading two arrays, walk half as many rows of each.  Narrow
    # contiguous rows shared by several tiles are instead read in memory
    # order first (_touch_rows in _k_rows.pxi).
    ROW_GROUP = 8
    # Fewest register tiles a row of contiguous narrow rows holds for a
    # reduction to read its rows in memory order first (_touch_rows).
    TOUCH_TILES = 4
    # Largest channels-first plane read through lane expansion.
    LANE_PLANE_MAX = 256
    # Channels-first planes of PLANE_RED_VECS float32 vectors or of
    # PLANE_RED_BYTES, whichever is fewer, up to PLANE_RED_MAX elements are
    # reduced in memory order (the "planes" path, _pl_path in _k_plan.pxi),
    # and planes of PLANE_RED_MIN_VECS or more in inputs of at least as many
    # elements as L2 has bytes or of at most one sample per PLANE_RED_PER
    # elements of a plane.
    PLANE_RED_MIN_VECS = 2
    PLANE_RED_VECS = 4
    PLANE_RED_BYTES = 192
    PLANE_RED_MAX = 4096
    PLANE_RED_PER = 4
    # Chunked channels-first passes (_k_chunks.pxi).
    CF_MAX_CHANNEL = 262144   # channels of more elements take the unit path
    CF_LANES = 1024       # most lanes of a small-plane chunk
    CF_MIN_CHUNKS = 8     # fewer chunks leave threads idle: use the unit path
                          # (unless the input runs on one thread anyway)
    CF_SEG_MIN = 64       # shortest plane a chunk's element-wise part writes
                          # plane by plane (shorter: through expanded lanes)
    # Most per-channel coefficient arrays an element-wise pass reads.
    MAX_COEF = 5
    # Channels the Chan merge takes at a time (_chan_merge).
    MERGE_CHANNELS = 256


# Below this many elements a call runs on one thread (read by ckbn._config).
PARALLEL_MIN_ELEMENTS = PARALLEL_MIN


# Tuning from the machine: the cache sizes of the CPU the module runs on
# (never constants fitted to one machine).  The rules, checked on both
# machines measured (AMD EPYC: 32 KiB L1d, 512 KiB L2; Intel Xeon: 48 KiB
# L1d, 2 MiB L2, where they give the sizes tuned there):
#   _cf_elems   elements of one array in a channels-first chunk: L2/8 bytes of
#               float32, so that the backward's x and dy chunks and the lanes
#               take at most half of L2 (Xeon: 64 Ki, EPYC: 16 Ki elements);
#   _f16_slice  elements of a float16 slice: its three float32 buffers take
#               3/8 of L2 (Xeon: 64 Ki, EPYC: 16 Ki);
#   _tile_lanes lanes of a wide-row tile: its shift and block sums (three
#               data-type values per lane) fill at most 3/4 of L1d, so a row
#               of up to that many channels is read whole, in memory order
#               (EPYC float32: 2048, Xeon float32: 3072 lanes);
#   _nt_bytes   the fewest bytes of data taken as too large for L3: half
#               of L3, at least 4 MiB (Zen 4, 32 MiB L3: 16 MiB).  Outputs
#               this large are written with non-temporal stores or, wide
#               rows, in row groups (_k_elementwise.pxi; below it the output
#               stays in L3 for the pass that reads it next);
#   touch_bytes (tuning()) the most bytes of narrow rows (of TOUCH_TILES
#               register tiles or more) the statistics read in memory order
#               just before their register tiles walk them: L1d/4 (Zen 1 and
#               Zen 4: 8 KiB, Xeon: 12 KiB); the backward sums, two arrays,
#               L2/4 over both (_touch_rows in _k_rows.pxi).
cdef Py_ssize_t _L1 = ckbn_cache_bytes(1)
cdef Py_ssize_t _L2 = ckbn_cache_bytes(2)
cdef Py_ssize_t _L3 = ckbn_cache_bytes(3)
cdef Py_ssize_t _cf_elems = max(4096, _L2 // 32)
cdef Py_ssize_t _f16_slice = max(4096, _L2 // 32)
cdef Py_ssize_t _nt_bytes = max(4194304, _L3 // 2)


cdef inline bint _nt_out(const void* o, Py_ssize_t nbytes) noexcept nogil:
    """Whether a pass may write its output of nbytes at o with non-temporal
    stores: _nt_bytes or more (half of L3), in memory that is already there
    (ckbn_pages_resident: not a new allocation, whose pages the system zeroes
    into the cache on first touch, so that streamed lines are written
    twice).  Decided once per pass, before it writes.  Channels-first planes
    (_k_elementwise.pxi, _k_chunks.pxi), 25.7 MB NCHW on AMD Zen 4 (32 MiB
    L3), caches flushed before each call: 0.76-0.82x the time of plain
    stores in training, 0.82-0.85x in the backward, 0.93-0.98x in
    inference; the input stays in L3 for the pass that reads it again.
    benchmarks/RESULTS.md, issue 18, session 18."""
    return nbytes >= _nt_bytes and ckbn_pages_resident(o, <size_t> nbytes) != 0


cdef inline Py_ssize_t _tile_width(Py_ssize_t C, size_t item) noexcept nogil:
    """Lanes per tile of rows of C > TILE_MAX channels of ``item`` bytes."""
    cdef Py_ssize_t w = (_L1 * 3 // 4) // (3 * <Py_ssize_t> item)
    w = (w // 64) * 64
    if w < TILE_MAX:
        w = TILE_MAX
    if C <= w:
        return C
    # equal tiles, each a multiple of 64 lanes
    cdef Py_ssize_t n = (C + w - 1) // w
    return ((C + n - 1) // n + 63) // 64 * 64


def output_streams(const unsigned char[::1] out):
    """Whether a pass would stream an output at ``out``'s bytes (_nt_out:
    nt_bytes or more, in memory already there), for tests and benchmarks."""
    return _nt_out(&out[0], out.shape[0]) if out.shape[0] > 0 else False


def tuning():
    """The machine-derived tuning of this module (for benchmarks and tests)."""
    return {"L1d": _L1, "L2": _L2, "L3": _L3, "vector_bytes": CKBN_VBYTES,
            "cf_elems": _cf_elems, "f16_slice": _f16_slice,
            "tile_lanes_f32": _tile_width(1 << 30, 4), "tile_lanes_f64": _tile_width(1 << 30, 8),
            "row_group": ROW_GROUP,
            "ew_row_group": EW_ROW_GROUP, "touch_bytes": _L1 // 4,
            "touch_bytes_sums": _L2 // 4, "touch_tiles": TOUCH_TILES,
            "plane_red_vecs": PLANE_RED_VECS, "plane_red_bytes": PLANE_RED_BYTES,
            "unit_target": UNIT_TARGET, "nt_bytes": _nt_bytes,
            "tile_unit_min": TILE_UNIT_MIN, "tile_unit_max": TILE_UNIT_MAX,
            "tile_min_units": TILE_MIN_UNITS,
            "parallel_min": PARALLEL_MIN}


def openmp_enabled():
    """True when this kernel module was compiled with OpenMP."""
    return bool(CKBN_HAVE_OPENMP)


# ---------------------------------------------------------------------------
# Activation, one description for every pass: off, or on with a kind,
#   ACT_PIECEWISE  act(z) = z > 0 ? min(z, hi) : slope * z (ReLU: slope 0, hi
#                  inf; ReLU6: slope 0, hi 6; leaky ReLU: slope s, hi inf);
#                  act'(z) = z > 0 ? (z < hi) : slope;
#   ACT_SWISH      act(z) = z * sigmoid(z) (slope and hi unused);
#                  act'(z) = sigmoid(z) * (1 + z * (1 - sigmoid(z))).
# The inner loops (_k_rows.pxi) take the mode _act_mode(): AM_NONE, AM_PIECEWISE
# or AM_SWISH; the swish loops are C helpers (ckbn_sw_* in
# ckbn_kernel_helpers.h).
# ---------------------------------------------------------------------------

cdef enum:
    ACT_PIECEWISE = 0       # the kinds (ckbn_act.kind: CKBN_ACT_PIECEWISE, ...)
    ACT_SWISH = 1
    AM_NONE = 0             # the modes
    AM_PIECEWISE = 1
    AM_SWISH = 2


cdef struct Act:
    bint on
    int kind
    double slope
    double hi


cdef inline Act _act(bint on, double slope, double hi) noexcept nogil:
    """A piecewise-linear activation (or none)."""
    cdef Act a
    a.on = on
    a.kind = ACT_PIECEWISE
    a.slope = slope
    a.hi = hi
    return a


cdef inline Act _act_kind(bint on, double slope, double hi, int kind) except *:
    """The activation of the def entry points' arguments (act, slope, hi, kind)."""
    if kind != ACT_PIECEWISE and kind != ACT_SWISH:
        raise ValueError(f"kernel: activation kind must be {ACT_PIECEWISE} (piecewise "
                         f"linear) or {ACT_SWISH} (swish), got {kind}")
    cdef Act a = _act(on, slope, hi)
    a.kind = kind
    return a


cdef inline int _act_mode(const Act* a) noexcept nogil:
    if not a.on:
        return AM_NONE
    return AM_SWISH if a.kind == ACT_SWISH else AM_PIECEWISE


# ---------------------------------------------------------------------------
# The thread rule and the scratch rule
# ---------------------------------------------------------------------------

cdef inline int _threads(Py_ssize_t work, Py_ssize_t units, int n_threads) noexcept nogil:
    """Threads for a pass over ``work`` elements cut into ``units``."""
    if work < PARALLEL_MIN or n_threads < 1 or units < 2:
        return 1
    if n_threads > units:
        return <int> units
    return n_threads


cdef struct Scratch:
    char* base
    size_t per          # bytes per thread, a multiple of 64


cdef inline int _scratch_new(Scratch* s, int nt, size_t nbytes) noexcept nogil:
    """Allocate ``nbytes`` for each of ``nt`` threads; CKBN_ERR_NOMEM on failure."""
    s.per = (nbytes + 63) // 64 * 64
    s.base = <char*> malloc(s.per * nt if s.per > 0 else 64)
    return CKBN_OK if s.base != NULL else CKBN_ERR_NOMEM


cdef inline char* _scratch_mine(const Scratch* s) noexcept nogil:
    """The calling thread's slice (thread 0 outside a parallel region)."""
    return s.base + <size_t> threadid() * s.per


cdef enum:
    # Bytes over which L1d's sets repeat (a page: 64 sets of 64-byte lines).
    SET_SPAN = 4096


cdef inline char* _half_page(char* p, const void* x) noexcept nogil:
    """The first address from p on (at most SET_SPAN - 64 bytes on) whose
    offset in a page is x's plus half a page, to a 64-byte line: where
    per-channel rows that a pass reads beside x's rows go.

    Rows of channels-last data that are a multiple of SET_SPAN bytes (C =
    1024 or 2048 float32) put a column of every row in the same L1d sets,
    and per-channel rows (a reduction's shift and block sums, an
    element-wise pass's coefficients) that start near x's offset in a page
    compete with them there.  On AMD EPYC Zen 4 (32 KiB 8-way L1d), float32,
    1 thread, x, dy and the output 16 bytes past a page: the wide-row
    statistics took 1.17-1.34x and the backward sums 1.11-1.48x the time
    with their rows in x's sets, the affine pass of 392x2048 1.42-1.45x and
    its dx pass 1.12-1.22x with the coefficients there; a quarter of a page
    away, 1.04-1.15x (benchmarks/RESULTS.md, issue 18, session 20)."""
    cdef size_t want = (<size_t> x + SET_SPAN // 2) % SET_SPAN // 64 * 64
    return p + (want + SET_SPAN - (<size_t> p) % SET_SPAN) % SET_SPAN


cdef inline char* _coefs_new(size_t nbytes, const void* x, char** raw) noexcept nogil:
    """``nbytes`` of per-channel coefficient rows for passes over x, placed
    by _half_page; ``raw[0]`` is the block to free (NULL, and NULL returned,
    when out of memory)."""
    raw[0] = <char*> malloc(nbytes + SET_SPAN)
    if raw[0] == NULL:
        return NULL
    return _half_page(raw[0], x)


cdef inline int _raise_status(int status, str where) except -1:
    if status == CKBN_ERR_NOMEM:
        raise MemoryError(f"{where}: out of memory for the kernel's scratch")
    if status != CKBN_OK:
        raise ValueError(f"{where}: kernel status {status}")
    return 0


# ---------------------------------------------------------------------------
# Per-channel arithmetic shared by every path
# ---------------------------------------------------------------------------

cdef inline void _moments(double K, double S1, double S2, double inv,
                          double* mean, double* m2) noexcept nogil:
    """Mean and M2 (sum of squared deviations) of n values from the sums S1,
    S2 of d = x - K and d*d, ``inv`` = 1/n: never E[x^2] - E[x]^2 on
    unshifted data.  Multiplied by 1/n, computed once per part, rather than
    divided by n lane by lane: the same bits where n is a power of two, and
    otherwise within an ulp.  (Per lane, the two divisions took 13-15% of
    the statistics of 392x2048 float32 on Zen 4, benchmarks/RESULTS.md,
    session 16.)"""
    cdef double d = S2 - (S1 * S1) * inv
    mean[0] = K + S1 * inv
    m2[0] = d if d > 0.0 else 0.0 * d   # 0.0 * d keeps NaN


cdef inline double _sum_exc(double S1, double S2, double mu, double mean) noexcept nogil:
    """sum e*(x - mean) from S1 = sum e and S2 = sum e*(x - mu), mu the mean
    rounded to the data type: the correction restores float64 accuracy."""
    return S2 + (mu - mean) * S1


cdef void _chan_merge(const double* pm, const double* pm2, const double* pn,
                      Py_ssize_t n_parts, Py_ssize_t stride, Py_ssize_t C,
                      double* mean, double* var) noexcept nogil:
    """The one merge of partial statistics: parts k = 0 .. n_parts-1 hold
    (mean, M2) of pn[k] values per channel at pm + k*stride, pm2 + k*stride;
    mean, var (biased) of all of them, merged in part order by Chan et al.'s
    formula.  The weights depend on the counts only, so the channel loop is
    division-free (and vectorizes).  The channels go MERGE_CHANNELS at a
    time, so that their running mean and M2 stay in L1 while every part's
    values for them are merged in (392x2048 NHWC, 7 parts: 2048 channels'
    running values alone fill a 32 KiB L1d)."""
    cdef Py_ssize_t k, c, c0, c1
    cdef double na, nb, nab, wb, wd, delta
    cdef const double* qm
    cdef const double* q2
    c0 = 0
    while c0 < C:
        c1 = c0 + MERGE_CHANNELS if c0 + MERGE_CHANNELS < C else C
        for c in range(c0, c1):
            mean[c] = 0.0
            var[c] = 0.0
        na = 0.0
        for k in range(n_parts):
            nb = pn[k]
            nab = na + nb
            wb = nb / nab
            wd = na * nb / nab
            qm = pm + k * stride
            q2 = pm2 + k * stride
            for c in range(c0, c1):
                delta = qm[c] - mean[c]
                mean[c] = mean[c] + delta * wb
                var[c] = var[c] + q2[c] + delta * delta * wd
            na = nab
        wb = 1.0 / na
        for c in range(c0, c1):
            var[c] = var[c] * wb
        c0 = c1


cdef inline void _norm_coefs(const double* scale, const double* offset,
                             const double* mean, const double* var, double eps,
                             Py_ssize_t n, floating* a, floating* b) noexcept nogil:
    """a = scale / sqrt(var + eps), b = offset - mean * a, rounded once to the
    data type.  The forward passes and the backward's recomputation of the
    pre-activation use these same values."""
    cdef Py_ssize_t c
    cdef double k
    for c in range(n):
        k = scale[c] / sqrt(var[c] + eps)
        a[c] = <floating> k
        b[c] = <floating> (offset[c] - mean[c] * k)


cdef inline void _bwd_coefs(const double* scale, const double* mean, const double* var,
                            double eps, bint training, double cnt,
                            const double* sum_e,    # IN  (n,)
                            double* sdx,            # IN  sum(e * (x - mean)); OUT dscale
                            floating* kk,           # OUT k1, k2, k3 (3n,)
                            Py_ssize_t n) noexcept nogil:
    """The backward's per-channel coefficients, from the sums over the batch:
    dx = e*k1 + (x*k2 + k3) and dscale = sum(e * xhat)."""
    cdef Py_ssize_t c
    cdef double inv, k1, k2
    for c in range(n):
        inv = 1.0 / sqrt(var[c] + eps)
        k1 = scale[c] * inv
        kk[c] = <floating> k1
        if training:
            k2 = -k1 * inv * inv * sdx[c] / cnt
            kk[n + c] = <floating> k2
            kk[2 * n + c] = <floating> (-k1 * sum_e[c] / cnt - k2 * mean[c])
        else:
            kk[n + c] = 0
            kk[2 * n + c] = 0
        sdx[c] = sdx[c] * inv

