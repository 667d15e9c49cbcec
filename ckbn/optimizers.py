"""Optimizers for ckbn variables: ``SGD(learning_rate, momentum=0.0, nesterov=False)``."""

from __future__ import annotations
from typing import TYPE_CHECKING, Iterable

from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from ckbn._framework import Variable

import numbers
import weakref

import numpy as np

__all__ = ["SGD"]


class SGD:
    """Stochastic gradient descent, with optional (Nesterov) momentum.

    ``apply_gradients(zip(grads, variables))`` updates each variable in place
    (``v -= lr * g``, or with momentum ``m = momentum * m - lr * g; v += m``)
    and then applies the variable's ``constraint``.
    """

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0,
                 nesterov: bool = False) -> None:
        for name, value in (("learning_rate", learning_rate), ("momentum", momentum)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
                raise ValueError(f"{name} must be a non-negative float, got {value!r}")
        self.learning_rate = float(learning_rate)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self._slots = weakref.WeakKeyDictionary()  # momentum per live variable

    def apply_gradients(self, grads_and_vars: Iterable[tuple[ArrayLike, Variable]]) -> None:
        pairs = list(grads_and_vars)
        checked = []
        for g, v in pairs:
            if g is None:
                continue
            g = np.asarray(g)
            if g.shape != tuple(v.shape):
                raise ValueError(
                    f"gradient of shape {g.shape} does not match variable {v.name} of shape "
                    f"{tuple(v.shape)}")
            checked.append((g, v))
        for g, v in checked:
            step = self.learning_rate * g.astype(v.dtype, copy=False)
            if self.momentum:
                m = self._slots.get(v)
                m = -step if m is None else self.momentum * m - step
                self._slots[v] = m
                delta = self.momentum * m - step if self.nesterov else m
                v.assign_add(delta)
            else:
                v.assign_sub(step)
            if v.constraint is not None:
                v.assign(v.constraint(v.value))
