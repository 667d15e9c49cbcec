"""Every reduction path of the kernels against a float64 NumPy model.

The kernels pick a path from the shape alone (``reduction_path``): rows of
lanes, channel tiles for wide rows, lane expansion for small channels-first
planes, and chunked channels-first passes that normalize a chunk while it is
in cache (small planes side by side, or large planes in rows).  Each path is
checked here for the statistics, the fused training forward and the backward,
in float32 and float64, and for bitwise independence from the thread count.
"""

import os

import numpy as np
import pytest

import ckbn
from ckbn._dispatch import kernels
from tests.twin import TWIN
from tests.twin import compiled_only as _compiled_only

# The NumPy twin (CKBN_KERNELS=numpy) has one path, "numpy": the tests of
# the compiled paths' names, plans, orders, scratch and machine tuning skip
# there, and the numerical checks run on it as on the compiled kernels.
compiled_only = _compiled_only("has one path, not the compiled kernels' paths")


def _path_is(dims, path):
    """Whether the compiled kernels take ``path`` (a prefix ending in "-"
    matches every path it starts) on ``dims``; always true on the twin."""
    if TWIN:
        return True
    got = kernels().reduction_path(*dims)
    return got.startswith(path) if path.endswith("-") else got == path

# (shape, data_format, the path the reductions take)
CASES = [
    ((4, 256, 3, 5), "NCHW", "chunks-lanes"),       # 15-element planes, 4 chunks
    ((3, 600, 3, 5), "NCHW", "chunks-lanes"),       # odd plane size
    ((4, 16, 130, 130), "NCHW", "chunks-planes"),   # 16900-element planes (tail of 4 lanes)
    ((1, 10, 300, 301), "NCHW", "chunks-planes"),   # one sample, one chunk per channel
    ((2000, 3, 3, 5), "NCHW", "lanes"),             # too few channels for chunks
    ((16, 4, 70, 70), "NCHW", "rows"),              # large planes, few channels
    ((16, 6, 6, 40), "NHWC", "rows"),
    ((8, 3, 3, 1030), "NHWC", "tiles"),             # one tile (float64: two)
    ((64, 3), "NC", "rows"),                        # three lanes per channel
    ((4, 3, 3, 5), "NCHW", "chunks-lanes"),         # few chunks, but one thread anyway
    ((2, 4, 70, 70), "NCHW", "chunks-planes"),
    ((16, 8, 8, 2048), "NHWC", "tiles"),            # a whole wide row, or two tiles
    ((35, 7, 9, 1030), "NHWC", "tiles"),            # units of 137 rows, the last of 13
    ((4, 256, 8, 8), "NCHW", "planes"),             # 64-element planes, one unit
    ((37, 64, 8, 9), "NCHW", "planes"),             # units of 28 samples, the last of 9
    ((300, 3, 9, 9), "NCHW", "planes"),             # few channels, many samples
    ((3, 40, 60, 61), "NCHW", "planes"),            # 3660-element planes: a float64 flush
]


def _dims(shape, fmt):
    if fmt == "NCHW":
        n, c = shape[:2]
        return (n, c, int(np.prod(shape[2:])), 1)
    return (1, 1, int(np.prod(shape[:-1])), shape[-1])


def _model(x, dy, scale, offset, eps, axis):
    x64 = x.astype(np.float64)
    red = tuple(i for i in range(x.ndim) if i != axis)
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    mean = x64.mean(axis=red, keepdims=True)
    var = x64.var(axis=red, keepdims=True)
    inv = 1.0 / np.sqrt(var + eps)
    xhat = (x64 - mean) * inv
    g = scale.reshape(shape)
    y = xhat * g + offset.reshape(shape)
    n = x.size / x.shape[axis]
    dy64 = dy.astype(np.float64)
    doffset = dy64.sum(axis=red)
    dscale = (dy64 * xhat).sum(axis=red)
    dx = g * inv * (dy64 - doffset.reshape(shape) / n - xhat * dscale.reshape(shape) / n)
    return mean.reshape(-1), var.reshape(-1), y, dx, dscale, doffset


@compiled_only
@pytest.mark.parametrize("shape,fmt,path", CASES)
def test_cases_take_the_named_path(shape, fmt, path):
    assert kernels().reduction_path(*_dims(shape, fmt)) == path


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-5), (np.float64, 1e-11)])
@pytest.mark.parametrize("shape,fmt,path", CASES)
def test_each_path_matches_float64(shape, fmt, path, dtype, tol):
    rng = np.random.default_rng(len(shape) * 1000 + shape[1])
    axis = 1 if fmt == "NCHW" else len(shape) - 1
    c = shape[axis]
    x = (rng.standard_normal(shape) * 2.0 + 5.0).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    scale = rng.uniform(0.5, 2.0, c)
    offset = rng.uniform(-1.0, 1.0, c)
    eps = 1e-3
    m_ref, v_ref, y_ref, dx_ref, ds_ref, do_ref = _model(x, dy, scale, offset, eps, axis)
    y, m, v = ckbn.nn.fused_batch_norm(x, scale, offset, epsilon=eps, data_format=fmt)
    np.testing.assert_allclose(m.reshape(-1), m_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(v.reshape(-1), v_ref, rtol=tol * 10)
    np.testing.assert_allclose(y, y_ref, rtol=tol * 10, atol=tol * 10)
    dx, ds, do = ckbn.nn.fused_batch_norm_grad(dy, x, scale, m, v, epsilon=eps,
                                               data_format=fmt)
    np.testing.assert_allclose(dx, dx_ref, rtol=tol * 50, atol=tol * 50)
    np.testing.assert_allclose(ds.reshape(-1), ds_ref, rtol=tol * 50, atol=tol * 1e3)
    np.testing.assert_allclose(do.reshape(-1), do_ref, rtol=tol * 50, atol=tol * 1e3)
    # The statistics alone (moments) are the fused pass's statistics, bit for bit.
    red = [i for i in range(x.ndim) if i != axis]
    mm, vv = ckbn.nn.moments(x, red)
    np.testing.assert_array_equal(mm.reshape(-1), m.reshape(-1))
    np.testing.assert_array_equal(vv.reshape(-1), v.reshape(-1))


@pytest.mark.parametrize("shape,fmt,path", CASES)
def test_each_path_is_independent_of_the_thread_count(shape, fmt, path):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    results = []
    for n in (1, 2, 3, 4):
        with ckbn.num_threads(n):
            y, m, v = ckbn.nn.fused_batch_norm(x, None, None, data_format=fmt)
            g = ckbn.nn.fused_batch_norm_grad(dy, x, None, m, v, data_format=fmt)
        results.append((y, m, v) + tuple(g))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape,fmt,path", CASES[:4])
def test_chunked_forward_in_place(shape, fmt, path):
    """y may be x: a chunk's statistics are complete before it is overwritten."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(np.float32)
    ref, m_ref, v_ref = ckbn.nn.fused_batch_norm(x, None, None, data_format=fmt)
    y, m, v = ckbn.nn.fused_batch_norm(x, None, None, data_format=fmt, out=x)
    assert y is x
    np.testing.assert_array_equal(x, ref)
    np.testing.assert_array_equal(m, m_ref)


def test_chunked_statistics_keep_precision_far_from_zero():
    """|mean| / std = 1e4 on the chunked path: variance relative error <= 1e-5."""
    rng = np.random.default_rng(11)
    x = (1e4 + rng.standard_normal((16, 600, 3, 5))).astype(np.float32)
    assert _path_is(_dims(x.shape, "NCHW"), "chunks-")
    _, m, v = ckbn.nn.fused_batch_norm(x, None, None, data_format="NCHW")
    ref = x.astype(np.float64).var(axis=(0, 2, 3))
    assert np.max(np.abs(v - ref) / ref) <= 1e-5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(37, 64, 8, 9), (3, 40, 60, 61)])
def test_planes_statistics_keep_precision_far_from_zero(shape, dtype):
    """|mean| / std = 1e4 on the planes path, statistics and backward sums:
    variance relative error <= 1e-5 (1e-12 in float64), and sum(dy * xhat)
    as accurate, however far the data sit from zero."""
    rng = np.random.default_rng(12)
    x = (1e4 + rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    assert _path_is(_dims(x.shape, "NCHW"), "planes")
    _, m, v = ckbn.nn.fused_batch_norm(x, None, None, data_format="NCHW")
    x64 = x.astype(np.float64)
    ref = x64.var(axis=(0, 2, 3))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert np.max(np.abs(v - ref) / ref) <= tol
    _, ds, do = ckbn.nn.fused_batch_norm_grad(dy, x, None, m, v, epsilon=0.0,
                                              data_format="NCHW")
    # against the statistics the backward is given (float32 m differs from
    # the float64 mean by up to half an ulp of 1e4)
    b = (1, -1, 1, 1)
    xhat = ((x64 - m.astype(np.float64).reshape(b))
            / np.sqrt(v.astype(np.float64)).reshape(b))
    ds_ref = (dy.astype(np.float64) * xhat).sum(axis=(0, 2, 3))
    scale = np.sqrt(dy.astype(np.float64).var()) * np.sqrt(x[0].size)
    assert np.max(np.abs(ds - ds_ref)) <= 10 * tol * scale
    np.testing.assert_allclose(do, dy.astype(np.float64).sum(axis=(0, 2, 3)),
                               rtol=tol, atol=tol * scale)


@compiled_only
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(64, 24, 7, 7), (2, 1026, 4, 8), (2, 1023, 6, 6),
                                   (2, 1025, 7, 7), (4, 513, 8, 8), (2, 301, 14, 14),
                                   (2, 21, 40, 40), (16, 12, 40, 40)])
def test_planes_statistics_shift_each_channel_by_its_own_value(shape, dtype):
    """Neighbouring channels 1e4 to 4e4 apart, each with std 1: the planes
    path shifts each channel by a value of that channel (the first of its
    first plane in the unit, taken as the plane is read), so the variance
    keeps its precision.  A shift from the wrong plane would leave values
    of 1e4 in the float32 block sums, and the variance would be off by far
    more than 1e-5.  The shapes cover four planes at a time and alone (G
    not a multiple of four), channel ranges (small batches), planes of one
    to four vectors and more, and planes beyond one block."""
    k = kernels()
    P, G, R = shape[0], shape[1], shape[2] * shape[3]
    assert k.reduction_path(P, G, R, 1) == "planes"
    rng = np.random.default_rng(31)
    centre = 1e4 * (np.arange(G) % 5 - 2.0)
    x = (centre.reshape(1, -1, 1, 1) + rng.standard_normal(shape)).astype(dtype)
    ref = x.astype(np.float64).var(axis=(0, 2, 3))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for nt in (1, 2):
        mean, var = np.empty(G), np.empty(G)
        k.bn_stats(x.ravel(), P, G, R, 1, mean, var, nt)
        assert np.max(np.abs(var - ref) / ref) <= tol
        # the means within tol of the std (1), or a few ulps of 2e4
        np.testing.assert_allclose(mean, x.astype(np.float64).mean(axis=(0, 2, 3)),
                                   rtol=1e-14, atol=tol)


def test_planes_sums_do_not_depend_on_the_address():
    """A plane is summed from its own first element, in an order fixed by its
    length: the same data at another alignment give the same bits."""
    rng = np.random.default_rng(13)
    shape = (37, 64, 8, 9)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    assert _path_is(_dims(shape, "NCHW"), "planes")
    ref = ckbn.nn.moments(x, [0, 2, 3])
    _, m, v = ckbn.nn.fused_batch_norm(x, None, None, data_format="NCHW")
    gref = ckbn.nn.fused_batch_norm_grad(dy, x, None, m, v, data_format="NCHW")
    for offset in (1, 3, 5):
        bx = np.empty(x.size + 8, np.float32)
        bd = np.empty(x.size + 8, np.float32)
        xs = bx[offset:offset + x.size].reshape(shape)
        ds = bd[offset + 2:offset + 2 + x.size].reshape(shape)
        xs[...] = x
        ds[...] = dy
        for a, b in zip(ckbn.nn.moments(xs, [0, 2, 3]), ref):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(ckbn.nn.fused_batch_norm_grad(ds, xs, None, m, v, data_format="NCHW"),
                        gref):
            np.testing.assert_array_equal(a, b)


def _plane_value(a, lanes):
    """One plane's float32 sum in the planes path's order (ckbn_pl_red_*,
    planes of one block): whole vectors from the plane's first element, the
    last ``len(a) % lanes`` elements in the last lanes of the vector that
    ends the plane, then halves (lane j plus lane j + n/2) down to one."""
    n = a.size
    acc = np.zeros(lanes, np.float32)
    full = n // lanes
    for v in range(full):
        acc = acc + a[v * lanes:(v + 1) * lanes]
    t = n - full * lanes
    if t:
        acc[lanes - t:] = acc[lanes - t:] + a[n - t:]
    while acc.size > 1:
        h = acc.size // 2
        acc = acc[:h] + acc[h:]
    return acc[0]


@compiled_only
@pytest.mark.parametrize("shape", [(4, 514, 7, 7), (3, 701, 6, 6), (2, 600, 8, 8),
                                   (5, 130, 14, 14), (3, 501, 5, 9)])
def test_planes_sums_follow_the_plane_order(shape):
    """The planes path's backward sum of dy, bit for bit against the plane
    order modelled in NumPy: each plane reduced as _plane_value says, whether
    the kernels take it with three others (four channels in a row) or alone
    (G not a multiple of four), then added to the channel's float64 sum in
    sample order.  A wrong lane in the four-plane reduction or in the tail
    changes bits here that a tolerance would not see."""
    k = kernels()
    P, G, R = shape[0], shape[1], shape[2] * shape[3]
    assert k.reduction_path(P, G, R, 1) == "planes"
    lanes = k.tuning()["vector_bytes"] // 4
    rng = np.random.default_rng(21)
    dy = rng.standard_normal(shape).astype(np.float32)
    x = rng.standard_normal(shape).astype(np.float32)
    s1, s2 = np.empty(G), np.empty(G)
    k.bn_grad_sums(dy.ravel(), x.ravel(), P, G, R, 1, np.zeros(G), s1, s2, 1)
    ref = np.zeros(G)
    for p in range(P):
        for g in range(G):
            ref[g] += np.float64(_plane_value(dy[p, g].ravel(), lanes))
    np.testing.assert_array_equal(s1, ref)


@pytest.mark.parametrize("offset", [0, 1, 3, 4, 13])
@pytest.mark.parametrize("shape,fmt,path", [CASES[0], CASES[2], CASES[6], CASES[7]])
def test_outputs_at_any_alignment(shape, fmt, path, offset):
    """The element-wise passes peel the elements before the output's first
    64-byte boundary: every start offset gives the same values."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(np.float32)
    ref, m, v = ckbn.nn.fused_batch_norm(x, None, None, data_format=fmt, activation="relu6")
    buf = np.zeros(x.size + 16, np.float32)
    out = buf[offset:offset + x.size].reshape(shape)
    y, _, _ = ckbn.nn.fused_batch_norm(x, None, None, data_format=fmt, activation="relu6",
                                       out=out)
    assert y is out
    np.testing.assert_array_equal(out, ref)
    assert not buf[:offset].any() and not buf[offset + x.size:].any()
    yi, _, _ = ckbn.nn.fused_batch_norm(x, None, None, m, v, data_format=fmt, out=out,
                                        is_training=False)
    np.testing.assert_array_equal(
        yi, ckbn.nn.fused_batch_norm(x, None, None, m, v, data_format=fmt,
                                     is_training=False)[0])


@compiled_only
@pytest.mark.parametrize("x_off", [0, 16, 48, 64, 2032, 2048, 2100, 4080])
@pytest.mark.parametrize("p_off", [0, 16, 1000, 2048, 4095])
def test_per_channel_rows_start_half_a_page_from_x(x_off, p_off):
    """Per-channel rows read beside x's rows (a reduction's shift and block
    sums, the element-wise coefficients) start at the first 64-byte line
    from their block whose offset in a page is x's plus half a page: out of
    the L1 sets of x's columns when rows are 4 KiB multiples."""
    k = kernels()
    for base in (1 << 20, (1 << 32) + 3 * 4096):
        x, p = base + x_off, base + 7 * 4096 + p_off
        d = k.half_page_offset(p, x)
        q = p + d
        assert 0 <= d < 4096
        assert q % 64 == 0
        assert q % 4096 == (x + 2048) % 4096 // 64 * 64
        assert k.half_page_offset(q, x) == 0


@compiled_only
def test_work_plan_counts_units_from_the_shape():
    k = kernels()
    # 32x56x56x64 NHWC: 6.4 M elements in units of 32 Ki elements.
    assert k.work_plan(1, 1, 32 * 56 * 56, 64) == {
        "path": "rows", "reduction_units": 196, "elementwise_units": 196}
    # 32x256x28x28 NCHW: 784-element planes reduced in memory order, in units
    # of whole samples (as the tiles' rows: at least 4 x 32 Ki elements, up
    # to 16 x 32 Ki while 16 units remain: here 2 samples of 200704).
    t = k.tuning()
    planes = 32 * 256
    per_unit = t["unit_target"] // 784
    assert k.work_plan(32, 256, 784, 1) == {
        "path": "planes", "reduction_units": 16,
        "elementwise_units": -(-planes // per_unit)}
    # Fewer units of samples than 16: each is cut into channel ranges of at
    # least 32 Ki elements, up to 16 units in all.  1x4096x7x7 and 2x2048x7x7
    # (one sample a unit, 200704 and 100352 elements): 6 units; 4x256x8x8
    # (one unit of 4 samples, 65536 elements): 2.
    def plane_units(p, g, r):
        spu = min(max(p // 16, 4 * 32768 // (g * r)), 16 * 32768 // (g * r)) or 1
        nu = -(-p // spu)
        nc = min(-(-16 // nu), min(spu, p) * g * r // 32768, g)
        return nu if nc <= 1 else nu * -(-g // -(-g // nc))

    for shape, units in (((1, 4096, 49), 6), ((2, 2048, 49), 6), ((4, 256, 64), 2)):
        assert plane_units(*shape) == units
        assert k.work_plan(*shape, 1)["reduction_units"] == units
    assert k.work_plan(32, 256, 784, 1)["reduction_units"] == plane_units(32, 256, 784)
    # 8x64x112x112 (12544-element planes) keeps the chunks: as many channels
    # (8 x 12544 elements each) per chunk as fit in one chunk of L2/32
    # elements.
    assert t["cf_elems"] == max(4096, t["L2"] // 32)
    per_chunk = max(1, t["cf_elems"] // (8 * 12544))
    assert k.work_plan(8, 64, 12544, 1)["path"] == "chunks-planes"
    assert k.work_plan(8, 64, 12544, 1)["reduction_units"] == -(-64 // per_chunk)
    # 16x32x8x8 NCHW, float32: 64-element planes of at least one vector, in
    # memory order too; 16x32x2x2 (16-byte planes, below one vector): the
    # chunks, and one chunk holds them all.
    assert k.work_plan(16, 32, 64, 1)["elementwise_units"] == \
        -(-16 * 32 // (t["unit_target"] // 64))
    if t["vector_bytes"] > 16:
        assert k.work_plan(16, 32, 4, 1)["elementwise_units"] == 1
    # 64x7x7x2048 NHWC: rows of 2048 channels read whole where three float32
    # accumulators per lane fit in 3/4 of L1d; units of 4 to 16 x 32 Ki
    # elements, the larger while the rows still make 16 units.
    lanes = t["tile_lanes_f32"]
    assert lanes == max(512, (t["L1d"] * 3 // 4) // 12 // 64 * 64)
    assert (t["tile_unit_min"], t["tile_unit_max"], t["tile_min_units"]) == \
        (4 * 32768, 16 * 32768, 16)

    def tiled_units(rows, channels):
        tiles = -(-channels // lanes)
        width = -(-(-(-channels // tiles)) // 64) * 64
        per_unit = min(max(rows // 16, 4 * 32768 // width), 16 * 32768 // width)
        return tiles * -(-rows // per_unit)

    assert k.work_plan(1, 1, 64 * 49, 2048)["reduction_units"] == tiled_units(64 * 49, 2048)
    # 256x1024: few rows keep the smaller units, so two threads share them.
    assert k.work_plan(1, 1, 256, 1024)["reduction_units"] == tiled_units(256, 1024) >= 2


_NOMEM_SCRIPT = r"""
import resource, sys
import numpy as np
from ckbn._dispatch import kernels
k = kernels()
n = 1 << 21                      # every pass below needs >= 8 MiB of scratch
x = np.ones(n, np.float32)
y = np.empty(n, np.float32)
h = np.ones(n, np.float16).view(np.uint16)
hy = np.empty(n, np.uint16)
one = np.ones(n)
a = np.ones(n, np.float32)
m1, v1 = np.empty(1), np.empty(1)
calls = {
    # (P, G, R, C) = (1, 1, 1, n): n channels -> per-channel coefficient arrays
    "forward_infer": lambda: k.bn_forward_infer(x, 1, 1, 1, n, one, one, one, one, 1e-3, y, 1),
    "affine": lambda: k.bn_affine(x, 1, 1, 1, n, a, a, y, 1),
    # one channel of n values: the float16 slice buffers
    "stats_f16": lambda: k.bn_stats_f16(h, 1, 1, n, 1, m1, v1, 1),
    "affine_f16": lambda: k.bn_affine_f16(h, 1, 1, n, 1, a[:1], a[:1], hy, 1),
}
with open("/proc/self/status") as f:
    vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + (4 << 20), resource.RLIM_INFINITY))
for name in sys.argv[1:]:
    y[:] = 7.0
    try:
        calls[name]()
    except MemoryError as e:
        print(name, "MemoryError", str(e).split(":")[0])
    else:
        print(name, "ran")
"""


@compiled_only
def test_a_failed_scratch_allocation_raises_memory_error():
    """No kernel aborts the process when malloc fails: the status travels up
    to the entry point, which raises MemoryError (here under an address-space
    limit just above what the process already holds)."""
    import subprocess
    import sys
    names = ["forward_infer", "affine"]
    if getattr(kernels(), "f16c_enabled", lambda: False)():
        names += ["stats_f16", "affine_f16"]
    res = subprocess.run([sys.executable, "-c", _NOMEM_SCRIPT] + names,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.split("\n")
    for name in names:
        assert any(line.startswith(f"{name} MemoryError bn_") for line in lines), res.stdout


# Small common calls: the compiled entries of ckbn.nn (pyx/ckbn/_k_small.pxi;
# tests/test_common_entry.py has every size, activations and threads).
SMALL = [((16, 8, 8, 32), "NHWC"), ((16, 32, 8, 8), "NCHW"), ((64, 12), "NC")]


def _small_args(shape, fmt, seed=0):
    rng = np.random.default_rng(seed)
    x = (3.0 + 2.0 * rng.standard_normal(shape)).astype(np.float32)
    c = shape[1] if fmt == "NCHW" else shape[-1]
    scale = rng.uniform(0.5, 2.0, c).astype(np.float32)
    offset = rng.standard_normal(c).astype(np.float32)
    return x, scale, offset


@_compiled_only("has no compiled entries")
@pytest.mark.parametrize("shape,fmt", SMALL)
def test_small_calls_take_the_compiled_entry_and_match_the_general_path(shape, fmt):
    from ckbn import _ops
    from ckbn._layout import make_layout
    from ckbn._validation import channel_axes_from_format

    k = kernels()
    x, scale, offset = _small_args(shape, fmt)
    dy = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    axis = 1 if fmt == "NCHW" else x.ndim - 1
    layout = make_layout(x.shape, channel_axes_from_format(fmt, x.ndim))
    g, b = scale.astype(np.float64), offset.astype(np.float64)
    # training forward
    r = k.common_forward(x, scale, offset, None, None, 1e-3, fmt, True, None, None, 1)
    assert r is not None
    y, m, v = r
    yg, mg, vg = _ops.forward_train(x, layout, g, b, 1e-3)
    np.testing.assert_array_equal(y, yg)
    np.testing.assert_array_equal(m, mg.astype(np.float32))
    np.testing.assert_array_equal(v, vg.astype(np.float32))
    assert m.dtype == v.dtype == y.dtype == np.float32 and m.shape == scale.shape
    m64, v64, y64, dx64, ds64, do64 = _model(x, dy, g, b, 1e-3, axis)
    np.testing.assert_allclose(y, y64, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(v, v64, rtol=1e-5)
    # inference, into out= and in place
    out = np.empty_like(x)
    yi, mi, vi = k.common_forward(x, scale, offset, m, v, 1e-3, fmt, False, out, None, 1)
    assert yi is out
    np.testing.assert_array_equal(yi, _ops.forward_infer(x, layout, g, b, m, v, 1e-3))
    np.testing.assert_array_equal(mi, m)
    xc = x.copy()
    assert k.common_forward(xc, scale, offset, m, v, 1e-3, fmt, False, xc, None, 1)[0] is xc
    np.testing.assert_array_equal(xc, yi)
    # backward
    dx, ds, do = k.common_backward(dy, x, scale, m, v, 1e-3, fmt, True, None, None, 1)
    dxg, dsg, dog = _ops.backward(dy, x, layout, g, m.astype(np.float64),
                                  v.astype(np.float64), 1e-3, True)
    np.testing.assert_array_equal(dx, dxg)
    np.testing.assert_array_equal(ds, dsg.astype(np.float32))
    np.testing.assert_array_equal(do, dog.astype(np.float32))
    np.testing.assert_allclose(dx, dx64, rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(do, do64, rtol=1e-4, atol=1e-3)
    # ckbn.nn takes it: same arrays as the entry gives
    yn, mn, vn = ckbn.nn.fused_batch_norm(x, scale, offset, data_format=fmt)
    np.testing.assert_array_equal(yn, y)
    dxn = ckbn.nn.fused_batch_norm_grad(dy, x, scale, m, v, data_format=fmt)[0]
    np.testing.assert_array_equal(dxn, dx)


@_compiled_only("has no compiled entries")
def test_small_entry_declines_every_other_call():
    k = kernels()
    x, scale, offset = _small_args((16, 8, 8, 32), "NHWC")
    f = k.common_forward
    ok = (x, scale, offset, None, None, 1e-3, "NHWC", True, None, None, 1)
    assert f(*ok) is not None

    def with_(i, value):
        args = list(ok)
        args[i] = value
        return f(*args)

    assert with_(0, x.astype(np.float64)) is None                 # dtype
    assert with_(0, np.asfortranarray(x)) is None                 # layout in memory
    assert with_(0, np.zeros((0, 8, 8, 32), np.float32)) is None  # empty
    assert with_(1, scale.astype(np.float64)) is None
    assert with_(1, scale[:-1]) is None
    assert with_(1, list(scale)) is None
    assert with_(5, 1) is None                                   # int epsilon
    assert with_(5, -1.0) is None
    assert with_(5, float("nan")) is None
    assert with_(6, "NDHWC") is None
    assert with_(7, 1) is None                                   # not a bool
    assert with_(8, np.empty((16, 8, 8, 32), np.float64)) is None
    assert with_(8, np.empty((16, 8, 8, 31), np.float32)) is None
    ro = np.empty_like(x)
    ro.flags.writeable = False
    assert with_(8, ro) is None
    buf = np.empty(x.size + 8, np.float32)
    shifted = buf[4:4 + x.size].reshape(x.shape)
    buf2 = np.concatenate([x.ravel(), np.zeros(8, np.float32)])
    xs = buf2[:x.size].reshape(x.shape)
    overlap = buf2[4:4 + x.size].reshape(x.shape)
    assert f(xs, scale, offset, None, None, 1e-3, "NHWC", True, overlap, None, 1) is None
    assert f(xs, scale, offset, None, None, 1e-3, "NHWC", True, shifted, None, 1) is not None
    assert f(x, scale, offset, None, None, 1e-3, "NHWC", False, None, None, 1) is None  # no stats
    dy = np.ones_like(x)
    b = k.common_backward
    assert b(dy, x, scale, scale, scale, 1e-3, "NHWC", True, None, None, 1) is not None
    assert b(dy[:8], x, scale, scale, scale, 1e-3, "NHWC", True, None, None, 1) is None
    assert b(dy, x, scale, None, scale, 1e-3, "NHWC", True, None, None, 1) is None
    # ... and ckbn.nn's general path still checks and raises for them
    with pytest.raises(ValueError, match="epsilon"):
        ckbn.nn.fused_batch_norm(x, scale, offset, epsilon=-1.0)
    with pytest.raises(ValueError, match="overlaps"):
        ckbn.nn.fused_batch_norm(xs, scale, offset, out=overlap)
    with pytest.raises(ValueError, match="required"):
        ckbn.nn.fused_batch_norm(x, scale, offset, is_training=False)
    with pytest.raises(ValueError, match="shape"):
        ckbn.nn.fused_batch_norm_grad(dy[:8], x, scale, scale, scale)


def _sysfs_cache(level):
    """CPU 0's level-``level`` data or unified cache in bytes, read here from
    Linux's sysfs (None where it is absent)."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    if not os.path.isdir(base):
        return None
    for entry in sorted(os.listdir(base)):
        if not entry.startswith("index"):
            continue
        path = os.path.join(base, entry)
        try:
            with open(os.path.join(path, "level")) as f:
                lvl = int(f.read())
            with open(os.path.join(path, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(path, "size")) as f:
                size = f.read().strip()
        except (OSError, ValueError):
            continue
        if lvl != level or kind not in ("Data", "Unified"):
            continue
        unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:], 1)
        return int(size.rstrip("KMG")) * unit
    return None


@compiled_only
@pytest.mark.parametrize("level,key", [(1, "L1d"), (2, "L2"), (3, "L3")])
def test_cache_sizes_come_from_sysfs_where_linux_has_it(level, key):
    expected = _sysfs_cache(level)
    if expected is None:
        pytest.skip(f"no level-{level} cache in sysfs here")
    assert kernels().tuning()[key] == expected


def _batch_rule_shapes():
    """Three NCHW shapes under L2 (of the variant in use): planes of two
    vectors and a lane in a batch of one sample per PLANE_RED_PER (4) plane
    elements or fewer, which takes the planes path, and one sample more,
    which keeps the chunks; and planes of PLANE_RED_VECS vectors or
    PLANE_RED_BYTES, whichever is fewer, and a lane (7x7 with AVX-512) in a
    batch of 64, which take the planes path at any batch."""
    t = kernels().tuning()
    shapes = []
    r = t["vector_bytes"] // 2 + 1          # 4*r bytes: two vectors and a lane
    r3 = min(t["plane_red_vecs"] * t["vector_bytes"], t["plane_red_bytes"]) // 4 + 1
    for p, r in ((r // 4, r), (r // 4 + 1, r), (64, r3)):
        g = t["parallel_min"] // (p * r) + 1
        assert p * g * r < t["L2"]
        shapes.append((p, g, 1, r))
    return shapes


def test_small_batches_of_small_planes_take_the_planes_path():
    """Planes of two vectors take the planes path in batches of at most one
    sample per four plane elements (the chunks' per-lane work does not
    shrink with the batch), else the chunks below L2; planes of four vectors
    or 192 bytes take it at any batch; all against the float64 model, and
    the same bits for 1 and 3 threads."""
    if not hasattr(kernels(), "tuning"):
        pytest.skip("the NumPy twin has no compiled paths")
    for shape, path in zip(_batch_rule_shapes(), ("planes", "chunks-lanes", "planes")):
        assert kernels().reduction_path(*_dims(shape, "NCHW")) == path
        rng = np.random.default_rng(shape[0])
        x = (rng.standard_normal(shape) * 2.0 + 5.0).astype(np.float32)
        dy = rng.standard_normal(shape).astype(np.float32)
        scale = rng.uniform(0.5, 2.0, shape[1])
        offset = rng.uniform(-1.0, 1.0, shape[1])
        m_ref, v_ref, y_ref, dx_ref, ds_ref, do_ref = _model(x, dy, scale, offset, 1e-3, 1)
        runs = []
        for n in (1, 3):
            with ckbn.num_threads(n):
                y, m, v = ckbn.nn.fused_batch_norm(x, scale, offset, data_format="NCHW")
                g = ckbn.nn.fused_batch_norm_grad(dy, x, scale, m, v, data_format="NCHW")
            runs.append((y, m, v) + tuple(g))
        y, m, v, dx, ds, do = runs[0]
        np.testing.assert_allclose(m, m_ref, rtol=2e-5, atol=2e-5)
        np.testing.assert_allclose(v, v_ref, rtol=2e-4)
        np.testing.assert_allclose(y, y_ref, rtol=2e-4, atol=2e-4)
        np.testing.assert_allclose(dx, dx_ref, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(ds, ds_ref, rtol=1e-3, atol=2e-2)
        np.testing.assert_allclose(do, do_ref, rtol=1e-3, atol=2e-2)
        for a, b in zip(runs[0], runs[1]):
            np.testing.assert_array_equal(a, b)
