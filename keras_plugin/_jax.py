"""JAX backend: ckbn's kernels inside ``jax.jit``, through XLA's FFI.

Where the XLA FFI handler is available (``keras_plugin._jax_ffi``: built once
on first use, then cached), the layer's ops are ``ffi_call``s of compiled
handlers that run ckbn's kernels on XLA's buffers, with ``custom_vjp``
gradients: no host callback, no copy.  They serve CPU float tensors of at
least ``MIN_ELEMENTS`` elements (by default every size: see
``NATIVE_MIN_ELEMENTS``); ``keras_plugin.set_jax_min_elements(n)`` changes the
threshold and ``None`` sends everything to XLA (Keras ops).

Without the handler (no C++ compiler or no jaxlib headers: one warning) the
layer runs Keras's ops by default, because the kernels through a host
callback (``jax.pure_callback``, kept below) were slower than XLA at every
size measured; an explicit ``set_jax_min_elements(n)`` still selects them.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from keras_plugin import _jax_ffi, _kernels

# Measured on CPU (benchmarks/bench_keras.py --jax-threshold, JAX 0.10, 2 cores):
# forward+backward of one layer under jax.jit, XLA vs callback: 256x1024 0.8 vs
# 2.8 ms, 32x28x28x64 3.8 vs 8.4 ms, 32x56x56x64 17 vs 55 ms, 64x56x56x128 130
# vs 369 ms.  The callback never won, so it runs only on request.
# The FFI handler: see benchmarks/bench_jax_ffi.py and NATIVE_MIN_ELEMENTS.
NATIVE_MIN_ELEMENTS = 0
MIN_ELEMENTS = NATIVE_MIN_ELEMENTS
_callback_requested = False

_FLOATS = (jnp.float16, jnp.float32, jnp.float64)


def set_min_elements(n):
    """Kernels for tensors of at least ``n`` elements; ``None``: never (XLA)."""
    global MIN_ELEMENTS, _callback_requested
    MIN_ELEMENTS = None if n is None else int(n)
    _callback_requested = n is not None


def _cpu_size(x):
    """x's element count if it is a float tensor on the CPU, else None."""
    if x.dtype not in _FLOATS or jax.default_backend() != "cpu":
        return None
    devices = getattr(x, "devices", None)
    if callable(devices) and not isinstance(x, jax.core.Tracer):
        try:
            if any(d.platform != "cpu" for d in devices()):
                return None
        except Exception:  # pragma: no cover
            return None
    return int(np.prod(x.shape)) if x.shape else 1


def native(x):
    """Whether the FFI handler serves ``x`` (under the threshold rule)."""
    if MIN_ELEMENTS is None:
        return False
    size = _cpu_size(x)
    return size is not None and size >= MIN_ELEMENTS and _jax_ffi.supports(x)


def usable(x):
    if MIN_ELEMENTS is None:
        return False
    size = _cpu_size(x)
    if size is None or size < MIN_ELEMENTS:
        return False
    return _jax_ffi.supports(x) or _callback_requested


def _np(*arrays):
    """Callback arguments as NumPy arrays (CPU buffers: no copy)."""
    return [np.asarray(a) for a in arrays]


def _sd(dtype):
    return _kernels.stat_dtype(dtype)


def _struct(shape, dtype):
    return jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype))


def _train_cb(x, scale, offset, axes, eps):
    sd = _sd(x.dtype)
    out = (_struct(x.shape, x.dtype), _struct(scale.shape, sd), _struct(scale.shape, sd))
    return jax.pure_callback(lambda *args: _kernels.train(*_np(*args), axes, eps), out,
                             x, scale, offset, vmap_method="sequential")


def _given_cb(x, scale, offset, mean, var, axes, eps):
    return jax.pure_callback(
        lambda *args: _kernels.given(*_np(*args), axes, eps),
        _struct(x.shape, x.dtype), x, scale, offset, mean, var, vmap_method="sequential")


def _grad_cb(dy, x, scale, mean, var, axes, eps, training):
    sd = _sd(x.dtype)
    out = (_struct(x.shape, x.dtype), _struct(scale.shape, sd), _struct(scale.shape, sd))
    return jax.pure_callback(
        lambda *args: _kernels.grad(*_np(*args), axes, eps, training), out,
        dy.astype(x.dtype), x, scale, mean, var, vmap_method="sequential")


@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _train(x, scale, offset, axes, eps):
    return _train_cb(x, scale, offset, axes, eps)


def _train_fwd(x, scale, offset, axes, eps):
    y, mean, var = _train_cb(x, scale, offset, axes, eps)
    return (y, mean, var), (x, scale, mean, var)


def _train_bwd(axes, eps, res, cts):
    x, scale, mean, var = res
    dy = cts[0]
    dx, ds, do = _grad_cb(dy, x, scale, mean, var, axes, eps, True)
    return dx, ds.astype(scale.dtype), do.astype(scale.dtype)


_train.defvjp(_train_fwd, _train_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _given(x, scale, offset, mean, var, axes, eps, train_grad):
    return _given_cb(x, scale, offset, mean, var, axes, eps)


def _given_fwd(x, scale, offset, mean, var, axes, eps, train_grad):
    y = _given_cb(x, scale, offset, mean, var, axes, eps)
    return y, (x, scale, mean, var)


def _given_bwd(axes, eps, train_grad, res, dy):
    x, scale, mean, var = res
    dx, ds, do = _grad_cb(dy, x, scale, mean, var, axes, eps, train_grad)
    return (dx, ds.astype(scale.dtype), do.astype(scale.dtype),
            jnp.zeros_like(mean), jnp.zeros_like(var))


_given.defvjp(_given_fwd, _given_bwd)


def train(x, scale, offset, axes, eps):
    if native(x):
        return _jax_ffi.train(x, scale, offset, axes, eps)
    return _train(x, scale, offset, tuple(axes), float(eps))


def given(x, scale, offset, mean, var, axes, eps, train_grad):
    if native(x):
        return _jax_ffi.given(x, scale, offset, mean, var, axes, eps, train_grad)
    mean = jax.lax.stop_gradient(mean)
    var = jax.lax.stop_gradient(var)
    return _given(x, scale, offset, mean, var, tuple(axes), float(eps), bool(train_grad))


def moments(x, axes):
    if native(x):
        return _jax_ffi.moments(x, axes)
    n = 1
    for a in axes:
        n *= x.shape[a]
    sd = _sd(x.dtype)
    out = (_struct((n,), sd), _struct((n,), sd))
    return jax.pure_callback(lambda a: _kernels.moments(np.asarray(a), axes), out,
                             jax.lax.stop_gradient(x), vmap_method="sequential")


# ---------------------------------------------------------------- folding (issue 14)
@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _affine(x, scale, offset, axes):
    return jax.pure_callback(lambda *args: _kernels.affine(*_np(*args), axes),
                             _struct(x.shape, x.dtype), x, scale, offset,
                             vmap_method="sequential")


def _affine_fwd(x, scale, offset, axes):
    return _affine(x, scale, offset, axes), (x, scale)


def _affine_bwd(axes, res, dy):
    x, scale = res
    shape = tuple(x.shape[i] if i in axes else 1 for i in range(x.ndim))
    reduce = tuple(i for i in range(x.ndim) if i not in axes)
    dyf = dy.astype(scale.dtype)
    dx = (dyf * scale.reshape(shape)).astype(x.dtype)
    ds = jnp.sum(dyf * x.astype(scale.dtype), axis=reduce).reshape(-1)
    do = jnp.sum(dyf, axis=reduce).reshape(-1)
    return dx, ds, do


_affine.defvjp(_affine_fwd, _affine_bwd)


def affine(x, scale, offset, axes):
    """``x * scale + offset`` per channel on the kernel (fold_batch_normalization)."""
    if native(x):
        # BN with mean 0, variance 1 and epsilon 0 is exactly the affine map,
        # and its inference gradient is the affine map's.
        sd = jnp.float32 if x.dtype == jnp.float16 else x.dtype
        scale, offset = jnp.reshape(scale, (-1,)), jnp.reshape(offset, (-1,))
        n = scale.shape[0]
        return _jax_ffi.given(x, scale, offset, jnp.zeros((n,), sd), jnp.ones((n,), sd),
                              axes, 0.0, False)
    return _affine(x, scale, offset, tuple(int(a) for a in axes))


# ---------------------------------------------------- fused activation (issue 14)
def _grad_act_cb(dy, x, scale, offset, mean, var, axes, eps, training, act, slope):
    sd = _sd(x.dtype)
    out = (_struct(x.shape, x.dtype), _struct(scale.shape, sd), _struct(scale.shape, sd))
    return jax.pure_callback(
        lambda *args: _kernels.grad_act(*_np(*args), axes, eps, training, act, slope), out,
        dy.astype(x.dtype), x, scale, offset, mean, var, vmap_method="sequential")


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def _train_act(x, scale, offset, axes, eps, act, slope):
    sd = _sd(x.dtype)
    out = (_struct(x.shape, x.dtype), _struct(scale.shape, sd), _struct(scale.shape, sd))
    return jax.pure_callback(
        lambda *args: _kernels.train_act(*_np(*args), axes, eps, act, slope), out,
        x, scale, offset, vmap_method="sequential")


def _train_act_fwd(x, scale, offset, axes, eps, act, slope):
    y, mean, var = _train_act(x, scale, offset, axes, eps, act, slope)
    return (y, mean, var), (x, scale, offset, mean, var)


def _train_act_bwd(axes, eps, act, slope, res, cts):
    x, scale, offset, mean, var = res
    dx, ds, do = _grad_act_cb(cts[0], x, scale, offset, mean, var, axes, eps, True, act, slope)
    return dx, ds.astype(scale.dtype), do.astype(scale.dtype)


_train_act.defvjp(_train_act_fwd, _train_act_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8))
def _given_act(x, scale, offset, mean, var, axes, eps, act, slope):
    return jax.pure_callback(
        lambda *args: _kernels.given_act(*_np(*args), axes, eps, act, slope),
        _struct(x.shape, x.dtype), x, scale, offset, mean, var, vmap_method="sequential")


def _given_act_fwd(x, scale, offset, mean, var, axes, eps, act, slope):
    return _given_act(x, scale, offset, mean, var, axes, eps, act, slope), (
        x, scale, offset, mean, var)


def _given_act_bwd(axes, eps, act, slope, res, dy):
    x, scale, offset, mean, var = res
    dx, ds, do = _grad_act_cb(dy, x, scale, offset, mean, var, axes, eps, False, act, slope)
    return (dx, ds.astype(scale.dtype), do.astype(scale.dtype), jnp.zeros_like(mean),
            jnp.zeros_like(var))


_given_act.defvjp(_given_act_fwd, _given_act_bwd)


def train_act(x, scale, offset, axes, eps, activation, slope):
    if native(x):
        return _jax_ffi.train(x, scale, offset, axes, eps, activation, slope)
    return _train_act(x, scale, offset, tuple(axes), float(eps), str(activation), float(slope))


def given_act(x, scale, offset, mean, var, axes, eps, activation, slope):
    if native(x):
        return _jax_ffi.given(x, scale, offset, mean, var, axes, eps, False, activation, slope)
    mean = jax.lax.stop_gradient(mean)
    var = jax.lax.stop_gradient(var)
    return _given_act(x, scale, offset, mean, var, tuple(axes), float(eps), str(activation),
                      float(slope))
