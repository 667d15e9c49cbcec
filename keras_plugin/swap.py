"""``swap_batch_normalization``: put ckbn's layer into an existing Keras model.

Sequential and Functional models are cloned with ``keras.models.clone_model``
(``keras_plugin._graph``): every layer whose class is exactly
``keras.layers.BatchNormalization`` becomes ``keras_plugin.BatchNormalization``
with the same config, the other layers are re-created from their configs, and
all weights are copied, so the new model predicts what the old one does.  Any
graph Keras builds is handled: Keras operations between layers (``x + 3.0``),
nested Sequential/Functional models, shared layers (still shared), several
inputs and outputs, and the batch normalizations that a custom layer creates
and calls itself (swapped inside the new layer's copy).  What is left alone is
named in one warning.

Subclassed models cannot be cloned from their config; they are swapped **in
place**: each stock ``BatchNormalization`` instance becomes an instance of
ckbn's subclass, keeping its variables (and so its optimizer slots and
checkpoints).  The same model object is returned.

A saved model::

    import keras, keras_plugin
    model = keras.models.load_model("model.keras")          # stock layers
    model = keras_plugin.swap_batch_normalization(model)

(Keras resolves its built-in layers by module path, so ``custom_objects`` cannot
redirect ``BatchNormalization`` at load time; swapping after loading can.)

A model saved *with* ckbn's layers loads where ``keras_plugin`` is imported
(it registers ``ckbn>BatchNormalization``), and as plain Keras layers with
``custom_objects={"ckbn>BatchNormalization": keras.layers.BatchNormalization}``
in a process that has not imported ``keras_plugin`` (its registration takes
precedence), as long as it uses no extras (list axis, ghost batches, ...).  Weight files
(``.weights.h5``) are interchangeable both ways.
"""

from __future__ import annotations

import keras

from keras_plugin import _engine, _graph
from keras_plugin.layer import BatchNormalization

__all__ = ["swap_batch_normalization"]

_Stock = keras.layers.BatchNormalization


def _is_stock_bn(layer):
    return type(layer) is _Stock


def _from_stock(layer):
    return BatchNormalization.from_config(layer.get_config())


class _Subclassed(Exception):
    """A nested subclassed model: its call() cannot be rewired (the in-place swap runs)."""


def _replacement(layer, rw):
    """The layer that stands for ``layer`` in the swapped model (see the module docstring)."""
    if _is_stock_bn(layer):
        new = _from_stock(layer)
        if layer.weights:
            rw.set_weights_later(new, layer.get_weights())
        return new
    if _graph.is_graph_model(layer):
        return _swap_graph(layer, rw)
    if isinstance(layer, keras.Model):
        raise _Subclassed(layer.name)
    inner = [bn.name for bn in _graph.inner_batch_norms(layer) if _is_stock_bn(bn)]
    # A custom layer's own BNs are swapped in its copy once that is built (its call()
    # keeps calling the same instances).
    new = rw.copy(layer, then=_swap_subclassed if inner else None)
    if inner and new is layer:
        rw.note(f"layer {layer.name!r} is shared with the original model, so its batch "
                f"normalizations {inner} are not swapped")
    return new


def _swap_graph(model, rw):
    def replace(layer):
        return _replacement(layer, rw)

    if isinstance(model, keras.Sequential):
        if getattr(model, "_functional", None) is None:  # not built: no weights to copy
            return keras.models.clone_model(model, clone_function=replace)
        return rw.sequential(model, replace)
    return rw.functional(model, replace)


def _swap_in_place(layer):
    """Turn a built or unbuilt stock BN instance into ckbn's layer, keeping its variables."""
    layer.__class__ = BatchNormalization
    layer.virtual_batch_size = None
    layer.adjustment = None
    layer.fused = None
    if not hasattr(layer, "renorm"):
        layer.renorm, layer.renorm_clipping, layer.renorm_momentum = False, None, 0.99
    layer._channel_axes = layer._param_shape = layer._n_channels = None
    if layer.built:
        ndim = layer.input_spec.ndim
        layer._channel_axes = (layer.axis % ndim,)
        layer._param_shape = tuple(layer.moving_mean.shape)
        layer._n_channels = int(layer.moving_mean.shape[0])
        if not _engine.supports_jit():
            layer.supports_jit = False


def _swap_subclassed(model):
    count = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if _is_stock_bn(layer):
            _swap_in_place(layer)
            count += 1
    return count


def swap_batch_normalization(model, fuse_activations=False):
    """A model whose every ``keras.layers.BatchNormalization`` is ckbn's.

    Parameters
    ----------
    model : keras.Model
        Sequential, Functional (nested models included) or subclassed.
    fuse_activations : bool, default False
        Also replace each batch normalization whose only consumer is a ReLU,
        ReLU6 or leaky ReLU layer by one
        :class:`keras_plugin.fuse.BatchNormalizationActivation` (same name and
        weights; the activation layer is gone), which applies the activation
        inside the kernels' passes.  Sequential and Functional models only;
        a subclassed model is swapped without fusion, with a warning.

    Returns
    -------
    keras.Model
        For Sequential and Functional models a clone with all weights copied
        (compile it before training).  A subclassed model is swapped in place
        and returned itself.  Predictions equal the original's.

    Examples
    --------
    >>> import keras, keras_plugin
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization()])
    >>> s = keras_plugin.swap_batch_normalization(m)
    >>> type(s.layers[0]).__module__
    'keras_plugin.layer'
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"swap_batch_normalization needs a keras.Model, got {type(model)!r}")
    if fuse_activations not in (True, False):
        raise TypeError(f"fuse_activations must be True or False, got {fuse_activations!r}")
    rw = _graph.Rewrite("swap_batch_normalization")
    if _graph.is_graph_model(model):
        try:
            if fuse_activations:  # issue 14: BN + activation as one layer
                from keras_plugin.fuse import fuse_activations as fuse

                new = fuse(model, _replacement, rw)
            else:
                new = _swap_graph(model, rw)
            rw.warn(stacklevel=3)
            return new
        except _Subclassed:
            rw = _graph.Rewrite("swap_batch_normalization")   # swapped in place instead
    if fuse_activations:
        names = [layer.name for layer in model._flatten_layers(include_self=False, recursive=True)
                 if isinstance(layer, keras.layers.BatchNormalization)]
        if names:
            rw.note(f"the BatchNormalization layers {names} are inside a subclassed model "
                    f"whose call() cannot be rewired; they are swapped without fusing their "
                    f"activations")
    if _swap_subclassed(model):
        # Drop step functions traced with the stock layers; Keras re-traces them.
        for attr in ("train_function", "test_function", "predict_function"):
            if getattr(model, attr, None) is not None:
                setattr(model, attr, None)
    rw.warn(stacklevel=3)
    return model
