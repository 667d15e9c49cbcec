"""Run-time choice of the compiled kernel module.

The same kernel source is compiled for several instruction sets (see
``setup.py``): ``ckbn._kernels_base`` (portable baseline), and on x86-64
``ckbn._kernels_avx2`` (AVX2 + FMA) and ``ckbn._kernels_avx512``
(AVX-512 F/BW/DQ/VL).  The widest one the CPU supports, as the compiled
``ckbn._cpu`` reports it, is used, unless
``CKBN_KERNELS`` names one (``base``, ``avx2``, ``avx512`` or ``numpy``,
the pure-NumPy twin, for debugging).
"""

import contextlib
import importlib
import os

__all__ = ["kernels", "kernel_name", "available_kernels", "use_kernels", "probes",
           "kernel_table", "get_include"]

_ORDER = ("avx512", "avx2", "base")
_REQUIRES = {
    "avx512": ("AVX512F", "AVX512BW", "AVX512DQ", "AVX512VL", "AVX2", "FMA3", "F16C"),
    "avx2": ("AVX2", "FMA3", "F16C"),
    "base": (),
}
_chosen = None


def _cpu_features():
    """{feature: bool} from ``ckbn._cpu``, which asks the CPU (and the OS's
    register state) from compiled code."""
    try:
        from ckbn import _cpu
    except ImportError as exc:
        raise ImportError(
            "ckbn._cpu (the CPU feature query) is missing: rebuild ckbn "
            "(pip install ., or python setup.py build_ext --inplace)") from exc
    return _cpu.cpu_features()


def _supported(name):
    feats = _cpu_features()
    return all(feats.get(f, False) for f in _REQUIRES[name])


def _load(name):
    if name == "numpy":
        return importlib.import_module("ckbn._kernels_numpy")
    return importlib.import_module(f"ckbn._kernels_{name}")


def available_kernels() -> list[str]:
    """Names of the compiled kernel variants that import and run on this CPU."""
    names = []
    for name in _ORDER:
        if not _supported(name):
            continue
        try:
            _load(name)
        except ImportError:
            continue
        names.append(name)
    return names


def kernel_name() -> str:
    """Name of the kernel module in use."""
    kernels()
    return _chosen[0]


def kernels():
    """The kernel module in use (chosen once per process)."""
    global _chosen
    if _chosen is not None:
        return _chosen[1]
    forced = os.environ.get("CKBN_KERNELS", "").strip().lower()
    if forced:
        if forced not in _REQUIRES and forced != "numpy":
            raise ValueError(
                f"CKBN_KERNELS={forced!r} is not one of 'avx512', 'avx2', 'base', 'numpy'"
            )
        if forced != "numpy" and not _supported(forced):
            raise RuntimeError(f"CKBN_KERNELS={forced!r}: this CPU lacks {_REQUIRES[forced]}")
        _chosen = (forced, _load(forced))
        return _chosen[1]
    for name in available_kernels():
        _chosen = (name, _load(name))
        return _chosen[1]
    raise ImportError(
        "no compiled ckbn kernel module could be imported; reinstall ckbn "
        "(pip install .) or set CKBN_KERNELS=numpy for the slow NumPy twin"
    )


@contextlib.contextmanager
def use_kernels(name):
    """Run the ``with`` block on kernel variant ``name`` (one of
    :func:`available_kernels`), then restore the previous choice.

    For benchmarks and tests that compare the variants side by side in one
    process; the choice is process-wide, so do not use it while other threads
    call ckbn.
    """
    global _chosen
    if name not in available_kernels():
        raise ValueError(f"kernel variant {name!r} is not available here: {available_kernels()}")
    kernels()
    previous = _chosen
    _chosen = (name, _load(name))
    try:
        yield _chosen[1]
    finally:
        _chosen = previous


def probes(name=None):
    """The memory-bandwidth probes (benchmarks only) compiled like kernel
    variant ``name`` (default: the variant in use)."""
    name = name or kernel_name()
    if name == "numpy":
        name = "base"
    return importlib.import_module(f"ckbn._probes_{name}")


def kernel_table() -> object:
    """The C-level kernel table of the variant in use, as a PyCapsule.

    The capsule is named ``"ckbn.kernel_table.v1"`` and points to a
    ``ckbn_kernel_table`` (declared in ``ckbn_kernels.h``, in the folder
    :func:`get_include` returns).  Native framework ops call the kernels
    through it without Python or the GIL.  The NumPy twin has no table.
    """
    k = kernels()
    table = getattr(k, "kernel_table", None)
    if table is None:
        raise RuntimeError(f"the {kernel_name()!r} kernels have no C-level table")
    return table


def get_include() -> str:
    """Folder of ``ckbn_kernels.h``, the C declaration of :func:`kernel_table`."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "include")
