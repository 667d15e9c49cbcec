"""Element-wise passes on channels-first planes (pyx/ckbn/_k_elementwise.pxi):
y = act(x * a + b) and the backward's dx, for every plane size the passes
distinguish (1, 7, 49, 50, 63, 65, ... elements), float16/32/64, channels
first and last, with and without an activation (ReLU, ReLU6, swish).

Each result is checked three ways: against float64 NumPy (within the
rounding of the data type), bit for bit against the same computation on the
channels-last copy of the data (another path of the kernels: rows of
per-lane coefficients, the same expression element by element), and bit for
bit across thread counts and output alignments."""

import numpy as np
import pytest

from tests.test_ew_rows import _k, _out_at
from tests.twin import skip_on_twin

# (samples, channels, plane): odd plane sizes, several units and threads
# (>= 65536 elements), the suite's 7x7 planes; as channels last (the bitwise
# cross-check) rows of 64..512 channels, whole 64-byte lines or not.
SHAPES = [(3, 70, 1), (40, 300, 7), (30, 64, 49), (2, 2048, 49), (20, 80, 50),
          (17, 61, 63), (9, 130, 65), (5, 33, 784), (2, 3, 3136), (6, 256, 50),
          (3, 512, 49)]
ACTS = {"none": None, "relu": (0.0, np.inf, 0), "relu6": (0.0, 6.0, 0),
        "swish": (0.0, np.inf, 1)}
TOL = {np.float16: 1e-3, np.float32: 2e-6, np.float64: 1e-14}


def _act64(z, act):
    if act == "none":
        return z
    if act == "swish":
        return z / (1.0 + np.exp(-z))
    return np.minimum(np.maximum(z, 0.0), ACTS[act][1])


def _dact64(z, act):
    if act == "none":
        return np.ones_like(z)
    if act == "swish":
        s = 1.0 / (1.0 + np.exp(-z))
        return s * (1.0 + z * (1.0 - s))
    return ((z > 0) & (z < ACTS[act][1])).astype(np.float64)


def _kw(act):
    if ACTS[act] is None:
        return {}
    slope, hi, kind = ACTS[act]
    return {"act": True, "slope": slope, "hi": hi, "kind": kind}


def _data(shape, dtype, seed):
    P, G, R = shape
    rng = np.random.default_rng(seed)
    x = (3.0 * rng.standard_normal((P, G, R))).astype(dtype)
    dy = rng.standard_normal((P, G, R)).astype(dtype)
    cdt = np.float64 if dtype == np.float64 else np.float32
    cf = [rng.uniform(-2, 2, G).astype(cdt) for _ in range(5)]
    cf[0] = np.where(np.abs(cf[0]) < 0.1, 0.5, cf[0]).astype(cdt)
    return x, dy, cf


def _f16(k):
    skip_on_twin("has no float16 kernels (ckbn converts float16 data to float32 for it)")
    if not k.f16c_enabled():
        pytest.skip("this kernel module has no float16 kernels (built without F16C)")


def _affine(k, x, a, b, dims, out, nt, act):
    if x.dtype == np.float16:
        _f16(k)
        k.bn_affine_f16(x.reshape(-1).view(np.uint16), *dims, a, b,
                        out.view(np.uint16), nt, **_kw(act))
    else:
        k.bn_affine(x.reshape(-1), *dims, a, b, out, nt, **_kw(act))
    return out


def _dx(k, dy, x, cf, dims, out, nt, act):
    z = {} if act == "none" else {"za": cf[3], "zb": cf[4]}
    if x.dtype == np.float16:
        _f16(k)
        k.bn_grad_dx_f16(dy.reshape(-1).view(np.uint16), x.reshape(-1).view(np.uint16),
                         *dims, cf[0], cf[1], cf[2], out.view(np.uint16), nt, **z,
                         **_kw(act))
    else:
        k.bn_grad_dx(dy.reshape(-1), x.reshape(-1), *dims, cf[0], cf[1], cf[2], out, nt,
                     **z, **_kw(act))
    return out


def _last(v):
    """(P, G, R) -> channels last, flat."""
    return np.ascontiguousarray(v.transpose(0, 2, 1)).reshape(-1)


def _first(v, shape):
    """Flat channels-last result -> (P, G, R) channels first, flat."""
    P, G, R = shape
    return np.ascontiguousarray(v.reshape(P, R, G).transpose(0, 2, 1)).reshape(-1)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("shape", SHAPES)
def test_affine_on_planes(shape, act, dtype):
    k = _k()
    P, G, R = shape
    x, _, cf = _data(shape, dtype, P * G + R)
    a, b = cf[0], cf[1]
    n = x.size
    first = (P, G, R, 1)
    y = _affine(k, x, a, b, first, np.empty(n, dtype), 1, act)
    # float64 reference
    z = x.astype(np.float64) * a[None, :, None].astype(np.float64) + b[None, :, None]
    ref = _act64(z, act).reshape(-1)
    tol = TOL[dtype] * (8 if act == "swish" else 1)
    np.testing.assert_allclose(y.astype(np.float64), ref, rtol=tol,
                               atol=tol * (np.abs(z).max() + 1))
    # the channels-last path: the same bits
    yl = _affine(k, _last(x), a, b, (1, 1, P * R, G), np.empty(n, dtype), 1, act)
    np.testing.assert_array_equal(_first(yl, shape), y)
    # thread counts and output alignments: the same bits
    item = np.dtype(dtype).itemsize
    for nt, shift in [(2, 0), (2, 1), (1, 3), (3, 64 // item - 1)]:
        got = _affine(k, x, a, b, first, _out_at(n, shift, dtype), nt, act)
        np.testing.assert_array_equal(got, y)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("shape", SHAPES)
def test_dx_on_planes(shape, act, dtype):
    k = _k()
    P, G, R = shape
    x, dy, cf = _data(shape, dtype, 7 * P + G + R)
    n = x.size
    first = (P, G, R, 1)
    dx = _dx(k, dy, x, cf, first, np.empty(n, dtype), 1, act)
    c = [v.astype(np.float64)[None, :, None] for v in cf]
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    m = _dact64(x64 * c[3] + c[4], act)
    ref = ((dy64 * m) * c[0] + (x64 * c[1] + c[2])).reshape(-1)
    tol = TOL[dtype] * (8 if act == "swish" else 1)
    scale = np.abs(x64).max() * 2 + np.abs(dy64).max() * 2 + 2
    if act in ("relu", "relu6"):
        # a z rounded to the other side of a kink flips the mask: compare
        # only where the float64 z is clear of the kinks
        zz = (x64 * c[3] + c[4]).reshape(-1)
        clear = (np.abs(zz) > 1e-3) & (np.abs(zz - ACTS[act][1]) > 1e-3)
        np.testing.assert_allclose(dx.astype(np.float64)[clear], ref[clear], rtol=tol,
                                   atol=tol * scale * 4)
    else:
        np.testing.assert_allclose(dx.astype(np.float64), ref, rtol=tol, atol=tol * scale * 4)
    dxl = _dx(k, _last(dy), _last(x), cf, (1, 1, P * R, G), np.empty(n, dtype), 1, act)
    np.testing.assert_array_equal(_first(dxl, shape), dx)
    item = np.dtype(dtype).itemsize
    for nt, shift in [(2, 0), (2, 1), (3, 64 // item - 1)]:
        got = _dx(k, dy, x, cf, first, _out_at(n, shift, dtype), nt, act)
        np.testing.assert_array_equal(got, dx)
