"""Smoke test of an installed ckbn wheel (run by tools/wheel_proof.sh).

Checks, against values computed here in float64 NumPy: the import, the
version in three places, ``show_config()``, ``openmp_enabled()``, a training
call and a backward call of ``ckbn.BatchNormalization``, that the widest
kernel variant this CPU supports (read from /proc/cpuinfo) was chosen, that
all variants travelled in the wheel, and that the OpenMP runtime in use is
the one vendored in the wheel.  Exits non-zero on the first failure.
"""

import argparse
import importlib.metadata
import io
import os
import sys

import numpy as np


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def expected_variant():
    flags = _cpu_flags()
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx2", "fma", "f16c"} <= flags:
        return "avx512"
    if {"avx2", "fma", "f16c"} <= flags:
        return "avx2"
    return "base"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--wheel", help="the wheel file that was installed")
    args = parser.parse_args()

    import ckbn

    here = os.path.dirname(os.path.abspath(ckbn.__file__))
    assert "site-packages" in here, f"ckbn imported from {here}, not from the installed wheel"
    print("ckbn", ckbn.__version__, "from", here)

    # One version: the package, its metadata, show_config and the wheel's name.
    assert importlib.metadata.version("ckbn") == ckbn.__version__
    if args.wheel:
        assert os.path.basename(args.wheel).startswith(f"ckbn-{ckbn.__version__}-"), args.wheel
    buf = io.StringIO()
    ckbn.show_config(file=buf)
    text = buf.getvalue()
    print(text)
    assert f"ckbn: {ckbn.__version__}" in text, text
    assert "openmp: True" in text, text

    assert ckbn.openmp_enabled() is True

    # Every variant travelled in the wheel; the dispatch picked the widest.
    from ckbn import _dispatch

    names = sorted(f for f in os.listdir(here) if f.startswith("_kernels_") and f.endswith(".so"))
    print("kernel modules:", names)
    for v in ("base", "avx2", "avx512"):
        assert any(n.startswith(f"_kernels_{v}.") for n in names), (v, names)
    want = expected_variant()
    assert _dispatch.kernel_name() == want, (_dispatch.kernel_name(), want)
    print("kernels chosen:", want)

    # The OpenMP runtime in use is the wheel's own copy (auditwheel's ckbn.libs/).
    with open("/proc/self/maps") as f:
        gomp = {line.split()[-1] for line in f if "gomp" in line.split()[-1]}
    print("OpenMP runtime mapped:", gomp)
    assert gomp and all("ckbn.libs" in p for p in gomp), gomp

    # A training call and a backward call, against float64 NumPy.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 6, 6, 16)).astype(np.float32) * 3 + 1
    eps = 1e-3
    with ckbn.num_threads(2):
        bn = ckbn.BatchNormalization(axis=-1, epsilon=eps)
        y = bn(x, training=True)
        dy = rng.standard_normal(x.shape).astype(np.float32)
        dx, (dgamma, dbeta) = bn.backward(dy)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    mean, var = x64.mean(axis=(0, 1, 2)), x64.var(axis=(0, 1, 2))
    xhat = (x64 - mean) / np.sqrt(var + eps)
    np.testing.assert_allclose(y, xhat, rtol=1e-4, atol=1e-4)
    m = x64.size // x64.shape[-1]
    sum_dy, sum_dy_xhat = dy64.sum(axis=(0, 1, 2)), (dy64 * xhat).sum(axis=(0, 1, 2))
    dx_ref = (dy64 - sum_dy / m - xhat * sum_dy_xhat / m) / np.sqrt(var + eps)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(dgamma, sum_dy_xhat, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(dbeta, sum_dy, rtol=1e-4, atol=1e-3)
    print("training and backward calls match float64 NumPy")
    print("wheel smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
