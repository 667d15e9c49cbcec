"""Weight constraints, applied by the optimizers after each update.

``non_neg()``, ``max_norm(max_value=2, axis=0)``, ``unit_norm(axis=0)``,
``min_max_norm(min_value=0, max_value=1, rate=1, axis=0)``, their classes, the
strings ``"non_neg"``, ``"max_norm"``, ``"unit_norm"``, ``"min_max_norm"``, or any
callable ``array -> array`` of the same shape.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Constraint", "NonNeg", "MaxNorm", "UnitNorm", "MinMaxNorm",
           "non_neg", "max_norm", "unit_norm", "min_max_norm", "get"]

_EPS = 1e-7


class Constraint:
    def __call__(self, w):
        return w


def _norms(w, axis):
    w = np.asarray(w)
    if w.ndim == 0:
        return np.abs(w)
    return np.sqrt(np.sum(np.square(w), axis=axis, keepdims=True))


class NonNeg(Constraint):
    def __call__(self, w):
        w = np.asarray(w)
        return w * (w >= 0)


class MaxNorm(Constraint):
    def __init__(self, max_value=2.0, axis=0):
        self.max_value, self.axis = max_value, axis

    def __call__(self, w):
        w = np.asarray(w)
        n = _norms(w, self.axis)
        desired = np.clip(n, 0, self.max_value)
        return (w * (desired / (_EPS + n))).astype(w.dtype)


class UnitNorm(Constraint):
    def __init__(self, axis=0):
        self.axis = axis

    def __call__(self, w):
        w = np.asarray(w)
        return (w / (_EPS + _norms(w, self.axis))).astype(w.dtype)


class MinMaxNorm(Constraint):
    def __init__(self, min_value=0.0, max_value=1.0, rate=1.0, axis=0):
        self.min_value, self.max_value, self.rate, self.axis = min_value, max_value, rate, axis

    def __call__(self, w):
        w = np.asarray(w)
        n = _norms(w, self.axis)
        desired = self.rate * np.clip(n, self.min_value, self.max_value) + (1 - self.rate) * n
        return (w * (desired / (_EPS + n))).astype(w.dtype)


def non_neg():
    return NonNeg()


def max_norm(max_value=2.0, axis=0):
    return MaxNorm(max_value, axis)


def unit_norm(axis=0):
    return UnitNorm(axis)


def min_max_norm(min_value=0.0, max_value=1.0, rate=1.0, axis=0):
    return MinMaxNorm(min_value, max_value, rate, axis)


def get(identifier):
    if identifier is None:
        return None
    if isinstance(identifier, str):
        table = {"non_neg": NonNeg, "nonneg": NonNeg, "max_norm": MaxNorm,
                 "unit_norm": UnitNorm, "min_max_norm": MinMaxNorm}
        key = identifier.strip().lower()
        if key not in table:
            raise ValueError(f"unknown constraint {identifier!r}; known: {sorted(table)}")
        return table[key]()
    if callable(identifier):
        return identifier
    raise TypeError(f"a constraint must be a string or a callable, got {identifier!r}")
