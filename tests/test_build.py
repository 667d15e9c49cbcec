"""The build itself: OpenMP present, configuration reported."""

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ckbn
from tests.twin import compiled_only


@compiled_only("has no OpenMP: the build's OpenMP is the compiled kernels'")
@pytest.mark.skipif(os.environ.get("CKBN_SKIP_OPENMP_TEST") == "1",
                    reason="CKBN_SKIP_OPENMP_TEST=1: a deliberately serial build")
def test_openmp_enabled():
    """Fails when the build lost OpenMP (setup.py fell back to serial kernels)."""
    assert ckbn.openmp_enabled() is True


def test_show_config_prints_the_facts():
    buf = io.StringIO()
    ckbn.show_config(file=buf)
    text = buf.getvalue()
    assert ckbn.__version__ in text
    assert f"openmp: {ckbn.openmp_enabled()}" in text
    assert f"threads: {ckbn.get_num_threads()}" in text
    assert "kernels:" in text


PROBE = '''

def _debug_probe(const double[::1] a, Py_ssize_t i):
    """a[i], with the module's directives (added by the test only)."""
    return a[i]
'''

CHECK = '''
import importlib.util, sys
import numpy as np
spec = importlib.util.spec_from_file_location("ckbn._kernels_base", sys.argv[1])
k = importlib.util.module_from_spec(spec)
spec.loader.exec_module(k)
a = np.array([1.0, 2.0, 3.0])
assert k._debug_probe(a, 2) == 3.0
try:
    k._debug_probe(a, 3)
except IndexError as exc:
    print("IndexError:", exc)
else:
    print("no error")
x = np.arange(12.0)
mean, var = np.empty(3), np.empty(3)
k.bn_stats(x, 4, 1, 1, 3, mean, var, 1)                 # the kernels still work
assert np.allclose(mean, x.reshape(4, 3).mean(0)) and np.allclose(var, x.reshape(4, 3).var(0))
'''


@pytest.mark.slow
def test_debug_cython_build_checks_bounds(tmp_path):
    """CKBN_DEBUG_CYTHON=1 builds kernels whose memoryview indexing is checked.

    setup.py builds a copy of the baseline kernel module (its real header,
    its real include file) with one probe function appended; with the debug
    switch an index past the end raises IndexError instead of reading past
    the buffer.  (A header directive would override setup.py's: the kernel
    headers must leave boundscheck to setup.py.)"""
    pytest.importorskip("Cython")
    root = Path(__file__).resolve().parents[1]
    shutil.copy(root / "setup.py", tmp_path / "setup.py")
    shutil.copytree(root / "pyx", tmp_path / "pyx",
                    ignore=shutil.ignore_patterns("*.c", "*.html", "*.so"))
    shutil.copytree(root / "ckbn" / "include", tmp_path / "ckbn" / "include")
    with open(tmp_path / "pyx" / "ckbn" / "_kernels_base.pyx", "a") as f:
        f.write(PROBE)
    # -O0: the bounds check is Cython's, not the optimizer's, and -O0 compiles much faster.
    env = dict(os.environ, CKBN_DEBUG_CYTHON="1", CKBN_SIMD_VARIANTS="0", CKBN_EXTRA_CFLAGS="-O0")
    build = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--build-lib", "lib",
         "--build-temp", "tmp", "-j", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    (so,) = (tmp_path / "lib" / "ckbn").glob("_kernels_base*")
    run = subprocess.run([sys.executable, "-c", CHECK, str(so)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("IndexError:"), run.stdout


def test_kernels_are_built_without_trapping_math():
    """The kernels need -fno-trapping-math: without it GCC compiles the fused
    activation's select to a scalar branch on AVX2 (20x slower on data
    centred on zero; benchmarks/RESULTS-keras.md).  A timing cannot be a test,
    so this checks the flags the build recorded."""
    from ckbn import _build_info

    if "msvc" in _build_info.COMPILER.lower():
        pytest.skip("MSVC has no trapping-math flag")
    assert "-fno-trapping-math" in _build_info.BASE_FLAGS
