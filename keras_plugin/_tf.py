"""TensorFlow backend: ckbn kernels as native TensorFlow ops, or ``tf.numpy_function`` ops.

The op table (the same in every backend module; arguments as in
``keras_plugin._kernels``, tensors instead of arrays, ``act`` None or
``(name, negative_slope)``):

* ``train(x, scale, offset, axes, eps, act=None) -> (y, mean, var)``;
  differentiable in x, scale and offset (the statistics are not);
* ``given(x, scale, offset, mean, var, axes, eps, train_grad=False, act=None) -> y``;
  differentiable in x, scale and offset; ``train_grad`` says that mean/var
  are x's own batch statistics (renorm), so the gradient is the training one;
* ``grad(dy, x, scale, mean, var, axes, eps, training, act=None, offset=None)
  -> (dx, dscale, doffset)``: the backward op itself (no gradient);
* ``moments(x, axes) -> (mean, var)``: no gradient;
* ``affine(x, scale, offset, axes) -> y``: differentiable (Keras-op gradient).

Where ``keras_plugin._tf_native`` serves a call (its op library is built and
loaded, CPU, channel axes in place, not XLA), every entry point of the table
runs on its compiled ops -- no Python per call, registered gradients, and
they can be saved in a SavedModel.  Otherwise the kernels are called in
``_call_train``, ``_call_given`` and ``grad`` (plus ``moments`` and
``_call_affine``) through ``tf.numpy_function``, which hands CPU tensors to
NumPy without a copy and runs inside ``tf.function``, but not under XLA and
not in a SavedModel.  Neither runs under XLA (``XLA_COMPATIBLE``): the layers
report ``supports_jit = False`` on this backend (so ``jit_compile="auto"``
turns XLA off for the model) and :func:`usable` sends calls traced for XLA or
on a GPU to Keras ops; calls traced for a SavedModel go to the native ops, or
to Keras ops (:data:`keras_plugin._engine.OPS`) where those do not serve.
"""

from __future__ import annotations

import tensorflow as tf

from keras_plugin import _engine, _kernels, _tf_native

__all__ = ["usable", "train", "given", "grad", "moments", "affine", "XLA_COMPATIBLE"]

XLA_COMPATIBLE = False   # neither tf.numpy_function nor the native ops have XLA kernels

_FLOATS = (tf.float16, tf.float32, tf.float64)


def _in_xla_or_export():
    try:
        from tensorflow.python.ops import control_flow_util
        from tensorflow.python.saved_model import save_context
    except ImportError:  # pragma: no cover - TF internals moved
        return True
    if save_context.in_save_context():
        return True
    graph = tf.compat.v1.get_default_graph()
    if control_flow_util.GraphOrParentsInXlaContext(graph):
        return True
    # tf.function(jit_compile=True) marks the function graph it traces.
    while graph is not None:
        if getattr(graph, "_xla_compile", False) or getattr(graph, "_jit_compile", False):
            return True
        graph = getattr(graph, "outer_graph", None)
    return False


def usable(x):
    """Whether the kernels can serve this tensor here (CPU, no XLA; export only on the
    native ops)."""
    if x.dtype not in _FLOATS:
        return False
    device = getattr(x, "device", "") or ""
    if "GPU" in device.upper() or "TPU" in device.upper():
        return False
    if not device and tf.config.list_logical_devices("GPU"):
        return False  # placement unknown in a graph: let TF place its own ops
    if not tf.executing_eagerly() and _in_xla_or_export():
        # A SavedModel can hold the native ops (not tf.numpy_function).
        return _in_export_only() and _tf_native.available() and (
            x.dtype != tf.float16 or _tf_native.has_float16())
    return True


def _in_export_only():
    """Traced for a SavedModel, not for XLA (the native ops serve; the rest: Keras ops)."""
    from tensorflow.python.saved_model import save_context

    return save_context.in_save_context() and not _tf_native._in_xla()


def _act_args(act):
    return (None, 0.0) if act is None else act


def _stat_tf_dtype(x):
    return tf.float32 if x.dtype == tf.float16 else x.dtype


def _name(base, act):
    return base if act is None else base + "_act"


# ------------------------------------------------------------ the kernel calls
def _call_train(x, scale, offset, axes, eps, act):
    sd = _stat_tf_dtype(x)

    def fn(x_, s_, o_):
        return _kernels.train(x_, s_, o_, axes, eps, act)

    y, mean, var = tf.numpy_function(fn, [x, scale, offset], [x.dtype, sd, sd], stateful=False,
                                     name=_name("ckbn_batch_norm_train", act))
    y.set_shape(x.shape)
    mean.set_shape(scale.shape)
    var.set_shape(scale.shape)
    return y, mean, var


def _call_given(x, scale, offset, mean, var, axes, eps, act):
    def fn(x_, s_, o_, m_, v_):
        return _kernels.given(x_, s_, o_, m_, v_, axes, eps, act)

    y = tf.numpy_function(fn, [x, scale, offset, mean, var], x.dtype, stateful=False,
                          name=_name("ckbn_batch_norm_apply", act))
    y.set_shape(x.shape)
    return y


def grad(dy, x, scale, mean, var, axes, eps, training, act=None, offset=None):
    """``dx, dscale, doffset`` (see the module docstring); ``offset`` only with ``act``."""
    if _tf_native.usable(x, axes):
        if offset is None:
            offset = tf.zeros_like(scale)  # read only with an activation
        # a plain tuple (the op's outputs are a namedtuple): tf.cond compares structures
        return tuple(_tf_native.grad(dy, x, scale, offset, mean, var, axes, eps, training,
                                     *_act_args(act)))
    sd = _stat_tf_dtype(x)
    args = [dy, x, scale, mean, var] + ([offset] if act is not None else [])

    def fn(dy_, x_, s_, m_, v_, *o_):
        return _kernels.grad(dy_, x_, s_, m_, v_, axes, eps, training, act,
                             o_[0] if o_ else None)

    dx, ds, do = tf.numpy_function(fn, args, [x.dtype, sd, sd], stateful=False,
                                   name=_name("ckbn_batch_norm_grad", act))
    dx.set_shape(x.shape)
    ds.set_shape(scale.shape)
    do.set_shape(scale.shape)
    return dx, ds, do


def moments(x, axes):
    """Flat batch mean and biased variance (no gradient)."""
    if _tf_native.usable(x, axes):
        return tuple(_tf_native.moments(x, axes))
    if _in_export_only():
        return _engine.OPS.moments(tf.stop_gradient(x), axes)
    sd = _stat_tf_dtype(x)

    def fn(x_):
        return _kernels.moments(x_, axes)

    mean, var = tf.numpy_function(fn, [tf.stop_gradient(x)], [sd, sd], stateful=False,
                                  name="ckbn_moments")
    return mean, var


def _call_affine(x, scale, offset, axes):
    def fn(x_, s_, o_):
        return _kernels.affine(x_, s_, o_, axes)

    y = tf.numpy_function(fn, [x, scale, offset], x.dtype, stateful=False,
                          name="ckbn_channel_affine")
    y.set_shape(x.shape)
    return y


# ------------------------------------------------------- the differentiable ops
def _tensors(*args):
    # Variables (the layer's weights) are read here: tf.custom_gradient takes tensors.
    return [tf.convert_to_tensor(a) for a in args]


def train(x, scale, offset, axes, eps, act=None):
    """``y, mean, var`` with the batch statistics; differentiable in x, scale, offset."""
    if _tf_native.usable(x, axes):  # gradients registered with the op
        return tuple(_tf_native.train(x, scale, offset, axes, eps, *_act_args(act)))
    if _in_export_only():
        return _engine.OPS.train(x, scale, offset, axes, eps, act)
    axes = tuple(axes)
    scale, offset = _tensors(scale, offset)

    @tf.custom_gradient
    def op(x, scale, offset):
        y, mean, var = _call_train(x, scale, offset, axes, eps, act)

        def backward(dy, dmean, dvar):  # the statistics feed only non-differentiable updates
            return grad(dy, x, scale, mean, var, axes, eps, True, act, offset)

        return (y, mean, var), backward

    return op(x, scale, offset)


def given(x, scale, offset, mean, var, axes, eps, train_grad=False, act=None):
    """``y`` normalized with the given statistics (see the module docstring)."""
    if _tf_native.usable(x, axes):  # no gradient for mean and var, as below
        return _tf_native.given(x, scale, offset, mean, var, axes, eps, train_grad,
                                *_act_args(act))
    if _in_export_only():
        return _engine.OPS.given(x, scale, offset, tf.stop_gradient(mean),
                                 tf.stop_gradient(var), axes, eps, train_grad, act)
    axes = tuple(axes)
    scale, offset = _tensors(scale, offset)
    mean = tf.stop_gradient(mean)
    var = tf.stop_gradient(var)

    @tf.custom_gradient
    def op(x, scale, offset):
        y = _call_given(x, scale, offset, mean, var, axes, eps, act)

        def backward(dy):
            return grad(dy, x, scale, mean, var, axes, eps, train_grad, act, offset)

        return y, backward

    return op(x, scale, offset)


def affine(x, scale, offset, axes):
    """``x * scale + offset`` per channel on the kernel; gradients in TensorFlow ops
    (on the native ops: the apply op with mean 0, variance 1 and epsilon 0, whose
    ``inv`` is exactly ``scale``, and its registered gradient)."""
    if _tf_native.usable(x, axes):
        return _tf_native.given(x, scale, offset, tf.zeros_like(scale), tf.ones_like(scale),
                                axes, 0.0)
    axes = tuple(axes)
    if _in_export_only():
        shape = [tf.shape(x)[i] if i in axes else 1 for i in range(len(x.shape))]
        return x * tf.reshape(scale, shape) + tf.reshape(offset, shape)
    scale, offset = _tensors(scale, offset)

    @tf.custom_gradient
    def op(x, scale, offset):
        y = _call_affine(x, scale, offset, axes)

        def backward(dy):
            ndim = len(x.shape)
            dims = tf.shape(x)
            shape = [dims[i] if i in axes else 1 for i in range(ndim)]
            reduce = [i for i in range(ndim) if i not in axes]
            dyf = tf.cast(dy, scale.dtype)
            dx = tf.cast(dyf * tf.reshape(scale, shape), x.dtype)
            ds = tf.reshape(tf.reduce_sum(dyf * tf.cast(x, scale.dtype), reduce), [-1])
            do = tf.reshape(tf.reduce_sum(dyf, reduce), [-1])
            return dx, ds, do

        return y, backward

    return op(x, scale, offset)

