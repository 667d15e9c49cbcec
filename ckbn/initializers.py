"""Variable initializers, as in TensorFlow 1.x (``tf.*_initializer``) and Keras.

Anything accepted where an initializer is expected:

* a string: ``"zeros"``, ``"ones"``, ``"glorot_uniform"``, ``"glorot_normal"``,
  ``"random_normal"``, ``"random_uniform"``, ``"truncated_normal"``,
  ``"he_normal"``, ``"he_uniform"``;
* an initializer object: ``zeros_initializer()``, ``ones_initializer()``,
  ``constant_initializer(v)``, ``random_normal_initializer(mean, stddev, seed)``,
  ``random_uniform_initializer(minval, maxval, seed)``,
  ``truncated_normal_initializer(...)``, ``glorot_uniform_initializer(seed)``,
  ``glorot_normal_initializer(seed)`` (or the classes ``Zeros``, ``Ones``,
  ``Constant``, ...);
* any callable ``(shape, dtype) -> array``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "Initializer", "Zeros", "Ones", "Constant", "RandomNormal", "RandomUniform",
    "TruncatedNormal", "GlorotUniform", "GlorotNormal", "HeNormal", "HeUniform",
    "zeros_initializer", "ones_initializer", "constant_initializer",
    "random_normal_initializer", "random_uniform_initializer",
    "truncated_normal_initializer", "glorot_uniform_initializer",
    "glorot_normal_initializer", "get",
]


class Initializer:
    """Base class: ``init(shape, dtype) -> ndarray``."""

    def __call__(self, shape, dtype=np.float32):
        raise NotImplementedError

    def get_config(self):
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Zeros(Initializer):
    def __call__(self, shape, dtype=np.float32):
        return np.zeros(shape, dtype=dtype)


class Ones(Initializer):
    def __call__(self, shape, dtype=np.float32):
        return np.ones(shape, dtype=dtype)


class Constant(Initializer):
    """A constant value, broadcast to the shape (or an array of exactly that shape)."""

    def __init__(self, value=0.0):
        self.value = value

    def __call__(self, shape, dtype=np.float32):
        v = np.asarray(self.value, dtype=dtype)
        try:
            return np.array(np.broadcast_to(v, tuple(shape)), dtype=dtype)
        except ValueError:
            raise ValueError(
                f"constant_initializer value of shape {v.shape} does not fit the "
                f"variable shape {tuple(shape)}") from None

    def get_config(self):
        return {"value": self.value}


class _Seeded(Initializer):
    def __init__(self, seed=None):
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def get_config(self):
        return {"seed": self.seed}


class RandomNormal(_Seeded):
    def __init__(self, mean=0.0, stddev=1.0, seed=None):
        super().__init__(seed)
        self.mean, self.stddev = mean, stddev

    def __call__(self, shape, dtype=np.float32):
        return self._rng.normal(self.mean, self.stddev, size=shape).astype(dtype)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class RandomUniform(_Seeded):
    def __init__(self, minval=0.0, maxval=1.0, seed=None):
        super().__init__(seed)
        self.minval, self.maxval = minval, maxval

    def __call__(self, shape, dtype=np.float32):
        return self._rng.uniform(self.minval, self.maxval, size=shape).astype(dtype)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


class TruncatedNormal(RandomNormal):
    """Normal values re-drawn until within two standard deviations of the mean."""

    def __call__(self, shape, dtype=np.float32):
        out = self._rng.normal(self.mean, self.stddev, size=shape)
        bad = np.abs(out - self.mean) > 2 * self.stddev
        while bad.any():
            out[bad] = self._rng.normal(self.mean, self.stddev, size=int(bad.sum()))
            bad = np.abs(out - self.mean) > 2 * self.stddev
        return out.astype(dtype)


def _fans(shape):
    shape = tuple(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


class GlorotUniform(_Seeded):
    def __call__(self, shape, dtype=np.float32):
        fan_in, fan_out = _fans(shape)
        limit = math.sqrt(6.0 / max(1.0, fan_in + fan_out))
        return self._rng.uniform(-limit, limit, size=shape).astype(dtype)


class GlorotNormal(_Seeded):
    def __call__(self, shape, dtype=np.float32):
        fan_in, fan_out = _fans(shape)
        std = math.sqrt(2.0 / max(1.0, fan_in + fan_out))
        return TruncatedNormal(0.0, std / 0.87962566103423978, self.seed)(shape, dtype)


class HeNormal(_Seeded):
    def __call__(self, shape, dtype=np.float32):
        fan_in, _ = _fans(shape)
        std = math.sqrt(2.0 / max(1.0, fan_in))
        return TruncatedNormal(0.0, std / 0.87962566103423978, self.seed)(shape, dtype)


class HeUniform(_Seeded):
    def __call__(self, shape, dtype=np.float32):
        fan_in, _ = _fans(shape)
        limit = math.sqrt(6.0 / max(1.0, fan_in))
        return self._rng.uniform(-limit, limit, size=shape).astype(dtype)


def zeros_initializer():
    return Zeros()


def ones_initializer():
    return Ones()


def constant_initializer(value=0.0):
    return Constant(value)


def random_normal_initializer(mean=0.0, stddev=1.0, seed=None):
    return RandomNormal(mean, stddev, seed)


def random_uniform_initializer(minval=0.0, maxval=1.0, seed=None):
    return RandomUniform(minval, maxval, seed)


def truncated_normal_initializer(mean=0.0, stddev=1.0, seed=None):
    return TruncatedNormal(mean, stddev, seed)


def glorot_uniform_initializer(seed=None):
    return GlorotUniform(seed)


def glorot_normal_initializer(seed=None):
    return GlorotNormal(seed)


_BY_NAME = {
    "zeros": Zeros, "zero": Zeros, "ones": Ones, "one": Ones, "constant": Constant,
    "glorot_uniform": GlorotUniform, "glorot_normal": GlorotNormal,
    "random_normal": RandomNormal, "random_uniform": RandomUniform,
    "truncated_normal": TruncatedNormal, "he_normal": HeNormal, "he_uniform": HeUniform,
}


def get(identifier, default=None):
    """Resolve a string, an initializer object or a callable to a callable.

    Raises
    ------
    ValueError
        For an unknown name.
    TypeError
        For anything that is neither a string nor callable.
    """
    if identifier is None:
        identifier = default
    if identifier is None:
        return None
    if isinstance(identifier, str):
        key = identifier.strip().lower()
        if key not in _BY_NAME:
            raise ValueError(
                f"unknown initializer {identifier!r}; known: {sorted(_BY_NAME)}")
        return _BY_NAME[key]()
    if callable(identifier):
        return identifier
    raise TypeError(f"an initializer must be a string or a callable, got {identifier!r}")
