"""NumPy twin of the compiled kernels (same signatures, same arithmetic order
of the per-channel coefficients), used by the tests as an independent check and
selectable with ``CKBN_KERNELS=numpy`` for debugging.

Arrays are flat and C-contiguous in the ``(P, G, R, C)`` layout; per-channel
arrays have ``G * C`` entries.
"""

import numpy as np


def _view(x, P, G, R, C):
    return x.reshape(P, G, R, C)


def bn_stats(x, P, G, R, C, mean, var, n_threads):
    v = _view(x, P, G, R, C).astype(np.float64)
    m = v.mean(axis=(0, 2))
    mean[:] = m.reshape(-1)
    var[:] = ((v - m[None, :, None, :]) ** 2).mean(axis=(0, 2)).reshape(-1)


def bn_affine(x, P, G, R, C, a, b, y, n_threads):
    v = _view(x, P, G, R, C)
    res = v * a.reshape(1, G, 1, C) + b.reshape(1, G, 1, C)
    y[:] = res.reshape(-1)


def bn_grad_sums(dy, x, P, G, R, C, mean, sum_dy, sum_dyxc, n_threads):
    d = _view(dy, P, G, R, C).astype(np.float64)
    v = _view(x, P, G, R, C).astype(np.float64)
    sum_dy[:] = d.sum(axis=(0, 2)).reshape(-1)
    xc = v - mean.reshape(1, G, 1, C)
    sum_dyxc[:] = (d * xc).sum(axis=(0, 2)).reshape(-1)


def bn_grad_dx(dy, x, P, G, R, C, k1, k2, k3, dx, n_threads):
    d = _view(dy, P, G, R, C)
    v = _view(x, P, G, R, C)
    shp = (1, G, 1, C)
    res = d * k1.reshape(shp) + (v * k2.reshape(shp) + k3.reshape(shp))
    dx[:] = res.reshape(-1)
