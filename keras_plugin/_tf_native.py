"""TensorFlow backend: ckbn's kernels as compiled TensorFlow ops.

``native/tf_ops.cc`` registers four CPU ops that call ckbn's compiled kernels
through the C-level table of ``ckbn_kernels.h`` -- no ``tf.numpy_function``,
no Python and no GIL per call, no copy (the kernels read the input tensors'
buffers in place and write into outputs the op context allocates):

* ``CkbnBatchNormTrain``: ``x, scale, offset -> y, batch_mean, batch_var``;
* ``CkbnBatchNormApply``: ``x, scale, offset, mean, var -> y``;
* ``CkbnBatchNormGrad``: ``dy, x, scale, offset, mean, var -> dx, dscale, doffset``;
* ``CkbnMoments``: ``x -> mean, var`` (not differentiable).

Each takes the activation (``relu``, ``relu6``, ``leaky_relu`` with its
slope, ``swish``, or none) and epsilon as attributes, the channel axes as an attribute
(the layout comes from ``ckbn_layout`` at run time, so dynamic shapes work)
and ``n_threads``.  Their gradients are registered here: the batch
statistics outputs of the training op are not differentiable (they feed the
moving averages), as with TensorFlow's own ``FusedBatchNormV3``.  With
``relu`` or ``relu6`` on float32/float64 data the gradient masks ``dy`` with
TensorFlow's ``ReluGrad``/``Relu6Grad`` on the op's output and runs
``CkbnBatchNormGrad`` without the activation (:data:`GRAD_MASK_FROM_OUTPUT`);
the other activations stay in ckbn's backward.  They have
shape functions, run eagerly and in ``tf.function``, and can be saved in a
SavedModel; loading that SavedModel needs the op library, which importing
``keras_plugin`` with the TensorFlow backend loads.

The library is built once on first use by :mod:`keras_plugin._native_build`
(against the installed TensorFlow, cached per TensorFlow version), loaded
with ``tf.load_op_library``, and handed the table of the kernel variant
ckbn dispatched to at that moment.  Where it cannot be built (no compiler,
no TensorFlow headers, ``CKBN_NATIVE=0``), :func:`load` warns once and
returns None, and the backend keeps its ``tf.numpy_function`` path.

:func:`usable` says where the ops serve a tensor: CPU, float16/32/64
(float16 only where the table has float16 kernels), channel axes that need
no transpose, and not under XLA (the ops have no XLA kernel).

Eager calls: :func:`train` and :func:`given` with eager tensors call
TensorFlow's C fast path (``TFE_Py_FastPathExecute``) directly, with their
arguments checked once per signature (the first call with given dtypes,
shapes, axes, epsilon, activation and slope runs every check; later ones
reuse the result); anything else (graph tensors, NumPy arrays, tracing) takes
the general path through the op module's generated wrappers.  Either way the
errors are the same.

Timing: with ``CKBN_TF_OP_TIMERS=1`` set before the library is loaded, a
separate build with per-phase timers in the kernels' ``Compute`` is used
(:func:`phase_ns`; ``benchmarks/bench_tf_native.py --part pieces``); the
default build has none.

Threads: ``n_threads`` is fixed when an op is created (eagerly: each call;
in ``tf.function``: at tracing), by the rule of ``keras_plugin._policy``
(``op_threads``) where that module exists, else ``ckbn.get_num_threads()``;
an op created while saving gets ``n_threads=0``, which means the default the
library was given when it was loaded in the process that runs it.
"""

from __future__ import annotations

import ctypes
import threading

import tensorflow as tf

import ckbn
from keras_plugin import _kernels, _native_build

try:  # the thread rule (benchmarks/RESULTS-keras.md), where this keras_plugin has it
    from keras_plugin import _policy
except ImportError:  # pragma: no cover - depends on the merge order
    _policy = None
try:
    from tensorflow.python.ops import control_flow_util
    from tensorflow.python.saved_model import save_context
except ImportError:  # pragma: no cover - TF internals moved
    control_flow_util = save_context = None
try:  # the eager fast path of train/given (see _eager_op); the op module's wrappers otherwise
    from tensorflow.python import pywrap_tfe as _pywrap_tfe
    from tensorflow.python.eager import context as _context
    from tensorflow.python.eager import core as _core
    from tensorflow.python.framework import ops as _tf_ops

    _EagerTensor = _tf_ops.EagerTensor
    _fast_execute = _pywrap_tfe.TFE_Py_FastPathExecute
except (ImportError, AttributeError):  # pragma: no cover - TF internals moved
    _fast_execute = None

__all__ = ["OP_TYPES", "load", "available", "has_float16", "call_counts", "usable", "in_place",
           "train", "given", "grad", "moments"]

OP_TYPES = ("CkbnBatchNormTrain", "CkbnBatchNormApply", "CkbnBatchNormGrad", "CkbnMoments")
ACTIVATIONS = (None, "relu", "relu6", "leaky_relu", "swish")
_WHAT = "the TensorFlow native op (keras_plugin/native/tf_ops.cc)"
_CAPSULE = b"ckbn.kernel_table.v1"

_lock = threading.Lock()
_ops = None  # the loaded op module
_tried = False
_has_float16 = False
_lib = None  # the library through ctypes


class _TableHead(ctypes.Structure):
    """The first fields of ``ckbn_kernel_table`` (ABI 1)."""

    _fields_ = [("abi", ctypes.c_int), ("variant", ctypes.c_char_p),
                ("has_float16", ctypes.c_int)]


def _table_address():
    """Address of the kernel table of the variant ckbn uses now."""
    get_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
        ("PyCapsule_GetPointer", ctypes.pythonapi))
    return get_pointer(ckbn.kernel_table(), _CAPSULE)


def _timers_requested():
    """``CKBN_TF_OP_TIMERS=1``: build the library with its per-phase timers
    (``benchmarks/bench_tf_native.py --part pieces``; compiled out otherwise)."""
    import os

    return os.environ.get("CKBN_TF_OP_TIMERS", "0").strip() == "1"


def _build():
    timers = ["-DCKBN_TF_OP_TIMERS"] if _timers_requested() else []
    return _native_build.build_library(
        "ckbn_tf_ops", ["tf_ops.cc"], include_dirs=[ckbn.get_include()],
        extra_compile_args=list(tf.sysconfig.get_compile_flags())
        + ["-Wno-deprecated-declarations"] + timers,
        extra_link_args=list(tf.sysconfig.get_link_flags()),
        key_extra=f"tensorflow {tf.__version__}")


def _load():
    global _has_float16
    address = _table_address()
    path = _build()
    module = tf.load_op_library(path)
    lib = ctypes.CDLL(path)  # the same handle: dlopen of a loaded path
    lib.ckbn_native_set_table.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.ckbn_native_set_table.restype = ctypes.c_int
    if lib.ckbn_native_set_table(address, ckbn.get_num_threads()) != 0:
        raise RuntimeError("ckbn's kernel table has another ABI than ckbn_kernels.h")
    _has_float16 = bool(_TableHead.from_address(address).has_float16)
    lib.ckbn_native_calls.argtypes = [ctypes.c_int]
    lib.ckbn_native_calls.restype = ctypes.c_int64
    if hasattr(lib, "ckbn_native_phase_ns"):
        lib.ckbn_native_phase_ns.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int64),
                                             ctypes.c_int]
        lib.ckbn_native_phase_ns.restype = ctypes.c_int64
    global _lib
    _lib = lib
    return module


PHASES = ("table and layout", "per-channel inputs", "x-sized output", "per-channel outputs",
          "kernel", "rest")


def phase_ns(which, reset=True):
    """Timing builds only (``CKBN_TF_OP_TIMERS=1``): ``(runs, {phase: ns})`` summed over
    the successful runs of op ``which`` ("train" or "given") since the last reset;
    None where the loaded library has no timers."""
    if load() is None or not hasattr(_lib, "ckbn_native_phase_ns"):
        return None
    index = {"train": 0, "given": 1}[which]
    out = (ctypes.c_int64 * len(PHASES))()
    runs = _lib.ckbn_native_phase_ns(index, out, 1 if reset else 0)
    return int(runs), dict(zip(PHASES, (int(v) for v in out)))


def load():
    """The op module, or None where the library cannot be had (warned once).

    The first call builds the library if it is not cached yet (about a
    minute), loads it and hands it ckbn's kernel table.
    """
    global _ops, _tried
    if not _tried:
        with _lock:
            if not _tried:
                try:
                    _ops = _load()
                except (_native_build.NativeBuildError, RuntimeError, OSError,
                        tf.errors.OpError) as exc:
                    reason = str(exc).strip().splitlines()
                    _native_build.warn_fallback(_WHAT, reason[0] if reason else type(exc).__name__)
                    _ops = None
                _tried = True
    return _ops


def available():
    """Whether the op library is loaded (loads it on the first call)."""
    return load() is not None


def has_float16():
    """Whether the loaded kernels take float16 data (False if not loaded)."""
    return load() is not None and _has_float16


def call_counts():
    """How many times each op ran its kernel in this process (all zero if not loaded):
    ``{"train": ..., "given": ..., "grad": ..., "moments": ...}``, ``given``
    being ``CkbnBatchNormApply``.  For tests that check which path ran."""
    names = ("train", "given", "grad", "moments")
    if load() is None:
        return dict.fromkeys(names, 0)
    return {name: int(_lib.ckbn_native_calls(i)) for i, name in enumerate(names)}


# ------------------------------------------------------------------ where it serves
in_place = _kernels.in_place   # the layout rule of ckbn_kernels.h, shared with PyTorch


def _in_xla():
    if tf.executing_eagerly():
        return False
    if control_flow_util is None:  # pragma: no cover - TF internals moved
        return True
    graph = tf.compat.v1.get_default_graph()
    if control_flow_util.GraphOrParentsInXlaContext(graph):
        return True
    while graph is not None:
        if getattr(graph, "_xla_compile", False) or getattr(graph, "_jit_compile", False):
            return True
        graph = getattr(graph, "outer_graph", None)
    return False


_gpu = None


def _has_gpu():
    global _gpu
    if _gpu is None:  # logical devices are fixed once TensorFlow has started
        _gpu = bool(tf.config.list_logical_devices("GPU"))
    return _gpu


def usable(x, axes):
    """Whether the native ops serve tensor ``x`` with channel ``axes`` here.

    CPU, a float dtype the table has, a known rank with channel axes in
    place, not traced for XLA, and the library loaded.  SavedModel export is
    fine: the saved graph holds the ops.
    """
    if x.dtype not in _FLOATS:
        return False
    ndim = x.shape.rank
    if ndim is None or ndim == 0 or not in_place(ndim, axes):
        return False
    device = (getattr(x, "device", "") or "").upper()
    if "GPU" in device or "TPU" in device:
        return False
    if not device and _has_gpu():
        return False  # placement unknown in a graph: let TF place its own ops
    if _in_xla():
        return False
    if load() is None:
        return False
    return x.dtype != tf.float16 or _has_float16


# -------------------------------------------------------------------- arguments
def _stat_dtype(dtype):
    return tf.float32 if dtype == tf.float16 else dtype


def _n_threads(x):
    """The op's OpenMP team: keras_plugin._policy's rule where it exists."""
    if save_context is not None and save_context.in_save_context():
        return 0  # the default of the process that loads the SavedModel
    if _policy is not None:
        return _policy.op_threads("tensorflow", _policy.n_elements(x.shape))
    return ckbn.get_num_threads()


def _number(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {value!r}")
    value = float(value)
    if not (value >= 0.0 and value != float("inf")):
        raise ValueError(f"{name} must be a finite float >= 0, got {value!r}")
    return repr(value)


def _activation(activation, slope):
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be None or one of {ACTIVATIONS[1:]}, "
                         f"got {activation!r}")
    return ("none" if activation is None else activation), _number(slope, "negative_slope")


def _call_attrs(eps, activation, slope, x, **flags):
    """The op's attributes, leaving out those at the op's default (``epsilon``
    "0.001", no activation, ``training`` as in ``flags``' defaults): each
    attribute passed costs a few microseconds per eager call (conversion and
    the kernel-cache key), and TensorFlow fills the defaults in anyway."""
    out = {}
    epsilon = _number(eps, "epsilon")
    if float(epsilon) != 0.001:
        out["epsilon"] = epsilon
    act, slope = _activation(activation, slope)
    if act != "none":
        out["activation"] = act
        if float(slope) != 0.0:
            out["negative_slope"] = slope
    for name, (value, default) in flags.items():
        if value != default:
            out[name] = value
    out["n_threads"] = _n_threads(x)
    return out


def _axes(shape, axes):
    ndim = shape.rank
    if ndim is None:
        raise ValueError("the native ops need tensors of known rank")
    listed = [axes] if isinstance(axes, int) else list(axes)
    out = []
    for a in listed:
        if isinstance(a, bool) or not isinstance(a, int):
            raise TypeError(f"channel axes must be ints, got {a!r} in {axes!r}")
        if not -ndim <= a < ndim:
            raise ValueError(f"channel axis {a} is out of range for a tensor of rank {ndim} "
                             f"(shape {shape})")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"channel axes {listed!r} contain duplicates")
    if not in_place(ndim, out):
        raise ValueError(f"channel axes {listed!r} of a rank-{ndim} tensor need a "
                         "transpose; the native ops take them in place only")
    return sorted(out)


_FLOATS = (tf.float16, tf.float32, tf.float64)
_axes_seen = {}  # (rank, axes) -> normalized axes, for the calls after the first


def _check(x, per_channel, axes):
    """Validated ``(axes, op module)``; TypeError/ValueError name the bad value."""
    dtype = x.dtype
    if dtype not in _FLOATS:
        raise TypeError(f"x must be float16, float32 or float64, got {dtype.name}")
    shape = x.shape
    try:
        key = (shape.rank, axes if isinstance(axes, int) else tuple(axes))
        norm = _axes_seen.get(key)
    except TypeError:  # unhashable entries: _axes names them
        key = norm = None
    if norm is None:
        norm = _axes(shape, axes)
        if key is not None:
            _axes_seen[key] = norm
    sd = tf.float32 if dtype == tf.float16 else dtype
    n = 1
    for a in norm:
        d = shape[a]
        n = None if n is None or d is None else n * d
    for name, v in per_channel:
        if v.dtype != sd:
            raise TypeError(f"{name} must be {sd.name} for {dtype.name} data, "
                            f"got {v.dtype.name}")
        vs = v.shape
        if vs.rank is not None and (vs.rank != 1 or vs[0] not in (None, n) and n is not None):
            if vs.rank != 1:
                raise ValueError(f"{name} must be flat (one value per channel), got shape {vs}")
            raise ValueError(f"{name} has {vs[0]} values, but x of shape {shape} has "
                             f"{n} channels (axes {norm})")
    ops = _ops if _tried else load()
    if ops is None:
        raise RuntimeError("the ckbn TensorFlow op library is not available here")
    return norm, ops


def _tensors(x, **per_channel):
    def tensor(v):
        return v if isinstance(v, tf.Tensor) else tf.convert_to_tensor(v)

    return tensor(x), [(k, tensor(v)) for k, v in per_channel.items()]


# ----------------------------------------------------- the eager fast path
# An eager call of train/given whose inputs are all eager tensors goes
# straight to TensorFlow's C fast path (TFE_Py_FastPathExecute, what the op
# module's generated wrappers call after their dispatch checks), with the
# attributes validated once per signature: the first call with a given
# (op, dtypes, shapes, axes, epsilon, activation, slope, flags) runs every
# check of the general path (same errors) and keeps the flat attribute list;
# the next ones look it up.  Only the thread count is decided per call
# (keras_plugin._policy's rule reads ckbn's current setting).  The gradient
# is recorded by the fast path itself, as for every TensorFlow op.
_SIGNATURES = {}  # key -> (flat attributes without n_threads, element count)
_SIGNATURES_MAX = 1024  # distinct signatures kept (cleared when full)


def _eager_op(op_name, inputs, key, attrs_of):
    """The op's outputs through the fast path, or None where it does not apply.

    ``inputs``: the op's input tensors in order; ``key``: hashable description
    of everything the validation depends on besides the inputs' dtypes and
    shapes; ``attrs_of()``: validates (raising the general path's errors) and
    returns ``(attribute dict without n_threads, element count of x)``.
    """
    if _fast_execute is None or not _tried or _ops is None:
        return None
    sig = [op_name, key]
    for t in inputs:
        if type(t) is not _EagerTensor:
            return None
        sig.append(t._datatype_enum())
        sig.append(t._shape_tuple())
    ctx = _context._context or _context.context()
    if not ctx._thread_local_data.is_eager:
        return None
    full = tuple(sig)
    try:
        entry = _SIGNATURES.get(full)
    except TypeError:  # an unhashable part: the general path checks it
        return None
    if entry is None:
        attrs, count = attrs_of()
        flat = []
        for name, value in attrs.items():
            flat += [name, value]
        entry = (tuple(flat), count)
        if len(_SIGNATURES) >= _SIGNATURES_MAX:
            _SIGNATURES.clear()
        _SIGNATURES[full] = entry
    flat, count = entry
    if save_context is not None and save_context.in_save_context():
        threads = 0
    elif _policy is not None:
        threads = _policy.op_threads("tensorflow", count)
    else:
        threads = ckbn.get_num_threads()
    try:
        return _fast_execute(ctx, op_name, None, *inputs, *flat, "n_threads", threads)
    except _core._NotOkStatusException as e:
        _tf_ops.raise_from_not_ok_status(e, None)
    except _core._FallbackException:
        return None


def _eager_attrs(x, pc, axes, eps, activation, slope, **flags):
    """The general path's checks for the fast path: (attributes without n_threads, x's size)."""
    norm, _ = _check(x, pc, axes)
    attrs = _call_attrs(eps, activation, slope, x, **flags)
    del attrs["n_threads"]
    attrs = {"channel_axes": norm, **attrs}
    count = 1
    for d in x.shape:
        count *= int(d)
    return attrs, count


# ------------------------------------------------------------------ the op table
def train(x, scale, offset, axes, eps, activation=None, slope=0.0):
    """``y = act(BN(x))`` with the batch statistics, and those statistics.

    Returns ``y`` (x's dtype) and the flat batch mean and biased variance
    (float32 for float16 data); differentiable in x, scale and offset.
    """
    try:
        # epsilon and slope with their types: 1, 1.0 and True are told apart
        key = (axes if isinstance(axes, int) else tuple(axes), type(eps), eps, activation,
               type(slope), slope)
    except TypeError:
        key = None
    if key is not None:
        out = _eager_op("CkbnBatchNormTrain", (x, scale, offset), key,
                        lambda: _eager_attrs(x, [("scale", scale), ("offset", offset)], axes,
                                             eps, activation, slope))
        if out is not None:
            return out
    x, pc = _tensors(x, scale=scale, offset=offset)
    axes, ops = _check(x, pc, axes)
    return ops.ckbn_batch_norm_train(x, pc[0][1], pc[1][1], channel_axes=axes,
                                     **_call_attrs(eps, activation, slope, x))


def given(x, scale, offset, mean, var, axes, eps, train_grad=False, activation=None, slope=0.0):
    """``y = act(BN(x))`` with the given statistics.

    ``train_grad`` says that mean/var are x's own batch statistics (renorm),
    so the gradient is the training one; otherwise it is the inference one
    (mean and var get no gradient either way).
    """
    try:
        key = (axes if isinstance(axes, int) else tuple(axes), type(eps), eps,
               bool(train_grad), activation, type(slope), slope)
    except TypeError:
        key = None
    if key is not None:
        out = _eager_op("CkbnBatchNormApply", (x, scale, offset, mean, var), key,
                        lambda: _eager_attrs(x, [("scale", scale), ("offset", offset),
                                                 ("mean", mean), ("variance", var)], axes, eps,
                                             activation, slope,
                                             training=(bool(train_grad), False)))
        if out is not None:
            return out
    x, pc = _tensors(x, scale=scale, offset=offset, mean=mean, variance=var)
    axes, ops = _check(x, pc, axes)
    return ops.ckbn_batch_norm_apply(x, *(v for _, v in pc), channel_axes=axes,
                                     **_call_attrs(eps, activation, slope, x,
                                              training=(bool(train_grad), False)))


def grad(dy, x, scale, offset, mean, var, axes, eps, training, activation=None, slope=0.0):
    """``dx, dscale, doffset``; ``training`` says whether mean/var are x's batch statistics.

    With an activation, ``dy`` is the gradient of ``act(BN(x))`` and
    ``offset`` is read to recompute the activation's mask.
    """
    x, pc = _tensors(x, scale=scale, offset=offset, mean=mean, variance=var)
    dy = tf.convert_to_tensor(dy)
    axes, ops = _check(x, pc, axes)
    if dy.dtype != x.dtype:
        raise TypeError(f"dy must have x's dtype {x.dtype.name}, got {dy.dtype.name}")
    if not dy.shape.is_compatible_with(x.shape):
        raise ValueError(f"dy has shape {dy.shape}, expected x's shape {x.shape}")
    return ops.ckbn_batch_norm_grad(dy, x, *(v for _, v in pc), channel_axes=axes,
                                    **_call_attrs(eps, activation, slope, x,
                                             training=(bool(training), True)))


def moments(x, axes):
    """Flat batch mean and biased variance over every axis but ``axes`` (no gradient)."""
    x = tf.convert_to_tensor(x)
    axes, ops = _check(x, [], axes)
    return ops.ckbn_moments(x, U=_stat_dtype(x.dtype), channel_axes=axes,
                            n_threads=_n_threads(x))


# -------------------------------------------------------------------- gradients
_DEFAULTS = {"epsilon": "0.001", "activation": "none", "negative_slope": "0", "training": False}


def _attr(op, name):
    """Attribute ``name`` of ``op``, text decoded.  An eager call through the fast path
    records only the attributes it passed (those off the op's defaults), so an
    attribute missing there has the op's default."""
    try:
        value = op.get_attr(name)
    except (KeyError, ValueError):
        if name not in _DEFAULTS:
            raise
        return _DEFAULTS[name]
    return value.decode() if isinstance(value, bytes) else value


def _attrs(op, training):
    return dict(channel_axes=list(op.get_attr("channel_axes")),
                epsilon=_attr(op, "epsilon"), activation=_attr(op, "activation"),
                negative_slope=_attr(op, "negative_slope"),
                training=training, n_threads=op.get_attr("n_threads"))


# The activations whose derivative the gradient may take from the op's output
# ``y`` with TensorFlow's own op (ReluGrad/Relu6Grad) before ckbn's backward
# without the activation, instead of ckbn's backward recomputing the mask from
# x (its activation mode).  Possible for relu and relu6 on float32/float64
# (their derivative is a 0/1 mask that ``y`` gives exactly).  Empty: ckbn's
# backward with the activation is faster.  Session 7 first measured the
# kernels' backward with an activation at 1.25-1.8x their plain backward on
# one thread and 2.8-3.8x on two, and routed relu/relu6 through the mask op;
# the kernels then took those sums in register tiles, and side by side
# (bench_tf_native.py --part fused, quiet Zen 4, 2 threads) the in-kernel
# gradient took 489-1948 us against 526-2704 us for Relu6Grad + the plain
# backward at all six MobileNetV2 sizes.  bench_tf_native.py --part fused
# fills this table to time the mask route beside it.
# Read when a gradient is built (at tracing in a tf.function).
GRAD_MASK_FROM_OUTPUT: dict = {}
_MASK_DTYPES = (tf.float32, tf.float64)


def _grad(op, dy, x, scale, offset, mean, var, training):
    """``dx, dscale, doffset`` of ``op`` (train or apply) for its output's gradient ``dy``."""
    attrs = _attrs(op, training)
    mask_op = GRAD_MASK_FROM_OUTPUT.get(attrs["activation"])
    if mask_op is not None and x.dtype in _MASK_DTYPES:
        dy = getattr(tf.raw_ops, mask_op)(gradients=dy, features=op.outputs[0])
        attrs.update(activation="none", negative_slope="0")
    return tuple(load().ckbn_batch_norm_grad(dy, x, scale, offset, mean, var, **attrs))


@tf.RegisterGradient("CkbnBatchNormTrain")
def _train_grad(op, dy, dmean, dvar):
    # dmean, dvar: the batch statistics only feed the moving averages.
    x, scale, offset = op.inputs
    _, mean, var = op.outputs
    return _grad(op, dy, x, scale, offset, mean, var, True)


@tf.RegisterGradient("CkbnBatchNormApply")
def _apply_grad(op, dy):
    x, scale, offset, mean, var = op.inputs
    dx, ds, do = _grad(op, dy, x, scale, offset, mean, var, _attr(op, "training"))
    return dx, ds, do, None, None


tf.no_gradient("CkbnMoments")
