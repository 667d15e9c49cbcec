"""Low-level batch-normalization ops on NumPy arrays, mirroring ``tf.nn``.

All four run on the compiled OpenMP kernels, accumulate in float64, release
the GIL, and give results that do not depend on the number of threads.

Channel axes
------------
``fused_batch_norm`` and ``fused_batch_norm_grad`` keep one statistic per
*channel*.  ``data_format`` names the channel position at any rank >= 2:
channels last (``"NHWC"``, ``"NC"``, ``"NDHWC"``, ...) or channels first
(``"NCHW"``, ``"NCDHW"``, ...).  ``axis`` (an int or a list of ints)
overrides it and may name several axes, as multi-axis and ghost batch
normalization need; the statistics then have the shape of those axes.

Dtypes
------
float16, float32 and float64 inputs are accepted.  float16 data is computed
in float32 and the result rounded back (to nearest, ties to even); statistics
of float16 data are float32.
"""

from __future__ import annotations
from ckbn._typing import Array, ArrayLike, Axis

import numpy as np

from ckbn import _coefs, _ops
from ckbn._dispatch import kernels as _kernels
from ckbn._layout import make_layout
from ckbn._validation import (
    channel_axes_from_format,
    check_channel_param,
    check_epsilon,
    check_float_array,
    check_nonempty,
    check_out,
    normalize_axes,
)

__all__ = [
    "moments",
    "batch_normalization",
    "fused_batch_norm",
    "fused_batch_norm_grad",
]


def _stat_dtype(x):
    return np.float32 if x.dtype == np.float16 else x.dtype


_ACTIVATIONS = ("relu", "relu6", "leaky_relu", "swish", "silu")


def _activation(name, negative_slope):
    """The kernels' activation for ``name`` (None, "relu", "relu6", "leaky_relu",
    "swish" or its other name "silu")."""
    if name is None:
        return None
    if not isinstance(name, str) or name not in _ACTIVATIONS:
        raise ValueError(f"activation must be None or one of {_ACTIVATIONS}, got {name!r}")
    if name in ("swish", "silu"):
        return _ops.SWISH
    if name == "relu":
        return _ops.Activation(0.0, np.inf)
    if name == "relu6":
        return _ops.Activation(0.0, 6.0)
    if isinstance(negative_slope, (bool, np.bool_)) or not isinstance(
            negative_slope, (int, float, np.integer, np.floating)):
        raise TypeError(f"negative_slope must be a real number, got {negative_slope!r}")
    if not np.isfinite(negative_slope):
        raise ValueError(f"negative_slope must be finite, got {negative_slope!r}")
    return _ops.Activation(float(negative_slope), np.inf)


# Common calls.  fused_batch_norm and fused_batch_norm_grad without ``axis``
# first offer the call to the kernel module's compiled entry (common_forward,
# common_backward: pyx/ckbn/_k_small.pxi), which runs the common case
# (float32, C-contiguous, "NHWC", "NC" or "NCHW", float32 per-channel arrays)
# with the thread count the general path would take and returns None for
# anything else; the general path then checks everything.  They call the
# entry directly rather than through ckbn._ops: one Python call less is
# 0.2-0.3 us of the 8 us backward of 16x32x8x8 (benchmarks/RESULTS.md,
# issue 18, session 18).  The NumPy twin's entries return None.
#
# The kernels' (slope, hi, kind) of the valid (activation, negative_slope)
# pairs seen, for the compiled entries; keyed by the slope's type too, since
# True == 1 but the general path rejects a bool slope.
_KERNEL_ACTS = {}
_KERNEL_ACTS_MAX = 64


def _kernel_act(activation, negative_slope):
    """The kernels' activation of the compiled entries for an ``activation``
    other than None, the general path's mapping (:func:`_activation`,
    :func:`ckbn._ops.kernel_act`), or False for anything the general path
    rejects (it then raises)."""
    key = (activation, type(negative_slope), negative_slope)
    try:
        return _KERNEL_ACTS[key]
    except KeyError:
        pass
    except TypeError:       # unhashable: left to the general path
        return False
    try:
        ka = _ops.kernel_act(_activation(activation, negative_slope))
    except (TypeError, ValueError):
        return False
    if len(_KERNEL_ACTS) < _KERNEL_ACTS_MAX:
        _KERNEL_ACTS[key] = ka
    return ka


def _check_bool(value, name):
    if isinstance(value, (bool, np.bool_)) or value in (0, 1):
        return bool(value)
    raise TypeError(f"{name} must be a bool, got {value!r}")


def moments(x: ArrayLike, axes: Axis, keepdims: bool = False) -> tuple[Array, Array]:
    """Mean and biased variance of ``x`` over ``axes``.

    Parameters
    ----------
    x : array_like of float16, float32 or float64
    axes : int or list of int
        Axes to reduce (negative values count from the end).
    keepdims : bool, default False
        Keep the reduced axes with length 1.

    Returns
    -------
    mean, variance : ndarray
        Of ``x``'s dtype.  The variance divides by the number of reduced
        elements (no Bessel correction), like ``tf.nn.moments``.

    Examples
    --------
    >>> import numpy as np, ckbn
    >>> x = np.array([[1.0, 2.0], [3.0, 6.0]], dtype=np.float32)
    >>> mean, var = ckbn.nn.moments(x, axes=[0])
    >>> mean.tolist(), var.tolist()
    ([2.0, 4.0], [1.0, 4.0])
    """
    x = check_float_array(x, "x")
    check_nonempty(x, "x")
    reduced = normalize_axes(axes, x.ndim, "axes") if x.ndim else ()
    channel = tuple(i for i in range(x.ndim) if i not in reduced)
    layout = make_layout(x.shape, channel)
    mean, var = _ops.stats(x, layout)
    shape = layout.keepdims_shape if keepdims else layout.channel_shape
    return (mean.reshape(shape).astype(x.dtype, copy=False),
            var.reshape(shape).astype(x.dtype, copy=False))


def _as_param(p, name, ndim):
    if p is None:
        return None
    arr = np.asarray(p)
    if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
        raise TypeError(f"{name} must be a real float array, got dtype {arr.dtype}")
    if arr.ndim > ndim:
        raise ValueError(f"{name} of shape {arr.shape} has more dimensions than x ({ndim})")
    return arr.astype(np.float64, copy=False).reshape((1,) * (ndim - arr.ndim) + arr.shape)


def batch_normalization(x: ArrayLike, mean: ArrayLike, variance: ArrayLike, offset: ArrayLike | None,
                        scale: ArrayLike | None, variance_epsilon: float,
                        out: Array | None = None) -> Array:
    """``(x - mean) / sqrt(variance + variance_epsilon) * scale + offset``.

    Like ``tf.nn.batch_normalization``, the statistics and parameters broadcast
    against ``x`` and the result is computed as ``x * inv + (offset - mean *
    inv)`` with ``inv = scale / sqrt(variance + variance_epsilon)``.

    Parameters
    ----------
    x : array_like of float16, float32 or float64
    mean, variance : array_like
        Broadcastable to ``x``.
    offset, scale : array_like or None
        Broadcastable to ``x``; None means 0 and 1.
    variance_epsilon : float
        A non-negative number added to the variance.
    out : ndarray, optional
        C-contiguous array of ``x``'s shape and dtype to write into (may be ``x``).

    Returns
    -------
    y : ndarray of ``x``'s dtype and shape.

    Examples
    --------
    >>> import numpy as np, ckbn
    >>> x = np.array([[1.0, 2.0], [3.0, 6.0]])
    >>> ckbn.nn.batch_normalization(x, [2.0, 4.0], [1.0, 4.0], None, None, 0.0).tolist()
    [[-1.0, -1.0], [1.0, 1.0]]
    """
    x = check_float_array(x, "x")
    eps = check_epsilon(variance_epsilon)
    if out is not None:
        check_out(out, x)
    if x.ndim and x.size and all(
            p is None or (type(p) is np.ndarray and p.shape == x.shape[-1:]
                          and p.dtype.kind == "f")
            for p in (mean, variance, offset, scale)) and mean is not None \
            and variance is not None:
        # The common case: one value per channel of a channels-last input.
        layout = make_layout(x.shape, (x.ndim - 1,))
        with np.errstate(divide="ignore", invalid="ignore"):
            a, b = _coefs.forward(mean.astype(np.float64), variance.astype(np.float64), eps,
                                  scale, offset)
        return _ops.affine(x, layout, a, b, out=out)
    params = {
        "mean": _as_param(mean, "mean", x.ndim),
        "variance": _as_param(variance, "variance", x.ndim),
        "offset": _as_param(offset, "offset", x.ndim),
        "scale": _as_param(scale, "scale", x.ndim),
    }
    for key in ("mean", "variance"):
        if params[key] is None:
            raise TypeError(f"{key} must be an array, got None")
    try:
        pshape = np.broadcast_shapes(*(p.shape for p in params.values() if p is not None))
        np.broadcast_shapes(pshape, x.shape)
    except ValueError:
        shapes = {k: v.shape for k, v in params.items() if v is not None}
        raise ValueError(
            f"mean, variance, offset and scale do not broadcast against x of shape "
            f"{x.shape}: {shapes}"
        ) from None
    if any(p > n for p, n in zip(pshape, x.shape)):
        raise ValueError(
            f"parameters broadcast to shape {pshape}, larger than x's shape {x.shape}"
        )
    channel = tuple(i for i, n in enumerate(pshape) if n > 1)
    layout = make_layout(x.shape, channel)
    kshape = layout.keepdims_shape
    with np.errstate(divide="ignore", invalid="ignore"):
        inv, b = _coefs.forward(np.broadcast_to(params["mean"], kshape),
                                np.broadcast_to(params["variance"], kshape), eps,
                                params["scale"], params["offset"])
    a = np.broadcast_to(inv, kshape).reshape(-1)
    b = np.broadcast_to(b, kshape).reshape(-1)
    if x.size == 0:
        return np.empty_like(x) if out is None else out
    return _ops.affine(x, layout, a, b, out=out)


def _channel_layout(x, data_format, axis):
    if axis is None:
        channel = channel_axes_from_format(data_format, x.ndim)
    else:
        channel = normalize_axes(axis, x.ndim, "axis")
    return make_layout(x.shape, channel)


def fused_batch_norm(x: ArrayLike, scale: ArrayLike, offset: ArrayLike, mean: ArrayLike | None = None,
                     variance: ArrayLike | None = None, epsilon: float = 0.001,
                     data_format: str = "NHWC", is_training: bool = True,
                     axis: Axis | None = None, out: Array | None = None,
                     activation: str | None = None, negative_slope: float = 0.2) -> tuple[Array, Array, Array]:
    """Batch normalization in one call: statistics and normalization.

    Parameters
    ----------
    x : array_like of float16, float32 or float64, rank >= 2
    scale, offset : array_like or None
        One value per channel (shape of the channel axes, a flat array, or the
        rank of ``x`` with 1s elsewhere).  None means 1 and 0.
    mean, variance : array_like, optional
        Required when ``is_training`` is False: the statistics to normalize
        with (typically the moving averages).  Ignored in training.
    epsilon : float, default 0.001
        Added to the variance.  Not clamped (``tf.nn.fused_batch_norm`` in
        TF 1.x raised it to 1.001e-5).
    data_format : str, default "NHWC"
        Channel position, see the module docstring.
    is_training : bool, default True
        Normalize with the batch statistics (True) or with ``mean``/``variance``.
    axis : int or list of int, optional
        Channel axes; overrides ``data_format``.
    out : ndarray, optional
        C-contiguous array of ``x``'s shape and dtype for ``y`` (may be ``x``).
    activation : {None, "relu", "relu6", "leaky_relu", "swish", "silu"}, default None
        Applied to the normalized value ``z`` in the same pass over the data:
        ``max(z, 0)``, ``min(max(z, 0), 6)``, ``z`` if ``z > 0`` else
        ``negative_slope * z``, or ``z * sigmoid(z)`` ("swish", also named
        "silu").
    negative_slope : float, default 0.2
        The slope of ``"leaky_relu"`` for ``z <= 0`` (ignored otherwise).

    Returns
    -------
    y : ndarray of ``x``'s shape and dtype
    batch_mean, batch_var : ndarray, shape of the channel axes
        In training, the batch mean and the **biased** batch variance (unlike
        ``tf.nn.fused_batch_norm``, which returns the Bessel-corrected one);
        in inference, ``mean`` and ``variance`` as given.  float32 for float16
        data, else ``x``'s dtype.

    Examples
    --------
    >>> import numpy as np, ckbn
    >>> x = np.arange(8, dtype=np.float32).reshape(2, 2, 1, 2)
    >>> y, m, v = ckbn.nn.fused_batch_norm(x, None, None, epsilon=0.0)
    >>> m.tolist(), v.tolist()
    ([3.0, 4.0], [5.0, 5.0])
    """
    if axis is None:        # common calls: compiled (see _KERNEL_ACTS)
        ka = None if activation is None else _kernel_act(activation, negative_slope)
        if ka is not False:
            r = _kernels().common_forward(x, scale, offset, mean, variance, epsilon,
                                          data_format, is_training, out, ka, 0)
            if r is not None:
                return r
    x = check_float_array(x, "x", min_ndim=2)
    check_nonempty(x, "x")
    eps = check_epsilon(epsilon)
    training = _check_bool(is_training, "is_training")
    layout = _channel_layout(x, data_format, axis)
    g = check_channel_param(scale, "scale", layout, 1.0)
    b = check_channel_param(offset, "offset", layout, 0.0)
    if out is not None:
        check_out(out, x)
    if not training:
        if mean is None or variance is None:
            raise ValueError("mean and variance are required when is_training=False")
        m = check_channel_param(mean, "mean", layout, 0.0)
        v = check_channel_param(variance, "variance", layout, 1.0)
    act = _activation(activation, negative_slope)
    if training:
        y, m, v = _ops.forward_train(x, layout, g, b, eps, out=out, act=act)
    else:
        y = _ops.forward_infer(x, layout, g, b, m, v, eps, out=out, act=act)
    sd = _stat_dtype(x)
    shape = layout.channel_shape
    return y, m.astype(sd).reshape(shape), v.astype(sd).reshape(shape)


def fused_batch_norm_grad(dy: ArrayLike, x: ArrayLike, scale: ArrayLike, batch_mean: ArrayLike,
                          batch_var: ArrayLike, epsilon: float = 0.001,
                          data_format: str = "NHWC", is_training: bool = True,
                          axis: Axis | None = None, offset: ArrayLike | None = None,
                          activation: str | None = None, negative_slope: float = 0.2) -> tuple[Array, Array, Array]:
    """Gradients of :func:`fused_batch_norm` with respect to x, scale and offset.

    Parameters
    ----------
    dy : array_like
        Gradient of the loss with respect to ``y``; ``x``'s shape.
    x : array_like of float16, float32 or float64
        The forward input.
    scale : array_like or None
        The forward scale (None means 1).
    batch_mean, batch_var : array_like
        In training, the statistics returned by :func:`fused_batch_norm`
        (``batch_var`` is the **biased** variance); in inference, the
        statistics the forward pass normalized with.
    epsilon, data_format, is_training, axis
        As in the forward call.
    offset : array_like or None
        The forward offset (None means 0); read only with an activation.
    activation, negative_slope
        As in the forward call.  With an activation, ``dy`` is the gradient
        with respect to the activation's output; the kernels recompute the
        normalized value ``z`` from ``x`` to mask it (``relu``: ``z > 0``;
        ``relu6``: ``0 < z < 6``; ``leaky_relu``: 1 for ``z > 0``, else
        ``negative_slope``; ``swish``: times ``sigmoid(z) * (1 + z * (1 -
        sigmoid(z)))``) and the results are the gradients of the whole
        ``activation(batch_norm(x))``.

    Returns
    -------
    dx : ndarray of ``x``'s shape and dtype
    dscale, doffset : ndarray, shape of the channel axes
        float32 for float16 data, else ``x``'s dtype.

    Notes
    -----
    With ``xhat = (x - mean) / sqrt(var + epsilon)`` and N elements per
    channel, in training::

        doffset = sum(dy)
        dscale  = sum(dy * xhat)
        dx      = scale / sqrt(var + epsilon) * (dy - doffset / N - xhat * dscale / N)

    and in inference ``dx = dy * scale / sqrt(var + epsilon)``.
    """
    if axis is None:        # common calls: compiled (see _KERNEL_ACTS)
        ka = None if activation is None else _kernel_act(activation, negative_slope)
        if ka is not False:
            r = _kernels().common_backward(dy, x, scale, batch_mean, batch_var, epsilon,
                                           data_format, is_training, offset, ka, 0)
            if r is not None:
                return r
    x = check_float_array(x, "x", min_ndim=2)
    dy = check_float_array(dy, "dy")
    check_nonempty(x, "x")
    if dy.shape != x.shape:
        raise ValueError(f"dy has shape {dy.shape}, expected x's shape {x.shape}")
    eps = check_epsilon(epsilon)
    training = _check_bool(is_training, "is_training")
    layout = _channel_layout(x, data_format, axis)
    g = check_channel_param(scale, "scale", layout, 1.0)
    if batch_mean is None or batch_var is None:
        raise TypeError("batch_mean and batch_var must be arrays, got None")
    m = check_channel_param(batch_mean, "batch_mean", layout, 0.0)
    v = check_channel_param(batch_var, "batch_var", layout, 1.0)
    act = _activation(activation, negative_slope)
    o = check_channel_param(offset, "offset", layout, 0.0) if act is not None else None
    dx, dscale, doffset = _ops.backward(dy, x, layout, g, m, v, eps, training, offset=o,
                                        act=act)
    sd = _stat_dtype(x)
    shape = layout.channel_shape
    return dx, dscale.astype(sd).reshape(shape), doffset.astype(sd).reshape(shape)
