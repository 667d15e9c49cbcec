"""Element-wise passes of large channels-first outputs (issue 18, session 18):
channels-first planes written as one stream in memory order (ckbn_cf_ew_*:
planes of at least one vector and at most UNIT_TARGET elements) store their
whole vectors with non-temporal stores for outputs of
``tuning()["nt_bytes"]`` (half of L3) and more in memory already there (not
a new allocation), unless the activation is swish (``_nt_out`` in
pyx/ckbn/_k_common.pxi); so do the chunks' planes (``_cf_apply``).

y and dx must match float64 NumPy for every activation, carry the same bits as
the plain stores of a small input (the first samples alone, below the
threshold), and not depend on the thread count or on where the output
starts."""

import numpy as np
import pytest

from tests.test_ew_nhwc import ACTS, _act64, _dact64, affine_and_dx_runs, streamed_out
from tests.test_ew_rows import _k
from tests.twin import TWIN

# (planes' elements R, channels G, dtype): 56x56 and 7x7 planes, planes that
# are not a whole number of vectors (50: the boundary vectors blend two
# planes' coefficients), float64.
CASES = [(3136, 64, np.float32), (49, 2048, np.float32), (50, 2000, np.float32),
         (3136, 32, np.float64)]


def _nt_bytes(k):
    return 16 << 20 if TWIN else k.tuning()["nt_bytes"]


@pytest.mark.parametrize("R,G,dtype", CASES)
@pytest.mark.parametrize("act", list(ACTS))
def test_large_channels_first_affine_and_dx(R, G, dtype, act):
    k = _k()
    item = np.dtype(dtype).itemsize
    P = -(-_nt_bytes(k) // (G * R * item))      # the fewest samples that reach it
    n = P * G * R
    on, slope, hi, kind = ACTS[act]
    rng = np.random.default_rng(R + G)
    x = (rng.standard_normal(n) * 3).astype(dtype)
    dy = rng.standard_normal(n).astype(dtype)
    a, b, k1, k2, k3, za, zb = (rng.uniform(-2, 2, G).astype(dtype) for _ in range(7))
    dims = (P, G, R, 1)
    ch = (np.arange(n) // R) % G
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    y_ref = _act64(x64 * a[ch] + b[ch], act)
    m = _dact64(x64 * za[ch] + zb[ch], act)
    dx_ref = (dy64 * m) * k1[ch] + (x64 * k2[ch] + k3[ch])
    extra = (za, zb, on, slope, hi, kind) if on else ()
    ys, dxs = affine_and_dx_runs(k, x, dy, dims, (a, b), (k1, k2, k3), (za, zb), act)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(ys[0], y_ref, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(dxs[0], dx_ref, rtol=tol, atol=tol * 10)
    # the plain stores: the first two samples alone, far below the threshold
    s = 2 * G * R
    ys_ = np.empty(s, dtype)
    k.bn_affine(x[:s], 2, G, R, 1, a, b, ys_, 1, on, slope, hi, kind)
    np.testing.assert_array_equal(ys[0][:s], ys_)
    dxs_ = np.empty(s, dtype)
    k.bn_grad_dx(dy[:s], x[:s], 2, G, R, 1, k1, k2, k3, dxs_, 1, *extra)
    np.testing.assert_array_equal(dxs[0][:s], dxs_)


@pytest.mark.parametrize("act", ["none", "relu6", "swish"])
def test_large_channels_first_chunks_train_and_backward(act):
    """Training and backward on the chunks path (each chunk's planes applied
    while in cache, _cf_apply), whose outputs stream the same way: the
    values of float64 NumPy, and bit for bit those of the same channels'
    first eight alone (far below the threshold, the same path), for 1 and 2
    threads and any output offset."""
    k = _k()
    G, R = 64, 112 * 112
    P = -(-_nt_bytes(k) // (G * R * 4))
    if not TWIN:
        assert k.reduction_path(P, G, R, 1) == k.reduction_path(P, 8, R, 1) == "chunks-planes"
    on, slope, hi, kind = ACTS[act]
    a = (slope, hi, kind) if on else ()
    n = P * G * R
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(n) * 2 + 1).astype(np.float32)
    dy = rng.standard_normal(n).astype(np.float32)
    g, b = rng.uniform(0.5, 2, G), rng.uniform(-1, 1, G)
    runs = []
    for nt, shift, touched in ((1, 0, True), (2, 0, True), (2, 15, True), (1, 0, False)):
        y = streamed_out(n, shift, np.float32, touched)
        dx = streamed_out(n, shift, np.float32, touched)
        m, v, ds, do = np.empty(G), np.empty(G), np.empty(G), np.empty(G)
        k.bn_forward_train(x, P, G, R, 1, g, b, 1e-3, y, m, v, nt, on, *a)
        k.bn_backward(dy, x, P, G, R, 1, g, m, v, 1e-3, True, dx, ds, do, nt,
                      b if on else None, on, *a)
        runs.append((y.copy(), dx.copy(), m, v, ds, do))
    for got in runs[1:]:
        for p, q in zip(got, runs[0]):
            np.testing.assert_array_equal(p, q)
    y, dx, m, v = runs[0][:4]
    x64 = x.reshape(P, G, R).astype(np.float64)
    m64, v64 = x64.mean(axis=(0, 2)), x64.var(axis=(0, 2))
    np.testing.assert_allclose(m, m64, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(v, v64, rtol=1e-5)
    z = (x64 - m64[:, None]) / np.sqrt(v64[:, None] + 1e-3) * g[:, None] + b[:, None]
    np.testing.assert_allclose(y.reshape(P, G, R), _act64(z, act), rtol=1e-4, atol=1e-4)
    # the first eight channels alone: the same statistics, y and dx, bit for bit
    xs = x.reshape(P, G, R)[:, :8].copy().ravel()
    dys = dy.reshape(P, G, R)[:, :8].copy().ravel()
    ys, dxs = np.empty_like(xs), np.empty_like(xs)
    ms, vs, dss, dos = np.empty(8), np.empty(8), np.empty(8), np.empty(8)
    k.bn_forward_train(xs, P, 8, R, 1, g[:8], b[:8], 1e-3, ys, ms, vs, 1, on, *a)
    k.bn_backward(dys, xs, P, 8, R, 1, g[:8], ms, vs, 1e-3, True, dxs, dss, dos, 1,
                  b[:8] if on else None, on, *a)
    np.testing.assert_array_equal(ms, m[:8])
    np.testing.assert_array_equal(vs, v[:8])
    np.testing.assert_array_equal(ys.reshape(P, 8, R), y.reshape(P, G, R)[:, :8])
    np.testing.assert_array_equal(dxs.reshape(P, 8, R), dx.reshape(P, G, R)[:, :8])
    np.testing.assert_array_equal(dss, runs[0][4][:8])
