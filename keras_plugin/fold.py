"""``fold_batch_normalization``: a Keras model for inference with its batch norms folded away.

In inference a batch normalization is a per-channel affine map of its input,
``y = x * a + c`` with ``a = gamma / sqrt(moving_variance + epsilon)`` and
``c = beta - moving_mean * a``.  When the input is the output of a linear
layer -- ``Dense``, ``Conv1D/2D/3D``, ``DepthwiseConv1D/2D``,
``SeparableConv1D/2D`` (its pointwise part) or ``Conv1D/2D/3DTranspose`` --
that map folds into the layer's weights: each output channel's kernel slice is
multiplied by ``a`` and the bias becomes ``bias * a + c`` (a layer without a
bias gets one).  The batch normalization disappears from the model.

A batch normalization is folded when all of these hold:

* its input is the output of one of the layers above (exactly that class),
  whose activation is linear -- an activation between the layer and the batch
  normalization (``Conv2D(..., activation="relu")``) prevents folding;
* that output feeds nothing else (not another layer, not a model output), and
  the producing layer is called only once in the model;
* it normalizes the producing layer's channel axis (``axis=-1`` for
  ``channels_last``, ``1`` for ``channels_first``);
* it is called once in the model, and not with ``training=True`` fixed in the
  graph.

Every other batch normalization becomes a :class:`ChannelAffine` layer of the
same name (one pass of ckbn's kernel, ``x * a + c``), except those that cannot
be handled, which are kept as they are with a warning that names them: a
shared batch normalization (called at several places), one called with
``training=True`` in the graph, one inside a subclassed model's or custom
layer's ``call`` (its graph is not visible), or the batch normalizations of a
subclassed top-level model (returned itself, unchanged).  Every reason for not
folding is reported, naming the layer, in one ``warnings.warn`` per call.

ckbn's fused ``BatchNormalizationActivation`` layers (``swap_batch_normalization(...,
fuse_activations=True)``) fold the same way, their activation becoming a stock
Keras activation layer after the folded layer (or part of the
:class:`ChannelAffine`).

The original model is not modified: the new model has new layers and new
variables.  Sequential models give a Sequential model, Functional models a
Functional one.  Any graph Keras builds is handled (``keras_plugin._graph``):
nested Sequential and Functional models are folded too, Keras operations
between layers (``x + 3.0``, ``x * y``) are kept, a shared layer stays shared,
and models with several inputs and outputs keep them.  The
folded weights are computed in float64 and rounded once to the variables'
dtype, so the new model's outputs equal the original's in inference to float
rounding (tested to a relative 1e-5 in float32 on Keras applications).

    import keras_plugin
    infer = keras_plugin.fold_batch_normalization(model)
    infer.predict(x)            # == model.predict(x), without the batch norms
"""

from __future__ import annotations
from typing import Any, Sequence

import math

import keras
import numpy as np
from keras import ops

from keras_plugin import _activation, _engine, _graph

__all__ = ["fold_batch_normalization", "ChannelAffine"]

_BN = keras.layers.BatchNormalization
L = keras.layers
# class -> how the batch norm's per-channel factor multiplies the kernel
_PRODUCERS = {L.Dense: "kernel_last", L.Conv1D: "kernel_last", L.Conv2D: "kernel_last",
              L.Conv3D: "kernel_last", L.SeparableConv1D: "pointwise",
              L.SeparableConv2D: "pointwise", L.DepthwiseConv1D: "depthwise",
              L.DepthwiseConv2D: "depthwise", L.Conv1DTranspose: "transpose",
              L.Conv2DTranspose: "transpose", L.Conv3DTranspose: "transpose"}


def _numpy(v):
    return np.asarray(v.numpy() if isinstance(v, keras.Variable) else ops.convert_to_numpy(v))


# ------------------------------------------------------------ the affine layer
@keras.saving.register_keras_serializable(package="ckbn", name="ChannelAffine")
class ChannelAffine(keras.layers.Layer):
    """``y = activation(x * scale + offset)``, one scale and offset per channel.

    What an inference batch normalization computes, with
    ``scale = gamma / sqrt(moving_variance + epsilon)`` and
    ``offset = beta - moving_mean * scale`` precomputed.  On CPU tensors it
    runs as one pass of ckbn's kernel (``keras_plugin._kernels.affine``;
    on JAX only above ``keras_plugin.set_jax_min_elements``), elsewhere in
    Keras ops.  Its two weights are non-trainable; gradients flow to the input.

    Parameters
    ----------
    axis : int or list of int
        The channel axis or axes (as the batch normalization's ``axis``).
    activation : {None, "relu", "relu6", "leaky_relu", "swish"}
        Applied after the affine map (a folded fused layer's activation).
    negative_slope : float
        The leaky ReLU's slope.
    """

    def __init__(self, axis: int | Sequence[int] = -1, activation: str | None = None,
                 negative_slope: float = 0.2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(axis, (list, tuple)):
            axis = [int(a) for a in axis]
        elif isinstance(axis, bool) or not isinstance(axis, int):
            raise TypeError(f"axis must be an int or a list of ints, got {axis!r}")
        self.axis = axis
        self.activation, self.negative_slope = _activation.check(activation, negative_slope)
        self.supports_masking = True
        self._channel_axes = None

    def build(self, input_shape):
        ndim = len(input_shape)
        axes = [self.axis] if isinstance(self.axis, int) else list(self.axis)
        for a in axes:
            if not -ndim <= a < ndim:
                raise ValueError(f"axis {self.axis} is out of bounds for input shape "
                                 f"{tuple(input_shape)}")
        self._channel_axes = tuple(sorted(a % ndim for a in axes))
        sizes = {a: input_shape[a] for a in self._channel_axes}
        if any(n is None for n in sizes.values()):
            raise ValueError(f"ChannelAffine {self.name!r}: undefined channel size in input "
                             f"shape {tuple(input_shape)} for axis={self.axis}")
        n = math.prod(sizes.values())
        self.scale = self.add_weight(shape=(n,), name="scale", initializer="ones",
                                     trainable=False, autocast=False)
        self.offset = self.add_weight(shape=(n,), name="offset", initializer="zeros",
                                      trainable=False, autocast=False)
        self.input_spec = keras.layers.InputSpec(ndim=ndim, axes=sizes)
        if not _engine.supports_jit():
            self.supports_jit = False  # keeps jit_compile="auto" off XLA

    def compute_output_shape(self, input_shape):
        return input_shape

    __call__ = _engine.fast_call

    def call(self, inputs, training=None, mask=None):
        x = inputs
        if keras.backend.standardize_dtype(x.dtype) == "bfloat16":
            x = ops.cast(x, "float32")
        impl = _engine.kernel_impl(x, "infer")
        impl = impl if impl is not None and hasattr(impl, "affine") else None
        if impl is None and keras.backend.standardize_dtype(x.dtype) == "float16":
            x = ops.cast(x, "float32")  # as the batch normalization computes it
        is16 = keras.backend.standardize_dtype(x.dtype) == "float16"
        sd = "float32" if is16 else keras.backend.standardize_dtype(x.dtype)
        scale = _as_dtype(self.scale, sd)
        offset = _as_dtype(self.offset, sd)
        if impl is not None:
            y = impl.affine(x, scale, offset, self._channel_axes)
        else:
            # The framework's own op where its backend module has one for this call
            # (PyTorch eager: one addcmul), else Keras ops.
            own = getattr(_engine.backend_module(), "affine_infer", None)
            y = None if own is None else own(x, scale, offset, self._channel_axes)
            if y is None:
                shape = tuple(x.shape[i] if i in self._channel_axes else 1
                              for i in range(len(x.shape)))
                y = x * ops.reshape(scale, shape) + ops.reshape(offset, shape)
        y = _activation.apply(y, _activation.spec(self.activation, self.negative_slope))
        return _as_dtype(y, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(axis=self.axis, activation=self.activation,
                      negative_slope=self.negative_slope)
        return config


def _as_dtype(v, dtype):
    """``v`` (a tensor or variable) as a tensor of ``dtype``; no cast op where it
    already has it (each Keras op costs tens of microseconds in eager PyTorch)."""
    if keras.backend.standardize_dtype(v.dtype) != dtype:
        return ops.cast(v, dtype)
    return v.value if isinstance(v, keras.Variable) else v


# ------------------------------------------------------------------- the maths
def _bn_axes(bn, ndim):
    axes = getattr(bn, "_channel_axes", None)
    if axes:
        return tuple(axes)
    axis = bn.axis
    axis = [axis] if isinstance(axis, int) else list(axis)
    return tuple(sorted(a % ndim for a in axis))


def _bn_coefficients(bn):
    """Flat float64 ``a, c`` with ``bn(x, training=False) == x * a + c``."""
    mean = _numpy(bn.moving_mean).astype(np.float64).reshape(-1)
    var = _numpy(bn.moving_variance).astype(np.float64).reshape(-1)
    a = 1.0 / np.sqrt(var + float(bn.epsilon))
    if bn.scale:
        a = a * _numpy(bn.gamma).astype(np.float64).reshape(-1)
    c = -mean * a
    if bn.center:
        c = c + _numpy(bn.beta).astype(np.float64).reshape(-1)
    return a, c


def _bn_activation(bn):
    return getattr(bn, "fused_activation", None), getattr(bn, "negative_slope", 0.2)


def _producer_channel_axis(layer, ndim):
    if isinstance(layer, L.Dense):
        return ndim - 1
    return ndim - 1 if layer.data_format == "channels_last" else 1


def _fold_obstacle(producer, bn, ndim):
    """Why ``bn`` cannot fold into ``producer`` (a sentence), or None if it can."""
    kind = _PRODUCERS.get(type(producer))
    if kind is None:
        return "no-producer"
    act = getattr(producer, "activation", None)
    if act is not None and act is not keras.activations.linear:
        name = getattr(act, "__name__", repr(act))
        return (f"the activation {name!r} of {producer.name!r} stands between it and the "
                f"batch normalization")
    if getattr(producer, "lora_enabled", False):
        return f"{producer.name!r} has LoRA enabled"
    if getattr(producer, "quantization_mode", None):
        return f"{producer.name!r} is quantized ({producer.quantization_mode})"
    if not producer.built or not bn.built:
        return f"{producer.name!r} or {bn.name!r} is not built"
    if _bn_axes(bn, ndim) != (_producer_channel_axis(producer, ndim),):
        return (f"it normalizes axis {bn.axis}, not the channel axis of {producer.name!r}")
    return None


def _folded_weights(producer, a, c):
    """The producer's weights (by variable name, float64) with ``x * a + c`` folded in."""
    kind = _PRODUCERS[type(producer)]
    values = {v.name: _numpy(v).astype(np.float64) for v in producer.weights}
    key = "pointwise_kernel" if kind == "pointwise" else "kernel"
    k = values[key]
    if kind == "depthwise":  # (..., in, depth_multiplier); channel = in * dm + m
        k = k * a.reshape(k.shape[-2:])
    elif kind == "transpose":  # (..., out, in)
        k = k * a[:, None]
    else:  # (..., out)
        k = k * a
    values[key] = k
    bias = values.get("bias")
    values["bias"] = (0.0 if bias is None else bias) * a + c
    return values


# ------------------------------------------------------------------ the folder
class _Folder:
    def __init__(self):
        self.rw = _graph.Rewrite("fold_batch_normalization")

    # -- layers --------------------------------------------------------------
    def copy_layer(self, layer):
        if _graph.is_graph_model(layer):
            return self.fold_model(layer)
        for bn in _graph.inner_batch_norms(layer):
            self.rw.note(f"BatchNormalization {bn.name!r} is inside {layer.name!r} "
                         f"({type(layer).__name__}), whose call() cannot be rewritten; that "
                         f"part of the model is left unchanged")
        return self.rw.copy(layer)

    def affine_layer(self, bn, ndim):
        a, c = _bn_coefficients(bn)
        act, slope = _bn_activation(bn)
        axis = list(_bn_axes(bn, ndim))
        new = ChannelAffine(axis=axis[0] if len(axis) == 1 else axis, activation=act,
                            negative_slope=slope, name=bn.name, dtype=bn.dtype_policy)
        self.rw.set_weights_later(new, {"scale": a, "offset": c})
        return new

    def folded_producer(self, producer, bn):
        config = producer.get_config()
        config.update(use_bias=True, bias_initializer="zeros")
        new = type(producer).from_config(config)
        self.rw.set_weights_later(new, _folded_weights(producer, *_bn_coefficients(bn)))
        return new

    def skip(self, bn):
        act, slope = _bn_activation(bn)
        if act is None:
            return _graph.Skip()
        name = getattr(bn, "activation_name", None) or f"{bn.name}_{act}"
        return _graph.Skip(_activation.make_layer(act, slope, name=name))

    # -- decisions -----------------------------------------------------------
    def plan(self, bn, producer, ndim, n_calls, sole_consumer, fixed_training):
        """"fold", "affine" or "keep" for one batch normalization (and note why)."""
        if n_calls > 1:
            self.rw.note(f"BatchNormalization {bn.name!r} is shared (called {n_calls} times in "
                         f"the model); it cannot be folded and is left unchanged")
            return "keep"
        if not bn.built:
            self.rw.note(f"BatchNormalization {bn.name!r} is not built; left unchanged")
            return "keep"
        if fixed_training:
            self.rw.note(f"BatchNormalization {bn.name!r} is called with training=True in the "
                         f"model's graph (batch statistics even in inference); left unchanged")
            return "keep"
        obstacle = _fold_obstacle(producer, bn, ndim)
        if obstacle == "no-producer":
            return "affine"
        if obstacle is None and not sole_consumer:
            obstacle = (f"the output of {producer.name!r} also feeds other layers or the "
                        f"model's outputs")
        if obstacle is not None:
            self.rw.note(f"BatchNormalization {bn.name!r} is not folded into "
                         f"{producer.name!r}: {obstacle}; it becomes a per-channel affine "
                         f"layer")
            return "affine"
        return "fold"

    # -- models --------------------------------------------------------------
    def fold_model(self, model):
        if isinstance(model, keras.Sequential):
            return self.rw.sequential(model, self.replacement(model._functional))
        if _graph.is_graph_model(model):
            return self.rw.functional(model, self.replacement(model))
        for bn in _graph.inner_batch_norms(model):
            self.rw.note(f"BatchNormalization {bn.name!r} is inside the subclassed model "
                         f"{model.name!r} ({type(model).__name__}), whose call() cannot be "
                         f"rewritten; the model is returned unchanged")
        return model

    def replacement(self, model):
        """The function giving each layer of the Functional ``model`` its replacement."""
        facts = _graph.GraphFacts(model)
        decided = {}   # id(original layer) -> ("fold_into", bn) | ("skip",) | ("affine", ndim)
        for n in facts.nodes:
            bn = n.operation
            if not isinstance(bn, _BN) or id(bn) in decided or len(n.input_tensors) != 1:
                continue
            t = n.input_tensors[0]
            producer = facts.producer.get(id(t))
            ndim = len(t.shape)
            fixed = n.arguments.kwargs.get("training") is True
            sole = (facts.uses(t) == 1 and producer is not None
                    and facts.calls[id(producer)] == 1)
            what = self.plan(bn, producer, ndim, facts.calls[id(bn)], sole, fixed)
            if what == "fold":
                decided[id(producer)] = ("fold_into", bn)
                decided[id(bn)] = ("skip",)
            elif what == "affine":
                decided[id(bn)] = ("affine", ndim)
            else:
                decided[id(bn)] = ("keep",)

        def replace(layer):
            how = decided.get(id(layer))
            if how is None or how[0] == "keep":
                return self.copy_layer(layer)
            if how[0] == "fold_into":
                return self.folded_producer(layer, how[1])
            if how[0] == "skip":
                return self.skip(layer)
            return self.affine_layer(layer, how[1])

        return replace


def fold_batch_normalization(model: Any) -> Any:
    """A new inference model with every foldable batch normalization folded away.

    Parameters
    ----------
    model : keras.Model
        Sequential or Functional (nested models included), built.  Keras's
        and ckbn's ``BatchNormalization`` layers are handled alike.

    Returns
    -------
    keras.Model
        A new model of the same kind (the original is not modified) whose
        inference outputs equal the original's to float rounding.  Each
        batch normalization directly after a ``Dense``/convolution layer that
        feeds only it is folded into that layer's kernel and bias; the others
        become :class:`ChannelAffine` layers of the same name.  Whatever
        cannot be handled is kept and reported (see the module docstring); a
        subclassed model is returned itself, with a warning naming its batch
        normalizations.  Use the result for inference: folded layers have no
        batch statistics to train with.

    Examples
    --------
    >>> import keras, keras_plugin
    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4),
    ...                       keras.layers.BatchNormalization()])
    >>> [type(la).__name__ for la in keras_plugin.fold_batch_normalization(m).layers]
    ['Dense']
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"fold_batch_normalization needs a keras.Model, got {type(model)!r}")
    folder = _Folder()
    new = folder.fold_model(model)
    folder.rw.warn(stacklevel=3)
    return new
