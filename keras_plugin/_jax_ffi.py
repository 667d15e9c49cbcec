"""JAX backend on XLA's FFI: ckbn's kernels inside ``jax.jit``, no host callback.

``keras_plugin/native/xla_ffi.cc`` holds four XLA FFI handlers (training
forward, forward with given statistics, backward, moments) that call ckbn's
compiled kernels through its C-level table (``ckbn.kernel_table()``,
``ckbn_kernels.h``) on XLA's own buffers: no Python, no GIL and no copy per
call; XLA allocates the outputs.  The library is compiled once, on first use,
against the installed jaxlib's headers (``jax.ffi.include_dir()``) by
:mod:`keras_plugin._native_build` and cached; when it cannot be built or
loaded (no compiler, no headers, ``CKBN_NATIVE=0``, a kernel table of another
ABI), :func:`available` is False after one ``RuntimeWarning`` and the JAX
backend keeps its previous path.

Each op is a ``jax.ffi.ffi_call`` wrapped in a ``jax.custom_vjp``; the
layout ``(P, G, R, C)`` comes from ckbn's ``make_layout`` on the static shape
at trace time and travels as attributes, with the activation (``act``: 0
none, 1 piecewise linear with ``slope`` and ``hi``, 2 swish), ``eps`` and the OpenMP thread count ``n_threads``.  The
thread count is read when the function is traced, so a jitted function keeps
the count it was compiled with.  Under ``jax.vmap`` each op runs once per
mapped element (``vmap_method="sequential"``): batch normalization of a
mapped element is the op on that element, so this is exact.

Threads: a handler runs on the thread XLA executes it on and starts ckbn's
own OpenMP team of ``n_threads``; XLA's intra-op pool (``XLA_FLAGS``, e.g.
``--xla_cpu_multi_thread_eigen=false``) is separate and idle while the
custom call runs.  Measured on a 2-core AMD EPYC shared with other jobs
(benchmarks/bench_jax_ffi.py): a 16x32x32x32 float32 forward took a median
0.8 ms on one OpenMP thread and 64-78 ms on two, both through the handler
and through a bare ``ckbn.nn`` call (a team whose peer is descheduled waits
at each barrier), with XLA's default pool; hence the count follows the
plugin's rule per call size (:func:`n_threads`).

Per-channel arrays are flat ``(n,)``; statistics of float16 data are float32.
The statistics returned by the training forward are constants for the
gradient (the layer feeds them to the moving averages under
``stop_gradient``); the gradient of the normalized output with respect to
``x`` includes the batch statistics' dependence on ``x``.
"""

from __future__ import annotations

import ctypes
import math
import threading
from functools import partial

import numpy as np

import ckbn
from ckbn._layout import make_layout
from keras_plugin import _activation, _native_build

__all__ = ["available", "supports", "train", "given", "grad", "moments", "n_threads",
           "sync_train"]

_TARGETS = {  # XLA target name -> exported handler symbol
    "ckbn_bn_train": "CkbnBnTrain",
    "ckbn_bn_given": "CkbnBnGiven",
    "ckbn_bn_grad": "CkbnBnGrad",
    "ckbn_bn_stats": "CkbnBnStats",
    "ckbn_bn_stats_row": "CkbnBnStatsRow",
    "ckbn_bn_merge": "CkbnBnMerge",
    "ckbn_bn_grad_sums": "CkbnBnGradSums",
    "ckbn_bn_backward_dx": "CkbnBnBackwardDx",
}

_state = None     # None: not tried yet; False: unavailable; else the loaded _Library
_lock = threading.Lock()


class _TableHead(ctypes.Structure):
    """The leading fields of ``ckbn_kernel_table`` (ckbn_kernels.h)."""

    _fields_ = [("abi", ctypes.c_int), ("variant", ctypes.c_char_p),
                ("has_float16", ctypes.c_int)]


class _Library:
    def __init__(self, lib, capsule, has_float16, variant, path):
        self.lib = lib            # the loaded handler library (kept alive)
        self.capsule = capsule    # keeps the kernel module and its table alive
        self.has_float16 = has_float16
        self.variant = variant
        self.path = path


def _load():
    import jax
    import jaxlib

    path = _native_build.build_library(
        "ckbn_xla_ffi", ["xla_ffi.cc"], include_dirs=[ckbn.get_include()],
        extra_compile_args=["-std=c++17", "-isystem", jax.ffi.include_dir()],
        key_extra=f"jax {jax.__version__} jaxlib {jaxlib.__version__}")
    lib = ctypes.CDLL(path)
    capsule = ckbn.kernel_table()
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.py_object, ctypes.c_char_p]
    ptr = get(capsule, b"ckbn.kernel_table.v1")
    head = _TableHead.from_address(ptr)
    lib.ckbn_native_abi.restype = ctypes.c_int
    lib.ckbn_native_set_table.restype = ctypes.c_int
    lib.ckbn_native_set_table.argtypes = [ctypes.c_void_p]
    if lib.ckbn_native_set_table(ptr) != 0:
        raise _native_build.NativeBuildError(
            f"ckbn's kernel table has ABI {head.abi}, the handler library expects "
            f"{lib.ckbn_native_abi()}")
    for target, symbol in _TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)),
                                    platform="cpu")
    return _Library(lib, capsule, bool(head.has_float16), head.variant.decode(), path)


def available():
    """Whether the FFI handlers are built, loaded and registered (tries once).

    The first call builds (or finds in the cache) and loads the library; if
    that fails it warns once, with the reason, and returns False from then on.
    """
    global _state
    if _state is None:
        with _lock:   # one build and one registration per process
            if _state is None:
                try:
                    _state = _load()
                except (_native_build.NativeBuildError, OSError, RuntimeError,
                        AttributeError, ImportError) as exc:
                    _native_build.warn_fallback("the JAX XLA FFI handler",
                                                str(exc).splitlines()[0])
                    _state = False
    return _state is not False


def library():
    """The loaded library's record (path, kernel variant), or None."""
    return _state if available() else None


def n_threads(n_elements=None):
    """OpenMP threads for one call on ``n_elements`` elements: the plugin's
    thread rule (``keras_plugin._policy.op_threads``) where it exists, else
    ``ckbn.get_num_threads()``."""
    try:
        from keras_plugin import _policy
    except ImportError:
        return ckbn.get_num_threads()
    rule = getattr(_policy, "op_threads", None)
    return int(rule("jax", n_elements)) if callable(rule) else ckbn.get_num_threads()


_FLOATS = ("float16", "float32", "float64")


def supports(x):
    """Whether the FFI ops serve ``x`` (a CPU float array of a non-empty shape)."""
    import jax

    if not available():
        return False
    dtype = np.dtype(x.dtype).name
    if dtype not in _FLOATS or (dtype == "float16" and not _state.has_float16):
        return False
    if jax.default_backend() != "cpu":
        return False
    devices = getattr(x, "devices", None)
    if callable(devices) and not isinstance(x, jax.core.Tracer):
        try:
            if any(d.platform != "cpu" for d in devices()):
                return False
        except Exception:  # pragma: no cover - a committed array without devices
            return False
    return all(isinstance(n, int) for n in x.shape) and math.prod(x.shape) > 0


# --------------------------------------------------------------- validation
def _check_data(x, what="x"):
    dtype = np.dtype(x.dtype)
    if dtype.name not in _FLOATS:
        raise TypeError(f"{what} must be float16, float32 or float64, got {dtype.name}")
    if dtype.name == "float16" and not available_float16():
        raise TypeError(f"{what} is float16, which ckbn's {_state.variant!r} kernels "
                        f"do not support here")
    if not x.shape or math.prod(x.shape) == 0:
        raise ValueError(f"{what} must be a non-empty array of rank >= 1, "
                         f"got shape {tuple(x.shape)}")


def available_float16():
    return available() and _state.has_float16


def _axes(x, axes):
    nd = len(x.shape)
    if isinstance(axes, (int, np.integer)):
        axes = (axes,)
    out = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)):
            raise TypeError(f"axes must be integers, got {axes!r}")
        if not -nd <= a < nd:
            raise ValueError(f"axis {a} is out of range for an array of rank {nd}")
        out.append(int(a) % nd)
    if len(set(out)) != len(out):
        raise ValueError(f"axes must be distinct, got {tuple(axes)!r}")
    return tuple(sorted(out))


def _check_channel(v, n, what, shape):
    if v.shape != (n,):
        raise ValueError(f"{what} must have shape ({n},) for x of shape {tuple(shape)} "
                         f"and these channel axes, got {tuple(v.shape)}")


def _act(activation, slope):
    """``(act, slope, hi)`` attributes for ``activation`` (None, relu, relu6, leaky_relu,
    swish): act 0 none, 1 piecewise linear, 2 swish."""
    activation, slope = _activation.check(activation, slope)
    if activation is None:
        return (0, 0.0, math.inf)
    if activation == "swish":
        return (2, 0.0, math.inf)
    if activation == "relu":
        return (1, 0.0, math.inf)
    if activation == "relu6":
        return (1, 0.0, 6.0)
    return (1, slope, math.inf)


def _stat_dtype(dtype):
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype == np.float16 else dtype


# ---------------------------------------------------------------- the calls
def _canonical(x, axes):
    """``x`` in the kernels' layout (a transpose only when the layout needs one),
    the layout, and the inverse for outputs of x's shape."""
    import jax.numpy as jnp

    lay = make_layout(tuple(x.shape), axes)
    if lay.perm is None:
        return x, lay, lambda y: y
    moved = tuple(x.shape[a] for a in lay.perm)
    inverse = tuple(int(i) for i in np.argsort(lay.perm))
    return (jnp.transpose(x, lay.perm), lay,
            lambda y: jnp.transpose(jnp.reshape(y, moved), inverse))


def _attrs(lay, eps, act):
    P, G, R, C = (int(v) for v in lay.dims)
    on, slope, hi = act
    return dict(P=P, G=G, R=R, C=C, eps=float(eps), act=int(on), slope=float(slope),
                hi=float(hi), n_threads=n_threads(P * G * R * C))


def _struct(shape, dtype):
    import jax
    return jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype))


def _call_train(x, scale, offset, axes, eps, act):
    import jax
    xc, lay, back = _canonical(x, axes)
    sd, n = _stat_dtype(x.dtype), lay.n_channels
    y, mean, var = jax.ffi.ffi_call(
        "ckbn_bn_train", (_struct(xc.shape, x.dtype), _struct((n,), sd), _struct((n,), sd)),
        vmap_method="sequential")(xc, scale, offset, **_attrs(lay, eps, act))
    return back(y), mean, var


def _call_given(x, scale, offset, mean, var, axes, eps, act):
    import jax
    xc, lay, back = _canonical(x, axes)
    y = jax.ffi.ffi_call("ckbn_bn_given", _struct(xc.shape, x.dtype),
                         vmap_method="sequential")(xc, scale, offset, mean, var,
                                                   **_attrs(lay, eps, act))
    return back(y)


def _call_grad(dy, x, scale, offset, mean, var, axes, eps, training, act):
    import jax
    xc, lay, back = _canonical(x, axes)
    dyc = _canonical(dy.astype(x.dtype), axes)[0]
    sd, n = _stat_dtype(x.dtype), lay.n_channels
    dx, ds, do = jax.ffi.ffi_call(
        "ckbn_bn_grad", (_struct(xc.shape, x.dtype), _struct((n,), sd), _struct((n,), sd)),
        vmap_method="sequential")(dyc, xc, scale, offset, mean, var,
                                  training=int(bool(training)), **_attrs(lay, eps, act))
    return back(dx), ds, do


def _call_stats(x, axes):
    import jax
    xc, lay, _ = _canonical(x, axes)
    sd, n = _stat_dtype(x.dtype), lay.n_channels
    P, G, R, C = (int(v) for v in lay.dims)
    return jax.ffi.ffi_call("ckbn_bn_stats", (_struct((n,), sd), _struct((n,), sd)),
                            vmap_method="sequential")(xc, P=P, G=G, R=R, C=C,
                                                      n_threads=n_threads(P * G * R * C))


def _vjp_ops():
    """The custom-VJP functions, defined on first use (jax imported only then)."""
    global _OPS
    if _OPS is not None:
        return _OPS
    import jax
    import jax.numpy as jnp

    @partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
    def train_op(x, scale, offset, axes, eps, act):
        return _call_train(x, scale, offset, axes, eps, act)

    def train_fwd(x, scale, offset, axes, eps, act):
        y, mean, var = _call_train(x, scale, offset, axes, eps, act)
        return (y, mean, var), (x, scale, offset, mean, var)

    def train_bwd(axes, eps, act, res, cts):
        x, scale, offset, mean, var = res
        dx, ds, do = _call_grad(cts[0], x, scale, offset, mean, var, axes, eps, True, act)
        return dx, ds.astype(scale.dtype), do.astype(offset.dtype)

    train_op.defvjp(train_fwd, train_bwd)

    @partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8))
    def given_op(x, scale, offset, mean, var, axes, eps, train_grad, act):
        return _call_given(x, scale, offset, mean, var, axes, eps, act)

    def given_fwd(x, scale, offset, mean, var, axes, eps, train_grad, act):
        y = _call_given(x, scale, offset, mean, var, axes, eps, act)
        return y, (x, scale, offset, mean, var)

    def given_bwd(axes, eps, train_grad, act, res, dy):
        x, scale, offset, mean, var = res
        dx, ds, do = _call_grad(dy, x, scale, offset, mean, var, axes, eps, train_grad, act)
        return (dx, ds.astype(scale.dtype), do.astype(offset.dtype), jnp.zeros_like(mean),
                jnp.zeros_like(var))

    given_op.defvjp(given_fwd, given_bwd)
    _OPS = (train_op, given_op)
    return _OPS


_OPS = None


def _prepare(x, params, axes, what):
    """Validated channel axes and flat per-channel arrays in the statistics dtype."""
    import jax.numpy as jnp

    if not available():
        raise RuntimeError("the JAX XLA FFI handler is not available here "
                           "(see the warning issued when loading it)")
    _check_data(x)
    axes = _axes(x, axes)
    n = math.prod(x.shape[a] for a in axes)
    sd = _stat_dtype(x.dtype)
    out = []
    for name, v in zip(what, params):
        v = jnp.asarray(v)
        if np.dtype(v.dtype).kind != "f":
            raise TypeError(f"{name} must be a float array, got {np.dtype(v.dtype).name}")
        _check_channel(v, n, name, x.shape)
        out.append(v.astype(sd))
    return axes, out


# ------------------------------------------------------------------ op table
def train(x, scale, offset, axes, eps, activation=None, slope=0.0):
    """Training forward: ``(y, mean, var)`` with x's batch mean and biased variance.

    ``y = act((x - mean) / sqrt(var + eps) * scale + offset)``; ``axes`` are
    the channel axes; ``scale``/``offset`` are flat ``(n,)``.  Differentiable
    in ``x``, ``scale`` and ``offset`` (mean and var are constants for the
    gradient; see the module docstring).
    """
    act = _act(activation, slope)
    axes, (scale, offset) = _prepare(x, (scale, offset), axes, ("scale", "offset"))
    return _vjp_ops()[0](x, scale, offset, axes, float(eps), act)


def given(x, scale, offset, mean, var, axes, eps, train_grad=False, activation=None,
          slope=0.0):
    """``act((x - mean) / sqrt(var + eps) * scale + offset)`` with given statistics.

    ``train_grad`` says whether the gradient treats mean/var as x's batch
    statistics (renorm, adjustment) or as constants (inference).
    """
    import jax

    act = _act(activation, slope)
    axes, (scale, offset, mean, var) = _prepare(
        x, (scale, offset, mean, var), axes, ("scale", "offset", "mean", "var"))
    mean, var = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)
    return _vjp_ops()[1](x, scale, offset, mean, var, axes, float(eps), bool(train_grad), act)


def grad(dy, x, scale, offset, mean, var, axes, eps, training, activation=None, slope=0.0):
    """``(dx, dscale, doffset)`` of either forward; ``dy`` is the gradient of its output."""
    act = _act(activation, slope)
    axes, (scale, offset, mean, var) = _prepare(
        x, (scale, offset, mean, var), axes, ("scale", "offset", "mean", "var"))
    if tuple(dy.shape) != tuple(x.shape):
        raise ValueError(f"dy must have x's shape {tuple(x.shape)}, got {tuple(dy.shape)}")
    return _call_grad(dy, x, scale, offset, mean, var, axes, float(eps), bool(training), act)


def moments(x, axes):
    """Flat batch mean and biased variance over every axis but the channel ``axes``
    (no gradient)."""
    import jax

    axes = _prepare(x, (), axes, ())[0]
    return _call_stats(jax.lax.stop_gradient(x), axes)


# ------------------------------------------------------ synchronized training
def _sync_ops():
    global _SYNC
    if _SYNC is not None:
        return _SYNC
    import jax
    import jax.numpy as jnp

    def forward(x, scale, offset, axes, eps, axis_name, act):
        xc, lay, _ = _canonical(x, axes)
        sd, n = _stat_dtype(x.dtype), lay.n_channels
        P, G, R, C = (int(v) for v in lay.dims)
        row = jax.ffi.ffi_call("ckbn_bn_stats_row", _struct((2 * (1 + 2 * n),), np.uint32))(
            xc, P=P, G=G, R=R, C=C, n_threads=n_threads(P * G * R * C))
        rows = jax.lax.all_gather(row, axis_name)          # (shards, 2 + 4n), in axis order
        count, mean, var = jax.ffi.ffi_call(
            "ckbn_bn_merge", (_struct((), np.float32), _struct((n,), sd), _struct((n,), sd)))(
            rows, n=int(n))
        y = _call_given(x, scale, offset, mean, var, axes, eps, act)
        return (y, mean, var), (x, scale, offset, mean, var, count)

    @partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
    def sync_op(x, scale, offset, axes, eps, axis_name, act):
        return forward(x, scale, offset, axes, eps, axis_name, act)[0]

    def sync_fwd(x, scale, offset, axes, eps, axis_name, act):
        return forward(x, scale, offset, axes, eps, axis_name, act)

    def sync_bwd(axes, eps, axis_name, act, res, cts):
        x, scale, offset, mean, var, count = res
        dyc = _canonical(cts[0].astype(x.dtype), axes)[0]
        xc, lay, back = _canonical(x, axes)
        sd, n = _stat_dtype(x.dtype), lay.n_channels
        attrs = _attrs(lay, eps, act)
        sum_e, sum_exc = jax.ffi.ffi_call(
            "ckbn_bn_grad_sums", (_struct((n,), sd), _struct((n,), sd)))(
            dyc, xc, scale, offset, mean, var, **attrs)
        tot = jax.lax.psum(jnp.concatenate([sum_e, sum_exc]), axis_name)
        dx = jax.ffi.ffi_call("ckbn_bn_backward_dx", _struct(xc.shape, x.dtype))(
            dyc, xc, scale, offset, mean, var, count, tot[:n], tot[n:], **attrs)
        # gamma's and beta's gradients are this shard's (the data-parallel
        # gradient all-reduce adds them).
        dscale = sum_exc * jax.lax.rsqrt(var + jnp.asarray(eps, var.dtype))
        return back(dx), dscale.astype(scale.dtype), sum_e.astype(offset.dtype)

    sync_op.defvjp(sync_fwd, sync_bwd)
    _SYNC = sync_op
    return _SYNC


_SYNC = None


def sync_train(x, scale, offset, axes, eps, axis_name, activation=None, slope=0.0):
    """Training forward with the statistics of the global batch over the mapped
    axis ``axis_name`` (inside ``shard_map``/``pmap``): ``(y, mean, var)``.

    Two collectives: ``lax.all_gather`` of each shard's (count, mean, M2) in
    float64 bits, merged in axis order by the handler (the same bits on every
    shard); in the gradient, ``lax.psum`` of the per-channel sums for ``dx``.
    The gradients of ``scale`` and ``offset`` are this shard's.
    """
    act = _act(activation, slope)
    axes, (scale, offset) = _prepare(x, (scale, offset), axes, ("scale", "offset"))
    return _sync_ops()(x, scale, offset, axes, float(eps), axis_name, act)
