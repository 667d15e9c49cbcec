"""Element-wise passes on channels-last rows of W = C*k lanes
(pyx/ckbn/_k_elementwise.pxi ``_ew_part``): one head up to the output's first
64-byte boundary, then rows of W lanes with the repeated coefficients shifted
by the head.  The output of y = act(x * a + b) and of dx must not depend on
where the output starts (every head length), and must match float64 NumPy."""

import numpy as np
import pytest

from ckbn._dispatch import kernels


def _k():
    k = kernels()
    if not hasattr(k, "bn_affine"):
        pytest.skip("no compiled kernels")
    return k


def _out_at(n, shift, dtype):
    """An n-element output starting ``shift`` items past a 64-byte boundary."""
    item = np.dtype(dtype).itemsize
    buf = np.empty(n + 64, dtype)
    start = (-buf.ctypes.data % 64) // item + shift
    return buf[start:start + n]


# C < MIN_LANES_EW (256): rows of W = C*k > C lanes; several units (the
# 300160-element input) and pieces that end in a partial row.
SHAPES = [(4000, 3), (3001, 5), (2050, 16), (1000, 64), (777, 100), (300, 255), (4690, 64)]


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-6), (np.float64, 1e-14)])
@pytest.mark.parametrize("rows,C", SHAPES)
def test_affine_and_dx_do_not_depend_on_the_output_start(rows, C, dtype, tol):
    k = _k()
    rng = np.random.default_rng(rows + C)
    x = rng.standard_normal(rows * C).astype(dtype)
    dy = rng.standard_normal(rows * C).astype(dtype)
    a, b, k1, k2, k3 = (rng.uniform(-2, 2, C).astype(dtype) for _ in range(5))
    dims = (1, 1, rows, C)
    lane = np.arange(rows * C) % C
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    y_ref = x64 * a[lane] + b[lane]
    dx_ref = dy64 * k1[lane] + (x64 * k2[lane] + k3[lane])
    item = np.dtype(dtype).itemsize
    ys, dxs, relus = [], [], []
    for shift in range(64 // item):
        y = _out_at(x.size, shift, dtype)
        k.bn_affine(x, *dims, a, b, y, 1)
        ys.append(y.copy())
        r = _out_at(x.size, shift, dtype)
        k.bn_affine(x, *dims, a, b, r, 1, act=True, slope=0.0, hi=np.inf)
        relus.append(r.copy())
        dx = _out_at(x.size, shift, dtype)
        k.bn_grad_dx(dy, x, *dims, k1, k2, k3, dx, 1)
        dxs.append(dx.copy())
    for got in ys[1:]:
        np.testing.assert_array_equal(got, ys[0])
    for got in relus[1:]:
        np.testing.assert_array_equal(got, relus[0])
    for got in dxs[1:]:
        np.testing.assert_array_equal(got, dxs[0])
    scale = np.abs(x64).max() * 2 + 2
    np.testing.assert_allclose(ys[0], y_ref, rtol=tol, atol=tol * scale)
    np.testing.assert_array_equal(relus[0], np.maximum(ys[0], 0))
    np.testing.assert_allclose(dxs[0], dx_ref, rtol=tol, atol=tol * scale * 4)
    # n_threads=2 (two threads from PARALLEL_MIN elements on): the same bits
    y2 = np.empty_like(x)
    k.bn_affine(x, *dims, a, b, y2, 2)
    np.testing.assert_array_equal(y2, ys[0])


@pytest.mark.parametrize("W", [1, 3, 256, 2048])
def test_probe_affine_computes_the_affine_pass(W):
    from ckbn._dispatch import probes

    k = probes()
    rng = np.random.default_rng(W)
    n = 200003
    x = rng.standard_normal(n).astype(np.float32)
    a = rng.uniform(0.5, 2.0, W).astype(np.float32)
    b = rng.standard_normal(W).astype(np.float32)
    y = np.empty_like(x)
    k.probe_affine(x, a, b, y, 2)
    lane = np.arange(n) % W
    np.testing.assert_allclose(y, x.astype(np.float64) * a[lane] + b[lane], rtol=1e-6,
                               atol=1e-6)
    with pytest.raises(ValueError, match="sizes differ"):
        k.probe_affine(x, a, b[:-1] if W > 1 else b[:0], y, 1)
