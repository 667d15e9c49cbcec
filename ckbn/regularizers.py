"""Weight regularizers: ``l1``, ``l2``, ``l1_l2``, or any callable ``array -> float``."""

from __future__ import annotations

import numpy as np

__all__ = ["Regularizer", "L1L2", "l1", "l2", "l1_l2", "get"]


class Regularizer:
    """Base class: ``reg(weights) -> float``."""

    def __call__(self, x):
        raise NotImplementedError


class L1L2(Regularizer):
    """``l1 * sum(|x|) + l2 * sum(x**2)``, accumulated in float64."""

    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = float(l1)
        self.l2 = float(l2)

    def __call__(self, x):
        x = np.asarray(x, dtype=np.float64)
        out = 0.0
        if self.l1:
            out += self.l1 * float(np.abs(x).sum())
        if self.l2:
            out += self.l2 * float(np.square(x).sum())
        return np.float64(out)

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}

    def __repr__(self):
        return f"L1L2(l1={self.l1}, l2={self.l2})"


def l1(l=0.01):  # noqa: E741 - the reference's parameter name
    return L1L2(l1=l)


def l2(l=0.01):  # noqa: E741
    return L1L2(l2=l)


def l1_l2(l1=0.01, l2=0.01):
    return L1L2(l1=l1, l2=l2)


def get(identifier):
    """Resolve ``None``, ``"l1"``, ``"l2"``, ``"l1_l2"`` or a callable."""
    if identifier is None:
        return None
    if isinstance(identifier, str):
        table = {"l1": l1, "l2": l2, "l1_l2": l1_l2}
        key = identifier.strip().lower()
        if key not in table:
            raise ValueError(f"unknown regularizer {identifier!r}; known: {sorted(table)}")
        return table[key]()
    if callable(identifier):
        return identifier
    raise TypeError(f"a regularizer must be a string or a callable, got {identifier!r}")
