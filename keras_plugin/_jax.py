"""JAX backend: ckbn kernels through ``jax.pure_callback`` with a ``custom_vjp``.

The op table (the same in every backend module; arguments as in
``keras_plugin._kernels``, arrays or tracers, ``act`` None or
``(name, negative_slope)``):

* ``train(x, scale, offset, axes, eps, act=None) -> (y, mean, var)``;
  differentiable in x, scale and offset (the statistics are not);
* ``given(x, scale, offset, mean, var, axes, eps, train_grad=False, act=None) -> y``;
  differentiable in x, scale and offset; ``train_grad`` says that mean/var
  are x's own batch statistics (renorm), so the gradient is the training one;
* ``grad(dy, x, scale, mean, var, axes, eps, training, act=None, offset=None)
  -> (dx, dscale, doffset)``: the backward op itself (no gradient);
* ``moments(x, axes) -> (mean, var)``: no gradient;
* ``affine(x, scale, offset, axes) -> y``: differentiable (JAX-op gradient).

Where the XLA FFI handler is available (``keras_plugin._jax_ffi``: compiled
once on first use against the installed jaxlib, then cached), every op of the
table is an ``ffi_call`` of a compiled handler that runs ckbn's kernels on
XLA's buffers inside ``jax.jit``, with ``custom_vjp`` gradients: no host
callback, no copy.  Which calls it serves is ``keras_plugin._policy``'s rule,
the only place the threshold lives: CPU float tensors of at least
``_policy.min_elements("jax", mode)`` elements, by default every size (the
handler beat XLA at every size measured, ``benchmarks/bench_jax_ffi.py``);
``keras_plugin.set_jax_min_elements(n)`` (``_policy.set_min_elements("jax",
None, n)``) changes the threshold and ``None`` sends everything to XLA (Keras
ops).

Without the handler (no C++ compiler or no jaxlib headers: one warning) the
kernels run as host callbacks (``_call_train``, ``_call_given``, ``grad``,
``moments`` and the affine op below), but only once a threshold is set with
``set_jax_min_elements(n)`` (``_policy.requested("jax")``): a callback is
opaque to XLA and crosses the runtime's callback boundary on every call, and
``benchmarks/bench_keras.py`` measured it slower than XLA at every size
(numbers below), so by default the layer then runs XLA's code (Keras ops).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from keras_plugin import _jax_ffi, _kernels, _policy

__all__ = ["usable", "native", "train", "given", "grad", "moments", "affine",
           "XLA_COMPATIBLE"]

XLA_COMPATIBLE = True    # FFI calls and callbacks run inside jax.jit

# Measured on CPU (benchmarks/bench_keras.py --jax-threshold, JAX 0.10, 2 cores):
# forward+backward of one layer under jax.jit, XLA vs callback: 256x1024 0.8 vs
# 2.8 ms, 32x28x28x64 3.8 vs 8.4 ms, 32x56x56x64 17 vs 55 ms, 64x56x56x128 130
# vs 369 ms.  The callback never won, so it serves only on request.
# The FFI handler (benchmarks/bench_jax_ffi.py, 2-core AMD EPYC shared with other
# jobs, one OpenMP thread, float32 NHWC, median us, FFI vs XLA under jax.jit):
# forward 16x8x8x32 113 vs 4932, 16x32x32x32 856 vs 10050; forward+backward
# 181 vs 2999 and 9491 vs 25013 (minimums 115 vs 340, 1312 vs 5653): it won at
# every size, so it serves every size by default (_policy.CROSSOVER["jax", *] = 0).

_FLOATS = (jnp.float16, jnp.float32, jnp.float64)


def _min_elements():
    """The size gate in force (``_policy``; None: never the kernels)."""
    return _policy.min_elements("jax", None)


def _cpu_size(x):
    """x's element count if it is a float array on the CPU, else None."""
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
    """Whether the XLA FFI handler serves ``x`` (threshold, CPU, dtype, handler built)."""
    threshold = _min_elements()
    if threshold is None:
        return False
    size = _cpu_size(x)
    return size is not None and size >= threshold and _jax_ffi.supports(x)


def usable(x):
    """Whether the kernels may serve ``x``: the FFI handler, or host callbacks where a
    threshold was requested (``_policy.requested("jax")``)."""
    threshold = _min_elements()
    if threshold is None:
        return False
    size = _cpu_size(x)
    if size is None or size < threshold:
        return False
    return _policy.requested("jax") or _jax_ffi.supports(x)


def _ffi_act(act):
    return (None, 0.0) if act is None else (str(act[0]), float(act[1]))


def _np(*arrays):
    """Callback arguments as NumPy arrays (CPU buffers: no copy)."""
    return [np.asarray(a) for a in arrays]


def _struct(shape, dtype):
    return jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype))


def _x_and_stats(x, scale):
    sd = _kernels.stat_dtype(x.dtype)
    return (_struct(x.shape, x.dtype), _struct(scale.shape, sd), _struct(scale.shape, sd))


# ------------------------------------------------------------ the kernel calls
def _call_train(x, scale, offset, axes, eps, act):
    return jax.pure_callback(lambda *a: _kernels.train(*_np(*a), axes, eps, act),
                             _x_and_stats(x, scale), x, scale, offset, vmap_method="sequential")


def _call_given(x, scale, offset, mean, var, axes, eps, act=None):
    return jax.pure_callback(lambda *a: _kernels.given(*_np(*a), axes, eps, act),
                             _struct(x.shape, x.dtype), x, scale, offset, mean, var,
                             vmap_method="sequential")


def grad(dy, x, scale, mean, var, axes, eps, training, act=None, offset=None):
    """``dx, dscale, doffset`` (see the module docstring); ``offset`` only with ``act``."""
    if native(x):
        if offset is None:
            offset = jnp.zeros_like(scale)
        return _jax_ffi.grad(dy, x, scale, offset, mean, var, axes, eps, training,
                             *_ffi_act(act))
    args = [dy.astype(x.dtype), x, scale, mean, var] + ([offset] if act is not None else [])

    def fn(dy_, x_, s_, m_, v_, *o_):
        return _kernels.grad(*_np(dy_, x_, s_, m_, v_), axes, eps, training, act,
                             np.asarray(o_[0]) if o_ else None)

    return jax.pure_callback(fn, _x_and_stats(x, scale), *args, vmap_method="sequential")


def moments(x, axes):
    if native(x):
        return _jax_ffi.moments(x, axes)
    n = 1
    for a in axes:
        n *= x.shape[a]
    sd = _kernels.stat_dtype(x.dtype)
    out = (_struct((n,), sd), _struct((n,), sd))
    return jax.pure_callback(lambda a: _kernels.moments(np.asarray(a), axes), out,
                             jax.lax.stop_gradient(x), vmap_method="sequential")


# ------------------------------------------------------- the differentiable ops
def _param_grads(scale, dx, ds, do):
    return dx, ds.astype(scale.dtype), do.astype(scale.dtype)


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _train(x, scale, offset, axes, eps, act):
    return _call_train(x, scale, offset, axes, eps, act)


def _train_fwd(x, scale, offset, axes, eps, act):
    y, mean, var = _call_train(x, scale, offset, axes, eps, act)
    return (y, mean, var), (x, scale, offset, mean, var)


def _train_bwd(axes, eps, act, res, cts):
    x, scale, offset, mean, var = res
    return _param_grads(scale, *grad(cts[0], x, scale, mean, var, axes, eps, True, act,
                                     offset))


_train.defvjp(_train_fwd, _train_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8))
def _given(x, scale, offset, mean, var, axes, eps, train_grad, act):
    return _call_given(x, scale, offset, mean, var, axes, eps, act)


def _given_fwd(x, scale, offset, mean, var, axes, eps, train_grad, act):
    y = _call_given(x, scale, offset, mean, var, axes, eps, act)
    return y, (x, scale, offset, mean, var)


def _given_bwd(axes, eps, train_grad, act, res, dy):
    x, scale, offset, mean, var = res
    dx, ds, do = _param_grads(scale, *grad(dy, x, scale, mean, var, axes, eps, train_grad, act,
                                           offset))
    return dx, ds, do, jnp.zeros_like(mean), jnp.zeros_like(var)


_given.defvjp(_given_fwd, _given_bwd)


def _act_key(act):
    return None if act is None else (str(act[0]), float(act[1]))


def train(x, scale, offset, axes, eps, act=None):
    if native(x):
        return _jax_ffi.train(x, scale, offset, axes, eps, *_ffi_act(act))
    return _train(x, scale, offset, tuple(axes), float(eps), _act_key(act))


def given(x, scale, offset, mean, var, axes, eps, train_grad=False, act=None):
    if native(x):
        return _jax_ffi.given(x, scale, offset, mean, var, axes, eps, train_grad,
                              *_ffi_act(act))
    mean = jax.lax.stop_gradient(mean)
    var = jax.lax.stop_gradient(var)
    return _given(x, scale, offset, mean, var, tuple(axes), float(eps), bool(train_grad),
                  _act_key(act))


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _affine(x, scale, offset, axes):
    return jax.pure_callback(lambda *a: _kernels.affine(*_np(*a), axes),
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
        # Batch normalization with mean 0, variance 1 and epsilon 0 is exactly
        # this map, and its inference gradient is the map's.
        sd = jnp.float32 if x.dtype == jnp.float16 else x.dtype
        scale, offset = jnp.reshape(scale, (-1,)), jnp.reshape(offset, (-1,))
        n = scale.shape[0]
        return _jax_ffi.given(x, scale, offset, jnp.zeros((n,), sd), jnp.ones((n,), sd),
                              axes, 0.0, False)
    return _affine(x, scale, offset, tuple(int(a) for a in axes))

