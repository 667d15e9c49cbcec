"""TensorFlow backend: ckbn kernels as ``tf.numpy_function`` ops with custom gradients.

``tf.numpy_function`` hands CPU tensors to NumPy without a copy and runs inside
``tf.function``, but not under XLA and not in a SavedModel.  The layer therefore
reports ``supports_jit = False`` on this backend (so ``jit_compile="auto"`` turns
XLA off for the model) and falls back to Keras ops when the call is traced for
XLA, for a SavedModel, or on a GPU.
"""

from __future__ import annotations

import tensorflow as tf

from keras_plugin import _engine, _kernels, _tf_native

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
    """Whether the kernels can serve this tensor here (CPU, no XLA, no export)."""
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
    from tensorflow.python.saved_model import save_context

    return save_context.in_save_context() and not _tf_native._in_xla()


def _stat_tf_dtype(x):
    return tf.float32 if x.dtype == tf.float16 else x.dtype


def _grad_op(dy, x, scale, mean, var, axes, eps, training):
    sd = _stat_tf_dtype(x)

    def fn(dy_, x_, s_, m_, v_):
        return _kernels.grad(dy_, x_, s_, m_, v_, axes, eps, training)

    dx, ds, do = tf.numpy_function(fn, [dy, x, scale, mean, var], [x.dtype, sd, sd],
                                   stateful=False, name="ckbn_batch_norm_grad")
    dx.set_shape(x.shape)
    ds.set_shape(scale.shape)
    do.set_shape(scale.shape)
    return dx, ds, do


def train(x, scale, offset, axes, eps):
    """``y, mean, var`` (flat biased batch statistics); differentiable in x, scale, offset."""
    if _tf_native.usable(x, axes):
        return _tf_native.train(x, scale, offset, axes, eps)
    if _in_export_only():
        return _engine.OPS.train(x, scale, offset, axes, eps)
    sd = _stat_tf_dtype(x)

    @tf.custom_gradient
    def op(x, scale, offset):
        def fn(x_, s_, o_):
            return _kernels.train(x_, s_, o_, axes, eps)

        y, mean, var = tf.numpy_function(fn, [x, scale, offset], [x.dtype, sd, sd],
                                         stateful=False, name="ckbn_batch_norm_train")
        y.set_shape(x.shape)
        mean.set_shape(scale.shape)
        var.set_shape(scale.shape)

        def grad(dy, dmean, dvar):  # the statistics feed only non-differentiable updates
            return _grad_op(dy, x, scale, mean, var, axes, eps, True)

        return (y, mean, var), grad

    return op(x, scale, offset)


def given(x, scale, offset, mean, var, axes, eps, train_grad):
    """``y`` normalized with the given statistics.

    ``train_grad`` says that mean/var are x's own batch statistics (renorm), so
    the gradient is the training one; otherwise it is the inference one.
    """
    if _tf_native.usable(x, axes):
        return _tf_native.given(x, scale, offset, mean, var, axes, eps, train_grad)
    if _in_export_only():
        return _engine.OPS.given(x, scale, offset, mean, var, axes, eps, train_grad)

    @tf.custom_gradient
    def op(x, scale, offset, mean, var):
        def fn(x_, s_, o_, m_, v_):
            return _kernels.given(x_, s_, o_, m_, v_, axes, eps)

        y = tf.numpy_function(fn, [x, scale, offset, mean, var], x.dtype, stateful=False,
                              name="ckbn_batch_norm_apply")
        y.set_shape(x.shape)

        def grad(dy):
            dx, ds, do = _grad_op(dy, x, scale, mean, var, axes, eps, train_grad)
            return dx, ds, do, None, None

        return y, grad

    return op(x, scale, offset, mean, var)


def moments(x, axes):
    """Flat batch mean and biased variance (no gradient)."""
    if _tf_native.usable(x, axes):
        return _tf_native.moments(x, axes)
    if _in_export_only():
        return _engine.OPS.moments(tf.stop_gradient(x), axes)
    sd = _stat_tf_dtype(x)

    def fn(x_):
        return _kernels.moments(x_, axes)

    mean, var = tf.numpy_function(fn, [tf.stop_gradient(x)], [sd, sd], stateful=False,
                                  name="ckbn_moments")
    return mean, var


# ---------------------------------------------------------------- folding (issue 14)
def affine(x, scale, offset, axes):
    """``x * scale + offset`` per channel on the kernel; gradients in TensorFlow ops."""
    if _tf_native.usable(x, axes):  # BN with mean 0, variance 1, epsilon 0: inv == scale
        return _tf_native.given(x, scale, offset, tf.zeros_like(scale), tf.ones_like(scale),
                                axes, 0.0)
    axes = tuple(axes)
    if _in_export_only():
        shape = [tf.shape(x)[i] if i in axes else 1 for i in range(len(x.shape))]
        return x * tf.reshape(scale, shape) + tf.reshape(offset, shape)

    @tf.custom_gradient
    def op(x, scale, offset):
        def fn(x_, s_, o_):
            return _kernels.affine(x_, s_, o_, axes)

        y = tf.numpy_function(fn, [x, scale, offset], x.dtype, stateful=False,
                              name="ckbn_channel_affine")
        y.set_shape(x.shape)

        def grad(dy):
            ndim = len(x.shape)
            dims = tf.shape(x)
            shape = [dims[i] if i in axes else 1 for i in range(ndim)]
            reduce = [i for i in range(ndim) if i not in axes]
            dyf = tf.cast(dy, scale.dtype)
            dx = tf.cast(dyf * tf.reshape(scale, shape), x.dtype)
            ds = tf.reshape(tf.reduce_sum(dyf * tf.cast(x, scale.dtype), reduce), [-1])
            do = tf.reshape(tf.reduce_sum(dyf, reduce), [-1])
            return dx, ds, do

        return y, grad

    return op(x, scale, offset)


# ---------------------------------------------------- fused activation (issue 14)
def _grad_act_op(dy, x, scale, offset, mean, var, axes, eps, training, activation, slope):
    sd = _stat_tf_dtype(x)

    def fn(dy_, x_, s_, o_, m_, v_):
        return _kernels.grad_act(dy_, x_, s_, o_, m_, v_, axes, eps, training, activation,
                                 slope)

    dx, ds, do = tf.numpy_function(fn, [dy, x, scale, offset, mean, var], [x.dtype, sd, sd],
                                   stateful=False, name="ckbn_batch_norm_act_grad")
    dx.set_shape(x.shape)
    ds.set_shape(scale.shape)
    do.set_shape(scale.shape)
    return dx, ds, do


def train_act(x, scale, offset, axes, eps, activation, slope):
    """``activation(BN(x))``, batch statistics; the backward masks dy in the dx pass."""
    if _tf_native.usable(x, axes):
        return _tf_native.train(x, scale, offset, axes, eps, activation, slope)
    sd = _stat_tf_dtype(x)

    @tf.custom_gradient
    def op(x, scale, offset):
        def fn(x_, s_, o_):
            return _kernels.train_act(x_, s_, o_, axes, eps, activation, slope)

        y, mean, var = tf.numpy_function(fn, [x, scale, offset], [x.dtype, sd, sd],
                                         stateful=False, name="ckbn_batch_norm_act_train")
        y.set_shape(x.shape)
        mean.set_shape(scale.shape)
        var.set_shape(scale.shape)

        def grad(dy, dmean, dvar):
            return _grad_act_op(dy, x, scale, offset, mean, var, axes, eps, True, activation,
                                slope)

        return (y, mean, var), grad

    return op(x, scale, offset)


def given_act(x, scale, offset, mean, var, axes, eps, activation, slope):
    """``activation(BN(x))`` with given (moving) statistics."""
    if _tf_native.usable(x, axes):
        return _tf_native.given(x, scale, offset, mean, var, axes, eps, False, activation, slope)

    @tf.custom_gradient
    def op(x, scale, offset, mean, var):
        def fn(x_, s_, o_, m_, v_):
            return _kernels.given_act(x_, s_, o_, m_, v_, axes, eps, activation, slope)

        y = tf.numpy_function(fn, [x, scale, offset, mean, var], x.dtype, stateful=False,
                              name="ckbn_batch_norm_act_apply")
        y.set_shape(x.shape)

        def grad(dy):
            dx, ds, do = _grad_act_op(dy, x, scale, offset, mean, var, axes, eps, False,
                                      activation, slope)
            return dx, ds, do, None, None

        return y, grad

    return op(x, scale, offset, mean, var)
