"""Thread-count invariance, concurrency and the thread configuration API."""

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import ckbn

SHAPES = [((16, 12, 12, 24), "NHWC"), ((16, 24, 12, 12), "NCHW"), ((5000, 33), "NC"),
          ((2, 3, 70001), "NCHW"), ((16, 8, 24, 24), "NCHW")]


def _run_all(x, fmt):
    y, m, v = ckbn.nn.fused_batch_norm(x, None, None, data_format=fmt)
    dy = np.cos(x)
    dx, ds, do = ckbn.nn.fused_batch_norm_grad(dy, x, None, m, v, data_format=fmt)
    return y, m, v, dx, ds, do


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,fmt", SHAPES)
def test_bitwise_identical_for_any_thread_count(shape, fmt, dtype):
    x = (np.random.default_rng(0).standard_normal(shape) * 3 + 1).astype(dtype)
    results = []
    for n in (1, 2, 3, 4, 7, 16):
        with ckbn.num_threads(n):
            results.append(_run_all(x, fmt))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert a.tobytes() == b.tobytes()


def test_concurrent_calls_from_python_threads():
    rng = np.random.default_rng(1)
    inputs = [(rng.standard_normal((32, 10, 10, 16)) + i).astype(np.float32) for i in range(8)]
    expected = [_run_all(x, "NHWC") for x in inputs]
    errors = []

    def worker(i):
        try:
            for _ in range(20):
                got = _run_all(inputs[i], "NHWC")
                for a, b in zip(got, expected[i]):
                    if a.tobytes() != b.tobytes():
                        errors.append(i)
                        return
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def _largest_gap(fn):
    """Run ``fn()`` while a spinner thread records timestamps; return the
    largest gap between consecutive timestamps inside the call (the call's
    start and end count as timestamps) and the call's duration."""
    stamps = []
    started, stop = threading.Event(), threading.Event()

    def spin():
        started.set()
        while not stop.is_set():
            stamps.append(time.perf_counter())

    t = threading.Thread(target=spin, daemon=True)
    t.start()
    try:
        assert started.wait(10)
        time.sleep(0.02)
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
    finally:
        stop.set()
        t.join(10)
    inside = [t0] + [s for s in stamps if t0 < s < t1] + [t1]
    return float(np.max(np.diff(inside))), t1 - t0


def test_kernels_release_the_gil():
    """A Python thread runs during one long kernel call: the largest gap in its
    timestamps is a small part of the call.  A call that holds the GIL
    throughout (``sorted`` of a long list) leaves one gap as long as the call,
    which shows the measure can fail."""
    x = np.random.default_rng(2).standard_normal((128, 64, 64, 32))
    out = np.empty_like(x)
    with ckbn.num_threads(1):
        ckbn.nn.fused_batch_norm(x, None, None, out=out)       # warm up the pages of out
        gap, duration = _largest_gap(lambda: ckbn.nn.fused_batch_norm(x, None, None, out=out))
    assert gap < 0.5 * duration, f"largest gap {gap:.4f} s in a {duration:.4f} s kernel call"
    values = np.random.default_rng(3).random(1_000_000).tolist()
    held_gap, held = _largest_gap(lambda: sorted(values))
    assert held_gap > 0.5 * held, f"largest gap {held_gap:.4f} s in a {held:.4f} s sort"


def test_num_threads_context_and_setter():
    if not ckbn.openmp_enabled():
        pytest.skip("built without OpenMP: always one thread")
    before = ckbn.get_num_threads()
    with ckbn.num_threads(3):
        assert ckbn.get_num_threads() == 3
        with ckbn.num_threads(1):
            assert ckbn.get_num_threads() == 1
        assert ckbn.get_num_threads() == 3
    assert ckbn.get_num_threads() == before
    try:
        ckbn.set_num_threads(5)
        assert ckbn.get_num_threads() == 5
    finally:
        ckbn.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "2", None, True])
def test_bad_thread_counts(bad):
    with pytest.raises((TypeError, ValueError), match="n"):
        ckbn.set_num_threads(bad)
    with pytest.raises((TypeError, ValueError)):
        with ckbn.num_threads(bad):
            pass


def _threads_in_subprocess(env):
    code = "import ckbn; print(ckbn.get_num_threads())"
    full = {k: v for k, v in os.environ.items() if k not in ("CKBN_NUM_THREADS", "OMP_NUM_THREADS")}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True)
    return out


def test_environment_variables():
    if not ckbn.openmp_enabled():
        pytest.skip("built without OpenMP")
    assert _threads_in_subprocess({"CKBN_NUM_THREADS": "3"}).stdout.strip() == "3"
    assert _threads_in_subprocess({"OMP_NUM_THREADS": "5"}).stdout.strip() == "5"
    both = {"CKBN_NUM_THREADS": "2", "OMP_NUM_THREADS": "6"}
    assert _threads_in_subprocess(both).stdout.strip() == "2"
    bad = _threads_in_subprocess({"CKBN_NUM_THREADS": "zero"})
    assert bad.returncode != 0 and "CKBN_NUM_THREADS" in bad.stderr


def test_concurrent_calls_share_the_thread_budget():
    """While calls run concurrently, later ones get the threads left free
    (at least one); a lone call gets what it asks for."""
    from ckbn._config import kernel_threads

    with kernel_threads(4) as a:
        with kernel_threads(4) as b:
            with kernel_threads(4) as c:
                assert (a, b, c) == (4, 1, 1) or not ckbn.openmp_enabled()
        with kernel_threads(2) as d:
            assert d == 1 or not ckbn.openmp_enabled()
    with kernel_threads(3) as e:
        assert e == 3 or not ckbn.openmp_enabled()


def test_small_calls_skip_the_thread_accounting():
    """Inputs below the kernels' parallel threshold run on one thread and do
    not take threads from concurrent calls; the threshold is the kernels' own."""
    from ckbn import _config
    from ckbn._dispatch import kernels

    assert _config.PARALLEL_MIN == kernels().PARALLEL_MIN_ELEMENTS
    with _config.kernel_threads(None, _config.PARALLEL_MIN - 1) as small:
        assert small == 1
        with _config.kernel_threads(2, 10**6) as big:
            assert big == 2 or not ckbn.openmp_enabled()
    # An explicit request is honoured (and validated) whatever the size.
    with _config.kernel_threads(2, 10) as explicit:
        assert explicit == 2 or not ckbn.openmp_enabled()
    with pytest.raises(ValueError):
        _config.kernel_threads(0, 10)
