"""NumPy backend: Keras tensors are NumPy arrays, so the kernels are called directly.

The op table of the other backend modules (see ``keras_plugin._tf``), without
gradients: Keras cannot train on the NumPy backend, so the layers run
inference here, and training-mode calls (batch statistics and moving-average
updates) also run on the kernels.
"""

from __future__ import annotations

import numpy as np

from keras_plugin import _kernels

__all__ = ["usable", "train", "given", "moments", "affine", "XLA_COMPATIBLE"]

XLA_COMPATIBLE = True    # no XLA on this backend

_FLOATS = (np.float16, np.float32, np.float64)


def usable(x):
    return isinstance(x, np.ndarray) and x.dtype in _FLOATS


def train(x, scale, offset, axes, eps, act=None):
    return _kernels.train(x, scale, offset, axes, eps, act)


def given(x, scale, offset, mean, var, axes, eps, train_grad=False, act=None):
    return _kernels.given(x, scale, offset, mean, var, axes, eps, act)


def moments(x, axes):
    return _kernels.moments(x, axes)


def affine(x, scale, offset, axes):  # fold_batch_normalization's per-channel affine
    return _kernels.affine(x, scale, offset, axes)
