"""Reliability of the compiled core: fork, memory, 64-bit offsets, properties."""

import gc
import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ckbn
from tests.twin import compiled_only


def _run(code, timeout=120):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_fork_after_parallel_use_keeps_working():
    """A fork()ed child of a process that used OpenMP threads runs single-threaded
    (libgomp cannot restart its pool there) and warns once, instead of hanging.
    The NumPy twin (CKBN_KERNELS=numpy) starts no OpenMP threads: there the
    child runs single-threaded too, without the warning."""
    res = _run("""
        import os, warnings, numpy as np, ckbn
        from ckbn._dispatch import kernel_name
        warnings_wanted = 0 if kernel_name() == "numpy" else 1
        x = np.random.default_rng(0).random((64, 32, 32, 16), dtype=np.float32)
        with ckbn.num_threads(2):
            _, m, _ = ckbn.nn.fused_batch_norm(x, None, None)
        pid = os.fork()
        if pid == 0:
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                with ckbn.num_threads(2):
                    _, m2, _ = ckbn.nn.fused_batch_norm(x, None, None)
                    _, m3, _ = ckbn.nn.fused_batch_norm(x, None, None)
            ok = (m2 == m).all() and (m3 == m).all() and ckbn.get_num_threads() == 1
            ok = ok and sum("single-threaded" in str(i.message) for i in w) == warnings_wanted
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
    """, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "child 0" in res.stdout


def test_no_memory_growth_over_many_calls():
    x = np.random.default_rng(0).random((8, 4, 4, 8), dtype=np.float32)
    dy = np.ones_like(x)
    out = np.empty_like(x)

    def step():
        _, m, v = ckbn.nn.fused_batch_norm(x, None, None, out=out)
        ckbn.nn.fused_batch_norm_grad(dy, x, None, m, v)
        ckbn.nn.moments(x, [0, 1, 2])

    for _ in range(2000):
        step()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(20000):
        step()
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert grown < 100_000, f"Python heap grew by {grown} bytes over 20000 steps"


@pytest.mark.slow
def test_no_rss_growth_over_100000_calls():
    """RSS (which also sees the C allocations of the kernels) stays flat."""
    res = _run("""
        import numpy as np, ckbn, resource
        x = np.random.default_rng(0).random((8, 4, 4, 8), dtype=np.float32)
        dy = np.ones_like(x)
        def step():
            _, m, v = ckbn.nn.fused_batch_norm(x, None, None)
            ckbn.nn.fused_batch_norm_grad(dy, x, None, m, v)
        for _ in range(5000):
            step()
        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096
        r0 = rss()
        for _ in range(100000):
            step()
        print(rss() - r0)
    """, timeout=600)
    assert res.returncode == 0, res.stderr
    assert int(res.stdout.strip()) < 4 * 2**20


@compiled_only("makes float64 copies of the 8 GiB input (far more memory than the test "
               "assumes), and the 64-bit offsets checked here are the compiled kernels'")
@pytest.mark.slow
def test_more_than_2_31_elements():
    """Offsets past 2**31 elements: a 2**31 + 4096 element float32 array (8 GiB)."""
    n = 2**31 + 4096
    try:
        x = np.ones((n // 64, 64), dtype=np.float32)
    except MemoryError:
        pytest.skip("not enough memory for an 8 GiB array")
    x[-1, :] = 1 + 64.0 * (n // 64)  # one large value in the last row, every channel
    _, m, v = ckbn.nn.fused_batch_norm(x, None, None, out=x)
    rows = n // 64
    big = 1 + 64.0 * rows
    exp_mean = ((rows - 1) + big) / rows
    exp_var = ((rows - 1) * (1 - exp_mean) ** 2 + (big - exp_mean) ** 2) / rows
    np.testing.assert_allclose(m, exp_mean, rtol=1e-6)
    np.testing.assert_allclose(v, exp_var, rtol=1e-5)
    # The normalized last row came from offsets beyond 2**31.
    assert np.all(x[-1] > 1000)
    del x


_shapes = st.lists(st.integers(1, 7), min_size=2, max_size=5)


@given(shape=_shapes, data=st.data(),
       dtype=st.sampled_from([np.float32, np.float64]),
       loc=st.floats(-1e3, 1e3), scale=st.floats(1e-2, 1e2))
def test_property_training_matches_float64(shape, data, dtype, loc, scale):
    ndim = len(shape)
    axes = data.draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    rng = np.random.default_rng(len(shape) * 7 + sum(shape))
    x = (rng.standard_normal(shape) * scale + loc).astype(dtype)
    y, m, v = ckbn.nn.fused_batch_norm(x, None, None, axis=axes, epsilon=1e-3)
    axes_s = sorted(axes)
    red = tuple(i for i in range(ndim) if i not in axes_s)
    xd = x.astype(np.float64)
    rm = xd.mean(axis=red, keepdims=True) if red else xd
    rv = ((xd - rm) ** 2).mean(axis=red, keepdims=True) if red else np.zeros_like(xd)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    cshape = tuple(shape[a] for a in axes_s)
    np.testing.assert_allclose(m, rm.reshape(cshape), rtol=tol, atol=tol * (abs(loc) + scale))
    np.testing.assert_allclose(v, rv.reshape(cshape), rtol=tol * 10, atol=tol * scale**2)
    ref = (xd - rm) / np.sqrt(rv + 1e-3)
    np.testing.assert_allclose(y, ref, rtol=tol * 10,
                               atol=tol * 10 * (1 + (abs(loc) + scale) / np.sqrt(1e-3)))
    with ckbn.num_threads(1):
        y1, m1, v1 = ckbn.nn.fused_batch_norm(x, None, None, axis=axes, epsilon=1e-3)
    assert y1.tobytes() == y.tobytes() and m1.tobytes() == m.tobytes()
