"""Build script for ckbn: Cython kernels with OpenMP, compiled per instruction set.

Environment switches
--------------------
CKBN_USE_OPENMP=0     build without OpenMP (serial kernels).
CKBN_FAIL_NO_OPENMP=1 fail the build when OpenMP is not usable, instead of
                      falling back to serial kernels with a warning.
CKBN_SIMD_VARIANTS=0  build only the portable baseline kernels (no AVX2/AVX-512
                      variants; the run-time dispatch then uses the baseline).
CKBN_DEBUG_CYTHON=1   compile with bounds and initialization checks (the kernel
                      headers leave both directives to this script, since a
                      header directive would override it).
CKBN_EXTRA_CFLAGS     extra compiler flags, e.g. "-march=native" for a local
                      build, or sanitizer flags (see tools/sanitize.sh).
"""

import os
import platform
import shlex
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_TEST = textwrap.dedent(
    """
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel num_threads(2) reduction(+:n)
        n += 1;
        printf("%d\\n", n);
        return n == 2 ? 0 : 1;
    }
    """
)

SIMD_FLAGS = {
    "avx2": ["-mavx2", "-mfma", "-mf16c", "-ffp-contract=fast"],
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx2",
               "-mfma", "-mf16c", "-mprefer-vector-width=256", "-ffp-contract=fast"],
}


def _env_flag(name, default):
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("0", "false", "no", "off", "")


def _banner(lines):
    width = max(len(s) for s in lines) + 4
    print("*" * width, file=sys.stderr)
    for s in lines:
        print("* " + s.ljust(width - 4) + " *", file=sys.stderr)
    print("*" * width, file=sys.stderr)


def _openmp_flags(compiler):
    """Return (compile_flags, link_flags) for OpenMP, found by building and
    running a small program, or None when no candidate works."""
    ctype = compiler.compiler_type
    if ctype == "msvc":
        candidates = [(["/openmp"], [])]
    elif sys.platform == "darwin":
        candidates = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"]), (["-fopenmp"], ["-fopenmp"])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    for cflags, lflags in candidates:
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "omp_probe.c")
            with open(src, "w") as f:
                f.write(OPENMP_TEST)
            try:
                objs = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
                exe = os.path.join(tmp, "omp_probe")
                compiler.link_executable(objs, exe, extra_postargs=lflags)
                out = subprocess.run([exe], capture_output=True, text=True, timeout=60)
            except Exception:  # noqa: BLE001 - any failure means "not this flag set"
                continue
            if out.returncode == 0 and out.stdout.strip() == "2":
                return cflags, lflags
    return None


def _accepts_flags(compiler, flags):
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "flag_probe.c")
        with open(src, "w") as f:
            f.write("int main(void) { return 0; }\n")
        try:
            compiler.compile([src], output_dir=tmp, extra_postargs=flags)
        except Exception:  # noqa: BLE001
            return False
    return True


class BuildExt(build_ext):
    """build_ext that probes OpenMP and the SIMD flags before compiling."""

    def build_extensions(self):
        compiler = self.compiler
        use_omp = _env_flag("CKBN_USE_OPENMP", True)
        fail_no_omp = _env_flag("CKBN_FAIL_NO_OPENMP", False)
        omp = _openmp_flags(compiler) if use_omp else None
        if omp is None:
            reason = "disabled by CKBN_USE_OPENMP=0" if not use_omp else (
                "the compiler could not build and run an OpenMP test program")
            if use_omp and fail_no_omp:
                raise RuntimeError(f"ckbn: OpenMP unavailable ({reason}) and CKBN_FAIL_NO_OPENMP=1")
            _banner([
                "ckbn: building WITHOUT OpenMP: " + reason + ".",
                "The kernels will run on one thread; ckbn.openmp_enabled() is False.",
                "Install an OpenMP-capable compiler (gcc, or clang with libomp)",
                "and rebuild; set CKBN_FAIL_NO_OPENMP=1 to make this an error.",
            ])
            omp = ([], [])
        else:
            print(f"ckbn: OpenMP flags {omp[0]} / {omp[1]}", file=sys.stderr)
        # -fno-trapping-math: ckbn never reads the FP exception flags, and
        # without it GCC keeps the activation's select (z > 0 ? min(z, hi) :
        # slope*z) a scalar branch on AVX2, which is mispredicted on data
        # centred on zero: a fused BN+ReLU call on 16x32x32x32 took 17 ms
        # instead of 0.8 ms (benchmarks/RESULTS-keras.md).  Results are the
        # same bits (NaN and -0 included).
        base = ["/O2"] if compiler.compiler_type == "msvc" else [
            "-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math",
            "-Wno-unreachable-code"]
        extra = shlex.split(os.environ.get("CKBN_EXTRA_CFLAGS", ""))
        keep = []
        for ext in self.extensions:
            if not ext.name.startswith(("ckbn._kernels_", "ckbn._probes_")):
                # ckbn._cpu: no OpenMP, no SIMD
                ext.extra_compile_args = base + extra
                ext.extra_link_args = [f for f in extra if f.startswith("-fsanitize")]
                keep.append(ext)
                continue
            variant = ext.name.rsplit("_", 1)[-1]
            simd = SIMD_FLAGS.get(variant, [])
            if simd and not _accepts_flags(compiler, simd):
                print(f"ckbn: skipping {ext.name}: compiler rejects {simd}", file=sys.stderr)
                continue
            ext.extra_compile_args = base + simd + omp[0] + extra
            ext.extra_link_args = omp[1] + [f for f in extra if f.startswith("-fsanitize")]
            keep.append(ext)
        self.extensions = keep
        # Record what was built, for ckbn.show_config().
        cfg = os.path.join(self.build_lib, "ckbn", "_build_info.py")
        inplace = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ckbn", "_build_info.py")
        info = textwrap.dedent(
            f"""\
            # Written by setup.py at build time.
            OPENMP_FLAGS = {omp[0]!r}
            BASE_FLAGS = {base + extra!r}
            VARIANTS = {[e.name for e in keep if e.name.startswith("ckbn._kernels_")]!r}
            COMPILER = {" ".join(getattr(compiler, "compiler_so", []) or [compiler.compiler_type])!r}
            """
        )
        for path in (cfg, inplace):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(info)
        # The variants are independent compiler runs of a few minutes each: run
        # them side by side on every core (pip install runs build_ext without
        # -j).  CKBN_BUILD_JOBS sets the number; an explicit -j wins.
        if not self.parallel:
            jobs = os.environ.get("CKBN_BUILD_JOBS", "").strip()
            if jobs and (not jobs.isdigit() or int(jobs) < 1):
                raise ValueError(f"CKBN_BUILD_JOBS must be a whole number >= 1, got {jobs!r}")
            self.parallel = int(jobs) if jobs else min(os.cpu_count() or 1, len(self.extensions))
            if self.parallel == 1:
                self.parallel = False
        super().build_extensions()


def _extensions():
    variants = ["base"]
    if _env_flag("CKBN_SIMD_VARIANTS", True) and platform.machine().lower() in (
        "x86_64", "amd64", "i686", "x86"
    ):
        variants += ["avx2", "avx512"]
    exts = [
        Extension(
            f"ckbn._{kind}_{v}",
            [f"pyx/ckbn/_{kind}_{v}.pyx"],
            include_dirs=[np.get_include(), "ckbn/include", "pyx/ckbn"],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
        )
        for v in variants
        # The bandwidth probes of benchmarks/, built like the kernels of the
        # same variant.
        for kind in ("kernels", "probes")
    ]
    # The CPU feature query the run-time dispatch uses (ckbn/_dispatch.py).
    exts.append(Extension("ckbn._cpu", ["pyx/ckbn/_cpu.pyx"]))
    debug = _env_flag("CKBN_DEBUG_CYTHON", False)
    return cythonize(
        exts,
        include_path=["pyx"],
        compiler_directives={
            "language_level": 3,
            "boundscheck": debug,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": debug,
        },
    )


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
