"""Where keras_plugin runs ckbn's kernels, and on how many threads: the two measured rules.

Both rules live here, with the numbers they come from
(``benchmarks/bench_keras.py --crossover`` and ``--threads``; tables in
``benchmarks/RESULTS-keras.md``).  The backend modules ask, per call:

:func:`use_kernels(backend, mode, n_elements, dtype) <use_kernels>`
    Whether ckbn's kernels should serve a call of ``n_elements`` elements, or
    the framework's own ops (Keras's code) should.  ``mode`` is ``"train"``
    (forward and backward of a training call) or ``"infer"``.  Below the
    crossover the cost of getting into and out of the kernels from the
    framework (op dispatch, the Python callback, the GIL, output allocation)
    outweighs the faster pass over the data, so the framework's fused op is
    faster; above it the kernels are.  The crossover is measured per backend
    and mode on float32 data (:data:`CROSSOVER`); float16 and float64 calls
    use the same element counts.  ``None`` means the kernels never serve that
    backend and mode by default.  A call whose size is unknown when it is traced
    (``n_elements=None``) follows the large-size choice.

:func:`op_threads(backend, n_elements) <op_threads>`
    The OpenMP team of one kernel call made from inside a framework.  The
    rule: at most ``ckbn.get_num_threads()`` threads (the user's setting is a
    cap, never raised), and one thread for calls under
    :data:`PARALLEL_MIN_ELEMENTS` elements on TensorFlow and JAX, whose
    intra-op pools keep their own threads busy or spinning next to ckbn's
    team.  Above it the team takes every allowed thread: the kernels' passes
    are memory-bound and a second thread still pays there.  PyTorch shares
    one OpenMP runtime with ckbn (whichever libgomp loads first), so its
    threads are the same pool and the rule is ckbn's own default.

:func:`set_min_elements` overrides a crossover (``0``: always the kernels,
``None``: never), e.g. for benchmarks and tests; :func:`min_elements` reads it
(per mode, or with ``mode=None`` the smallest in force: the size gate of a
call whose mode is not known); :func:`requested` says whether a threshold was
set that way.  This is the only place the thresholds and their overrides
live: ``keras_plugin.set_jax_min_elements`` and ``get_jax_min_elements`` are
this module's ``set_min_elements("jax", None, n)`` and ``min_elements("jax",
None)``, and the JAX backend reads :func:`requested` to decide whether its
host-callback path (slower than XLA everywhere measured) may serve at all.
"""

from __future__ import annotations

import numbers

import ckbn

__all__ = ["BACKENDS", "MODES", "CROSSOVER", "PARALLEL_MIN_ELEMENTS", "use_kernels",
           "op_threads", "set_min_elements", "min_elements", "requested", "n_elements"]

BACKENDS = ("tensorflow", "torch", "jax", "numpy")
MODES = ("train", "infer")
_DTYPES = ("float16", "float32", "float64")

# Smallest call (elements) from which the kernels beat the framework's own op,
# float32, batch normalization forward+backward ("train") or forward ("infer");
# None: the framework's op at every size.  Source: benchmarks/bench_keras.py
# --crossover (one BN layer, stock vs the kernels forced, round robin), the
# quiet 2-core EPYC (Zen, AVX2), 3 December 2026, 18:29 (PyTorch: 20:27, after
# the layer's shortcut) (RESULTS-keras.md, section 4); JAX from whole models
# (section 0), see below.
CROSSOVER = {
    # TensorFlow native op (no tf.numpy_function): training 1.06-1.25x from 32 Ki
    # up, 1.00-1.01x (a tie) at 2 Ki and 8 Ki
    ("tensorflow", "train"): 1 << 15,
    # inference 1.01-1.31x at every size measured, 2 Ki to 2 Mi
    ("tensorflow", "infer"): 0,
    # PyTorch, with the compiled operators and the Layer.__call__ shortcut
    # (session 12, Zen 4, RESULTS-keras.md): training 1.10-1.64x at every size
    # from 2 Ki to 2 Mi (one layer).  (Before them: 0.97-1.05x up to 128 Ki,
    # and the threshold was 32 Ki.)
    ("torch", "train"): 0,
    # inference: one layer, the framework hook below against the compiled
    # operator, warm: 0.80-1.07 up to 192 Ki, the operator 1.3-2.9x faster from
    # 1.5 Mi; whole models (MobileNetV2, ResNet50, EfficientNetB0, the CNN):
    # hook / operator 0.98-1.00, and kernels from 1 Mi no better than the hook:
    # not the kernels.  The layer then runs one PyTorch op where it can
    # (keras_plugin._torch.layer_infer: addcmul channels last, batch_norm
    # channels first), else Keras's code
    ("torch", "infer"): None,
    # JAX, from whole models (a one-layer model lets XLA fuse BN into the loss):
    # training with the XLA FFI handler 1.01x MobileNetV2, 0.96x and 1.01x the
    # CNN in two runs, against a no-BN ceiling of 1.06x and 1.03x: a tie, and
    # the kernels keep the other backends' numbers.  Where the handler cannot be
    # built the JAX engine declines and Keras's code runs (host callbacks only
    # on request).
    ("jax", "train"): 0,
    # inference: XLA fuses the BN affine into the convolution's output; the
    # handler is a separate pass (the CNN 0.83x, MobileNetV2 1.00x), XLA's own
    # ops 0.97x and 0.99x
    ("jax", "infer"): None,
    # NumPy backend: no framework op to prefer
    ("numpy", "train"): 0,
    ("numpy", "infer"): 0,
}

# Calls under this many elements run on one thread inside TensorFlow and JAX.
PARALLEL_MIN_ELEMENTS = 1 << 18

_overrides = {}


def _check_backend(backend):
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _check_count(n, name, allow_none):
    if n is None and allow_none:
        return None
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{name} must be an int{' or None' if allow_none else ''}, got {n!r}")
    n = int(n)
    if n < 0:
        raise ValueError(f"{name} must be >= 0, got {n!r}")
    return n


def n_elements(shape):
    """Number of elements of ``shape``, or None if a dimension is unknown."""
    size = 1
    for d in shape:
        if d is None:
            return None
        try:
            d = int(d)
        except TypeError:  # a symbolic dimension
            return None
        size *= d
    return size


def min_elements(backend, mode):
    """The crossover in force for ``backend`` and ``mode`` (None: never the kernels).

    ``mode=None``: the smallest crossover in force over both modes (None when
    neither mode uses the kernels), the size gate of a call whose mode is not
    known yet.
    """
    _check_backend(backend)
    if mode is None:
        values = [v for v in (min_elements(backend, m) for m in MODES) if v is not None]
        return min(values) if values else None
    _check_mode(mode)
    key = (backend, mode)
    return _overrides[key] if key in _overrides else CROSSOVER[key]


def requested(backend):
    """Whether a threshold (not None) was set for ``backend`` with :func:`set_min_elements`,
    in either mode; ``"measured"`` and ``None`` clear the request."""
    _check_backend(backend)
    return any(_overrides.get((backend, m)) is not None for m in MODES)


def set_min_elements(backend, mode, n):
    """Use the kernels for calls of at least ``n`` elements (``None``: never).

    ``mode`` is ``"train"``, ``"infer"`` or ``None`` (both).  ``n="measured"``
    restores the measured crossover.  Returns the previous values as a dict
    ``{mode: n}`` so a caller can put them back.
    """
    _check_backend(backend)
    modes = MODES if mode is None else (mode,)
    for m in modes:
        _check_mode(m)
    if n != "measured":
        n = _check_count(n, "n", allow_none=True)
    previous = {m: min_elements(backend, m) for m in modes}
    for m in modes:
        if n == "measured":
            _overrides.pop((backend, m), None)
        else:
            _overrides[(backend, m)] = n
    return previous


def use_kernels(backend, mode, n_elements, dtype="float32"):
    """Whether ckbn's kernels serve this call (see the module docstring)."""
    _check_backend(backend)
    _check_mode(mode)
    n_elements = _check_count(n_elements, "n_elements", allow_none=True)
    dtype = str(getattr(dtype, "name", dtype))
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
    threshold = min_elements(backend, mode)
    if threshold is None:
        return False
    if n_elements is None:
        return True
    return n_elements >= threshold


def op_threads(backend, n_elements):
    """OpenMP threads for one kernel call from inside ``backend`` (see the module docstring)."""
    _check_backend(backend)
    n_elements = _check_count(n_elements, "n_elements", allow_none=True)
    cap = ckbn.get_num_threads()
    if backend in ("tensorflow", "jax") and n_elements is not None \
            and n_elements < PARALLEL_MIN_ELEMENTS:
        return 1
    return cap
