"""The batch normalization layers' computation, written once over an op table.

An *engine* is an op table: a module or object with

* ``train(x, scale, offset, axes, eps, act=None) -> (y, mean, var)`` -- the
  batch statistics (flat, biased variance) and ``y = act(BN(x))``;
* ``given(x, scale, offset, mean, var, axes, eps, train_grad=False, act=None) -> y``
  -- normalized with given statistics; ``train_grad`` says they are x's own
  batch statistics (renorm), so gradients flow as in training;
* ``moments(x, axes) -> (mean, var)`` -- without gradient;

on flat ``(n,)`` per-channel tensors, ``axes`` the channel axes of ``x`` and
``act`` None or ``(name, negative_slope)`` (``keras_plugin._activation``).
The kernel engines are the backend modules ``_tf``, ``_torch``, ``_jax`` and
``_numpy`` (ckbn's kernels, custom gradients; they also have ``grad`` and
``affine``); :data:`OPS` computes the same in ``keras.ops`` (autodiff), for
what the kernels do not serve.  An engine may also have
``layer_forward(layer, x, training, act) -> y or None``, a shortcut
:func:`forward` tries first (``_torch``'s common case); None means "not this
call" and :func:`forward` computes it itself.  An engine may also have
``layer_infer(layer, x) -> y or None``: the framework's own fused op for an
inference call the dispatch rule leaves to Keras's code (``_torch``'s
``torch.addcmul`` or ``torch.nn.functional.batch_norm``); the layer falls back
to Keras's code on None.

Public functions: :func:`kernel_impl` chooses the engine for a tensor (or
None); :func:`route` does the same for a layer call, with the decision
cached in the layer's :class:`Route`; :func:`forward` computes a layer's output with an engine -- ghost
batches, renorm, adjustment, the activation and the moving-average updates
(:func:`update_moving`, Keras 3's formulas) on top of the engine's ops;
:func:`supports_jit` says whether the kernel engine of the current backend can
be compiled by XLA; :func:`kernels_disabled` / :func:`kernels_enabled` switch
the kernels off for a block (e.g. ``model.export``).
"""

from __future__ import annotations
from typing import Iterator

import contextlib
import contextvars
import importlib
import math

import keras
from keras import ops

from keras_plugin import _activation, _policy

__all__ = ["kernels_disabled", "kernels_enabled", "kernels_for_backend", "backend_module",
           "kernel_impl", "route", "Route", "supports_jit", "keras_synchronizes", "OPS",
           "forward", "update_moving"]

_BACKEND_MODULES = {
    "tensorflow": "keras_plugin._tf",
    "torch": "keras_plugin._torch",
    "jax": "keras_plugin._jax",
    "numpy": "keras_plugin._numpy",
}
_enabled = contextvars.ContextVar("ckbn_keras_kernels", default=True)


@contextlib.contextmanager
def kernels_disabled() -> Iterator[None]:
    """Within this block, layers use Keras ops (e.g. for ``model.export``)."""
    token = _enabled.set(False)
    try:
        yield
    finally:
        _enabled.reset(token)


def kernels_enabled() -> bool:
    """Whether the layers may use the kernels here (False inside :func:`kernels_disabled`)."""
    return _enabled.get()


def kernels_for_backend():
    """The Keras backend's name if ckbn has kernels for it, else None."""
    name = keras.backend.backend()
    return name if name in _BACKEND_MODULES else None


def backend_module():
    """The kernel engine (backend module) of the Keras backend, or None."""
    name = kernels_for_backend()
    return None if name is None else importlib.import_module(_BACKEND_MODULES[name])


def supports_jit():
    """False where the backend's kernel ops cannot be XLA-compiled (the layers then
    set ``supports_jit = False``, so ``jit_compile="auto"`` keeps the model off XLA)."""
    mod = backend_module()
    return mod is None or bool(mod.XLA_COMPATIBLE)


def keras_synchronizes():
    """Whether Keras's own ``BatchNormalization`` takes ``synchronized=True`` on this
    backend (TensorFlow only; ``keras_plugin._sync`` serves the others)."""
    return keras.backend.backend() == "tensorflow"


def kernel_impl(x, mode=None):
    """The kernel engine for tensor ``x``, or None where the kernels cannot serve.

    ``mode`` (``"train"`` or ``"infer"``) also applies the measured dispatch
    rule, :func:`keras_plugin._policy.use_kernels`: None where the
    framework's own ops are faster for a call of this size.
    """
    if not _enabled.get():
        return None
    mod = backend_module()
    if mod is None or not mod.usable(x):
        return None
    if mode is not None and not _policy.use_kernels(
            kernels_for_backend(), mode, _policy.n_elements(x.shape),
            keras.backend.standardize_dtype(x.dtype)):
        return None
    return mod


class Route:
    """One layer's cached dispatch decision (:func:`route`).

    Holds the key of the last call it decided and the decision, as one tuple
    (so a thread reads a key and its decision together); a layer in a model
    sees one input shape and mode, so one entry suffices, and a call with
    another key decides again.
    """

    __slots__ = ("entry",)

    def __init__(self) -> None:
        self.entry = (None, None, False, None)   # key, engine, bf16, infer hook


_FLOAT_DTYPES = ("float16", "float32", "float64")


def route(cache, x, mode):
    """``(x, mod, infer)`` for a layer call on ``x`` in ``mode`` (``"train"``/``"infer"``).

    ``mod`` is the backend's kernel engine where the measured rule
    (:func:`keras_plugin._policy.use_kernels`) gives this call to the kernels
    and the engine accepts the tensor, else None: then Keras's code serves,
    and ``infer`` is the backend module's ``layer_infer`` where it has one
    (the framework's own inference op, for an inference call with the kernels
    enabled), else None.
    A bfloat16 ``x`` comes back cast to float32 (computed in float32, as the
    stock layer does), and the rule is applied to that.  Equal to
    :func:`kernel_impl`, with the rule's verdict cached in ``cache`` (a
    :class:`Route`) under the call's mode, shape and dtype, whether the kernels
    are enabled here (:func:`kernels_disabled`), the backend and the crossover
    in force (``_policy.set_min_elements``): a change of any of them decides
    again.  Whether the engine accepts this very tensor (``usable``: device,
    tracing, export) is asked on every call the rule gives to the kernels; it
    is not cached.
    """
    enabled = _enabled.get()
    backend = kernels_for_backend()
    threshold = _policy.min_elements(backend, mode) if backend is not None else None
    key = (mode, tuple(x.shape), x.dtype, enabled, backend, threshold)
    entry = cache.entry
    if entry[0] != key:
        dtype = keras.backend.standardize_dtype(x.dtype)
        bf16 = dtype == "bfloat16"
        if bf16:
            dtype = "float32"
        use = (enabled and threshold is not None and dtype in _FLOAT_DTYPES
               and _policy.use_kernels(backend, mode, _policy.n_elements(x.shape), dtype))
        mod = importlib.import_module(_BACKEND_MODULES[backend]) if backend else None
        infer = getattr(mod, "layer_infer", None) if (
            enabled and mode == "infer" and mod is not None) else None
        entry = cache.entry = (key, mod if use else None, bf16, infer)
    _, mod, bf16, infer = entry
    if bf16:
        x = ops.cast(x, "float32")
    if mod is not None and not mod.usable(x):
        mod = None
    return x, mod, infer


_FAST_CALL = []   # [the backend's layer_call or None], filled on the first call


def fast_call(layer, *args, **kwargs):
    """``__call__`` of ckbn's Keras layers: the backend's shortcut around Keras's
    ``Layer.__call__`` for the common eager call (``keras_plugin._torch.layer_call``
    on PyTorch, where every training step runs eagerly), else Keras's own."""
    if not _FAST_CALL:
        fn = None
        if keras.backend.backend() == "torch":
            fn = importlib.import_module(_BACKEND_MODULES["torch"]).layer_call
        _FAST_CALL.append(fn)
    fn = _FAST_CALL[0]
    if fn is not None:
        y = fn(layer, args, kwargs)
        if y is not None:
            return y
    return keras.layers.Layer.__call__(layer, *args, **kwargs)


def _keepdims_shape(x, axes):
    shape = []
    for i, n in enumerate(x.shape):
        if i in axes:
            shape.append(-1 if n is None else n)
        else:
            shape.append(1)
    return tuple(shape)


class _Ops:
    """The engine in ``keras.ops``; gradients by autodiff."""

    @staticmethod
    def moments(x, axes):
        reduce_axes = [i for i in range(len(x.shape)) if i not in axes]
        mean, var = ops.moments(x, axes=reduce_axes, keepdims=True)
        return ops.reshape(mean, (-1,)), ops.reshape(var, (-1,))

    @staticmethod
    def given(x, scale, offset, mean, var, axes, eps, train_grad=False, act=None):
        shape = _keepdims_shape(x, axes)
        # tf.nn.batch_normalization's arrangement: x * inv + (offset - mean * inv).
        inv = ops.rsqrt(var + eps) * scale
        shift = offset - mean * inv
        return _activation.apply(x * ops.reshape(inv, shape) + ops.reshape(shift, shape), act)

    @classmethod
    def train(cls, x, scale, offset, axes, eps, act=None):
        mean, var = cls.moments(x, axes)
        return cls.given(x, scale, offset, mean, var, axes, eps, True, act), mean, var


OPS = _Ops()


def _is16(dtype):
    return keras.backend.standardize_dtype(dtype) == "float16"


def forward(layer, inputs, training, impl, act=None):
    """``act(BN(inputs))`` for ``layer`` on engine ``impl``; in training it also
    assigns the moving statistics (:func:`update_moving`).

    ``layer`` is a built ``keras_plugin.BatchNormalization``; ``training``
    a Python bool.  float16 inputs go to a kernel engine as they are (the
    kernels compute in float32); the output has the layer's compute dtype.
    """
    fast = getattr(impl, "layer_forward", None)
    if fast is not None:   # an engine's shortcut for its common case (keras_plugin._torch)
        y = fast(layer, inputs, training, act)
        if y is not None:
            return y
    compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
    x = inputs
    if not (impl is not OPS and _is16(x.dtype)):
        x = _cast(x, compute_dtype)
    sd = "float32" if _is16(x.dtype) else keras.backend.standardize_dtype(x.dtype)
    n = layer._n_channels
    axes = layer._channel_axes
    eps = layer.epsilon

    def flat(v):
        return _flat(layer, v, sd)

    gamma = flat(layer.gamma) if layer.scale else ops.ones((n,), dtype=sd)
    beta = flat(layer.beta) if layer.center else ops.zeros((n,), dtype=sd)
    kw = {} if act is None else {"act": act}   # (keras_plugin._sync's engines take no act)

    if not training:
        y = impl.given(x, gamma, beta, flat(layer.moving_mean), flat(layer.moving_variance),
                       axes, eps, False, **kw)
        return _cast(y, layer.compute_dtype)

    vbs = layer.virtual_batch_size
    if vbs is not None:
        batch = x.shape[0]
        if isinstance(batch, int) and batch % vbs:
            raise ValueError(f"virtual_batch_size={vbs} does not divide the training batch "
                             f"of {batch} samples (input shape {tuple(x.shape)})")
        shape = ops.shape(x)
        xr = ops.reshape(x, (vbs, -1) + tuple(shape[1:]))
        axes_r = (1,) + tuple(a + 1 for a in axes)
        groups = ops.shape(xr)[1]

        def rep(v):
            return ops.tile(v, [groups])
    else:
        xr, axes_r = x, axes

        def rep(v):
            return v

    plain = not layer.renorm and layer.adjustment is None
    if plain:
        y, mean, var = impl.train(xr, rep(gamma), rep(beta), axes_r, eps, **kw)
    else:
        mean, var = impl.moments(xr, axes_r)
    if vbs is not None:
        new_mean = ops.mean(ops.reshape(mean, (-1, n)), axis=0)
        new_var = ops.mean(ops.reshape(var, (-1, n)), axis=0)
    else:
        new_mean, new_var = mean, var

    if not plain:
        s, o = gamma, beta
        if layer.adjustment is not None:
            adj_scale, adj_bias = layer.adjustment(ops.shape(xr))
            kshape = tuple(xr.shape[i] if i in axes_r else 1 for i in range(len(xr.shape)))
            adj_scale = ops.reshape(ops.broadcast_to(ops.cast(adj_scale, sd), kshape), (n,))
            adj_bias = ops.reshape(ops.broadcast_to(ops.cast(adj_bias, sd), kshape), (n,))
            s, o = adj_scale * s, adj_bias * s + o
        if layer.renorm:
            r, d = _renorm_correction(layer, new_mean, new_var, sd)
            s, o = r * s, d * s + o
        y = impl.given(xr, rep(s), rep(o), mean, var, axes_r, eps, True, **kw)

    count = None
    if layer.fused:
        count = math.prod(xr.shape) if all(isinstance(d, int) for d in xr.shape) \
            else ops.size(xr)
        count = count // n
    update_moving(layer, new_mean, new_var, count)
    if vbs is not None:
        y = ops.reshape(y, shape)
    return _cast(y, layer.compute_dtype)


def _renorm_correction(layer, mean, var, sd):
    """r and d of batch renormalization (Keras 3.14+ / tf.keras), without gradient."""
    n = layer._n_channels
    stddev = ops.sqrt(var + layer.epsilon)
    renorm_mean = ops.reshape(ops.cast(layer.renorm_mean, sd), (n,))
    renorm_stddev = ops.maximum(ops.reshape(ops.cast(layer.renorm_stddev, sd), (n,)),
                                ops.sqrt(ops.cast(layer.epsilon, sd)))
    r = stddev / renorm_stddev
    d = (mean - renorm_mean) / renorm_stddev
    clipping = layer.renorm_clipping or {}
    if clipping.get("rmin") is not None:
        r = ops.maximum(r, clipping["rmin"])
    if clipping.get("rmax") is not None:
        r = ops.minimum(r, clipping["rmax"])
    if clipping.get("dmax") is not None:
        d = ops.clip(d, -clipping["dmax"], clipping["dmax"])
    return ops.stop_gradient(r), ops.stop_gradient(d)


def _cast(x, dtype):
    """``ops.cast``, skipped where ``x`` has that dtype already (it costs a call per op
    in eager mode)."""
    if keras.backend.standardize_dtype(x.dtype) == dtype:
        return x
    return ops.cast(x, dtype)


def _flat(layer, v, dtype):
    """Variable ``v`` of ``layer`` as a flat ``(n,)`` tensor of ``dtype``."""
    n = layer._n_channels
    if tuple(layer._param_shape) == (n,):
        return _cast(ops.convert_to_tensor(v), dtype)
    return ops.reshape(_cast(ops.convert_to_tensor(v), dtype), (n,))


def update_moving(layer, mean, var, count=None):
    """Assign ``layer``'s moving statistics from a batch's flat ``mean`` and biased ``var``.

    ``moving = moving * momentum + batch * (1 - momentum)`` (Keras 3).  With
    renorm also ``renorm_mean``/``renorm_stddev``/``moving_stddev`` (and
    ``moving_variance = moving_stddev**2 - epsilon``, floored at 0); with
    ``fused=True`` the variance is first Bessel-corrected with ``count``, the
    number of values per channel (as ``tf.keras``'s fused kernel; required
    then).  No gradient flows into the statistics.
    """
    m = layer.momentum
    sd = keras.backend.standardize_dtype(mean.dtype)
    mean = ops.stop_gradient(mean)
    var = ops.stop_gradient(var)
    flat_params = tuple(layer._param_shape) == (layer._n_channels,)

    def cur(v):
        return _flat(layer, v, sd)

    def assign(v, value):
        if not flat_params:
            value = ops.reshape(value, layer._param_shape)
        v.assign(_cast(value, v.dtype))

    if layer.renorm:
        rm = layer.renorm_momentum
        stddev = ops.sqrt(var + layer.epsilon)
        assign(layer.renorm_mean, cur(layer.renorm_mean) * rm + mean * (1.0 - rm))
        assign(layer.renorm_stddev, cur(layer.renorm_stddev) * rm + stddev * (1.0 - rm))
        assign(layer.moving_mean, cur(layer.moving_mean) * m + mean * (1.0 - m))
        new_stddev = cur(layer.moving_stddev) * m + stddev * (1.0 - m)
        assign(layer.moving_stddev, new_stddev)
        assign(layer.moving_variance, ops.relu(new_stddev * new_stddev - layer.epsilon))
        return
    if layer.fused:
        count = ops.cast(count, sd)
        var = var * (count / ops.maximum(count - 1.0, 1.0))
    assign(layer.moving_mean, cur(layer.moving_mean) * m + mean * (1.0 - m))
    assign(layer.moving_variance, cur(layer.moving_variance) * m + var * (1.0 - m))
