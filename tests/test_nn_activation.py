"""Batch normalization with an activation in the same pass (``activation=``).

The reference is float64 NumPy: ``y = act(z)`` with
``z = (x - mean) / sqrt(var + eps) * scale + offset`` and, backward, the
gradient of ``act(z)`` (``relu``: 1 where ``z > 0``; ``relu6``: 1 where
``0 < z < 6``; ``leaky_relu``: 1 where ``z > 0``, else the slope) followed by
batch norm's backward.  Inputs are drawn so that no ``z`` lies within 1e-3 of
a kink, where float32 rounding could flip the mask.
"""

import numpy as np
import pytest

import ckbn

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
    rng = np.random.default_rng(abs(hash((name, shape, training))) % 2**32)
    axes = _channel_axes(len(shape), fmt)
    c = shape[axes[0]]
    eps = 1e-3
    # scale 3 sends some z above 6, so relu6's upper kink is exercised.
    scale = rng.uniform(0.5, 3.0, c)
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
