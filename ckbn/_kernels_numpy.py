"""NumPy twin of the compiled kernels (same signatures, same arithmetic order
of the per-channel coefficients), used by the tests as an independent check and
selectable with ``CKBN_KERNELS=numpy`` for debugging.

Arrays are flat and C-contiguous in the ``(P, G, R, C)`` layout; per-channel
arrays have ``G * C`` entries.
"""

import functools

import numpy as np

# Same threshold as the compiled kernels (no effect here: NumPy is serial).
PARALLEL_MIN_ELEMENTS = 65536


def _quiet(fn):
    """Kernels do not warn: NaN and Inf propagate silently, as in the compiled ones."""
    @functools.wraps(fn)
    def wrapper(*args):
        with np.errstate(all="ignore"):
            return fn(*args)
    return wrapper


def _view(x, P, G, R, C):
    return x.reshape(P, G, R, C)


@_quiet
def bn_stats(x, P, G, R, C, mean, var, n_threads):
    v = _view(x, P, G, R, C).astype(np.float64)
    m = v.mean(axis=(0, 2))
    mean[:] = m.reshape(-1)
    var[:] = ((v - m[None, :, None, :]) ** 2).mean(axis=(0, 2)).reshape(-1)


@_quiet
def bn_affine(x, P, G, R, C, a, b, y, n_threads):
    v = _view(x, P, G, R, C)
    res = v * a.reshape(1, G, 1, C) + b.reshape(1, G, 1, C)
    y[:] = res.reshape(-1)


@_quiet
def bn_grad_sums(dy, x, P, G, R, C, mean, sum_dy, sum_dyxc, n_threads):
    d = _view(dy, P, G, R, C).astype(np.float64)
    v = _view(x, P, G, R, C).astype(np.float64)
    sum_dy[:] = d.sum(axis=(0, 2)).reshape(-1)
    xc = v - mean.reshape(1, G, 1, C)
    sum_dyxc[:] = (d * xc).sum(axis=(0, 2)).reshape(-1)


@_quiet
def bn_grad_dx(dy, x, P, G, R, C, k1, k2, k3, dx, n_threads):
    d = _view(dy, P, G, R, C)
    v = _view(x, P, G, R, C)
    shp = (1, G, 1, C)
    res = d * k1.reshape(shp) + (v * k2.reshape(shp) + k3.reshape(shp))
    dx[:] = res.reshape(-1)


def _coefs(scale, offset, mean, var, eps):
    a = scale / np.sqrt(var + eps)
    return a, offset - mean * a


@_quiet
def bn_forward_train(x, P, G, R, C, scale, offset, eps, y, mean, var, n_threads):
    bn_stats(x, P, G, R, C, mean, var, n_threads)
    a, b = _coefs(scale, offset, mean, var, eps)
    bn_affine(x, P, G, R, C, a.astype(x.dtype), b.astype(x.dtype), y, n_threads)


@_quiet
def bn_forward_infer(x, P, G, R, C, scale, offset, mean, var, eps, y, n_threads):
    a, b = _coefs(scale, offset, mean, var, eps)
    bn_affine(x, P, G, R, C, a.astype(x.dtype), b.astype(x.dtype), y, n_threads)


@_quiet
def bn_backward(dy, x, P, G, R, C, scale, mean, var, eps, training, dx, dscale, doffset,
                n_threads):
    bn_grad_sums(dy, x, P, G, R, C, mean, doffset, dscale, n_threads)
    inv = 1.0 / np.sqrt(var + eps)
    k1 = scale * inv
    if training:
        n = float(P * R)
        k2 = -k1 * inv * inv * dscale / n
        k3 = -k1 * doffset / n - k2 * mean
        bn_grad_dx(dy, x, P, G, R, C, k1.astype(x.dtype), k2.astype(x.dtype),
                   k3.astype(x.dtype), dx, n_threads)
    else:
        bn_affine(dy, P, G, R, C, k1.astype(x.dtype), np.zeros_like(k1, dtype=x.dtype), dx,
                  n_threads)
    dscale *= inv
