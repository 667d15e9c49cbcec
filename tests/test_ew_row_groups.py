"""Element-wise passes on wide channels-last rows of outputs too large for
the caches (pyx/ckbn/_k_elementwise.pxi ``_ew_rows_rg``): rows of C lanes
(C * item > 4 KiB) written EW_ROW_GROUP rows at a time, a 64-byte line of
lanes down the group (with ReLU6 or leaky ReLU a piece of the row loop), in
outputs of at least ``nt_bytes`` (the kernels' tuning).  Each element is the same expression as on the row-by-row path, so
the rows of a large call equal, bit for bit, those of a small call on the
same rows (below ``nt_bytes``: the row-by-row path), wherever the output
starts, in place too, and for any thread count; and they match float64.
The reductions of such inputs (statistics, backward sums, with and without
an activation), whose register tiles hint the next row group as they walk
(as on every wide-row input), match float64, 1 and 2 threads alike."""

import numpy as np
import pytest

from tests.test_ew_rows import _k, _out_at
from tests.twin import skip_on_twin

MAX_BYTES = 64 << 20     # larger thresholds (CPUs with a huge L3): skip


def _rows(k, C, dtype, threshold="nt_bytes"):
    """Rows of C lanes just past the threshold (a key of the kernels'
    tuning), not a multiple of the group."""
    skip_on_twin("has no tuning: the row groups and their thresholds are the compiled kernels'")
    t = k.tuning()
    if t[threshold] > MAX_BYTES:
        pytest.skip(f"{threshold} {t[threshold]} too large to test here")
    row = C * np.dtype(dtype).itemsize
    rows = -(-t[threshold] // row)
    return rows + (t["ew_row_group"] + 1 - rows % t["ew_row_group"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_affine_outputs_of_l3_size_stream_the_same_values(dtype):
    """From L3's size on, the affine's row groups write their whole lines
    with non-temporal stores (EW_RG_STREAM): the same bits as the row path
    of small calls on the first rows and the last group's, at every output
    start, and in place (where nothing streams)."""
    k = _k()
    C = 2048
    rows = _rows(k, C, dtype, "L3")
    m = 37
    rng = np.random.default_rng(3)
    x = rng.standard_normal(rows * C).astype(dtype)
    a, b = (rng.uniform(-2, 2, C).astype(dtype) for _ in range(2))
    item = np.dtype(dtype).itemsize
    for shift in (0, 1, 64 // item - 1):
        y = _out_at(x.size, shift, dtype)
        k.bn_affine(x, 1, 1, rows, C, a, b, y, 1)
        for lo in (0, rows // 2, rows - m):
            sl = slice(lo * C, (lo + m) * C)
            ys = _out_at(m * C, shift, dtype)
            k.bn_affine(x[sl], 1, 1, m, C, a, b, ys, 1)
            np.testing.assert_array_equal(y[sl], ys)
    z = _out_at(x.size, 0, dtype)
    z[...] = x
    k.bn_affine(z, 1, 1, rows, C, a, b, z, 2)
    y0 = _out_at(x.size, 0, dtype)
    k.bn_affine(x, 1, 1, rows, C, a, b, y0, 2)
    np.testing.assert_array_equal(z, y0)


@pytest.mark.parametrize("C,dtype,tol", [(1040, np.float32, 1e-6), (1280, np.float32, 1e-6),
                                         (2048, np.float32, 1e-6), (1024, np.float64, 1e-14)])
def test_wide_rows_of_large_outputs_match_the_row_path(C, dtype, tol):
    k = _k()
    rows = _rows(k, C, dtype)
    m = 37      # rows of the small calls (far below nt_bytes)
    rng = np.random.default_rng(C)
    x = rng.standard_normal(rows * C).astype(dtype)
    dy = rng.standard_normal(rows * C).astype(dtype)
    a, b, k1, k2, k3 = (rng.uniform(-2, 2, C).astype(dtype) for _ in range(5))
    item = np.dtype(dtype).itemsize
    for shift in (0, 1, 64 // item - 1):
        y = _out_at(x.size, shift, dtype)
        k.bn_affine(x, 1, 1, rows, C, a, b, y, 1)
        dx = _out_at(x.size, shift, dtype)
        k.bn_grad_dx(dy, x, 1, 1, rows, C, k1, k2, k3, dx, 1)
        for lo in (0, rows - m):        # the first rows, and the last group's
            sl = slice(lo * C, (lo + m) * C)
            ys = _out_at(m * C, shift, dtype)
            k.bn_affine(x[sl], 1, 1, m, C, a, b, ys, 1)
            np.testing.assert_array_equal(y[sl], ys)
            dxs = _out_at(m * C, shift, dtype)
            k.bn_grad_dx(dy[sl], x[sl], 1, 1, m, C, k1, k2, k3, dxs, 1)
            np.testing.assert_array_equal(dx[sl], dxs)
    lane = np.arange(rows * C) % C
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    scale = np.abs(x64).max() * 2 + 2
    np.testing.assert_allclose(y, x64 * a[lane] + b[lane], rtol=tol, atol=tol * scale)
    np.testing.assert_allclose(dx, dy64 * k1[lane] + (x64 * k2[lane] + k3[lane]),
                               rtol=tol, atol=tol * scale * 4)
    # two threads, and in place: the same bits
    y2 = np.empty_like(x)
    k.bn_affine(x, 1, 1, rows, C, a, b, y2, 2)
    np.testing.assert_array_equal(y2, y)
    xi = x.copy()
    k.bn_affine(xi, 1, 1, rows, C, a, b, xi, 1)
    np.testing.assert_array_equal(xi, y)


@pytest.mark.parametrize("C", [1280, 2048])
def test_statistics_of_wide_rows_beyond_l3_match_float64(C):
    """Wide rows of inputs of ``nt_bytes`` and more: the statistics' tiles
    hint the next row group as they walk (``_tile_pf``) from DRAM; the moments match
    float64 at |mean|/std = 1e4, for 1 and 2 threads alike."""
    import ckbn

    k = _k()
    rows = _rows(k, C, np.float32)
    rng = np.random.default_rng(C)
    mu = rng.uniform(-1, 1, C) * 1e4
    x = (mu + rng.standard_normal((rows, C))).astype(np.float32)
    x64 = x.astype(np.float64)
    m_ref, v_ref = x64.mean(axis=0), x64.var(axis=0)
    with ckbn.num_threads(1):
        m1, v1 = ckbn.nn.moments(x, (0,))
    with ckbn.num_threads(2):
        m2, v2 = ckbn.nn.moments(x, (0,))
    np.testing.assert_array_equal(m2, m1)
    np.testing.assert_array_equal(v2, v1)
    np.testing.assert_allclose(m1, m_ref, rtol=1e-6)
    np.testing.assert_allclose(v1, v_ref, rtol=1e-5)


@pytest.mark.parametrize("C,dtype,tol", [(2048, np.float32, 1e-5), (1040, np.float32, 1e-5),
                                         (1024, np.float64, 1e-12)])
def test_backward_sums_of_wide_rows_beyond_l3_match_float64(C, dtype, tol):
    """The backward sums' tiles over wide rows of inputs of ``nt_bytes`` and
    more hint the next row group of dy and x as they walk, from DRAM: sum(dy) and
    sum(dy * (x - mean)) match float64 at |mean|/std = 1e4, 1 and 2 threads
    giving the same bits (1040 lanes: tiles and a row loop for the rest)."""
    k = _k()
    rows = _rows(k, C, dtype)
    rng = np.random.default_rng(C + 7)
    mu = rng.uniform(-1, 1, C) * 1e4
    x = (mu + rng.standard_normal((rows, C))).astype(dtype)
    dy = (rng.standard_normal((rows, C)) + 0.5).astype(dtype)
    mean = x.astype(np.float64).mean(axis=0)
    out = {}
    for nt in (1, 2):
        s1, s2 = np.empty(C), np.empty(C)
        k.bn_grad_sums(dy.reshape(-1), x.reshape(-1), 1, 1, rows, C, mean, s1, s2, nt)
        out[nt] = (s1, s2)
    np.testing.assert_array_equal(out[2][0], out[1][0])
    np.testing.assert_array_equal(out[2][1], out[1][1])
    d64 = dy.astype(np.float64)
    ref1 = d64.sum(axis=0)
    ref2 = (d64 * (x.astype(np.float64) - mean)).sum(axis=0)
    scale = np.abs(d64).sum(axis=0)
    np.testing.assert_allclose(out[1][0], ref1, rtol=0, atol=tol * scale.max())
    scale2 = (np.abs(d64) * np.abs(x.astype(np.float64) - mean)).sum(axis=0)
    np.testing.assert_allclose(out[1][1], ref2, rtol=0, atol=tol * scale2.max())


@pytest.mark.parametrize("slope,hi", [(0.0, 6.0), (0.2, np.inf)])
@pytest.mark.parametrize("C,dtype", [(2048, np.float32), (1024, np.float64)])
def test_backward_sums_through_the_activation_of_wide_rows_beyond_l3(C, dtype, slope, hi):
    """The same for the sums through ReLU6 and leaky ReLU (e = dy * act'(z),
    z = x * za + zb): x on a grid of 1/256 and zb = 1/512 make every z exact
    and never 0 or hi, so float64 takes the same branches."""
    k = _k()
    rows = _rows(k, C, dtype)
    rng = np.random.default_rng(C + 11)
    x = (np.round(rng.standard_normal((rows, C)) * 3 * 256) / 256).astype(dtype)
    dy = rng.standard_normal((rows, C)).astype(dtype)
    za = np.ones(C, dtype)
    zb = np.full(C, 1 / 512, dtype)
    mean = x.astype(np.float64).mean(axis=0)
    out = {}
    for nt in (1, 2):
        s1, s2 = np.empty(C), np.empty(C)
        k.bn_grad_sums(dy.reshape(-1), x.reshape(-1), 1, 1, rows, C, mean, s1, s2, nt,
                       za=za, zb=zb, act=True, slope=slope, hi=hi)
        out[nt] = (s1, s2)
    np.testing.assert_array_equal(out[2][0], out[1][0])
    np.testing.assert_array_equal(out[2][1], out[1][1])
    z = x.astype(np.float64) + 1 / 512
    e = dy.astype(np.float64) * np.where(z > 0, (z < hi).astype(np.float64), slope)
    xc = x.astype(np.float64) - mean
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out[1][0], e.sum(axis=0), rtol=0,
                               atol=tol * np.abs(e).sum(axis=0).max())
    np.testing.assert_allclose(out[1][1], (e * xc).sum(axis=0), rtol=0,
                               atol=tol * np.abs(e * xc).sum(axis=0).max())


@pytest.mark.parametrize("slope,hi", [(0.0, 6.0), (0.2, np.inf)])
@pytest.mark.parametrize("C,dtype", [(2048, np.float32), (1024, np.float64)])
def test_wide_rows_through_the_activation_match_the_row_path(C, dtype, slope, hi):
    """ReLU6 and leaky ReLU take the row groups in pieces of the row loop:
    the same bits as a small call on the same rows, for every output start."""
    k = _k()
    rows = _rows(k, C, dtype)
    m = 37
    rng = np.random.default_rng(C + 1)
    x = rng.standard_normal(rows * C).astype(dtype)
    dy = rng.standard_normal(rows * C).astype(dtype)
    a, b, k1, k2, k3, za, zb = (rng.uniform(-2, 2, C).astype(dtype) for _ in range(7))
    act = dict(act=True, slope=slope, hi=hi)
    item = np.dtype(dtype).itemsize
    for shift in (0, 64 // item - 3):
        y = _out_at(x.size, shift, dtype)
        k.bn_affine(x, 1, 1, rows, C, a, b, y, 1, **act)
        dx = _out_at(x.size, shift, dtype)
        k.bn_grad_dx(dy, x, 1, 1, rows, C, k1, k2, k3, dx, 1, za, zb, **act)
        for lo in (0, rows - m):
            sl = slice(lo * C, (lo + m) * C)
            ys = _out_at(m * C, shift, dtype)
            k.bn_affine(x[sl], 1, 1, m, C, a, b, ys, 1, **act)
            np.testing.assert_array_equal(y[sl], ys)
            dxs = _out_at(m * C, shift, dtype)
            k.bn_grad_dx(dy[sl], x[sl], 1, 1, m, C, k1, k2, k3, dxs, 1, za, zb, **act)
            np.testing.assert_array_equal(dx[sl], dxs)
    z = x.astype(np.float64) * a[np.arange(rows * C) % C] + b[np.arange(rows * C) % C]
    ref = np.where(z > 0, np.minimum(z, hi), slope * z)
    np.testing.assert_allclose(y, ref, rtol=1e-5 if dtype == np.float32 else 1e-13,
                               atol=1e-5 if dtype == np.float32 else 1e-13)
