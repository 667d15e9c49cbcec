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

The kernels are called in ``_call_train``, ``_call_given`` and ``grad`` (plus
``moments`` and the affine op); an XLA FFI handler replaces their bodies and
keeps the ``custom_vjp`` wiring.

Under ``jax.jit`` the kernels run as host callbacks; gradients are exact (the
backward pass is a second callback).  A callback is opaque to XLA: XLA cannot
fuse the normalization into its neighbours, and every call crosses the
runtime's callback boundary.  ``benchmarks/bench_keras.py`` measures where
that still pays: on the machines measured it never did (numbers below), so
by default the layer uses XLA (Keras ops) on JAX.  The kernels serve tensors
of at least ``MIN_ELEMENTS`` elements on the CPU once a threshold is set:
``keras_plugin.set_jax_min_elements(n)`` (``0`` always uses them, ``None``,
the default, never does).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from keras_plugin import _kernels

__all__ = ["usable", "train", "given", "grad", "moments", "affine", "XLA_COMPATIBLE",
           "set_min_elements"]

XLA_COMPATIBLE = True    # callbacks run inside jax.jit

# Measured on CPU (benchmarks/bench_keras.py --jax-threshold, JAX 0.10, 2 cores):
# forward+backward of one layer under jax.jit, XLA vs callback: 256x1024 0.8 vs
# 2.8 ms, 32x28x28x64 3.8 vs 8.4 ms, 32x56x56x64 17 vs 55 ms, 64x56x56x128 130
# vs 369 ms.  The callback never won, so by default the kernels are off on JAX
# (None) and the layer runs XLA's code, never slower than stock.
MIN_ELEMENTS = None

_FLOATS = (jnp.float16, jnp.float32, jnp.float64)


def set_min_elements(n):
    global MIN_ELEMENTS
    MIN_ELEMENTS = None if n is None else int(n)


def usable(x):
    if MIN_ELEMENTS is None:
        return False
    if x.dtype not in _FLOATS or jax.default_backend() != "cpu":
        return False
    devices = getattr(x, "devices", None)
    if callable(devices) and not isinstance(x, jax.core.Tracer):
        try:
            if any(d.platform != "cpu" for d in devices()):
                return False
        except Exception:  # pragma: no cover
            return False
    size = int(np.prod(x.shape)) if x.shape else 1
    return size >= MIN_ELEMENTS


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
    args = [dy.astype(x.dtype), x, scale, mean, var] + ([offset] if act is not None else [])

    def fn(dy_, x_, s_, m_, v_, *o_):
        return _kernels.grad(*_np(dy_, x_, s_, m_, v_), axes, eps, training, act,
                             np.asarray(o_[0]) if o_ else None)

    return jax.pure_callback(fn, _x_and_stats(x, scale), *args, vmap_method="sequential")


def moments(x, axes):
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
    return _train(x, scale, offset, tuple(axes), float(eps), _act_key(act))


def given(x, scale, offset, mean, var, axes, eps, train_grad=False, act=None):
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
    return _affine(x, scale, offset, tuple(int(a) for a in axes))


# keras_plugin._sync (issue 19) still calls the old private names.
_given_cb = _call_given
_grad_cb = grad
