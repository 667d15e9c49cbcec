"""Batch normalization with an activation in the same pass (``activation=``).

The reference is float64 NumPy: ``y = act(z)`` with
``z = (x - mean) / sqrt(var + eps) * scale + offset`` and, backward, the
gradient of ``act(z)`` (``relu``: 1 where ``z > 0``; ``relu6``: 1 where
``0 < z < 6``; ``leaky_relu``: 1 where ``z > 0``, else the slope) followed by
batch norm's backward.  Inputs are drawn so that no ``z`` lies within 1e-3 of
a kink, where float32 rounding could flip the mask.
"""

import zlib

import numpy as np
import pytest

import ckbn
from tests.test_kernel_paths import _path_is

ACTS = {
    "relu": (0.0, np.inf),
    "relu6": (0.0, 6.0),
    "leaky_relu": (0.1, np.inf),
}


def _act64(z, name):
    slope, hi = ACTS[name]
    return np.where(z > 0, np.minimum(z, hi), slope * z)


def _dact64(z, name):
    slope, hi = ACTS[name]
    return np.where(z > 0, (z < hi).astype(np.float64), slope)


def _channel_axes(ndim, data_format):
    return (1,) if data_format.startswith("NC") and ndim > 2 else (ndim - 1,)


def _reference(x, dy, scale, offset, name, eps, axes, training, mean=None, var=None):
    x64 = x.astype(np.float64)
    red = tuple(i for i in range(x.ndim) if i not in axes)
    shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    if training:
        mean = x64.mean(axis=red, keepdims=True)
        var = x64.var(axis=red, keepdims=True)
    else:
        mean = np.asarray(mean, np.float64).reshape(shape)
        var = np.asarray(var, np.float64).reshape(shape)
    g = np.asarray(scale, np.float64).reshape(shape)
    b = np.asarray(offset, np.float64).reshape(shape)
    inv = 1.0 / np.sqrt(var + eps)
    xhat = (x64 - mean) * inv
    z = xhat * g + b
    y = _act64(z, name)
    e = dy.astype(np.float64) * _dact64(z, name)
    n = x.size / np.prod(shape)
    doffset = e.sum(axis=red)
    dscale = (e * xhat).sum(axis=red)
    if training:
        dx = g * inv * (e - doffset.reshape(shape) / n - xhat * dscale.reshape(shape) / n)
    else:
        dx = e * g * inv
    return z, y, dx, dscale, doffset


def _away_from_kinks(x, scale, offset, name, eps, axes, rng):
    """Redraw the elements whose z lies within 1e-3 of a kink (0, and 6 for relu6)."""
    for _ in range(20):
        z = _reference(x, np.zeros_like(x), scale, offset, name, eps, axes, True)[0]
        bad = np.abs(z) < 1e-3
        if name == "relu6":
            bad |= np.abs(z - 6.0) < 1e-3
        if not bad.any():
            return x
        x = x.copy()
        x[bad] = rng.standard_normal(int(bad.sum())).astype(x.dtype) * 2
    raise AssertionError("could not draw an input away from the kinks")


CASES = [
    ((4, 6, 5, 8), "NHWC"),        # narrow channels-last rows
    ((3, 8, 7, 7), "NCHW"),        # small planes: lane expansion
    ((2, 3, 20, 20), "NCHW"),      # planes larger than the expansion limit
    ((40, 600), "NC"),             # wide rows: channel tiles in the sums
    ((2, 64, 64, 16), "NHWC"),     # large enough for several work units
]


@pytest.mark.parametrize("name", list(ACTS))
@pytest.mark.parametrize("shape,fmt", CASES)
@pytest.mark.parametrize("training", [True, False])
def test_forward_and_backward_match_float64(name, shape, fmt, training):
    rng = np.random.default_rng(zlib.crc32(repr((name, shape, training)).encode()))
    axes = _channel_axes(len(shape), fmt)
    c = shape[axes[0]]
    eps = 1e-3
    # relu6: scales of 3 to 5 send some z above 6, so the upper kink is exercised.
    scale = rng.uniform(3.0, 5.0, c) if name == "relu6" else rng.uniform(0.5, 3.0, c)
    offset = rng.uniform(-1.0, 1.0, c)
    mean = rng.uniform(-0.5, 0.5, c)
    var = rng.uniform(0.5, 2.0, c)
    x = (rng.standard_normal(shape) * 1.5 + 0.3).astype(np.float32)
    if training:
        x = _away_from_kinks(x, scale, offset, name, eps, axes, rng)
    dy = rng.standard_normal(shape).astype(np.float32)
    z, y_ref, dx_ref, ds_ref, do_ref = _reference(
        x, dy, scale, offset, name, eps, axes, training, mean, var)
    if not training:
        near = np.abs(z) < 1e-3
        if name == "relu6":
            near |= np.abs(z - 6.0) < 1e-3
        dy[near] = 0.0   # no mask can differ where dy is 0
        _, y_ref, dx_ref, ds_ref, do_ref = _reference(
            x, dy, scale, offset, name, eps, axes, training, mean, var)
    kw = dict(epsilon=eps, data_format=fmt, activation=name, negative_slope=0.1)
    if training:
        y, m, v = ckbn.nn.fused_batch_norm(x, scale, offset, **kw)
    else:
        y, m, v = ckbn.nn.fused_batch_norm(x, scale, offset, mean, var, is_training=False, **kw)
    np.testing.assert_allclose(y, y_ref, rtol=2e-5, atol=2e-5)
    assert (y >= 0).all() if name != "leaky_relu" else (y[z < 0] < 0).all()
    if name == "relu6":
        assert y.max() <= 6.0 and (z > 6).any()
    dx, ds, do = ckbn.nn.fused_batch_norm_grad(dy, x, scale, m, v, offset=offset,
                                               is_training=training, **kw)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ds, ds_ref, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(do, do_ref, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("dtype,tol", [(np.float16, 2e-2), (np.float64, 1e-10)])
def test_activation_in_float16_and_float64(dtype, tol):
    rng = np.random.default_rng(3)
    shape, axes = (8, 9, 9, 24), (3,)
    scale = rng.uniform(0.5, 3.0, 24)
    offset = rng.uniform(-1, 1, 24)
    x = _away_from_kinks((rng.standard_normal(shape) * 2).astype(dtype), scale, offset,
                         "relu6", 1e-3, axes, rng)
    dy = rng.standard_normal(shape).astype(dtype)
    _, y_ref, dx_ref, ds_ref, do_ref = _reference(x, dy, scale, offset, "relu6", 1e-3, axes,
                                                  True)
    y, m, v = ckbn.nn.fused_batch_norm(x, scale, offset, activation="relu6")
    assert y.dtype == dtype
    np.testing.assert_allclose(y.astype(np.float64), y_ref, rtol=tol, atol=tol)
    dx, ds, do = ckbn.nn.fused_batch_norm_grad(dy, x, scale, m, v, offset=offset,
                                               activation="relu6")
    assert dx.dtype == dtype
    np.testing.assert_allclose(dx.astype(np.float64), dx_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(ds, ds_ref, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(do, do_ref, rtol=tol, atol=tol * 10)


def test_relu_output_is_positive_zero():
    """max(z, 0) gives +0.0 for negative z, never -0.0."""
    x = np.array([[-3.0, 1.0], [-1.0, 3.0]], np.float32)
    y, _, _ = ckbn.nn.fused_batch_norm(x, None, None, epsilon=0.0, activation="relu")
    assert not np.signbit(y).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,data_format", [
    ((16, 8, 8, 192), "NHWC"), ((4, 5, 5, 2048), "NHWC"), ((256, 96), "NC"),
    ((16, 32, 8, 8), "NCHW"), ((3, 7, 5, 5), "NCHW"), ((5, 3, 4, 4), "NHWC")])
@pytest.mark.parametrize("training", [True, False])
def test_relu_gives_positive_zero_on_every_path(shape, data_format, dtype, training):
    """Every element-wise path (rows of any width, channels-first planes, the
    compiled entry, float32 and float64, training and inference): ReLU of a
    negative z is +0.0 (float64 NumPy's max(z, 0)), and the values match."""
    rng = np.random.default_rng(zlib.crc32(repr((shape, data_format)).encode()))
    x = rng.standard_normal(shape).astype(dtype)
    axes = _channel_axes(len(shape), data_format)
    c = shape[axes[0]]
    scale = (rng.random(c) + 0.5).astype(dtype)
    offset = (rng.standard_normal(c) * 0.2).astype(dtype)
    mean = np.zeros(c, dtype) if not training else None
    var = np.ones(c, dtype) if not training else None
    y = ckbn.nn.fused_batch_norm(x, scale, offset, mean, var, epsilon=1e-3,
                                 data_format=data_format, is_training=training,
                                 activation="relu")[0]
    assert (y == 0).sum() > y.size // 4
    assert not np.signbit(y).any()
    red = tuple(i for i in range(len(shape)) if i not in axes)
    sh = [1] * len(shape)
    sh[axes[0]] = c
    x64 = x.astype(np.float64)
    m = x64.mean(red) if training else np.zeros(c)
    v = x64.var(red) if training else np.ones(c)
    z = (x64 - m.reshape(sh)) / np.sqrt(v.reshape(sh) + 1e-3) * scale.reshape(sh) \
        + offset.reshape(sh)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(y, np.maximum(z, 0.0), rtol=tol, atol=tol)


def test_fused_activation_equals_unfused_then_activation():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((16, 10, 10, 32)).astype(np.float32)
    y, _, _ = ckbn.nn.fused_batch_norm(x, None, None)
    yr, _, _ = ckbn.nn.fused_batch_norm(x, None, None, activation="relu")
    np.testing.assert_array_equal(yr, np.maximum(y, 0))


def test_results_do_not_depend_on_thread_count():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((32, 16, 16, 64)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    outs = []
    for n in (1, 2, 3):
        with ckbn.num_threads(n):
            y, m, v = ckbn.nn.fused_batch_norm(x, None, None, activation="leaky_relu")
            g = ckbn.nn.fused_batch_norm_grad(dy, x, None, m, v, activation="leaky_relu")
        outs.append((y, m, v) + tuple(g))
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", ["tanh", "ReLU", 1, ""])
def test_unknown_activation_is_a_value_error(bad):
    x = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="activation must be None or one of"):
        ckbn.nn.fused_batch_norm(x, None, None, activation=bad)
    with pytest.raises(ValueError, match="activation must be None or one of"):
        ckbn.nn.fused_batch_norm_grad(x, x, None, np.zeros(3), np.ones(3), activation=bad)


def test_bad_negative_slope():
    x = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="negative_slope must be finite, got nan"):
        ckbn.nn.fused_batch_norm(x, None, None, activation="leaky_relu",
                                 negative_slope=float("nan"))
    with pytest.raises(TypeError, match="negative_slope must be a real number"):
        ckbn.nn.fused_batch_norm(x, None, None, activation="leaky_relu", negative_slope="0.1")


def test_out_argument_with_activation_writes_in_place():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((8, 5, 5, 16)).astype(np.float32)
    ref, _, _ = ckbn.nn.fused_batch_norm(x, None, None, activation="relu")
    y, _, _ = ckbn.nn.fused_batch_norm(x, None, None, activation="relu", out=x)
    assert y is x
    np.testing.assert_array_equal(x, ref)


@pytest.mark.parametrize("dims", [(1, 1, 300, 24), (4, 40, 49, 1), (3, 20, 500, 1), (2, 3, 7, 600)])
def test_compiled_kernels_agree_with_the_numpy_twin(dims):
    """The activation passes of the kernels against ckbn._kernels_numpy."""
    from ckbn import _kernels_numpy
    from ckbn._dispatch import kernels

    P, G, R, C = dims
    n, gc = P * G * R * C, G * C
    rng = np.random.default_rng(13)
    x = rng.standard_normal(n).astype(np.float32)
    dy = rng.standard_normal(n).astype(np.float32)
    scale = rng.uniform(3.0, 5.0, gc)
    offset = rng.uniform(-1, 1, gc)
    act = dict(act=True, slope=0.1, hi=6.0)
    out = {}
    for name, mod in (("c", kernels()), ("np", _kernels_numpy)):
        y = np.empty(n, np.float32)
        m = np.empty(gc)
        v = np.empty(gc)
        mod.bn_forward_train(x, P, G, R, C, scale, offset, 1e-3, y, m, v, 1, **act)
        dx = np.empty(n, np.float32)
        ds = np.empty(gc)
        do = np.empty(gc)
        mod.bn_backward(dy, x, P, G, R, C, scale, m, v, 1e-3, True, dx, ds, do, 1,
                        offset=offset, **act)
        out[name] = (y, m, v, dx, ds, do)
    for a, b in zip(out["c"], out["np"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


# -- swish (SiLU): z * sigmoid(z) -------------------------------------------------

def _sig64(z):
    return 1.0 / (1.0 + np.exp(-z))


def _swish_reference(x, dy, scale, offset, eps, axes, training, mean=None, var=None):
    """float64 swish(batch_norm(x)) and its gradients, by the closed form
    swish'(z) = s * (1 + z * (1 - s)), s = sigmoid(z)."""
    x64 = x.astype(np.float64)
    red = tuple(i for i in range(x.ndim) if i not in axes)
    shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    if training:
        mean = x64.mean(axis=red, keepdims=True)
        var = x64.var(axis=red, keepdims=True)
    else:
        mean = np.asarray(mean, np.float64).reshape(shape)
        var = np.asarray(var, np.float64).reshape(shape)
    g = np.asarray(scale, np.float64).reshape(shape)
    b = np.asarray(offset, np.float64).reshape(shape)
    inv = 1.0 / np.sqrt(var + eps)
    xhat = (x64 - mean) * inv
    z = xhat * g + b
    s = _sig64(z)
    e = dy.astype(np.float64) * (s * (1.0 + z * (1.0 - s)))
    n = x.size / np.prod(shape)
    doffset = e.sum(axis=red)
    dscale = (e * xhat).sum(axis=red)
    if training:
        dx = g * inv * (e - doffset.reshape(shape) / n - xhat * dscale.reshape(shape) / n)
    else:
        dx = e * g * inv
    return z * s, dx, dscale, doffset


def _fmt_dims(shape, fmt):
    if fmt == "NCHW":
        return (shape[0], shape[1], int(np.prod(shape[2:])), 1)
    return (1, 1, int(np.prod(shape[:-1])), shape[-1])


# One case per path of the kernels (reduction_path; the element-wise passes
# follow the same shapes), small and large, so that the one-thread and the
# parallel passes, the chunked channels-first forward, the planes in memory
# order, lane expansion, rows and
# wide-row tiles all run with swish.
SWISH_CASES = [
    ((4, 256, 7, 7), "NCHW", "chunks-lanes"),
    ((4, 3, 9, 9), "NCHW", "chunks-lanes"),        # one thread
    ((4, 16, 130, 130), "NCHW", "chunks-planes"),
    ((2000, 3, 3, 5), "NCHW", "lanes"),
    ((4, 256, 8, 8), "NCHW", "planes"),
    ((16, 4, 70, 70), "NCHW", "rows"),
    ((16, 6, 6, 40), "NHWC", "rows"),
    ((64, 3), "NC", "rows"),
    ((8, 3, 3, 1030), "NHWC", "tiles"),
    ((4, 8, 8, 2048), "NHWC", "tiles"),
]
SWISH_TOL = {np.float16: (2e-2, 2e-2), np.float32: (2e-5, 1e-4), np.float64: (1e-12, 1e-11)}


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape,fmt,path", SWISH_CASES)
def test_swish_forward_and_backward_match_float64(shape, fmt, path, training, dtype):
    # The NumPy twin has one path: there only the values are checked.
    assert _path_is(_fmt_dims(shape, fmt), path)
    rng = np.random.default_rng(zlib.crc32(repr((shape, training, np.dtype(dtype).name)).encode()))
    axes = _channel_axes(len(shape), fmt)
    c = shape[axes[0]]
    eps = 1e-3
    scale = rng.uniform(0.5, 3.0, c).astype(dtype)
    offset = rng.uniform(-1.0, 1.0, c).astype(dtype)
    mean = rng.uniform(-0.5, 0.5, c).astype(dtype)
    var = rng.uniform(0.5, 2.0, c).astype(dtype)
    x = (rng.standard_normal(shape) * 1.5 + 0.3).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    kw = dict(epsilon=eps, data_format=fmt, activation="swish")
    if training:
        y, m, v = ckbn.nn.fused_batch_norm(x, scale, offset, **kw)
    else:
        y, m, v = ckbn.nn.fused_batch_norm(x, scale, offset, mean, var, is_training=False, **kw)
    assert y.dtype == dtype
    # The reference takes the statistics the kernels used in inference (the
    # given ones) and its own float64 ones in training.
    y_ref, dx_ref, ds_ref, do_ref = _swish_reference(x, dy, scale, offset, eps, axes, training,
                                                     mean, var)
    ty, tg = SWISH_TOL[dtype]
    np.testing.assert_allclose(y.astype(np.float64), y_ref, rtol=ty, atol=ty)
    dx, ds, do = ckbn.nn.fused_batch_norm_grad(dy, x, scale, m, v, offset=offset,
                                               is_training=training, **kw)
    assert dx.dtype == dtype
    np.testing.assert_allclose(dx.astype(np.float64), dx_ref, rtol=tg, atol=tg)
    n = x.size / c
    np.testing.assert_allclose(ds, ds_ref, rtol=tg, atol=tg * np.sqrt(n))
    np.testing.assert_allclose(do, do_ref, rtol=tg, atol=tg * np.sqrt(n))


def test_silu_is_swish():
    rng = np.random.default_rng(21)
    x = rng.standard_normal((8, 6, 6, 16)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y1, m, v = ckbn.nn.fused_batch_norm(x, None, None, activation="swish")
    y2, _, _ = ckbn.nn.fused_batch_norm(x, None, None, activation="silu")
    np.testing.assert_array_equal(y1, y2)
    g1 = ckbn.nn.fused_batch_norm_grad(dy, x, None, m, v, activation="swish")
    g2 = ckbn.nn.fused_batch_norm_grad(dy, x, None, m, v, activation="silu")
    for a, b in zip(g1, g2):
        np.testing.assert_array_equal(a, b)
    # and it is not the plain normalization
    y0, _, _ = ckbn.nn.fused_batch_norm(x, None, None)
    np.testing.assert_allclose(y1, y0 * (1 / (1 + np.exp(-y0.astype(np.float64)))),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("fmt", ["NHWC", "NCHW"])
def test_swish_gradients_match_finite_differences(training, fmt):
    """The float64 kernels' dx, dscale, doffset against central differences of
    the float64 NumPy forward, loss = sum(w * swish(bn(x)))."""
    rng = np.random.default_rng(23)
    shape = (3, 4, 2, 5) if fmt == "NHWC" else (3, 5, 4, 2)
    axes = _channel_axes(4, fmt)
    c = shape[axes[0]]
    x = rng.standard_normal(shape) * 1.5
    w = rng.standard_normal(shape)
    scale = rng.uniform(0.5, 2.0, c)
    offset = rng.uniform(-1.0, 1.0, c)
    mean = rng.uniform(-0.3, 0.3, c)
    var = rng.uniform(0.5, 2.0, c)
    eps = 1e-3
    cshape = [c if i in axes else 1 for i in range(4)]

    def loss(x_, g_, b_):
        if training:
            red = tuple(i for i in range(4) if i not in axes)
            m_ = x_.mean(axis=red, keepdims=True)
            v_ = x_.var(axis=red, keepdims=True)
        else:
            m_, v_ = mean.reshape(cshape), var.reshape(cshape)
        z = (x_ - m_) / np.sqrt(v_ + eps) * g_.reshape(cshape) + b_.reshape(cshape)
        return float((w * z * _sig64(z)).sum())

    def numeric(f, a, h=1e-6):
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            ap, am = a.copy(), a.copy()
            ap[i] += h
            am[i] -= h
            g[i] = (f(ap) - f(am)) / (2 * h)
        return g

    kw = dict(epsilon=eps, data_format=fmt, activation="swish")
    if training:
        _, m, v = ckbn.nn.fused_batch_norm(x, scale, offset, **kw)
    else:
        m, v = mean, var
    dx, ds, do = ckbn.nn.fused_batch_norm_grad(w, x, scale, m, v, offset=offset,
                                               is_training=training, **kw)
    np.testing.assert_allclose(dx, numeric(lambda a: loss(a, scale, offset), x),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ds, numeric(lambda a: loss(x, a, offset), scale),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(do, numeric(lambda a: loss(x, scale, a), offset),
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape,fmt,dtype", [
    ((32, 16, 16, 64), "NHWC", np.float32),     # rows, parallel units
    ((16, 64, 14, 14), "NCHW", np.float32),     # chunked channels first
    ((400, 3, 9, 9), "NCHW", np.float64),       # lanes
    ((16, 4, 4, 2048), "NHWC", np.float64),     # tiles
    ((16, 32, 12, 12), "NHWC", np.float16),     # float16 slices
])
def test_swish_results_do_not_depend_on_thread_count(shape, fmt, dtype):
    rng = np.random.default_rng(29)
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    c = shape[1] if fmt == "NCHW" else shape[-1]
    scale = rng.uniform(0.5, 2.0, c).astype(dtype)
    offset = rng.uniform(-1.0, 1.0, c).astype(dtype)
    kw = dict(data_format=fmt, activation="swish")
    outs = []
    for n in (1, 2):
        with ckbn.num_threads(n):
            y, m, v = ckbn.nn.fused_batch_norm(x, scale, offset, **kw)
            yi, _, _ = ckbn.nn.fused_batch_norm(x, scale, offset, m, v, is_training=False, **kw)
            g = ckbn.nn.fused_batch_norm_grad(dy, x, scale, m, v, offset=offset, **kw)
            gi = ckbn.nn.fused_batch_norm_grad(dy, x, scale, m, v, offset=offset,
                                               is_training=False, **kw)
        outs.append((y, m, v, yi) + tuple(g) + tuple(gi))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


def test_swish_nan_and_inf_propagate():
    x = np.array([[0.5, 1.0], [np.nan, -2.0], [1.5, 3.0]], np.float32)
    y, _, _ = ckbn.nn.fused_batch_norm(x, None, None, np.zeros(2, np.float32),
                                       np.ones(2, np.float32), is_training=False,
                                       epsilon=0.0, activation="swish")
    assert np.isnan(y[1, 0]) and np.isfinite(np.delete(y.reshape(-1), 2)).all()
    y, _, _ = ckbn.nn.fused_batch_norm(np.array([[np.inf, 1.0]], np.float32),
                                       np.ones(2, np.float32), None, np.zeros(2, np.float32),
                                       np.ones(2, np.float32), is_training=False,
                                       epsilon=0.0, activation="swish")
    assert y[0, 0] == np.inf


@pytest.mark.parametrize("dims", [(1, 1, 300, 24), (4, 40, 49, 1), (3, 20, 500, 1),
                                  (2, 3, 7, 600)])
def test_swish_kernels_agree_with_the_numpy_twin(dims):
    from ckbn import _kernels_numpy
    from ckbn._dispatch import kernels

    P, G, R, C = dims
    n, gc = P * G * R * C, G * C
    rng = np.random.default_rng(31)
    x = rng.standard_normal(n).astype(np.float32)
    dy = rng.standard_normal(n).astype(np.float32)
    scale = rng.uniform(0.5, 3.0, gc)
    offset = rng.uniform(-1, 1, gc)
    act = dict(act=True, kind=_kernels_numpy.SWISH)
    out = {}
    for name, mod in (("c", kernels()), ("np", _kernels_numpy)):
        y = np.empty(n, np.float32)
        m = np.empty(gc)
        v = np.empty(gc)
        mod.bn_forward_train(x, P, G, R, C, scale, offset, 1e-3, y, m, v, 1, **act)
        dx = np.empty(n, np.float32)
        ds = np.empty(gc)
        do = np.empty(gc)
        mod.bn_backward(dy, x, P, G, R, C, scale, m, v, 1e-3, True, dx, ds, do, 1,
                        offset=offset, **act)
        out[name] = (y, m, v, dx, ds, do)
    for a, b in zip(out["c"], out["np"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_unknown_kernel_activation_kind_is_a_value_error():
    from ckbn._dispatch import kernels

    k = kernels()
    x = np.ones(12, np.float32)
    y = np.full(12, 7.0, np.float32)
    a = np.ones(3, np.float32)
    d = np.ones(3)
    s1, s2 = np.full(3, 7.0), np.full(3, 7.0)
    # every entry point that takes a kind, each checked before it writes
    calls = {
        "bn_affine": lambda kw: k.bn_affine(x, 1, 1, 4, 3, a, a, y, 1, **kw),
        "bn_forward_train": lambda kw: k.bn_forward_train(x, 1, 1, 4, 3, d, d, 1e-3, y, s1,
                                                          s2, 1, **kw),
        "bn_forward_infer": lambda kw: k.bn_forward_infer(x, 1, 1, 4, 3, d, d, d, d, 1e-3, y,
                                                          1, **kw),
        "bn_grad_sums": lambda kw: k.bn_grad_sums(x, x, 1, 1, 4, 3, d, s1, s2, 1, a, a, **kw),
        "bn_grad_dx": lambda kw: k.bn_grad_dx(x, x, 1, 1, 4, 3, a, a, a, y, 1, a, a, **kw),
        "bn_backward": lambda kw: k.bn_backward(x, x, 1, 1, 4, 3, d, d, d, 1e-3, True, y, s1,
                                                s2, 1, d, **kw),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match="activation kind must be .* got 5"):
            call({"act": True, "kind": 5})
        assert (y == 7.0).all() and (s1 == 7.0).all() and (s2 == 7.0).all(), name
        call({"act": True, "kind": 0})      # the same arguments with a known kind run
        y[:], s1[:], s2[:] = 7.0, 7.0, 7.0
    with pytest.raises(ValueError, match="activation kind must be one of"):
        ckbn._ops._act_args(ckbn._ops.Activation(0.0, np.inf, "tanh"))
