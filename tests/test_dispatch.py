"""Run-time kernel choice: the compiled CPU query (``ckbn._cpu``) against what
the operating system reports, and the variant the dispatch picks from it."""

import os
import platform
import subprocess
import sys

import numpy as np
import pytest

import ckbn

from ckbn import _cpu
from ckbn._dispatch import _REQUIRES, available_kernels, kernel_name

# ckbn's feature names -> the flag names of /proc/cpuinfo (Linux, x86).
PROC_FLAGS = {"AVX2": "avx2", "FMA3": "fma", "F16C": "f16c", "AVX512F": "avx512f",
              "AVX512BW": "avx512bw", "AVX512DQ": "avx512dq", "AVX512VL": "avx512vl"}

X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


def _proc_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    pytest.skip("/proc/cpuinfo has no flags line")


def _built_variants():
    from ckbn import _build_info
    return [v.rsplit("_", 1)[-1] for v in _build_info.VARIANTS]


@pytest.mark.skipif(not (sys.platform.startswith("linux") and X86),
                    reason="compares with /proc/cpuinfo (Linux on x86)")
def test_cpu_features_match_proc_cpuinfo():
    """The kernel clears a flag in /proc/cpuinfo when the OS does not enable its
    register state, so both answers are 'usable here'."""
    assert _cpu.query_available()
    flags = _proc_flags()
    got = _cpu.cpu_features()
    assert set(got) == set(PROC_FLAGS)
    assert got == {name: flag in flags for name, flag in PROC_FLAGS.items()}


@pytest.mark.skipif(not (sys.platform.startswith("linux") and X86),
                    reason="compares with /proc/cpuinfo (Linux on x86)")
@pytest.mark.skipif(bool(os.environ.get("CKBN_KERNELS")), reason="CKBN_KERNELS forces a variant")
def test_dispatch_picks_the_widest_variant_the_cpu_reports():
    flags = _proc_flags()
    usable = [v for v in ("avx512", "avx2", "base")
              if all(PROC_FLAGS[f] in flags for f in _REQUIRES[v])]
    built = _built_variants()
    want = [v for v in usable if v in built]
    assert available_kernels() == want
    assert kernel_name() == want[0]


def test_import_and_dispatch_do_not_need_numpys_private_cpu_table():
    """A NumPy without ``__cpu_features__`` still imports ckbn and dispatches."""
    code = (
        "import numpy._core._multiarray_umath as m\n"
        "del m.__cpu_features__\n"
        "import ckbn, numpy as np\n"
        "from ckbn._dispatch import kernel_name\n"
        "y = ckbn.nn.fused_batch_norm(np.arange(8.0).reshape(4, 2), None, None)[0]\n"
        "print(kernel_name(), float(abs(y.mean(0)).max()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CKBN_KERNELS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)), env=env)
    assert out.returncode == 0, out.stderr
    name, err = out.stdout.split()
    assert name == available_kernels()[0] and float(err) < 1e-12


def test_use_kernels_switches_and_restores_the_variant():
    from ckbn._dispatch import available_kernels, kernel_name, probes, use_kernels

    before = kernel_name()
    x = np.random.default_rng(0).standard_normal((64, 8, 8, 16)).astype(np.float32)
    ref = ckbn.nn.fused_batch_norm(x, None, None)[0]
    for name in available_kernels():
        with use_kernels(name) as mod:
            assert kernel_name() == name
            assert mod.__name__ == f"ckbn._kernels_{name}"
            assert probes().__name__ == f"ckbn._probes_{name}"
            np.testing.assert_allclose(ckbn.nn.fused_batch_norm(x, None, None)[0], ref,
                                       rtol=1e-5, atol=1e-5)
        assert kernel_name() == before
    with pytest.raises(ValueError, match="kernel variant 'sse9' is not available"):
        with use_kernels("sse9"):
            pass
    assert kernel_name() == before
