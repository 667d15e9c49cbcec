"""Batch normalization and the activation after it as one layer (``fuse_activations=True``).

In ``Conv -> BatchNormalization -> ReLU`` the activation re-reads and
re-writes the whole tensor, forward and backward.
:class:`BatchNormalizationActivation` computes ``activation(BN(x))`` in one
layer: on CPU tensors with ckbn kernels that take ``activation=`` (see
``ckbn.nn.fused_batch_norm``), the activation is applied inside the
normalization pass and the backward masks ``dy`` inside the dx pass; elsewhere
(GPU tensors, masks, XLA, the extras, kernels without the fused activation)
it runs ckbn's/Keras's batch normalization and then the activation in Keras
ops, with the same results.

``swap_batch_normalization(model, fuse_activations=True)`` builds it: every
batch normalization whose output feeds exactly one layer, and that layer is a
``ReLU`` (plain, ``max_value=6`` or with a ``negative_slope``), ``LeakyReLU`` or
``Activation("relu" | "relu6" | "leaky_relu")`` called once, becomes one
fused layer.  The fused layer keeps the batch normalization's name, weights
(names, order, values) and config keys, adds ``activation``,
``negative_slope`` and ``activation_name`` (the name of the activation layer it
absorbed, also ``layer.activation_name``), and is registered for
serialization as ``ckbn>BatchNormalizationActivation``, so a ``.keras`` file of
the swapped model loads where ``keras_plugin`` is imported.  Activations
between other layers, and batch normalizations whose output has other
consumers, are left as they are (the latter swapped to ckbn's layer).
Subclassed models cannot be rewired: they are swapped in place without
fusion, with a warning naming their batch normalizations.
"""

from __future__ import annotations
from typing import Any

import collections
import warnings

import keras

from keras_plugin import _activation, _engine, _kernels
from keras_plugin.layer import BatchNormalization

__all__ = ["BatchNormalizationActivation", "fuse_activations"]


@keras.saving.register_keras_serializable(package="ckbn", name="BatchNormalizationActivation")
class BatchNormalizationActivation(BatchNormalization):
    """``activation(BatchNormalization(x))`` in one layer, on ckbn's kernels.

    Arguments are those of :class:`keras_plugin.BatchNormalization` plus:

    activation : {"relu", "relu6", "leaky_relu"}
        ``max(z, 0)``, ``min(max(z, 0), 6)``, or ``z if z > 0 else
        negative_slope * z``, of the normalized output ``z``.
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

    def call(self, inputs, training=None, mask=None):
        if mask is None and not self.synchronized and not self._uses_extras \
                and not self.renorm and _kernels.has_fused_activation():
            x = inputs
            if keras.backend.standardize_dtype(x.dtype) == "bfloat16":
                x = keras.ops.cast(x, "float32")
            impl = _engine.kernel_impl(x)
            if impl is not None and hasattr(impl, "train_act"):
                return _fused_forward(self, x, bool(training and self.trainable), impl)
        y = super().call(inputs, training=training, mask=mask)
        return _activation.apply(y, self.fused_activation, self.negative_slope)


def _fused_forward(layer, x, training, impl):
    """The plain batch normalization path of ``_engine.forward`` with the activation fused."""
    ops = keras.ops
    if keras.backend.standardize_dtype(x.dtype) != "float16":
        x = ops.cast(x, keras.backend.result_type(x.dtype, "float32"))
    sd = "float32" if keras.backend.standardize_dtype(x.dtype) == "float16" else \
        keras.backend.standardize_dtype(x.dtype)
    n, axes, eps = layer._n_channels, layer._channel_axes, layer.epsilon
    act, slope = layer.fused_activation, layer.negative_slope

    def flat(v):
        return ops.reshape(ops.cast(v, sd), (n,))

    gamma = flat(layer.gamma) if layer.scale else ops.ones((n,), dtype=sd)
    beta = flat(layer.beta) if layer.center else ops.zeros((n,), dtype=sd)
    if not training:
        y = impl.given_act(x, gamma, beta, flat(layer.moving_mean),
                           flat(layer.moving_variance), axes, eps, act, slope)
    else:
        y, mean, var = impl.train_act(x, gamma, beta, axes, eps, act, slope)
        _engine._update_moving(layer, mean, var, x, sd)
    return ops.cast(y, layer.compute_dtype)


# --------------------------------------------------------------- graph rewriting
def _is_bn(layer):
    return type(layer) in (keras.layers.BatchNormalization, BatchNormalization)


def _warn(msg):
    warnings.warn("swap_batch_normalization(fuse_activations=True): " + msg, stacklevel=5)


class _Fuser:
    def __init__(self, clone_layer):
        self.clone_layer = clone_layer  # swap's cloning (stock BN -> ckbn BN)
        self.copies = []

    def copy(self, layer):
        if isinstance(layer, keras.Model) and _is_graph(layer):
            return self.fuse_model(layer)
        new = self.clone_layer(layer)
        if new is not layer:
            self.copies.append((new, layer))
        return new

    def fused(self, bn, act_layer, act, slope):
        config = bn.get_config()
        config.pop("name", None)
        new = BatchNormalizationActivation.from_config(dict(
            config, name=bn.name, activation=act, negative_slope=slope,
            activation_name=act_layer.name))
        self.copies.append((new, bn))
        return new

    def finish(self):
        for new, old in self.copies:
            new.set_weights(old.get_weights())
        self.copies = []

    def fuse_model(self, model):
        if isinstance(model, keras.Sequential):
            functional = getattr(model, "_functional", None)
            if functional is None:
                raise ValueError(f"swap_batch_normalization: Sequential model {model.name!r} "
                                 f"is not built; fuse_activations=True needs its graph.")
            new = self.fuse_functional(functional)
            ref = functional.inputs[0]
            inputs = keras.Input(batch_shape=tuple(ref.shape), dtype=ref.dtype, name=ref.name)
            layers = [la for la in new.layers if not isinstance(la, keras.layers.InputLayer)]
            return keras.Sequential([inputs] + layers, name=model.name, trainable=model.trainable)
        return self.fuse_functional(model)

    def fuse_functional(self, model):
        from keras_plugin.fold import _Skip, _clone_skipping

        nodes = [n for depth in model._nodes_by_depth.values() for n in depth
                 if n.operation is not None and not n.is_input]
        consumers = collections.defaultdict(list)
        calls = collections.Counter(id(n.operation) for n in nodes)
        for n in nodes:
            for t in n.input_tensors:
                consumers[id(t)].append(n)
        outputs = {id(t) for t in model.outputs}
        plan = {}
        for n in nodes:
            bn = n.operation
            if not _is_bn(bn) or len(n.outputs) != 1:
                continue
            users = consumers[id(n.outputs[0])]
            if len(users) != 1 or id(n.outputs[0]) in outputs:
                continue
            act_layer = users[0].operation
            spec = _activation.from_layer(act_layer)
            if spec is None:
                continue
            if calls[id(bn)] > 1 or calls[id(act_layer)] > 1:
                _warn(f"BatchNormalization {bn.name!r} or its activation {act_layer.name!r} "
                      f"is shared (called at several places); not fused.")
                continue
            if n.arguments.kwargs.get("mask") is not None:
                continue
            plan[id(bn)] = ("fuse", act_layer) + spec
            plan[id(act_layer)] = ("skip",)

        def clone_function(layer):
            how = plan.get(id(layer))
            if how is None:
                return self.copy(layer)
            if how[0] == "skip":
                return _Skip(None)
            return self.fused(layer, *how[1:])

        new = _clone_skipping(model, clone_function)
        self.finish()
        return new


def _is_graph(model):
    return isinstance(model, keras.Sequential) or type(model).__name__ == "Functional" or \
        getattr(model, "_is_graph_network", False)


def fuse_activations(model, clone_layer):
    """A clone of the graph model ``model`` with BN + activation pairs fused (see module)."""
    return _Fuser(clone_layer).fuse_model(model)
