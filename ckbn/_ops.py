"""Internal batch-normalization operations on the ``(P, G, R, C)`` layout.

This module is the only caller of the compiled kernels' passes (the one
other caller: :mod:`ckbn.nn` offers its common calls to the compiled entries
``common_forward`` and ``common_backward`` directly, see there).  The public
ops and the layers use:

* :func:`forward_train` -- batch statistics and the normalized output in one
  kernel call (with an optional activation applied in the same pass);
* :func:`forward_infer` -- the normalized output with given statistics;
* :func:`backward` -- dx, dscale and doffset of either forward;

and, for what those three do not cover (renorm's r and d, the adjustment,
synchronized statistics), the four primitives:

* :func:`stats` -- per-channel mean and biased variance (float64);
* :func:`affine` -- ``y = x * a[ch] + b[ch]``;
* :func:`grad_sums` -- per-channel ``sum(dy)`` and ``sum(dy * (x - mean))``;
* :func:`grad_dx` -- ``dx = dy * k1[ch] + x * k2[ch] + k3[ch]``.

The normalization coefficients ``scale / sqrt(var + eps)`` and the backward's
coefficients are computed once, in the kernels.

Per-channel arrays are float64 and flat, of length ``layout.n_channels``, in
the order of ``layout.channel_shape``.  Inputs must already be validated:
float16, float32 or float64 arrays of ``layout.shape``.  float16 data is
processed in float32: slice by slice by the kernels' float16 entry points
(:mod:`ckbn._half`), or, on kernel modules without F16C, through one copy
converted by NumPy; results are rounded back to float16.

Every function runs on the compiled kernels with ``n_threads`` OpenMP threads
(default: :func:`ckbn.get_num_threads`); results do not depend on it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ckbn import _half
from ckbn._config import kernel_threads
from ckbn._dispatch import kernels
from ckbn._memory import empty_aligned

__all__ = ["forward_train", "forward_infer", "backward", "Activation", "SWISH", "kernel_act",
           "stats", "affine", "grad_sums", "grad_dx", "small_layer_train"]

_f16 = np.dtype(np.float16)
_f64 = np.float64


class Activation(NamedTuple):
    """The activation applied in the normalization pass, of one of two kinds.

    ``kind="piecewise"`` (the default): ``act(z) = z if 0 < z < hi; hi if
    z >= hi; slope * z if z <= 0``.  ReLU is ``Activation(0.0, inf)``, ReLU6
    ``Activation(0.0, 6.0)`` and leaky ReLU ``Activation(s, inf)``; the
    derivative is ``(z < hi)`` for ``z > 0``, else ``slope``.

    ``kind="swish"``: ``act(z) = z * sigmoid(z)`` (SiLU; ``slope`` and ``hi``
    unused, see :data:`SWISH`), derivative ``sigmoid(z) * (1 + z * (1 -
    sigmoid(z)))``.
    """

    slope: float
    hi: float
    kind: str = "piecewise"


#: The swish (SiLU) activation, ``z * sigmoid(z)``.
SWISH = Activation(0.0, float("inf"), "swish")

# The kernels' activation kinds (ACT_PIECEWISE, ACT_SWISH in _k_common.pxi).
_KINDS = {"piecewise": 0, "swish": 1}


def small_layer_train(x, dims, scale, offset, epsilon, moving_mean, moving_var, rate,
                      var_factor):
    """The compiled entry for an eager training call of a plain
    :class:`ckbn.BatchNormalization` on a small float32 input (see
    ``small_layer_train`` in pyx/ckbn/_k_small.pxi): ``(y, mean, var, scale64,
    new_moving_mean, new_moving_var)``, or None when the call is not that
    case."""
    fn = getattr(kernels(), "small_layer_train", None)
    if fn is None:
        return None
    P, G, R, C = dims
    return fn(x, P, G, R, C, scale, offset, epsilon, moving_mean, moving_var, rate,
              var_factor)


def kernel_act(act):
    """The kernels' ``(slope, hi, kind)`` of ``act`` (an :class:`Activation`)."""
    if act.kind not in _KINDS:
        raise ValueError(f"activation kind must be one of {tuple(_KINDS)}, got {act.kind!r}")
    return float(act.slope), float(act.hi), _KINDS[act.kind]


def _act_args(act):
    """Keyword arguments of the kernels for ``act`` (an Activation or None)."""
    if act is None:
        return {}
    slope, hi, kind = kernel_act(act)
    return {"act": True, "slope": slope, "hi": hi, "kind": kind}


def _f16c():
    """The kernel module when it has float16 passes (F16C), else None."""
    k = kernels()
    f = getattr(k, "f16c_enabled", None)
    return k if f is not None and f() else None


def _half_kernels(x):
    """The kernel module for float16 ``x`` when it has float16 passes, else None."""
    return _f16c() if x.dtype == _f16 else None


def _work_array(x, layout):
    """Flat canonical array in a dtype the kernels take (float32/float64).

    float16 reaches here only on kernel modules without float16 passes.
    """
    if x.dtype == _f16:
        x = x.astype(np.float32)
    return layout.to_canonical(x)


def _coef(c, dtype):
    """Per-channel coefficients as a contiguous array of the data type."""
    return np.ascontiguousarray(c, dtype=dtype)


def stats(x, layout, n_threads=None):
    """Mean and biased variance of ``x`` per channel.

    Returns
    -------
    mean, var : ndarray of float64, shape (n_channels,)
    """
    k = _half_kernels(x)
    if k is not None:
        return _half.stats(k, layout.to_canonical(x), layout.dims, n_threads)
    xf = _work_array(x, layout)
    P, G, R, C = layout.dims
    mean = np.empty(G * C, dtype=_f64)
    var = np.empty(G * C, dtype=_f64)
    with kernel_threads(n_threads, xf.size) as nt:
        kernels().bn_stats(xf, P, G, R, C, mean, var, nt)
    return mean, var


def _out_buffer(out, x, wdtype, layout):
    """Flat buffer the kernel writes, and whether it must be copied out after."""
    if out is not None and layout.perm is None and out.dtype == wdtype:
        return out.reshape(-1), False
    return empty_aligned(x.size, wdtype), True


def _finish(buf, out, layout, dtype):
    if out is None and layout.perm is None and buf.dtype == dtype:
        return buf.reshape(layout.shape)
    res = layout.from_canonical(buf)
    if out is None:
        if res.dtype == dtype:
            return res
        # float16 computed in float32 (no F16C): the result on a 64-byte
        # boundary like every other output the ops allocate
        y = empty_aligned(res.size, dtype).reshape(res.shape)
        np.copyto(y, res, casting="same_kind")
        return y
    np.copyto(out, res, casting="same_kind")
    return out


def affine(x, layout, a, b, out=None, n_threads=None):
    """``y = x * a[ch] + b[ch]`` in the input's precision.

    ``a`` and ``b`` are float64 per-channel coefficients, rounded once to the
    data type.  ``out``, when given, is a validated C-contiguous array of
    ``x``'s shape and dtype (it may be ``x``).
    """
    P, G, R, C = layout.dims
    dt = x.dtype
    if out is None and dt != _f16 and layout.perm is None and x.flags.c_contiguous:
        # The common case, kept short: no copy in, a fresh array out.
        y = empty_aligned(x.size, dt).reshape(x.shape)
        with kernel_threads(n_threads, x.size) as nt:
            kernels().bn_affine(x.reshape(-1), P, G, R, C, _coef(a, dt), _coef(b, dt),
                                y.reshape(-1), nt)
        return y
    k = _half_kernels(x)
    if k is not None:
        y = _half.affine(k, layout.to_canonical(x), layout.dims, _coef(a, np.float32),
                         _coef(b, np.float32), n_threads)
        return _finish(y, out, layout, dt)
    xf = _work_array(x, layout)
    buf, copy_back = _out_buffer(out, x, xf.dtype, layout)
    with kernel_threads(n_threads, xf.size) as nt:
        kernels().bn_affine(xf, P, G, R, C, _coef(a, xf.dtype), _coef(b, xf.dtype), buf, nt)
    if not copy_back:
        return out
    return _finish(buf, out, layout, x.dtype)


def grad_sums(dy, x, layout, mean, n_threads=None):
    """Per-channel ``sum(dy)`` and ``sum(dy * (x - mean))`` in float64."""
    dy = dy.astype(x.dtype, copy=False)
    k = _half_kernels(x)
    if k is not None:
        return _half.grad_sums(k, layout.to_canonical(dy), layout.to_canonical(x),
                               layout.dims, _coef(mean, _f64), n_threads)
    xf = _work_array(x, layout)
    dyf = _work_array(dy, layout)
    P, G, R, C = layout.dims
    sum_dy = np.empty(G * C, dtype=_f64)
    sum_dyxc = np.empty(G * C, dtype=_f64)
    with kernel_threads(n_threads, xf.size) as nt:
        kernels().bn_grad_sums(dyf, xf, P, G, R, C, _coef(mean, _f64), sum_dy, sum_dyxc, nt)
    return sum_dy, sum_dyxc


def grad_dx(dy, x, layout, k1, k2, k3, out=None, n_threads=None):
    """``dx = dy * k1[ch] + (x * k2[ch] + k3[ch])`` in the input's precision."""
    dy = dy.astype(x.dtype, copy=False)
    k = _half_kernels(x)
    if k is not None:
        f32 = np.float32
        dx = _half.grad_dx(k, layout.to_canonical(dy), layout.to_canonical(x),
                           layout.dims, _coef(k1, f32), _coef(k2, f32), _coef(k3, f32),
                           n_threads)
        return _finish(dx, out, layout, x.dtype)
    xf = _work_array(x, layout)
    dyf = _work_array(dy, layout)
    P, G, R, C = layout.dims
    buf, copy_back = _out_buffer(out, x, xf.dtype, layout)
    dt = xf.dtype
    with kernel_threads(n_threads, xf.size) as nt:
        kernels().bn_grad_dx(dyf, xf, P, G, R, C, _coef(k1, dt), _coef(k2, dt), _coef(k3, dt),
                             buf, nt)
    if not copy_back:
        return out
    return _finish(buf, out, layout, x.dtype)


def _canonical_pair(x, layout, out):
    """(kernel input, kernel output buffer, copy_back) for an element-wise op."""
    if out is None and x.dtype != _f16 and layout.perm is None and x.flags.c_contiguous:
        # The common case, kept short: no copy in, a fresh array out.
        return x.reshape(-1), empty_aligned(x.size, x.dtype), True
    if x.dtype == _f16 and _f16c() is not None:
        xf = layout.to_canonical(x)
        if out is not None and layout.perm is None:
            return xf, out.reshape(-1), False
        return xf, empty_aligned(x.size, _f16), True
    xf = _work_array(x, layout)
    buf, copy_back = _out_buffer(out, x, xf.dtype, layout)
    return xf, buf, copy_back


def _u16(a):
    return a.view(np.uint16) if a.dtype == _f16 else a


def forward_train(x, layout, scale, offset, eps, out=None, act=None, n_threads=None):
    """Training forward in one kernel call.

    Returns ``y`` (x's dtype and shape, or ``out``) and the batch mean and
    biased variance (float64, flat).  ``scale`` and ``offset`` are float64
    per-channel arrays; ``act`` an :class:`Activation` or None.
    """
    xf, buf, copy_back = _canonical_pair(x, layout, out)
    P, G, R, C = layout.dims
    mean = np.empty(G * C, dtype=_f64)
    var = np.empty(G * C, dtype=_f64)
    k = kernels()
    fn = k.bn_forward_train_f16 if xf.dtype == _f16 else k.bn_forward_train
    with kernel_threads(n_threads, xf.size) as nt:
        fn(_u16(xf), P, G, R, C, scale, offset, float(eps), _u16(buf), mean, var, nt,
           **_act_args(act))
    y = _finish(buf, out, layout, x.dtype) if copy_back else out
    return y, mean, var


def forward_infer(x, layout, scale, offset, mean, var, eps, out=None, act=None,
                  n_threads=None):
    """``y = act((x - mean) * scale / sqrt(var + eps) + offset)`` in one pass."""
    xf, buf, copy_back = _canonical_pair(x, layout, out)
    P, G, R, C = layout.dims
    k = kernels()
    fn = k.bn_forward_infer_f16 if xf.dtype == _f16 else k.bn_forward_infer
    with kernel_threads(n_threads, xf.size) as nt:
        fn(_u16(xf), P, G, R, C, scale, offset, _coef(mean, _f64), _coef(var, _f64),
           float(eps), _u16(buf), nt, **_act_args(act))
    return _finish(buf, out, layout, x.dtype) if copy_back else out


def backward(dy, x, layout, scale, mean, var, eps, training, offset=None, act=None,
             n_threads=None):
    """Gradients of :func:`forward_train` (``training``) or :func:`forward_infer`.

    Returns ``dx`` (x's dtype and shape), ``dscale = sum(e * xhat)`` and
    ``doffset = sum(e)`` (float64, flat), with ``e = dy``, or with ``act`` the
    gradient at the activation's input, recomputed from ``x`` and ``offset``.
    """
    dy = dy.astype(x.dtype, copy=False)
    xf, dxf, _ = _canonical_pair(x, layout, None)
    dyf = layout.to_canonical(dy) if xf.dtype == _f16 else _work_array(dy, layout)
    P, G, R, C = layout.dims
    dscale = np.empty(G * C, dtype=_f64)
    doffset = np.empty(G * C, dtype=_f64)
    k = kernels()
    fn = k.bn_backward_f16 if xf.dtype == _f16 else k.bn_backward
    extra = _act_args(act)
    if act is not None:
        extra["offset"] = _coef(offset, _f64)
    with kernel_threads(n_threads, xf.size) as nt:
        fn(_u16(dyf), _u16(xf), P, G, R, C, _coef(scale, _f64), _coef(mean, _f64),
           _coef(var, _f64), float(eps), bool(training), _u16(dxf), dscale, doffset, nt,
           **extra)
    return _finish(dxf, None, layout, x.dtype), dscale, doffset
