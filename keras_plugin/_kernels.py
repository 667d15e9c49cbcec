"""The one place where Keras tensors meet the ckbn kernels, as NumPy arrays.

Every backend module converts its CPU tensors to NumPy arrays (without a copy
where the framework allows it) and calls the four functions below, which call
only public ``ckbn.nn`` ops.  Per-channel arrays are flat: ``(n,)`` with ``n``
the product of the sizes of the channel axes, in C order.  The kernels run with
OpenMP threads that :func:`keras_plugin._policy.op_threads` gives for the
backend and the call's size (at most ``ckbn.get_num_threads()``) and release
the GIL.

Statistics of float16 data are float32 (ckbn computes float16 in float32).
"""

from __future__ import annotations

import keras
import numpy as np

import ckbn
from keras_plugin import _policy

__all__ = ["train", "given", "grad", "moments", "stat_dtype"]


def _threads(x):
    """The OpenMP team of one call on ``x`` (the thread rule of ``_policy``)."""
    return ckbn.num_threads(_policy.op_threads(keras.backend.backend(), x.size))


def stat_dtype(dtype):
    """NumPy dtype of the statistics and parameters for data of ``dtype``."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def train(x, scale, offset, axes, eps):
    """Training forward: ``y`` with the batch statistics, and those statistics.

    Returns ``y`` (x's dtype) and the flat batch mean and **biased** variance.
    """
    with _threads(x):
        y, mean, var = ckbn.nn.fused_batch_norm(x, scale, offset, epsilon=eps, axis=list(axes),
                                                is_training=True)
    sd = stat_dtype(x.dtype)
    return y, mean.reshape(-1).astype(sd, copy=False), var.reshape(-1).astype(sd, copy=False)


def given(x, scale, offset, mean, var, axes, eps):
    """``y = (x - mean) / sqrt(var + eps) * scale + offset`` with given statistics."""
    with _threads(x):
        return ckbn.nn.fused_batch_norm(x, scale, offset, mean, var, epsilon=eps, axis=list(axes),
                                        is_training=False)[0]


def grad(dy, x, scale, mean, var, axes, eps, training):
    """``dx, dscale, doffset``; ``training`` says whether mean/var are x's batch statistics."""
    with _threads(dy):
        dx, dscale, doffset = ckbn.nn.fused_batch_norm_grad(
            dy, x, scale, mean, var, epsilon=eps, axis=list(axes), is_training=bool(training))
    sd = stat_dtype(x.dtype)
    return dx, dscale.reshape(-1).astype(sd, copy=False), doffset.reshape(-1).astype(sd, copy=False)


def moments(x, axes):
    """Flat batch mean and biased variance over every axis but ``axes``."""
    x = np.asarray(x)
    chan = {a % x.ndim for a in axes}
    reduce_axes = [i for i in range(x.ndim) if i not in chan]
    sd = stat_dtype(x.dtype)
    if x.dtype == np.float16:  # ckbn.nn.moments returns x's dtype; keep float32 statistics
        x = x.astype(np.float32)
    with _threads(x):
        mean, var = ckbn.nn.moments(x, reduce_axes)
    return mean.reshape(-1).astype(sd, copy=False), var.reshape(-1).astype(sd, copy=False)


# ---------------------------------------------------------------- folding (issue 14)
def affine(x, scale, offset, axes):
    """``y = x * scale + offset`` per channel, in one kernel pass.

    ``scale`` and ``offset`` are flat per-channel coefficients (float64 is
    best: the kernel rounds them once to x's dtype).  This is
    ``ckbn.nn.batch_normalization`` with mean 0, variance 1 and epsilon 0, so
    the kernel's ``inv`` is exactly ``scale``.
    """
    x = np.asarray(x)
    chan = sorted(a % x.ndim for a in axes)
    scale = np.asarray(scale, np.float64).reshape(-1)
    offset = np.asarray(offset, np.float64).reshape(-1)
    if chan == [x.ndim - 1]:
        shape = scale.shape  # the kernel's one-value-per-channel fast path
    else:
        shape = tuple(n if i in chan else 1 for i, n in enumerate(x.shape))
    zeros = np.zeros(shape)
    with _threads(x):
        return ckbn.nn.batch_normalization(x, zeros, zeros + 1.0, offset.reshape(shape),
                                           scale.reshape(shape), 0.0)


# ------------------------------------------------ fused activation (issue 14)
def has_fused_activation():
    """Whether this ckbn's ``fused_batch_norm`` applies an activation in its pass."""
    global _HAS_ACT
    if _HAS_ACT is None:
        import inspect

        _HAS_ACT = "activation" in inspect.signature(ckbn.nn.fused_batch_norm).parameters
    return _HAS_ACT


_HAS_ACT = None


def train_act(x, scale, offset, axes, eps, activation, slope):
    """``activation(BN(x))`` with the batch statistics, in the kernel's one pass."""
    with _threads(x):
        y, mean, var = ckbn.nn.fused_batch_norm(x, scale, offset, epsilon=eps, axis=list(axes),
                                                is_training=True, activation=activation,
                                                negative_slope=slope)
    sd = stat_dtype(x.dtype)
    return y, mean.reshape(-1).astype(sd, copy=False), var.reshape(-1).astype(sd, copy=False)


def given_act(x, scale, offset, mean, var, axes, eps, activation, slope):
    """``activation(BN(x))`` with given statistics."""
    with _threads(x):
        return ckbn.nn.fused_batch_norm(x, scale, offset, mean, var, epsilon=eps, axis=list(axes),
                                        is_training=False, activation=activation,
                                        negative_slope=slope)[0]


def grad_act(dy, x, scale, offset, mean, var, axes, eps, training, activation, slope):
    """``dx, dscale, doffset`` of ``activation(BN(x))``; ``dy`` is the activation's gradient."""
    with _threads(dy):
        dx, dscale, doffset = ckbn.nn.fused_batch_norm_grad(
            dy, x, scale, mean, var, epsilon=eps, axis=list(axes), is_training=bool(training),
            offset=offset, activation=activation, negative_slope=slope)
    sd = stat_dtype(x.dtype)
    return dx, dscale.reshape(-1).astype(sd, copy=False), doffset.reshape(-1).astype(sd, copy=False)
