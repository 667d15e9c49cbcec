"""The per-channel coefficients of batch normalization, in one place.

Every Python-side computation of them -- the layer (local and synchronized),
``ckbn.nn.batch_normalization`` and the synchronized Keras layer on
TensorFlow, PyTorch and JAX -- calls these functions.  They use only ``+ - * /``
on their arguments, so they work on NumPy arrays, TensorFlow tensors and JAX
arrays alike; ``rsqrt`` (``v -> 1 / sqrt(v)``) is the one operation that
differs between array libraries, and callers pass their own (NumPy's
``1.0 / np.sqrt(v)`` by default).

Forward: ``y = x * a + b`` with

* ``a = scale / sqrt(var + eps)`` (times renorm's ``r``),
* ``b = offset - mean * a`` (plus renorm's ``d * scale``).

Backward of a training call, with ``inv = 1 / sqrt(var + eps)``,
``xhat = (x - mean) * inv``, ``n`` values per channel and the sums
``sum_dy = sum(dy)``, ``sum_dy_xhat = sum(dy * xhat)`` (over the whole,
possibly global, batch): ``dx = dy * k1 + x * k2 + k3`` with

* ``k1 = scale * inv``,
* ``k2 = -k1 * inv * sum_dy_xhat / n``,
* ``k3 = -k1 * sum_dy / n - k2 * mean``.

The gradients of ``gamma`` and ``beta`` are ``sum_dy_xhat`` and ``sum_dy``
(with renorm: ``r * sum_dy_xhat + d * sum_dy`` for gamma; with an adjustment
``(s, t)``: ``s * core + t * sum_dy``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["inv_std", "forward", "backward", "gamma_grad"]


def _np_rsqrt(v):
    return 1.0 / np.sqrt(v)


def inv_std(var, eps, rsqrt=None):
    """``1 / sqrt(var + eps)``."""
    return (rsqrt or _np_rsqrt)(var + eps)


def forward(mean, var, eps, scale=None, offset=None, r=None, d=None, rsqrt=None, inv=None):
    """``(a, b)`` of ``y = x * a + b``.

    ``scale``/``offset`` None mean 1 and 0; ``r``/``d`` are renorm's
    correction (both or neither); ``inv``, when given, is ``inv_std(var, eps)``
    already computed.
    """
    if inv is None:
        inv = inv_std(var, eps, rsqrt)
    a = inv
    if r is not None:
        a = a * r
    if scale is not None:
        a = a * scale
    b = -(mean * a)
    if d is not None:
        b = (d if scale is None else d * scale) + (0.0 if offset is None else offset) - mean * a
    elif offset is not None:
        b = offset - mean * a
    return a, b


def backward(scale: Any, mean: Any, var: Any, eps: float, n: Any, sum_dy: Any,
             sum_dy_xhat: Any, rsqrt: Any = None, inv: Any = None) -> tuple[Any, Any, Any]:
    """``(k1, k2, k3)`` of ``dx = dy * k1 + x * k2 + k3`` for a training call
    over ``n`` values per channel (the sums are over the same values)."""
    if inv is None:
        inv = inv_std(var, eps, rsqrt)
    k1 = inv if scale is None else scale * inv
    k2 = -k1 * inv * sum_dy_xhat / n
    k3 = -k1 * sum_dy / n - k2 * mean
    return k1, k2, k3


def gamma_grad(sum_dy_xhat, sum_dy, r=None, d=None, adj_scale=None, adj_bias=None):
    """The gradient of ``gamma`` from the sums (renorm's r, d held constant)."""
    core = sum_dy_xhat
    if r is not None:
        core = r * core + d * sum_dy
    if adj_scale is not None:
        core = adj_scale * core + adj_bias * sum_dy
    return core
