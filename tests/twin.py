"""The NumPy twin of the kernels (``CKBN_KERNELS=numpy``, ckbn/_kernels_numpy.py)
in the tests.

The twin computes in NumPy what the compiled kernels compute, and the suite's
numerical checks run on it as on them.  What only the compiled kernels have
(the reduction paths' names, the machine tuning, the compiled layer entry,
float16 kernels, OpenMP, the C-level table that the native ops of
TensorFlow, PyTorch and JAX call) is checked on them alone: such a test skips
on the twin (:func:`compiled_only`, :func:`skip_on_twin`), or where the rest
of the test applies there too, only that check is left out.
"""

import pytest

from ckbn._dispatch import kernel_name

# Whether the kernels in use are the NumPy twin (chosen once per process).
TWIN = kernel_name() == "numpy"


def _reason(why):
    return f"the NumPy twin (CKBN_KERNELS=numpy) {why}"


def compiled_only(why):
    """A mark that skips its test on the NumPy twin; ``why`` completes the
    reason that starts with "the NumPy twin", e.g. "has no tuning"."""
    return pytest.mark.skipif(TWIN, reason=_reason(why))


def skip_on_twin(why):
    """Skip the calling test on the NumPy twin (``why`` as for
    :func:`compiled_only`)."""
    if TWIN:
        pytest.skip(_reason(why))
