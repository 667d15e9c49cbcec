"""The one place where Keras tensors meet the ckbn kernels, as NumPy arrays.

Every backend module (``_tf``, ``_torch``, ``_jax``, ``_numpy``) converts its
CPU tensors to NumPy arrays (without a copy where the framework allows it) and
calls the functions below, which call only public ``ckbn.nn`` ops.  They are
the NumPy form of the op table every backend module exposes:

* ``train(x, scale, offset, axes, eps, act=None) -> (y, mean, var)``
* ``given(x, scale, offset, mean, var, axes, eps, act=None) -> y``
* ``grad(dy, x, scale, mean, var, axes, eps, training, act=None, offset=None)
  -> (dx, dscale, doffset)``
* ``moments(x, axes) -> (mean, var)``
* ``affine(x, scale, offset, axes) -> y``

* ``axes``: the channel axes of ``x`` (non-negative ints); per-channel arrays
  are flat: ``(n,)`` with ``n`` the product of the sizes of the channel axes,
  in C order.
* ``mean``/``var``: the batch mean and the **biased** batch variance
  (``train``, ``moments``), or the statistics to normalize with (``given``).
* ``act``: ``None`` or ``(name, negative_slope)`` with ``name`` one of
  ``"relu"``, ``"relu6"``, ``"leaky_relu"``, ``"swish"`` (see
  ``keras_plugin._activation``):
  applied to the normalized value inside the kernel's pass; ``grad`` then
  takes ``dy`` as the activation's output gradient and needs ``offset``
  (``offset`` is unused, and may be None, without an activation).
* ``training`` (``grad``): whether ``mean``/``var`` are ``x``'s own batch
  statistics (their gradient flows into ``dx``) or constants.

The kernels run with ``ckbn.get_num_threads()`` OpenMP threads and release the
GIL.  Statistics and parameter gradients of float16 data are float32 (ckbn
computes float16 in float32); otherwise they have ``x``'s dtype.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np

import ckbn
from ckbn._layout import layout_dims
from keras_plugin import _policy

__all__ = ["train", "given", "grad", "moments", "affine", "stat_dtype", "in_place"]

_F16 = np.dtype(np.float16)
_F32 = np.dtype(np.float32)


def _threads(x):
    """The OpenMP team of one call on ``x`` (the thread rule of ``_policy.op_threads``);
    no context where the rule gives the team already in force (entering one costs more
    than a small kernel call)."""
    n = _policy.op_threads(keras.backend.backend(), x.size)
    if n == ckbn.get_num_threads():
        return contextlib.nullcontext()
    return ckbn.num_threads(n)


def _layout(ndim, axes):
    """``ckbn.nn``'s layout argument for channel axes ``axes``: the ``data_format``
    that names them where there is one ("NHWC", "NC", "NCHW"; ckbn.nn's compiled
    entry for common calls serves only those), else ``axis``.  Same layout either way."""
    if len(axes) == 1:
        a = axes[0]
        if a == ndim - 1 and ndim in (2, 4):
            return {"data_format": "NHWC" if ndim == 4 else "NC"}
        if a == 1 and ndim == 4:
            return {"data_format": "NCHW"}
    return {"axis": list(axes)}


_IN_PLACE = {}


def in_place(ndim, axes):
    """Whether channel ``axes`` of a rank-``ndim`` tensor need no transpose: the rule
    of ``ckbn_layout`` (``ckbn_kernels.h``; the channel axes form at most two runs of
    consecutive axes, and a second run ends at the last axis), asked once per
    ``(ndim, axes)``.  The native ops take only such axes."""
    key = (ndim, tuple(axes))
    ok = _IN_PLACE.get(key)
    if ok is None:
        chan = sorted({a % ndim for a in axes}) if ndim else []
        ok = _IN_PLACE[key] = bool(chan) and layout_dims((1,) * ndim, chan) is not None
    return ok


def stat_dtype(dtype):
    """NumPy dtype of the statistics and parameters for data of ``dtype``."""
    dtype = np.dtype(dtype)
    return _F32 if dtype == _F16 else dtype


def _act_kwargs(act):
    if act is None:
        return {}
    name, slope = act
    return {"activation": name, "negative_slope": slope}


def _flat(a, sd):
    return a.reshape(-1).astype(sd, copy=False)


def train(x, scale, offset, axes, eps, act=None):
    """Training forward: ``y = act(BN(x))`` with the batch statistics, and those statistics.

    Returns ``y`` (x's dtype) and the flat batch mean and biased variance.
    """
    with _threads(x):
        y, mean, var = ckbn.nn.fused_batch_norm(x, scale, offset, epsilon=eps,
                                                is_training=True, **_layout(x.ndim, axes),
                                                **_act_kwargs(act))
    sd = stat_dtype(x.dtype)
    return y, _flat(mean, sd), _flat(var, sd)


def given(x, scale, offset, mean, var, axes, eps, act=None):
    """``y = act((x - mean) / sqrt(var + eps) * scale + offset)`` with given statistics."""
    with _threads(x):
        return ckbn.nn.fused_batch_norm(x, scale, offset, mean, var, epsilon=eps,
                                        is_training=False, **_layout(x.ndim, axes),
                                        **_act_kwargs(act))[0]


def grad(dy, x, scale, mean, var, axes, eps, training, act=None, offset=None):
    """``dx, dscale, doffset`` of :func:`train` (``training``) or :func:`given`."""
    kw = _act_kwargs(act)
    if kw:
        kw["offset"] = offset
    with _threads(dy):
        dx, dscale, doffset = ckbn.nn.fused_batch_norm_grad(
            dy, x, scale, mean, var, epsilon=eps, is_training=bool(training),
            **_layout(x.ndim, axes), **kw)
    sd = stat_dtype(x.dtype)
    return dx, _flat(dscale, sd), _flat(doffset, sd)


def moments(x, axes):
    """Flat batch mean and biased variance over every axis but ``axes``."""
    x = np.asarray(x)
    chan = {a % x.ndim for a in axes}
    reduce_axes = [i for i in range(x.ndim) if i not in chan]
    sd = stat_dtype(x.dtype)
    if x.dtype == _F16:  # ckbn.nn.moments returns x's dtype; keep float32 statistics
        x = x.astype(_F32)
    with _threads(x):
        mean, var = ckbn.nn.moments(x, reduce_axes)
    return _flat(mean, sd), _flat(var, sd)


def affine(x, scale, offset, axes):
    """``y = x * scale + offset`` per channel, in one kernel pass (folding).

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
