"""ckbn.nn ops against a float64 NumPy reference."""

import numpy as np
import pytest

import ckbn
from ckbn import _kernels_numpy, _ops
from ckbn._dispatch import available_kernels, kernel_name
from ckbn._layout import make_layout

DTYPES = [np.float16, np.float32, np.float64]

# (shape, channel axes) covering NHWC, NCHW, 2-D, 5-D, multi-axis, two separate
# channel runs, a run followed by reduced axes (transposing path), odd sizes.
CASES = [
    ((4, 5, 6, 7), [3]),          # NHWC
    ((4, 7, 5, 6), [1]),          # NCHW
    ((9, 3), [1]),                # 2-D
    ((1, 1), [1]),                # N = 1, C = 1
    ((17, 1), [1]),               # C = 1
    ((1, 33), [1]),               # N = 1
    ((3, 4, 5, 6, 7), [4]),       # 5-D channels last
    ((3, 4, 5, 6, 7), [1]),       # 5-D channels first
    ((5, 4, 3), [1, 2]),          # multi-axis, one run
    ((2, 3, 4, 5), [1, 3]),       # two runs, the second last
    ((6, 3, 10, 10, 4), [1, 4]),  # multi-axis
    ((3, 4, 5, 6), [1, 2]),       # a run followed by a reduced axis
    ((2, 3, 4, 5, 6), [1, 3]),    # two runs followed by reduced axis (transpose)
    ((2, 3, 4, 5, 6), [0, 2, 4]), # three runs (transpose)
    ((33, 3), [1]),               # 3 channels: lanes wrap
    ((2, 5, 5, 17), [3]),         # 17 channels: not a multiple of vector width
    ((3, 41000), [0]),            # long rows split into several units
    ((2, 2, 70001), [1]),         # long planes split into several units
    ((70, 1030), [1]),            # wide rows: channel tiles, last one partial
    ((3, 2, 5, 700), [1, 3]),     # channel tiles with several groups
    ((9, 2, 600), [2]),           # 600 channels, rows not a multiple of 8
    ((3, 5, 24, 24), [1]),        # channels first, 576-value planes: segment mode
    ((4, 3, 70, 2), [1, 3]),      # segment mode with 2 channels per group
    ((3, 4, 9, 9, 5), [1, 4]),    # segment mode, 81 rows of 5 channels
]


def _tol(dtype):
    return {np.float16: 2e-2, np.float32: 2e-5, np.float64: 1e-11}[dtype]


def _reference(x, axes, scale, offset, eps):
    xd = x.astype(np.float64)
    red = tuple(i for i in range(x.ndim) if i not in axes)
    kshape = tuple(n if i in axes else 1 for i, n in enumerate(x.shape))
    mean = xd.mean(axis=red, keepdims=True)
    var = ((xd - mean) ** 2).mean(axis=red, keepdims=True)
    y = (xd - mean) / np.sqrt(var + eps) * scale.reshape(kshape) + offset.reshape(kshape)
    return y, mean, var, red, kshape


def _data(shape, dtype, seed=0, loc=3.0, sd=2.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * sd + loc).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axes", CASES)
def test_fused_batch_norm_training(shape, axes, dtype):
    x = _data(shape, dtype)
    cshape = tuple(shape[a] for a in axes)
    rng = np.random.default_rng(1)
    scale = rng.uniform(0.5, 2.0, cshape)
    offset = rng.uniform(-1.0, 1.0, cshape)
    y, m, v = ckbn.nn.fused_batch_norm(x, scale, offset, epsilon=1e-3, axis=axes)
    ry, rm, rv, _, _ = _reference(x, axes, scale, offset, 1e-3)
    tol = _tol(dtype)
    assert y.dtype == dtype and y.shape == shape
    stat_dtype = np.float32 if dtype == np.float16 else dtype
    assert m.dtype == stat_dtype and m.shape == cshape and v.shape == cshape
    np.testing.assert_allclose(m, rm.reshape(cshape), rtol=tol, atol=tol)
    np.testing.assert_allclose(v, rv.reshape(cshape), rtol=tol, atol=tol)
    np.testing.assert_allclose(y.astype(np.float64), ry, rtol=tol * 5, atol=tol * 5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axes", CASES)
def test_fused_batch_norm_grad_training(shape, axes, dtype):
    x = _data(shape, dtype)
    dy = _data(shape, dtype, seed=2, loc=0.5, sd=1.0)
    cshape = tuple(shape[a] for a in axes)
    scale = np.random.default_rng(3).uniform(0.5, 2.0, cshape)
    eps = 1e-3
    _, m, v = ckbn.nn.fused_batch_norm(x, scale, None, epsilon=eps, axis=axes)
    dx, ds, do = ckbn.nn.fused_batch_norm_grad(dy, x, scale, m, v, epsilon=eps, axis=axes)
    _, rm, rv, red, kshape = _reference(x, axes, scale, np.zeros(cshape), eps)
    xd, dyd = x.astype(np.float64), dy.astype(np.float64)
    inv = 1.0 / np.sqrt(rv + eps)
    xhat = (xd - rm) * inv
    rdo = dyd.sum(axis=red)
    rds = (dyd * xhat).sum(axis=red)
    rdx = scale.reshape(kshape) * inv * (
        dyd - dyd.mean(axis=red, keepdims=True) - xhat * (dyd * xhat).mean(axis=red, keepdims=True)
    )
    tol = _tol(dtype)
    n = x.size / np.prod(cshape)
    np.testing.assert_allclose(do, rdo.reshape(cshape), rtol=tol * 10, atol=tol * 10 * np.sqrt(n))
    np.testing.assert_allclose(ds, rds.reshape(cshape), rtol=tol * 10, atol=tol * 10 * np.sqrt(n))
    scale_dx = max(1.0, np.abs(rdx).max())
    np.testing.assert_allclose(dx.astype(np.float64), rdx, rtol=tol * 10, atol=tol * 10 * scale_dx)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt,shape", [("NHWC", (3, 4, 5, 6)), ("NCHW", (3, 6, 4, 5)),
                                       ("NC", (7, 6)), ("NCDHW", (2, 6, 3, 2, 2)),
                                       ("NDHWC", (2, 3, 2, 2, 6))])
def test_inference_and_data_format(fmt, shape, dtype):
    x = _data(shape, dtype)
    axis = 1 if fmt[1] == "C" and len(fmt) > 2 else len(shape) - 1
    rng = np.random.default_rng(5)
    mean = rng.standard_normal(6)
    var = rng.uniform(0.5, 3.0, 6)
    scale = rng.uniform(0.5, 2.0, 6)
    offset = rng.standard_normal(6)
    y, m, v = ckbn.nn.fused_batch_norm(x, scale, offset, mean, var, epsilon=1e-2,
                                       data_format=fmt, is_training=False)
    kshape = [1] * len(shape)
    kshape[axis] = 6
    ref = ((x.astype(np.float64) - mean.reshape(kshape)) / np.sqrt(var.reshape(kshape) + 1e-2)
           * scale.reshape(kshape) + offset.reshape(kshape))
    tol = _tol(dtype)
    np.testing.assert_allclose(y.astype(np.float64), ref, rtol=tol * 5, atol=tol * 5)
    np.testing.assert_allclose(m, mean.astype(m.dtype))
    # Inference gradient: dx = dy * scale / sqrt(var + eps).
    dy = _data(shape, dtype, seed=9)
    dx, ds, do = ckbn.nn.fused_batch_norm_grad(dy, x, scale, mean, var, epsilon=1e-2,
                                               data_format=fmt, is_training=False)
    rdx = dy.astype(np.float64) * (scale / np.sqrt(var + 1e-2)).reshape(kshape)
    np.testing.assert_allclose(dx.astype(np.float64), rdx, rtol=tol * 5, atol=tol * 5)
    red = tuple(i for i in range(len(shape)) if i != axis)
    xhat = (x.astype(np.float64) - mean.reshape(kshape)) / np.sqrt(var.reshape(kshape) + 1e-2)
    np.testing.assert_allclose(ds, (dy.astype(np.float64) * xhat).sum(axis=red),
                               rtol=tol * 10, atol=tol * 10 * np.sqrt(x.size))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axes", CASES[:12])
def test_moments(shape, axes, dtype):
    x = _data(shape, dtype, seed=4)
    reduced = [i for i in range(len(shape)) if i not in axes]
    mean, var = ckbn.nn.moments(x, reduced)
    xd = x.astype(np.float64)
    tol = _tol(dtype)
    assert mean.dtype == dtype
    np.testing.assert_allclose(mean.astype(np.float64), xd.mean(axis=tuple(reduced)), rtol=tol, atol=tol)
    np.testing.assert_allclose(var.astype(np.float64), xd.var(axis=tuple(reduced)), rtol=tol, atol=tol)
    mk, vk = ckbn.nn.moments(x, reduced, keepdims=True)
    assert mk.shape == tuple(n if i in axes else 1 for i, n in enumerate(shape))
    np.testing.assert_array_equal(mk.reshape(-1), mean.reshape(-1))


def test_moments_all_axes_and_no_axes():
    x = _data((4, 5), np.float64)
    m, v = ckbn.nn.moments(x, [0, 1])
    assert m.shape == () and np.isclose(m, x.mean()) and np.isclose(v, x.var())
    m, v = ckbn.nn.moments(x, [])
    np.testing.assert_array_equal(m, x)
    np.testing.assert_array_equal(v, np.zeros_like(x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_normalization_broadcasting(dtype):
    x = _data((4, 3, 5), dtype)
    mean = np.array([[1.0], [2.0], [3.0]])            # (3, 1): channels on axis 1
    var = np.array([[0.5], [1.5], [2.5]])
    scale = np.full((1, 3, 1), 2.0)
    offset = 0.25                                     # scalar
    y = ckbn.nn.batch_normalization(x, mean, var, offset, scale, 1e-3)
    ref = (x.astype(np.float64) - mean) / np.sqrt(var + 1e-3) * scale + offset
    tol = _tol(dtype)
    np.testing.assert_allclose(y.astype(np.float64), ref, rtol=tol * 5, atol=tol * 5)
    # Parameters that vary on every axis (no reduction at all).
    full = _data((4, 3, 5), np.float64, seed=7)
    y = ckbn.nn.batch_normalization(x, full, np.abs(full), None, None, 0.1)
    ref = (x.astype(np.float64) - full) / np.sqrt(np.abs(full) + 0.1)
    np.testing.assert_allclose(y.astype(np.float64), ref, rtol=tol * 5, atol=tol * 5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_accuracy_large_mean(dtype):
    """|mean| / std = 1e4: the variance keeps a relative error <= 1e-5."""
    rng = np.random.default_rng(11)
    x = (1e4 + rng.standard_normal((64, 8, 8, 16))).astype(dtype)
    _, m, v = ckbn.nn.fused_batch_norm(x, None, None)
    xd = x.astype(np.float64)
    rv = xd.var(axis=(0, 1, 2))
    assert np.max(np.abs(v - rv) / rv) <= 1e-5
    np.testing.assert_allclose(m, xd.mean(axis=(0, 1, 2)), rtol=1e-7)
    # Also for NCHW planes.
    xc = np.ascontiguousarray(np.moveaxis(x, 3, 1))
    _, m2, v2 = ckbn.nn.fused_batch_norm(xc, None, None, data_format="NCHW")
    assert np.max(np.abs(v2 - rv) / rv) <= 1e-5


def test_outlier_first_value_variance():
    """A huge first value does not spoil the variance (per-unit shifts + Chan)."""
    x = np.random.default_rng(0).standard_normal((100000, 2))
    x[0, 0] = 1e8
    _, _, v = ckbn.nn.fused_batch_norm(x, None, None)
    np.testing.assert_allclose(v, x.var(axis=0), rtol=1e-9)


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_non_contiguous_and_read_only(layout):
    base = _data((6, 8, 10, 12), np.float32)
    x = base[:, ::2, 1::2, :]              # strided view
    assert not x.flags.c_contiguous
    ro = np.array(x)
    ro.setflags(write=False)
    fmt = "NHWC" if layout == "nhwc" else "NCHW"
    y1, m1, v1 = ckbn.nn.fused_batch_norm(x, None, None, data_format=fmt)
    y2, m2, v2 = ckbn.nn.fused_batch_norm(ro, None, None, data_format=fmt)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(m1, m2)
    dx1, _, _ = ckbn.nn.fused_batch_norm_grad(ro, ro, None, m2, v2, data_format=fmt)
    dx2, _, _ = ckbn.nn.fused_batch_norm_grad(x, x, None, m1, v1, data_format=fmt)
    np.testing.assert_array_equal(dx1, dx2)
    m3, _ = ckbn.nn.moments(x, [0, 1, 2] if layout == "nhwc" else [0, 2, 3])
    np.testing.assert_allclose(m3, m1, rtol=1e-6)


def test_fortran_order_input():
    x = np.asfortranarray(_data((8, 5), np.float64))
    y, m, v = ckbn.nn.fused_batch_norm(x, None, None, data_format="NC", epsilon=0.0)
    np.testing.assert_allclose(m, x.mean(0))
    np.testing.assert_allclose(y, (x - x.mean(0)) / x.std(0), atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axes", [((4, 5, 6, 7), [3]), ((4, 7, 5, 6), [1]),
                                        ((2, 3, 4, 5, 6), [1, 3])])
def test_out_argument(shape, axes, dtype):
    x = _data(shape, dtype)
    expected, m, v = ckbn.nn.fused_batch_norm(x, None, None, axis=axes)
    out = np.empty_like(x)
    y, _, _ = ckbn.nn.fused_batch_norm(x, None, None, axis=axes, out=out)
    assert y is out
    np.testing.assert_array_equal(out, expected)
    # In place.
    xc = x.copy()
    y, _, _ = ckbn.nn.fused_batch_norm(xc, None, None, axis=axes, out=xc)
    assert y is xc
    np.testing.assert_array_equal(xc, expected)
    out2 = np.empty_like(x)
    y = ckbn.nn.batch_normalization(x, m.reshape([n if i in axes else 1 for i, n in enumerate(shape)]),
                                    v.reshape([n if i in axes else 1 for i, n in enumerate(shape)]),
                                    None, None, 1e-3, out=out2)
    assert y is out2
    # The returned statistics were rounded to the data type: close, not bitwise.
    tol = _tol(dtype) * 5
    np.testing.assert_allclose(out2.astype(np.float64), expected.astype(np.float64), rtol=tol, atol=tol)


def test_grad_finite_differences():
    """fused_batch_norm_grad against central differences of a scalar loss (float64)."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((3, 2, 2, 4))
    scale = rng.uniform(0.5, 1.5, 4)
    offset = rng.standard_normal(4)
    w = rng.standard_normal(x.shape)  # loss = sum(w * y)
    eps = 1e-3

    def loss(x_, s_, o_):
        y, _, _ = ckbn.nn.fused_batch_norm(x_, s_, o_, epsilon=eps)
        return float((w * y).sum())

    _, m, v = ckbn.nn.fused_batch_norm(x, scale, offset, epsilon=eps)
    dx, ds, do = ckbn.nn.fused_batch_norm_grad(w, x, scale, m, v, epsilon=eps)
    h = 1e-6
    num_dx = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        num_dx[idx] = (loss(xp, scale, offset) - loss(xm, scale, offset)) / (2 * h)
    np.testing.assert_allclose(dx, num_dx, rtol=1e-6, atol=1e-7)
    for i in range(4):
        sp, sm = scale.copy(), scale.copy()
        sp[i] += h
        sm[i] -= h
        assert np.isclose(ds[i], (loss(x, sp, offset) - loss(x, sm, offset)) / (2 * h), rtol=1e-6, atol=1e-7)
        op, om = offset.copy(), offset.copy()
        op[i] += h
        om[i] -= h
        assert np.isclose(do[i], (loss(x, scale, op) - loss(x, scale, om)) / (2 * h), rtol=1e-6, atol=1e-7)


def test_nan_and_inf_propagate():
    x = _data((8, 4), np.float32)
    x[3, 1] = np.nan
    x[5, 2] = np.inf
    y, m, v = ckbn.nn.fused_batch_norm(x, None, None)
    assert np.isnan(m[1]) and np.isnan(y[:, 1]).all()
    assert not np.isfinite(v[2]) or not np.isfinite(m[2])
    assert np.isfinite(y[:, 0]).all() and np.isfinite(y[:, 3]).all()


# --- the compiled kernels against their NumPy twin, on every variant ---------

@pytest.mark.parametrize("variant", available_kernels())
@pytest.mark.parametrize("dims", [(1, 1, 1, 1), (7, 1, 1, 5), (3, 4, 37, 1), (2, 3, 5, 7),
                                  (1, 1, 40000, 1), (300, 1, 1, 130), (2, 2, 9000, 3),
                                  (10, 2, 3, 1030), (70, 1, 1, 513), (5, 6, 300, 1),
                                  (4, 3, 70, 2), (3, 5, 64, 7), (3, 50, 600, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_match_numpy_twin(variant, dims, dtype):
    import importlib

    k = importlib.import_module(f"ckbn._kernels_{variant}")
    P, G, R, C = dims
    rng = np.random.default_rng(sum(dims))
    x = (rng.standard_normal(P * G * R * C) * 2 + 1).astype(dtype)
    dy = rng.standard_normal(x.size).astype(dtype)
    a = rng.standard_normal(G * C).astype(dtype)
    b = a[::-1].copy()
    out = {}
    for name, mod in (("c", k), ("np", _kernels_numpy)):
        mean = np.empty(G * C)
        var = np.empty(G * C)
        mod.bn_stats(x, P, G, R, C, mean, var, 2)
        y = np.empty_like(x)
        mod.bn_affine(x, P, G, R, C, a, b, y, 2)
        s1 = np.empty(G * C)
        s2 = np.empty(G * C)
        mod.bn_grad_sums(dy, x, P, G, R, C, mean, s1, s2, 2)
        dx = np.empty_like(x)
        mod.bn_grad_dx(dy, x, P, G, R, C, a, b, a * 0.5, dx, 2)
        out[name] = (mean, var, y, s1, s2, dx)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for got, want in zip(out["c"], out["np"]):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * (1 + np.abs(want).max()))


def test_layout_views_are_free():
    x = np.zeros((4, 5, 6, 7), np.float32)
    for axes in ([3], [1], [1, 3], [1, 2]):
        lay = make_layout(x.shape, axes)
        assert lay.perm is None
        assert np.shares_memory(lay.to_canonical(x), x)


@pytest.mark.skipif(bool(__import__("os").environ.get("CKBN_KERNELS")),
                    reason="CKBN_KERNELS forces a variant")
def test_dispatch_reports_a_compiled_variant():
    assert kernel_name() in ("avx512", "avx2", "base")
    assert "base" in available_kernels()


def test_ops_float16_path():
    x = _data((4, 4, 4, 8), np.float16)
    lay = make_layout(x.shape, [3])
    mean, var = _ops.stats(x, lay)
    xd = x.astype(np.float64)
    np.testing.assert_allclose(mean, xd.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(var, xd.var(axis=(0, 1, 2)), rtol=1e-5)


@pytest.mark.parametrize("shape,fmt", [((64, 32, 32, 32), "NHWC"), ((64, 32, 32, 32), "NCHW"),
                                       ((8192, 256), "NC")])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_outputs_start_on_a_cache_line(shape, fmt, dtype):
    """Arrays of 4 MiB or more that the ops allocate for y and dx start on a
    64-byte boundary."""
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    y, m, v = ckbn.nn.fused_batch_norm(x, None, None, data_format=fmt)
    yi, _, _ = ckbn.nn.fused_batch_norm(x, None, None, m, v, data_format=fmt, is_training=False)
    dx, _, _ = ckbn.nn.fused_batch_norm_grad(x, x, None, m, v, data_format=fmt)
    for a in (y, yi, dx):
        assert a.__array_interface__["data"][0] % 64 == 0
        assert a.flags.c_contiguous and a.flags.writeable and a.shape == shape
