"""Batch normalization and the activation after it as one layer (``fuse_activations=True``).

In ``Conv -> BatchNormalization -> ReLU`` the activation re-reads and
re-writes the whole tensor, forward and backward.
:class:`BatchNormalizationActivation` computes ``activation(BN(x))`` in one
layer: where the kernels serve the call (CPU tensors; see
``ckbn.nn.fused_batch_norm``'s ``activation=``), the activation is applied
inside the normalization pass and the backward masks ``dy`` inside the dx
pass, the Keras 2 extras (ghost batches, renorm, adjustment) included (on
TensorFlow's native ops, ReLU and ReLU6 on float32/float64 are masked by
TensorFlow's ``ReluGrad``/``Relu6Grad`` on the layer's output before ckbn's
backward instead: ``keras_plugin._tf_native.GRAD_MASK_FROM_OUTPUT``);
elsewhere (GPU tensors, masks, XLA, ``synchronized=True``) it runs
ckbn's/Keras's batch normalization and then the activation in Keras ops, with
the same results.

``swap_batch_normalization(model, fuse_activations=True)`` builds it: every
batch normalization whose output feeds exactly one layer, and that layer is a
``ReLU`` (plain, ``max_value=6`` or with a ``negative_slope``), ``LeakyReLU`` or
``Activation("relu" | "relu6" | "leaky_relu" | "swish" | "silu")`` called
once (EfficientNet's BN -> swish pairs among them), becomes one fused layer.  The fused layer keeps the batch normalization's name, weights
(names, order, values) and config keys, adds ``activation``,
``negative_slope`` and ``activation_name`` (the name of the activation layer it
absorbed, also ``layer.activation_name``), and is registered for
serialization as ``ckbn>BatchNormalizationActivation``, so a ``.keras`` file of
the swapped model loads where ``keras_plugin`` is imported.  Activations
between other layers, and batch normalizations whose output has other
consumers, are left as they are (the latter swapped to ckbn's layer).
Any graph Keras builds is rewired (``keras_plugin._graph``): Keras operations
between layers, nested models, shared layers, several inputs and outputs.  A
shared batch normalization or activation is not fused, and subclassed models
cannot be rewired: they are swapped in place without fusion.  One warning
names what is left alone.
"""

from __future__ import annotations
from typing import Any

import keras

from keras_plugin import _activation, _graph
from keras_plugin.layer import BatchNormalization

__all__ = ["BatchNormalizationActivation", "fuse_activations"]


@keras.saving.register_keras_serializable(package="ckbn", name="BatchNormalizationActivation")
class BatchNormalizationActivation(BatchNormalization):
    """``activation(BatchNormalization(x))`` in one layer, on ckbn's kernels.

    Arguments are those of :class:`keras_plugin.BatchNormalization` plus:

    activation : {"relu", "relu6", "leaky_relu", "swish", "silu"}
        ``max(z, 0)``, ``min(max(z, 0), 6)``, ``z if z > 0 else
        negative_slope * z``, or ``z * sigmoid(z)`` ("silu" is stored as
        "swish"), of the normalized output ``z``.
    negative_slope : float, default 0.2
        The leaky ReLU's slope (ignored by the others).
    activation_name : str, optional
        The name of the activation layer this layer replaced (informational).
    """

    def __init__(self, activation: str = "relu", negative_slope: float = 0.2,
                 activation_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if activation is None:
            raise ValueError("BatchNormalizationActivation needs an activation, got None")
        self.fused_activation, self.negative_slope = _activation.check(activation,
                                                                       negative_slope)
        if activation_name is not None and not isinstance(activation_name, str):
            raise TypeError(f"activation_name must be a string, got {activation_name!r}")
        self.activation_name = activation_name

    def get_config(self):
        config = super().get_config()
        config.update(activation=self.fused_activation, negative_slope=self.negative_slope,
                      activation_name=self.activation_name)
        return config

    @property
    def _fused_act(self):
        return _activation.spec(self.fused_activation, self.negative_slope)


# --------------------------------------------------------------- graph rewriting
def _is_bn(layer):
    return type(layer) in (keras.layers.BatchNormalization, BatchNormalization)


class _Fuser:
    """Rewrites graph models with BN + activation pairs fused; ``clone_layer(layer, rw)``
    is swap's replacement of every other layer (stock BN -> ckbn's)."""

    def __init__(self, clone_layer, rewrite):
        self.clone_layer = clone_layer
        self.rw = rewrite

    def copy(self, layer):
        if _graph.is_graph_model(layer):
            return self.fuse_model(layer)
        return self.clone_layer(layer, self.rw)

    def fused(self, bn, act_layer, act, slope):
        config = bn.get_config()
        config.pop("name", None)
        new = BatchNormalizationActivation.from_config(dict(
            config, name=bn.name, activation=act, negative_slope=slope,
            activation_name=act_layer.name))
        self.rw.set_weights_later(new, bn.get_weights())
        return new

    def fuse_model(self, model):
        if isinstance(model, keras.Sequential):
            return self.rw.sequential(model, self.replacement(model._functional))
        return self.rw.functional(model, self.replacement(model))

    def replacement(self, model):
        """The function giving each layer of the Functional ``model`` its replacement."""
        facts = _graph.GraphFacts(model)
        plan = {}
        for n in facts.nodes:
            bn = n.operation
            if not _is_bn(bn) or len(n.outputs) != 1:
                continue
            t = n.outputs[0]
            if facts.uses(t) != 1 or not facts.consumers[id(t)]:
                continue
            act_layer = facts.consumers[id(t)][0].operation
            spec = _activation.from_layer(act_layer)
            if spec is None:
                continue
            if facts.calls[id(bn)] > 1 or facts.calls[id(act_layer)] > 1:
                self.rw.note(f"BatchNormalization {bn.name!r} or its activation "
                             f"{act_layer.name!r} is shared (called at several places); "
                             f"not fused")
                continue
            if n.arguments.kwargs.get("mask") is not None:
                continue
            plan[id(bn)] = ("fuse", act_layer) + spec
            plan[id(act_layer)] = ("skip",)

        def replace(layer):
            how = plan.get(id(layer))
            if how is None:
                return self.copy(layer)
            if how[0] == "skip":
                return _graph.Skip()
            return self.fused(layer, *how[1:])

        return replace


def fuse_activations(model, clone_layer, rewrite):
    """A clone of the graph model ``model`` with BN + activation pairs fused (see module)."""
    return _Fuser(clone_layer, rewrite).fuse_model(model)
