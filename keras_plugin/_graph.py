"""Rewriting Keras graph models: what ``swap``, ``fuse`` and ``fold`` share.

A Functional model is a graph of *nodes*; each node is one call of an
operation: a layer, a nested model, or a Keras operation that is not a layer
(``x + 3.0`` and ``x * y`` in MobileNetV3 are ``keras.ops`` nodes).  The same
layer may be called at several nodes (a shared layer), and a model may have
several inputs and outputs.  :class:`Rewrite` clones such a graph with
``keras.models.clone_model``, a function that chooses each layer's
replacement, and these rules:

* a layer called at several nodes gets one replacement, called at each
  (``clone_model`` caches replacements by layer);
* operations that are not layers are re-created from their config (they
  hold no weights), or kept where they cannot be;
* a replacement :meth:`Rewrite.copy` made gets the original's weights right
  after its first call in the new graph (when it is built); a
  :class:`Skip` replacement leaves no node: it passes its input on;
* a Sequential model is rewritten through its Functional twin and listed
  again as a Sequential model.

What a rewrite leaves alone is collected with :meth:`Rewrite.note` and
reported in **one** warning by :meth:`Rewrite.warn`.
"""

from __future__ import annotations

import collections
import warnings

import keras
import numpy as np

__all__ = ["Skip", "Rewrite", "is_graph_model", "graph_nodes", "inner_batch_norms",
           "GraphFacts"]


def is_graph_model(layer):
    """Whether ``layer`` is a Sequential or Functional model (its graph is visible)."""
    return isinstance(layer, keras.Sequential) or type(layer).__name__ == "Functional" or (
        isinstance(layer, keras.Model) and getattr(layer, "_is_graph_network", False))


def graph_nodes(model):
    """The non-input nodes of a Functional model."""
    return [n for depth in model._nodes_by_depth.values() for n in depth
            if n.operation is not None and not n.is_input]


def inner_batch_norms(layer):
    """The batch normalizations inside a layer or model (not the layer itself)."""
    if not isinstance(layer, keras.layers.Layer):
        return []
    return [la for la in layer._flatten_layers(include_self=False, recursive=True)
            if isinstance(la, keras.layers.BatchNormalization)]


class GraphFacts:
    """Who produces and who consumes each tensor of a Functional model.

    ``nodes``: the non-input nodes; ``consumers[id(t)]``: the nodes that take
    tensor ``t`` (a model output counts as one more use in ``uses``);
    ``producer[id(t)]``: the operation whose node made ``t``;
    ``calls[id(op)]``: at how many nodes ``op`` is called.
    """

    def __init__(self, model):
        self.nodes = graph_nodes(model)
        self.consumers = collections.defaultdict(list)
        self.producer = {}
        self.calls = collections.Counter(id(n.operation) for n in self.nodes)
        for n in self.nodes:
            for t in n.input_tensors:
                self.consumers[id(t)].append(n)
            for t in n.outputs:
                self.producer[id(t)] = n.operation
        self.outputs = {id(t) for t in model.outputs}

    def uses(self, t):
        """How many times tensor ``t`` is used: by nodes, and as a model output."""
        return len(self.consumers[id(t)]) + (id(t) in self.outputs)


class Skip:
    """A replacement that leaves no node: passes its input on, through ``layer`` if given."""

    def __init__(self, layer=None):
        self.layer = layer

    def __call__(self, x):
        return x if self.layer is None else self.layer(x)


class Rewrite:
    """One rewrite of a model by the function named ``what`` (for the warning)."""

    def __init__(self, what):
        self.what = what
        self.notes = []
        self._pending = {}   # id(new layer) -> (new layer, weights: list, or dict by name)

    # -- replacements ----------------------------------------------------------
    def note(self, message):
        """Record something the rewrite leaves alone (reported by :meth:`warn`)."""
        if message not in self.notes:
            self.notes.append(message)

    def warn(self, stacklevel=3):
        """One warning naming everything noted, if anything was."""
        if self.notes:
            warnings.warn(f"{self.what}: " + "; ".join(self.notes), stacklevel=stacklevel)
            self.notes = []

    def set_weights_later(self, new, weights, then=None):
        """Give ``new`` these weights (a list, or arrays by variable name) once it is built
        by its first call in the new graph; then call ``then(new)`` if given."""
        self._pending[id(new)] = (new, weights, then)

    def copy(self, layer, then=None):
        """A new instance of ``layer`` from its config, with its weights (after its first
        call, followed by ``then(new)`` if given).  An operation that is not a layer is
        re-created from its config (it has no weights); where a layer or operation cannot
        be re-created, it is shared (and ``then`` is not called)."""
        try:
            new = _from_config(layer)
        except Exception as err:  # e.g. a Lambda of a Python lambda (unsafe to deserialize)
            if isinstance(layer, keras.layers.Layer):
                self.note(f"layer {layer.name!r} cannot be re-created from its config "
                          f"({type(err).__name__}); the new model shares it with the "
                          f"original")
            return layer
        if isinstance(layer, keras.layers.Layer) and (layer.weights or then is not None):
            self.set_weights_later(new, layer.get_weights(), then)
        return new

    # -- models ----------------------------------------------------------------
    def functional(self, model, replace):
        """A clone of the Functional ``model`` whose layer ``op`` becomes ``replace(op)``."""

        def call_function(op, *args, **kwargs):
            if isinstance(op, Skip):
                return op(args[0] if args else kwargs["inputs"])
            out = op(*args, **kwargs)
            pending = self._pending.pop(id(op), None)
            if pending is not None:
                new, weights, then = pending
                _assign(new, weights)
                if then is not None:
                    then(new)
            return out

        return keras.models.clone_model(model, clone_function=replace,
                                        call_function=call_function)

    def sequential(self, model, replace):
        """:meth:`functional` of a built Sequential model's graph, as a Sequential model."""
        twin = getattr(model, "_functional", None)
        if twin is None:
            raise ValueError(f"{self.what}: Sequential model {model.name!r} is not built; "
                             f"build it (or call it once) so it has a graph and weights.")
        new = self.functional(twin, replace)
        ref = twin.inputs[0]
        inputs = keras.Input(batch_shape=tuple(ref.shape), dtype=ref.dtype, name=ref.name)
        layers = [la for la in new.layers if not isinstance(la, keras.layers.InputLayer)]
        seq = keras.Sequential([inputs] + layers, name=model.name, trainable=model.trainable)
        if model.compiled:
            seq.compile_from_config(model.get_compile_config())
        return seq


def _from_config(layer):
    config = layer.get_config()
    if isinstance(layer, keras.layers.Layer) and "name" not in config:
        try:  # a custom layer's config may omit its name: keep the name anyway
            return type(layer).from_config(dict(config, name=layer.name))
        except Exception:
            pass
    return type(layer).from_config(config)


def _assign(new, weights):
    if not weights:
        return
    if isinstance(weights, dict):
        for v in new.weights:
            v.assign(np.asarray(weights[v.name]).astype(v.dtype))
    else:
        new.set_weights(weights)
