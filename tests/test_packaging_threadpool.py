"""ckbn among the ecosystem's thread pools: threadpoolctl sees and limits it."""

import ctypes
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ckbn
from ckbn import _config

threadpoolctl = pytest.importorskip("threadpoolctl")

needs_openmp = pytest.mark.skipif(not ckbn.openmp_enabled(), reason="built without OpenMP")


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def _file_defining(fn):
    """The shared object that defines a ctypes function (dladdr)."""
    info = _DlInfo()
    libc = ctypes.CDLL(None)
    assert libc.dladdr(ctypes.cast(fn, ctypes.c_void_p), ctypes.byref(info)) != 0
    return os.path.realpath(info.dli_fname.decode())


@needs_openmp
def test_threadpool_info_lists_the_kernels_openmp_runtime():
    from ckbn._dispatch import kernels

    # The OpenMP runtime the kernel module resolves its OpenMP calls to,
    # found by the dynamic linker independently of ckbn._config.
    runtime = _file_defining(ctypes.CDLL(kernels().__file__).omp_get_max_threads)
    assert "gomp" in os.path.basename(runtime) or "omp" in os.path.basename(runtime)
    openmp = [os.path.realpath(m["filepath"]) for m in threadpoolctl.threadpool_info()
              if m["user_api"] == "openmp"]
    assert runtime in openmp, (runtime, openmp)


@needs_openmp
def test_threadpool_limits_caps_the_thread_count_and_lifts_after():
    x = np.random.default_rng(0).standard_normal((256, 64, 8)).astype(np.float32)
    scale, offset = np.ones(8, np.float32), np.zeros(8, np.float32)
    ref = ckbn.nn.fused_batch_norm(x, scale, offset)[0]
    old = _config._default
    start = max(m["num_threads"] for m in threadpoolctl.threadpool_info()
                if m["user_api"] == "openmp")
    if start < 2:
        pytest.skip("the OpenMP runtime starts limited to one thread (OMP_NUM_THREADS=1)")
    try:
        ckbn.set_num_threads(3)
        assert ckbn.get_num_threads() == 3
        with threadpoolctl.threadpool_limits(1):
            assert ckbn.get_num_threads() == 1
            with ckbn.num_threads(2):
                assert ckbn.get_num_threads() == 1
            y = ckbn.nn.fused_batch_norm(x, scale, offset)[0]
        with threadpoolctl.threadpool_limits(2, user_api="openmp"):
            # capped only below the runtime's starting limit (OMP_NUM_THREADS
            # or the CPU count): set_num_threads(3) asked for more on purpose
            assert ckbn.get_num_threads() == (2 if start > 2 else 3)
        with threadpoolctl.threadpool_limits(1, user_api="blas"):
            assert ckbn.get_num_threads() == 3          # BLAS limits leave OpenMP alone
        assert ckbn.get_num_threads() == 3
    finally:
        _config._default = old
    np.testing.assert_array_equal(y, ref)              # same bits on one thread


# Runs in a fresh process: counts the process's threads around one large
# kernel call.  libgomp starts its worker threads at the first parallel region
# and keeps them, so a call limited to one thread must start none.
SCRIPT = textwrap.dedent("""
    import os, sys
    import numpy as np
    from threadpoolctl import threadpool_limits
    import ckbn
    ckbn.set_num_threads(2)
    x = np.ones((512, 64, 16), np.float32)
    s, o = np.ones(16, np.float32), np.zeros(16, np.float32)
    before = len(os.listdir("/proc/self/task"))
    if sys.argv[1] == "limited":
        with threadpool_limits(1):
            ckbn.nn.fused_batch_norm(x, s, o)
    else:
        ckbn.nn.fused_batch_norm(x, s, o)
    print(len(os.listdir("/proc/self/task")) - before)
""")


@needs_openmp
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc")
def test_threadpool_limits_keeps_the_kernels_on_one_thread():
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="2")
    env.pop("CKBN_NUM_THREADS", None)
    env.pop("CKBN_KERNELS", None)

    def started(mode):
        out = subprocess.run([sys.executable, "-c", SCRIPT, mode], env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return int(out.stdout.strip().splitlines()[-1])

    assert started("unlimited") >= 1      # the control: two threads start a team
    assert started("limited") == 0
