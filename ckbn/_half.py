"""float16 data through the kernels' float16 entry points.

The kernels compute float16 data in float32.  Their ``*_f16`` entry points
(compiled where the F16C instructions are available) cut the canonical
``(P, G, R, C)`` array along P into slices of about 64 Ki elements; each
thread widens its slice into a private float32 buffer that stays in its L2
cache, runs the float32 kernel on it and, for the element-wise passes, rounds
the result straight into the float16 output (to nearest, ties to even, like
NumPy).  No full-size float32 copy is made.  Slices depend on the shape only
and their statistics are merged in slice order, so results do not depend on
the thread count.

Inputs here are flat, C-contiguous float16 arrays in canonical order;
per-channel arrays are float64 (statistics) or float32 (coefficients).
"""

from __future__ import annotations

import numpy as np

from ckbn._config import kernel_threads
from ckbn._memory import empty_aligned

_u16 = np.uint16


def stats(k, h, dims, n_threads):
    """Mean and biased variance (float64, per channel) of float16 ``h``."""
    P, G, R, C = dims
    mean = np.empty(G * C)
    var = np.empty(G * C)
    with kernel_threads(n_threads, h.size) as nt:
        k.bn_stats_f16(h.view(_u16), P, G, R, C, mean, var, nt)
    return mean, var


def affine(k, h, dims, a, b, n_threads):
    """``y = h * a[ch] + b[ch]`` (a, b float32), a new flat float16 array."""
    P, G, R, C = dims
    y = empty_aligned(h.size, np.float16)
    with kernel_threads(n_threads, h.size) as nt:
        k.bn_affine_f16(h.view(_u16), P, G, R, C, a, b, y.view(_u16), nt)
    return y


def grad_sums(k, dy, h, dims, mean, n_threads):
    """Per-channel ``sum(dy)`` and ``sum(dy * (h - mean))`` (float64)."""
    P, G, R, C = dims
    s1 = np.empty(G * C)
    s2 = np.empty(G * C)
    with kernel_threads(n_threads, h.size) as nt:
        k.bn_grad_sums_f16(dy.view(_u16), h.view(_u16), P, G, R, C, mean, s1, s2, nt)
    return s1, s2


def grad_dx(k, dy, h, dims, k1, k2, k3, n_threads):
    """``dx = dy * k1[ch] + (h * k2[ch] + k3[ch])`` (float32 coefficients),
    a new flat float16 array."""
    P, G, R, C = dims
    dx = empty_aligned(h.size, np.float16)
    with kernel_threads(n_threads, h.size) as nt:
        k.bn_grad_dx_f16(dy.view(_u16), h.view(_u16), P, G, R, C, k1, k2, k3,
                         dx.view(_u16), nt)
    return dx
