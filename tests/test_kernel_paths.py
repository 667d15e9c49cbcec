"""Every reduction path of the kernels against a float64 NumPy model.

The kernels pick a path from the shape alone (``reduction_path``): rows of
lanes, channel tiles for wide rows, lane expansion for small channels-first
planes, and chunked channels-first passes that normalize a chunk while it is
in cache (small planes side by side, or large planes in rows).  Each path is
checked here for the statistics, the fused training forward and the backward,
in float32 and float64, and for bitwise independence from the thread count.
"""

import numpy as np
import pytest

import ckbn
from ckbn._dispatch import kernels

# (shape, data_format, the path the reductions take)
CASES = [
    ((4, 256, 7, 7), "NCHW", "chunks-lanes"),       # 49-element planes, 13 chunks
    ((3, 600, 3, 5), "NCHW", "chunks-lanes"),       # odd plane size
    ((4, 16, 130, 130), "NCHW", "chunks-planes"),   # 16900-element planes (tail of 4 lanes)
    ((1, 10, 300, 301), "NCHW", "chunks-planes"),   # one sample, one chunk per channel
    ((4, 3, 9, 9), "NCHW", "lanes"),                # too few channels for chunks
    ((2, 4, 40, 40), "NCHW", "rows"),               # large planes, few channels
    ((16, 6, 6, 40), "NHWC", "rows"),
    ((8, 3, 3, 1030), "NHWC", "tiles"),             # rows wider than one tile
    ((64, 3), "NC", "rows"),                        # three lanes per channel
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
    x = (1e4 + rng.standard_normal((8, 256, 7, 7))).astype(np.float32)
    assert kernels().reduction_path(*_dims(x.shape, "NCHW")).startswith("chunks")
    _, m, v = ckbn.nn.fused_batch_norm(x, None, None, data_format="NCHW")
    ref = x.astype(np.float64).var(axis=(0, 2, 3))
    assert np.max(np.abs(v - ref) / ref) <= 1e-5


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


def test_work_plan_counts_units_from_the_shape():
    k = kernels()
    # 32x56x56x64 NHWC: 6.4 M elements in units of 32 Ki elements.
    assert k.work_plan(1, 1, 32 * 56 * 56, 64) == {
        "path": "rows", "reduction_units": 196, "elementwise_units": 196}
    # 32x256x28x28 NCHW: two channels (2 x 32 x 784 elements) per chunk.
    assert k.work_plan(32, 256, 784, 1) == {
        "path": "chunks-planes", "reduction_units": 128, "elementwise_units": 128}


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
