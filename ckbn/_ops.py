"""Internal batch-normalization primitives on the ``(P, G, R, C)`` layout.

These four operations are everything the public ops and the layers need:

* :func:`stats` -- per-channel mean and biased variance (float64);
* :func:`affine` -- ``y = x * a[ch] + b[ch]`` (normalization with any
  per-channel coefficients: plain BN, renorm's r and d, adjustment);
* :func:`grad_sums` -- per-channel ``sum(dy)`` and ``sum(dy * (x - mean))``;
* :func:`grad_dx` -- ``dx = dy * k1[ch] + x * k2[ch] + k3[ch]``.

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

import numpy as np

from ckbn import _half
from ckbn._config import kernel_threads
from ckbn._dispatch import kernels

__all__ = ["stats", "affine", "grad_sums", "grad_dx"]

_f16 = np.dtype(np.float16)
_f64 = np.float64


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
    return np.empty(x.size, dtype=wdtype), True


def _finish(buf, out, layout, dtype):
    res = layout.from_canonical(buf)
    if out is None:
        return res.astype(dtype, copy=False)
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
        y = np.empty(x.shape, dt)
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
