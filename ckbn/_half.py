"""float16 data through the float32 kernels, a slice at a time.

The kernels compute float16 data in float32.  Converting a whole float16
array to float32 first (and the result back) moves about four times the
bytes of the float16 data through memory.  Here the canonical
``(P, G, R, C)`` array is cut along P into slices of about ``CHUNK``
elements; each slice is widened into a float32 buffer that stays in the
last-level cache, run through the kernel, and (for the element-wise passes)
rounded straight into the float16 output.  The conversions use the F16C
instructions (``f16_to_f32`` / ``f32_to_f16`` of the kernel module).

Inputs of at most CHUNK elements skip the slicing: they are converted whole
(still with F16C) and run through the fused kernels, which costs less than
the per-slice bookkeeping at that size.

The slices depend on the shape only, and their partial statistics are merged
in slice order (Chan et al. for mean and variance), so results stay
independent of the thread count.  Inputs here are flat, C-contiguous float16
arrays in canonical order; per-channel arrays are float64.
"""

from __future__ import annotations

import numpy as np

from ckbn._config import kernel_threads

#: Elements per slice (float32: 4 MiB, float16 source: 2 MiB).
CHUNK = 1 << 20

_u16 = np.uint16
_f32 = np.float32


def slices(dims):
    """Half-open ranges ``(p0, p1)`` along P of about CHUNK elements each."""
    P, G, R, C = dims
    per = G * R * C
    step = max(1, CHUNK // per)
    return [(p, min(p + step, P)) for p in range(0, P, step)]


def _buffers(dims, count):
    P, G, R, C = dims
    per = G * R * C
    n = min(P, max(1, CHUNK // per)) * per
    return [np.empty(n, _f32) for _ in range(count)]


def stats(k, h, dims, n_threads):
    """Mean and biased variance (float64, per channel) of float16 ``h``."""
    P, G, R, C = dims
    per = G * R * C
    (buf,) = _buffers(dims, 1)
    mean = np.zeros(G * C)
    m2 = np.zeros(G * C)
    mk = np.empty(G * C)
    vk = np.empty(G * C)
    n = 0
    with kernel_threads(n_threads, h.size) as nt:
        for p0, p1 in slices(dims):
            w = buf[:(p1 - p0) * per]
            k.f16_to_f32(h[p0 * per:p1 * per].view(_u16), w, nt)
            k.bn_stats(w, p1 - p0, G, R, C, mk, vk, nt)
            nk = (p1 - p0) * R
            if n == 0:
                mean[:] = mk
                m2[:] = vk * nk
            else:
                tot = n + nk
                delta = mk - mean
                mean += delta * (nk / tot)
                m2 += vk * nk + delta * delta * (n * nk / tot)
            n += nk
    return mean, m2 / n


def affine(k, h, dims, a, b, n_threads):
    """``y = h * a[ch] + b[ch]`` (a, b float32), a new flat float16 array."""
    P, G, R, C = dims
    per = G * R * C
    win, wout = _buffers(dims, 2)
    y = np.empty(h.size, np.float16)
    with kernel_threads(n_threads, h.size) as nt:
        for p0, p1 in slices(dims):
            s = slice(p0 * per, p1 * per)
            xi = win[:(p1 - p0) * per]
            yo = wout[:(p1 - p0) * per]
            k.f16_to_f32(h[s].view(_u16), xi, nt)
            k.bn_affine(xi, p1 - p0, G, R, C, a, b, yo, nt)
            k.f32_to_f16(yo, y[s].view(_u16), nt)
    return y


def grad_sums(k, dy, h, dims, mean, n_threads):
    """Per-channel ``sum(dy)`` and ``sum(dy * (h - mean))`` (float64)."""
    P, G, R, C = dims
    per = G * R * C
    wd, wx = _buffers(dims, 2)
    s1 = np.zeros(G * C)
    s2 = np.zeros(G * C)
    t1 = np.empty(G * C)
    t2 = np.empty(G * C)
    with kernel_threads(n_threads, h.size) as nt:
        for p0, p1 in slices(dims):
            s = slice(p0 * per, p1 * per)
            d = wd[:(p1 - p0) * per]
            x = wx[:(p1 - p0) * per]
            k.f16_to_f32(dy[s].view(_u16), d, nt)
            k.f16_to_f32(h[s].view(_u16), x, nt)
            k.bn_grad_sums(d, x, p1 - p0, G, R, C, mean, t1, t2, nt)
            s1 += t1
            s2 += t2
    return s1, s2


def grad_dx(k, dy, h, dims, k1, k2, k3, n_threads):
    """``dx = dy * k1[ch] + (h * k2[ch] + k3[ch])`` (float32 coefficients),
    a new flat float16 array."""
    P, G, R, C = dims
    per = G * R * C
    wd, wx, wo = _buffers(dims, 3)
    dx = np.empty(h.size, np.float16)
    with kernel_threads(n_threads, h.size) as nt:
        for p0, p1 in slices(dims):
            s = slice(p0 * per, p1 * per)
            d = wd[:(p1 - p0) * per]
            x = wx[:(p1 - p0) * per]
            o = wo[:(p1 - p0) * per]
            k.f16_to_f32(dy[s].view(_u16), d, nt)
            k.f16_to_f32(h[s].view(_u16), x, nt)
            k.bn_grad_dx(d, x, p1 - p0, G, R, C, k1, k2, k3, o, nt)
            k.f32_to_f16(o, dx[s].view(_u16), nt)
    return dx
