"""The activations that batch normalization can absorb, and how to spot them in a model.

ckbn's fused kernels apply ``relu`` (``max(z, 0)``), ``relu6``
(``min(max(z, 0), 6)``), ``leaky_relu`` (``z`` if ``z > 0`` else
``negative_slope * z``) and ``swish`` (``z * sigmoid(z)``, also named
``silu``; ``check`` turns ``"silu"`` into ``"swish"``) to the normalized value
``z`` in the same pass.  ``hard_swish`` is not one of them.
:func:`from_layer` recognizes the Keras layers that compute exactly one of
these; :func:`apply` computes them with Keras ops (the fallback, and the
reference the kernels are tested against).

An activation travels through the op tables (``keras_plugin._kernels`` and
the backend modules) as ``act``: ``None`` or the hashable pair
``(name, negative_slope)`` that :func:`spec` builds.
"""

from __future__ import annotations

import keras
from keras import ops

NAMES = ("relu", "relu6", "leaky_relu", "swish")
# Other names of the same activations.
ALIASES = {"silu": "swish"}


def check(activation, negative_slope):
    """``(activation, negative_slope)`` validated, aliases ("silu") resolved;
    raises ValueError/TypeError."""
    if isinstance(activation, str):
        activation = ALIASES.get(activation, activation)
    if activation is not None and activation not in NAMES:
        raise ValueError(f"activation must be None or one of {NAMES + tuple(ALIASES)}, "
                         f"got {activation!r}")
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)):
        raise TypeError(f"negative_slope must be a number, got {negative_slope!r}")
    if not negative_slope >= 0.0:
        raise ValueError(f"negative_slope must be >= 0, got {negative_slope!r}")
    return activation, float(negative_slope)


def spec(activation, negative_slope=0.2):
    """The op tables' ``act``: None, or ``(name, float slope)`` (slope 0 unless leaky)."""
    activation, negative_slope = check(activation, negative_slope)
    if activation is None:
        return None
    return (activation, negative_slope if activation == "leaky_relu" else 0.0)


def from_layer(layer):
    """``(name, negative_slope)`` if ``layer`` computes one of :data:`NAMES`, else None.

    Only the exact Keras classes count (a subclass may change ``call``):
    ``ReLU`` with threshold 0 and max_value None or 6 (a nonzero
    ``negative_slope`` with no max_value is a leaky ReLU), ``LeakyReLU``, and
    ``Activation`` of ``relu``, ``relu6``, ``leaky_relu`` (slope 0.2, the
    function's default) or ``swish``/``silu`` (``keras.activations.swish``,
    ``keras.activations.silu``; not ``hard_swish``/``hard_silu``).
    """
    cls = type(layer)
    if cls is keras.layers.ReLU:
        if layer.threshold != 0:
            return None
        slope = float(layer.negative_slope)
        if layer.max_value is None:
            return ("relu", 0.0) if slope == 0 else ("leaky_relu", slope)
        if layer.max_value == 6 and slope == 0:
            return ("relu6", 0.0)
        return None
    if cls is keras.layers.LeakyReLU:
        return ("leaky_relu", float(layer.negative_slope))
    if cls is keras.layers.Activation:
        fn = layer.activation
        if fn is keras.activations.relu:
            return ("relu", 0.0)
        if fn is keras.activations.relu6:
            return ("relu6", 0.0)
        if fn is keras.activations.leaky_relu:
            return ("leaky_relu", 0.2)
        if fn is keras.activations.swish or fn is keras.activations.silu:
            return ("swish", 0.0)
    return None


def apply(y, act):
    """``act(y)`` in Keras ops, ``act`` as :func:`spec` returns it (identity for None)."""
    if act is None:
        return y
    name, slope = act
    if name == "relu":
        return ops.relu(y)
    if name == "relu6":
        return ops.relu6(y)
    if name == "swish":
        return ops.silu(y)
    return ops.leaky_relu(y, negative_slope=slope)


def make_layer(activation, negative_slope, name=None):
    """A stock Keras layer computing ``activation`` (what folding leaves after a fused BN)."""
    if activation == "relu":
        return keras.layers.ReLU(name=name)
    if activation == "relu6":
        return keras.layers.ReLU(max_value=6.0, name=name)
    if activation in ("swish", "silu"):
        return keras.layers.Activation("swish", name=name)
    return keras.layers.LeakyReLU(negative_slope=negative_slope, name=name)
