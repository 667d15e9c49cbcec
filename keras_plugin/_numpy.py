"""NumPy backend: Keras tensors are NumPy arrays, so the kernels are called directly.

The NumPy backend has no gradients (Keras cannot train on it); the layer runs
inference, and training-mode calls (batch statistics and moving-average
updates) also run on the kernels.
"""

from __future__ import annotations

import numpy as np

from keras_plugin import _kernels

_FLOATS = (np.float16, np.float32, np.float64)


def usable(x):
    return isinstance(x, np.ndarray) and x.dtype in _FLOATS


def train(x, scale, offset, axes, eps):
    return _kernels.train(x, scale, offset, axes, eps)


def given(x, scale, offset, mean, var, axes, eps, train_grad):
    return _kernels.given(x, scale, offset, mean, var, axes, eps)


def moments(x, axes):
    return _kernels.moments(x, axes)


def affine(x, scale, offset, axes):  # fold_batch_normalization's per-channel affine
    return _kernels.affine(x, scale, offset, axes)


# fused activation (issue 14): BatchNormalizationActivation's inference on the kernels
def train_act(x, scale, offset, axes, eps, activation, slope):
    return _kernels.train_act(x, scale, offset, axes, eps, activation, slope)


def given_act(x, scale, offset, mean, var, axes, eps, activation, slope):
    return _kernels.given_act(x, scale, offset, mean, var, axes, eps, activation, slope)
