"""Element-wise passes of large channels-last outputs (issue 18, session 8):
outputs of at least half of L3 (tuning()["nt_bytes"]: 16 MiB on the Zen 4
where this was measured) with rows of at most EW_NT_ROW_MAX
(4 KiB) bytes are computed a piece at a time into the thread's scratch and
streamed to the output with non-temporal stores (pyx/ckbn/_k_elementwise.pxi,
``_ew_run_nt``; ckbn_nt_copy in ckbn_kernel_helpers.h; y = act(x * a + b)
and the backward's dx, not swish).
y and dx must match float64 NumPy for every activation, carry the same bits as
the plain path (the same rows computed from a small input, below the
threshold), and not depend on the thread count or on where the output
starts."""

import mmap
import sys

import numpy as np
import pytest

from tests.test_ew_rows import _k, _out_at
from tests.twin import compiled_only

NT_BYTES = 16 * 1024 * 1024   # the test outputs' least size

ACTS = {"none": (False, 0.0, np.inf, 0), "relu": (True, 0.0, np.inf, 0),
        "relu6": (True, 0.0, 6.0, 0), "leaky": (True, 0.2, np.inf, 0),
        "swish": (True, 0.0, np.inf, 1)}


def _act64(z, name):
    _, slope, hi, kind = ACTS[name]
    if name == "none":
        return z
    if kind == 1:
        return z / (1 + np.exp(-z))
    return np.where(z > 0, np.minimum(z, hi), z * slope)


def _dact64(z, name):
    _, slope, hi, kind = ACTS[name]
    if name == "none":
        return np.ones_like(z)
    if kind == 1:
        s = 1 / (1 + np.exp(-z))
        return s * (1 + z * (1 - s))
    return np.where(z > 0, np.where(z < hi, 1.0, 0.0), slope)


def streamed_out(n, shift, dtype, touched):
    """_out_at's output, its memory written first where ``touched`` (then
    the kernels may stream into it: they do not stream into a new
    allocation's pages, output_streams)."""
    o = _out_at(n, shift, dtype)
    if touched:
        o.fill(np.nan)
    return o


def affine_and_dx_runs(k, x, dy, dims, ab, kkk, zab, act):
    """y = act(x * a + b) (``ab``) and dx (``kkk`` = k1, k2, k3; the
    activation's z = x * za + zb, ``zab``) of the (P, G, R, C) view ``dims``
    on 1 and 2 threads, into outputs on a 64-byte line and shifted off it,
    new (plain stores) and written before (streamed): checks that they carry
    the same bits and returns the lists of ys and dxs."""
    on, slope, hi, kind = ACTS[act]
    extra = (*zab, on, slope, hi, kind) if on else ()
    n, dtype = x.size, x.dtype
    ys, dxs = [], []
    for nt, shift, touched in ((1, 0, True), (2, 0, True), (1, 1, True),
                               (2, 64 // dtype.itemsize - 1, True), (1, 0, False)):
        y = streamed_out(n, shift, dtype, touched)
        k.bn_affine(x, *dims, *ab, y, nt, on, slope, hi, kind)
        dx = streamed_out(n, shift, dtype, touched)
        k.bn_grad_dx(dy, x, *dims, *kkk, dx, nt, *extra)
        ys.append(y.copy())
        dxs.append(dx.copy())
    for got in ys[1:]:
        np.testing.assert_array_equal(got, ys[0])
    for got in dxs[1:]:
        np.testing.assert_array_equal(got, dxs[0])
    return ys, dxs


# (rows, C, dtype): narrow channels (rows of W = C*k lanes, repeated
# coefficients), wide ones (W == C, in place; C = 1000: rows not on 64-byte
# boundaries), all with outputs of at least 16 MiB.
CASES = [(65536, 64, np.float32), (16400, 256, np.float32), (4200, 1000, np.float32),
         (1398102, 3, np.float32), (32768, 64, np.float64), (4100, 512, np.float64)]


@pytest.mark.parametrize("rows,C,dtype", CASES)
@pytest.mark.parametrize("act", list(ACTS))
def test_large_channels_last_affine_and_dx(rows, C, dtype, act):
    k = _k()
    n = rows * C
    assert n * np.dtype(dtype).itemsize >= NT_BYTES
    on, slope, hi, kind = ACTS[act]
    rng = np.random.default_rng(rows + C)
    x = (rng.standard_normal(n) * 3).astype(dtype)
    dy = rng.standard_normal(n).astype(dtype)
    a, b, k1, k2, k3, za, zb = (rng.uniform(-2, 2, C).astype(dtype) for _ in range(7))
    dims = (1, 1, rows, C)
    lane = np.arange(n) % C
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    y_ref = _act64(x64 * a[lane] + b[lane], act)
    m = _dact64(x64 * za[lane] + zb[lane], act)
    dx_ref = (dy64 * m) * k1[lane] + (x64 * k2[lane] + k3[lane])
    extra = (za, zb, on, slope, hi, kind) if on else ()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    ys, dxs = affine_and_dx_runs(k, x, dy, dims, (a, b), (k1, k2, k3), (za, zb), act)
    # dx written over dy (in place, as the TensorFlow op may forward dy's buffer)
    inplace = dy.copy()
    k.bn_grad_dx(inplace, x, *dims, k1, k2, k3, inplace, 2, *extra)
    np.testing.assert_array_equal(inplace, dxs[0])
    np.testing.assert_allclose(ys[0], y_ref, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(dxs[0], dx_ref, rtol=tol, atol=tol * 10)
    # the plain path (a small input of the first rows): the same bits
    r = 512
    ys_ = np.empty(r * C, dtype)
    k.bn_affine(x[:r * C], 1, 1, r, C, a, b, ys_, 1, on, slope, hi, kind)
    np.testing.assert_array_equal(ys[0][:r * C], ys_)
    dxs_ = np.empty(r * C, dtype)
    k.bn_grad_dx(dy[:r * C], x[:r * C], 1, 1, r, C, k1, k2, k3, dxs_, 1, *extra)
    np.testing.assert_array_equal(dxs[0][:r * C], dxs_)


@compiled_only("has no tuning: the thresholds are the compiled kernels'")
def test_the_threshold_is_half_of_l3():
    t = _k().tuning()
    assert t["nt_bytes"] == max(4 << 20, t["L3"] // 2)


@compiled_only("has no tuning: the thresholds are the compiled kernels'")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mincore's answer on Linux")
def test_outputs_stream_only_into_memory_already_there():
    """A new allocation of nt_bytes and more is not streamed into (its
    pages are zeroed into the cache on first touch); once written it is; a
    smaller output never is."""
    k = _k()
    n = k.tuning()["nt_bytes"] + 3 * 4096
    # A new anonymous mapping: np.empty may hand back memory already used
    # (glibc reuses freed blocks), which streams, as it should.
    m = mmap.mmap(-1, n)
    try:
        a = np.frombuffer(m, np.uint8)
        assert not k.output_streams(a)
        a.fill(1)
        assert k.output_streams(a)
        assert not k.output_streams(a[:n // 4])
        del a
    finally:
        m.close()
