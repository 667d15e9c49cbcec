"""PyTorch backend: ckbn kernels as ``torch.library`` custom ops with autograd.

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
* ``affine(x, scale, offset, axes) -> y``: differentiable (torch-op gradient).

How they run:

* eager mode, where the native library builds: ``train`` and ``given`` are the
  compiled operators ``torch.ops.ckbn_native.bn_train``/``bn_given``
  (:mod:`keras_plugin._torch_native`): one call from Python into C++, which
  records a C++ autograd node whose backward calls the kernels, no NumPy;
* eager mode without it (no compiler, ``CKBN_NATIVE=0``, channel axes that
  need a transpose, or :func:`use_native` off): the ``torch.autograd.Function``
  classes below, on NumPy views of the tensors (``Tensor.numpy()`` in,
  ``torch.from_numpy`` out); the same values bit for bit;
* under ``torch.compile``/``torch.export``: the custom ops ``ckbn::bn_train``,
  ``ckbn::bn_given``, ``ckbn::bn_grad``, ``ckbn::bn_moments`` and
  ``ckbn::channel_affine``, whose activation travels as two arguments
  (``act: str?``, ``slope: float``), with fake (meta) implementations so
  ``torch.compile`` can trace around them and their backward registered with
  ``torch.library.register_autograd``.  (Eager calls skip them: each goes
  through the dispatcher twice per pass; ``benchmarks/profile_torch_ops.py``.)

CUDA and other devices fall back to Keras ops.

Per-call shortcuts in eager mode (same kernels, same results bit for bit;
``tests/torch_path_cases.py``): :func:`layer_call` serves the layer's
``__call__`` for the common eager call without Keras's ``Layer.__call__``
bookkeeping; ``train`` and ``given`` call the kernels
without an autograd Function when no input needs a gradient (inference under
``torch.no_grad``); :func:`layer_forward`, which ``_engine.forward`` tries
first, computes the layer's common case with the moving statistics updated in
place instead of through Keras ops and ``Variable.assign``
(``benchmarks/RESULTS-keras-torch.md``); :func:`layer_infer` runs the
inference calls the dispatch rule leaves to Keras in one PyTorch op
(``addcmul`` channels last, ``batch_norm`` channels first: one pass instead
of Keras's three; equal to float rounding).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import keras
import numpy as np
import torch

from keras_plugin import _kernels, _policy, _torch_native

__all__ = ["usable", "train", "given", "grad", "moments", "affine", "use_native",
           "use_fast_call", "layer_call", "fast_call_count", "XLA_COMPATIBLE"]

XLA_COMPATIBLE = True    # no XLA on this backend: nothing for Keras to turn off

_FLOATS = (torch.float16, torch.float32, torch.float64)


def usable(x):
    if not isinstance(x, torch.Tensor) or x.device.type != "cpu" or x.dtype not in _FLOATS:
        return False
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and getattr(compiler, "is_exporting", lambda: False)():
        return False  # torch.export keeps Keras ops, which it can serialize
    return True


def _np(t):
    return t.detach().numpy()  # CPU tensors: a view of the same memory


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def _stat_dtype(x):
    return torch.float32 if x.dtype == torch.float16 else x.dtype


def _act(name, slope):
    return None if name is None else (name, slope)


def _like_x_and_stats(x, scale):
    sd = _stat_dtype(x)
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            scale.new_empty(scale.shape, dtype=sd), scale.new_empty(scale.shape, dtype=sd))


# ------------------------------------------------------------------ the ops
@torch.library.custom_op("ckbn::bn_train", mutates_args=())
def _bn_train(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, axes: List[int],
              eps: float, act: Optional[str] = None,
              slope: float = 0.0) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    y, mean, var = _kernels.train(_np(x), _np(scale), _np(offset), axes, eps, _act(act, slope))
    return _t(y), _t(mean), _t(var)


@_bn_train.register_fake
def _(x, scale, offset, axes, eps, act=None, slope=0.0):
    return _like_x_and_stats(x, scale)


@torch.library.custom_op("ckbn::bn_given", mutates_args=())
def _bn_given(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, mean: torch.Tensor,
              var: torch.Tensor, axes: List[int], eps: float, train_grad: bool = False,
              act: Optional[str] = None, slope: float = 0.0) -> torch.Tensor:
    return _t(_kernels.given(_np(x), _np(scale), _np(offset), _np(mean), _np(var), axes, eps,
                             _act(act, slope)))


@_bn_given.register_fake
def _(x, scale, offset, mean, var, axes, eps, train_grad=False, act=None, slope=0.0):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("ckbn::bn_grad", mutates_args=())
def _bn_grad(dy: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, offset: Optional[torch.Tensor],
             mean: torch.Tensor, var: torch.Tensor, axes: List[int], eps: float, training: bool,
             act: Optional[str] = None,
             slope: float = 0.0) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dx, ds, do = _kernels.grad(_np(dy), _np(x), _np(scale), _np(mean), _np(var), axes, eps,
                               training, _act(act, slope),
                               None if offset is None else _np(offset))
    return _t(dx), _t(ds), _t(do)


@_bn_grad.register_fake
def _(dy, x, scale, offset, mean, var, axes, eps, training, act=None, slope=0.0):
    return _like_x_and_stats(x, scale)


@torch.library.custom_op("ckbn::bn_moments", mutates_args=())
def _bn_moments(x: torch.Tensor, axes: List[int], n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    mean, var = _kernels.moments(_np(x), axes)
    return _t(mean), _t(var)


@_bn_moments.register_fake
def _(x, axes, n):
    sd = _stat_dtype(x)
    return x.new_empty((n,), dtype=sd), x.new_empty((n,), dtype=sd)


@torch.library.custom_op("ckbn::channel_affine", mutates_args=())
def _channel_affine(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor,
                    axes: List[int]) -> torch.Tensor:
    return _t(_kernels.affine(_np(x), _np(scale), _np(offset), axes))


@_channel_affine.register_fake
def _(x, scale, offset, axes):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


# ----------------------------------------------------------------- autograd
def _train_setup(ctx, inputs, output):
    x, scale, offset, axes, eps, act, slope = inputs
    _, mean, var = output
    ctx.save_for_backward(x, scale, offset, mean, var)
    ctx.args = (axes, eps, True, act, slope)


def _given_setup(ctx, inputs, output):
    x, scale, offset, mean, var, axes, eps, train_grad, act, slope = inputs
    ctx.save_for_backward(x, scale, offset, mean, var)
    ctx.args = (axes, eps, bool(train_grad), act, slope)


def _backward(ctx, dy):
    x, scale, offset, mean, var = ctx.saved_tensors
    axes, eps, training, act, slope = ctx.args
    return _bn_grad(dy.contiguous(), x, scale, offset if act is not None else None, mean, var,
                    axes, eps, training, act, slope)


def _train_backward(ctx, dy, dmean, dvar):  # the statistics feed only the moving averages
    return _backward(ctx, dy) + (None,) * 4


def _given_backward(ctx, dy):
    return _backward(ctx, dy) + (None,) * 7


_bn_train.register_autograd(_train_backward, setup_context=_train_setup)
_bn_given.register_autograd(_given_backward, setup_context=_given_setup)


def _affine_setup(ctx, inputs, output):
    x, scale, _, axes = inputs
    ctx.save_for_backward(x, scale)
    ctx.axes = axes


def _affine_backward(ctx, dy):
    x, scale = ctx.saved_tensors
    shape = [x.shape[i] if i in ctx.axes else 1 for i in range(x.dim())]
    reduce = [i for i in range(x.dim()) if i not in ctx.axes]
    dyf = dy.to(scale.dtype)
    dx = (dyf * scale.reshape(shape)).to(x.dtype)
    ds = (dyf * x.to(scale.dtype)).sum(reduce).reshape(-1) if reduce else dyf * x
    do = dyf.sum(reduce).reshape(-1) if reduce else dyf
    return dx, ds, do, None


_channel_affine.register_autograd(_affine_backward, setup_context=_affine_setup)


# ------------------------------------------------- the eager path (per-call cost)
# In eager mode (Keras's default on torch) the table calls the kernels through
# these autograd Functions, with the same maths as the custom ops above but
# without the dispatcher's round trips: a custom op's call goes Python ->
# dispatcher -> its autograd wrapper (which re-reads the op's schema to refill
# defaults) -> dispatcher again -> the Python implementation, whose outputs are
# then checked for aliasing; the backward repeats it for ckbn::bn_grad.  Under
# torch.compile (and torch.export) the custom ops are used, which the
# compiler can trace.
def _eager_grad(ctx, dy):
    x, scale, offset = ctx.saved_tensors[:3]   # (reading them checks every saved version)
    mean, var = ctx.stats
    axes, eps, training, act = ctx.args
    dx, ds, do = _kernels.grad(_np(dy.contiguous()), _np(x), _np(scale), mean, var,
                               axes, eps, training, act,
                               _np(offset) if act is not None else None)
    return _t(dx), _t(ds), _t(do)


class _EagerTrain(torch.autograd.Function):
    """The training call.  With ``moving`` (``(moving_mean, moving_variance,
    momentum)``, the layer's call: :func:`layer_forward`) it returns ``y`` alone
    and updates the moving statistics in place (:func:`_update_moving`); without,
    ``(y, mean, var)`` (the op table's ``train``)."""

    @staticmethod
    def forward(ctx, x, scale, offset, axes, eps, act, moving=None):
        y, mean, var = _kernels.train(_np(x), _np(scale), _np(offset), axes, eps, act)
        ctx.stats = (mean, var)
        ctx.args = (axes, eps, True, act)
        if moving is not None:
            ctx.save_for_backward(x, scale, offset)
            _update_moving(moving, mean, var)
            return _t(y)
        mean_t, var_t = _t(mean), _t(var)   # views of ctx.stats, so their versions are saved
        ctx.save_for_backward(x, scale, offset, mean_t, var_t)
        ctx.mark_non_differentiable(mean_t, var_t)
        return _t(y), mean_t, var_t

    @staticmethod
    def backward(ctx, dy, *stat_grads):  # the statistics feed only the moving averages
        return _eager_grad(ctx, dy) + (None,) * 4


class _EagerGiven(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, offset, mean, var, axes, eps, train_grad, act):
        y = _kernels.given(_np(x), _np(scale), _np(offset), _np(mean), _np(var), axes, eps,
                           act)
        # Copies of mean and var (the moving statistics, in the layer's inference):
        # a training call of the same layer before the backward updates those in
        # place, and the gradient is that of the values this call used, as Keras's
        # own layer gives.
        ctx.save_for_backward(x, scale, offset)
        ctx.stats = (_np(mean).copy(), _np(var).copy())
        ctx.args = (axes, eps, train_grad, act)
        return _t(y)

    @staticmethod
    def backward(ctx, dy):
        return _eager_grad(ctx, dy) + (None,) * 6


def _update_moving(moving, mean, var):
    """``moving = moving * momentum + batch * (1 - momentum)`` in place, for
    ``moving = (moving_mean, moving_variance, momentum)`` (the variables'
    tensors) and the batch's ``mean`` and ``var`` (NumPy arrays of the
    statistics' dtype): the float operations of ``_engine.update_moving``, on
    NumPy views of the tensors' memory (a few ATen calls and ``torch.no_grad``
    cost more than the arithmetic on a vector), with the tensors' version
    counters bumped as an in-place PyTorch op would."""
    moving_mean, moving_var, momentum = moving
    rate = 1.0 - momentum
    for v, batch in ((moving_mean, mean), (moving_var, var)):
        a = _np(v)
        a *= momentum
        a += batch * rate
    _increment_version((moving_mean, moving_var))


def _eager():
    return not _is_compiling()


_use_native = [True]


def use_native(enabled):
    """Whether eager calls use the compiled operators of :mod:`keras_plugin._torch_native`
    where they can be had (default True); returns the previous setting.  False keeps
    the Python autograd Functions, which compute the same values."""
    previous = _use_native[0]
    _use_native[0] = bool(enabled)
    return previous


def _op_threads(x):
    """The OpenMP team of one operator call on ``x``: the plugin's thread rule."""
    return _policy.op_threads("torch", x.numel())


def _native_ops(x, axes):
    """The compiled operators ``(train, given)`` where they serve ``x`` (eager, CPU,
    a dtype the kernels take, channel axes in place), else None."""
    if not _use_native[0]:
        return None
    ops = _torch_native.load()
    if ops is None or x.device.type != "cpu" or (
            x.dtype is torch.float16 and not _torch_native.has_float16()) \
            or not _kernels.in_place(x.dim(), axes):
        return None
    return ops


_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)


# ----------------------------------------------------------------- the table
def _act_args(act):
    return (None, 0.0) if act is None else (str(act[0]), float(act[1]))


def _act_key(act):
    return None if act is None else (str(act[0]), float(act[1]))


def _needs_grad(*tensors):
    """Whether autograd must record a call on ``tensors``."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def train(x, scale, offset, axes, eps, act=None):
    if _eager():
        native = _native_ops(x, axes)
        if native is not None:
            return native[0](x, scale, offset, None, None, 0.0, axes, float(eps),
                             *_torch_native.act_args(_act_key(act)), _op_threads(x))
        if not _needs_grad(x, scale, offset):   # nothing to record: the kernels alone
            y, mean, var = _kernels.train(_np(x), _np(scale), _np(offset), axes, float(eps),
                                          _act_key(act))
            return _t(y), _t(mean), _t(var)
        return _EagerTrain.apply(x, scale, offset, tuple(axes), float(eps), _act_key(act),
                                 None)
    return _bn_train(x, scale, offset, list(axes), float(eps), *_act_args(act))


def given(x, scale, offset, mean, var, axes, eps, train_grad=False, act=None):
    mean, var = mean.detach(), var.detach()
    if _eager():
        native = _native_ops(x, axes)
        if native is not None:
            return native[1](x, scale, offset, mean, var, axes, float(eps), bool(train_grad),
                             *_torch_native.act_args(_act_key(act)), _op_threads(x))
        if not _needs_grad(x, scale, offset):   # e.g. inference under torch.no_grad()
            return _t(_kernels.given(_np(x), _np(scale), _np(offset), _np(mean), _np(var),
                                     axes, float(eps), _act_key(act)))
        return _EagerGiven.apply(x, scale, offset, mean, var, tuple(axes), float(eps),
                                 bool(train_grad), _act_key(act))
    return _bn_given(x, scale, offset, mean, var, list(axes), float(eps), bool(train_grad),
                     *_act_args(act))


def grad(dy, x, scale, mean, var, axes, eps, training, act=None, offset=None):
    return _bn_grad(dy, x, scale, offset, mean, var, list(axes), float(eps), bool(training),
                    *_act_args(act))


def moments(x, axes):
    n = 1
    for a in axes:
        n *= x.shape[a]
    return _bn_moments(x.detach(), list(axes), int(n))


def affine(x, scale, offset, axes):
    """``x * scale + offset`` per channel on the kernel (fold_batch_normalization)."""
    return _channel_affine(x, scale, offset, [int(a) for a in axes])


# ------------------------------------------------ the layer's common case (eager)
_STAT_DTYPE = {torch.float16: torch.float32, torch.float32: torch.float32,
               torch.float64: torch.float64}
_DTYPE_NAME = {torch.float16: "float16", torch.float32: "float32", torch.float64: "float64"}


def _plain_layer(layer, x):
    """Whether ``layer_forward`` computes this call: eager mode, outside a stateless
    scope; no ghost batches, renorm, adjustment or ``fused=True``; one channel axis;
    ``x`` already in the layer's compute dtype and the variables in the statistics'
    dtype, so ``_engine.forward`` would cast nothing.  (On PyTorch Keras 3.x promotes
    ``result_type("float64", "float32")`` to float32, so the general path, like the
    stock layer, computes float64 layers in float32; those calls keep that path.)

    Returns the variables' tensors ``(moving_mean, moving_variance, gamma or None,
    beta or None)`` where it does, else None."""
    if (layer.virtual_batch_size is not None or layer.renorm or layer.adjustment is not None
            or layer.fused or len(layer._param_shape) != 1 or _is_compiling()
            or _in_stateless_scope()):
        return None
    name = _DTYPE_NAME.get(x.dtype)
    if name is None or layer.compute_dtype != name:
        return None
    if name == "float64" and keras.backend.result_type(name, "float32") != name:
        return None   # Keras's promotion computes float64 in float32 here: its casts
    sd = _STAT_DTYPE[x.dtype]
    tensors = (_value(layer.moving_mean), _value(layer.moving_variance),
               _value(layer.gamma) if layer.scale else None,
               _value(layer.beta) if layer.center else None)
    for t in tensors:
        if t is not None and t.dtype is not sd:
            return None
    return tensors


def _value(v):
    """The tensor of Keras variable ``v`` outside a stateless scope.

    ``Variable.value`` on this backend defines a closure and formats the device
    (for symbolic calls on the meta device) on every read; the tensor it returns
    there is the one Keras keeps in ``_value`` (BN variables are never autocast).
    """
    t = getattr(v, "_value", None)
    return t if isinstance(t, torch.Tensor) else v.value


def layer_forward(layer, x, training, act=None):
    """``_engine.forward(layer, x, training, <this module>, act)`` for the common case,
    with less Python per call; None where the call is not that case (see
    :func:`_plain_layer`), and the caller then takes the general path.

    The same kernels and arguments, so the same output; the moving statistics
    are updated in place with the same float operations as
    ``_engine.update_moving`` (``moving * momentum + batch * (1 - momentum)``),
    without Keras's per-op conversions and variable assignment
    (:func:`_update_moving`, inside the autograd Function's forward where
    autograd records the call, so the batch statistics never become tensors).
    """
    momentum = layer.momentum
    if type(momentum) is not float:
        return None
    tensors = _plain_layer(layer, x)
    if tensors is None:
        return None
    moving_mean, moving_var, scale, offset = tensors
    sd = _STAT_DTYPE[x.dtype]
    n = layer._n_channels
    if scale is None:
        scale = torch.ones((n,), dtype=sd)
    if offset is None:
        offset = torch.zeros((n,), dtype=sd)
    axes = layer._channel_axes
    if not training:
        return given(x, scale, offset, moving_mean, moving_var, axes, layer.epsilon, False,
                     act)
    eps = float(layer.epsilon)
    native = _native_ops(x, axes)
    if native is not None:   # one compiled operator: forward, moving update, autograd node
        return native[0](x, scale, offset, moving_mean, moving_var, momentum, axes, eps,
                         *_torch_native.act_args(_act_key(act)), _op_threads(x))[0]
    moving = (moving_mean, moving_var, momentum)
    if _needs_grad(x, scale, offset):
        return _EagerTrain.apply(x, scale, offset, axes, eps, _act_key(act), moving)
    y, mean, var = _kernels.train(_np(x), _np(scale), _np(offset), axes, eps, _act_key(act))
    _update_moving(moving, mean, var)
    return _t(y)


def layer_infer(layer, x):
    """The stock layer's inference (``training=False``) in PyTorch's own ops.

    For an inference call the dispatch rule leaves to Keras's code
    (``_engine.route``): Keras's PyTorch backend computes it in six ATen ops
    (``(x - mean) * (rsqrt(var + eps) * gamma) + beta``, three of them passes
    over ``x``, after ``ops.cast`` calls that cast nothing).  Here it is one
    pass over ``x``, as ``x * a + b`` with ``a = gamma * rsqrt(var + eps)`` and
    ``b = beta - mean * a`` (per-channel, from the variables on every call), so
    the results agree with Keras's to float rounding, not bit for bit:

    * channel axis last (``NHWC``, ``(N, C)``, any rank): ``torch.addcmul(b, x,
      a)``, the coefficients broadcast along the contiguous last axis;
    * channel axis 1 of a 3-D to 5-D input (channels first):
      ``torch.nn.functional.batch_norm`` in evaluation mode, which computes
      the same ``x * a + b`` on contiguous planes.

    Each is the faster of the two on its layout (``benchmarks/RESULTS-keras.md``,
    session 9, "PyTorch inference in one op"): on channels-last data
    ``batch_norm`` (given a channels-first view) took 1.4-2.3x the time of
    ``addcmul``; on channels-first data with planes of 4x4 and more
    ``addcmul``, broadcasting over the planes, took 1.25-3.0x that of
    ``batch_norm``.  Returns None where the call is not this case (a dtype
    other than float32 in and out, variables not float32, more than one
    channel axis or one in the middle, symbolic calls on the meta device), and
    the layer runs Keras's code.  Gradients flow (autograd records the ops)
    where they are enabled.
    """
    if x.dtype is not torch.float32 or x.device.type == "meta" \
            or layer.compute_dtype != "float32":
        return None
    ndim = x.dim()
    axis = layer._channel_axes
    if len(axis) != 1 or ndim < 2:
        return None
    axis = axis[0]
    last = axis == ndim - 1
    if not last and not (axis == 1 and ndim <= 5):
        return None
    read = (lambda v: v.value) if _in_stateless_scope() else _value
    mean = read(layer.moving_mean)
    var = read(layer.moving_variance)
    weight = read(layer.gamma) if layer.scale else None
    bias = read(layer.beta) if layer.center else None
    for v in (mean, var, weight, bias):
        if v is not None and v.dtype is not torch.float32:
            return None
    if not last:
        return torch.nn.functional.batch_norm(x, mean, var, weight, bias, False, 0.0,
                                              layer.epsilon)
    a = torch.rsqrt(var + layer.epsilon)
    if weight is not None:
        a = a * weight
    b = torch.mul(mean, a).neg_() if bias is None else torch.addcmul(bias, mean, a,
                                                                      value=-1.0)
    return torch.addcmul(b, x, a)


# ------------------------------------------------ Keras's __call__ (eager, common case)
_use_fast_call = [True]


def use_fast_call(enabled):
    """Whether :func:`layer_call` may serve ``layer(x)`` (default True); returns the
    previous setting.  False sends every call through Keras's ``Layer.__call__``."""
    previous = _use_fast_call[0]
    _use_fast_call[0] = bool(enabled)
    return previous


_module_hooks = torch.nn.modules.module
_fast_calls = [0]


def fast_call_count():
    """How many calls :func:`layer_call` has served in this process (for tests)."""
    return _fast_calls[0]


def _hooked(layer):
    """Whether ``torch.nn.Module.__call__`` would run hooks around this layer's forward."""
    m = _module_hooks
    return bool(layer._forward_hooks or layer._forward_pre_hooks or layer._backward_hooks
                or layer._backward_pre_hooks or m._global_forward_hooks
                or m._global_forward_pre_hooks or m._global_backward_hooks
                or m._global_backward_pre_hooks)


def layer_call(layer, args, kwargs):
    """``layer(*args, **kwargs)`` for a built layer's common eager call, without
    Keras's ``Layer.__call__`` bookkeeping; None where the call is not that case
    (the caller then runs ``Layer.__call__``).

    The common case: one PyTorch tensor (a plain ``torch.Tensor``, not symbolic,
    no Keras mask, its dtype the layer's input dtype so nothing is converted),
    no keyword but ``training`` and ``mask=None``; the layer built and called once through
    Keras; no autocast scope and no mixed dtype policy, no activity
    regularizer, rematerialization, quantization or distribution; no
    ``torch.nn.Module`` hooks, no TorchScript tracing, no ``torch.compile``; and
    an input that passes the layer's ``InputSpec`` (anything else goes to Keras,
    which raises its own error).  For such a call, ``Layer.__call__`` (Keras
    3.x) converts nothing, builds nothing, adds no node and sets no mask; what
    is left, and what this does, is resolve ``training`` as it does (the
    argument, else the enclosing layer call's value, else None; an enclosing
    call's context records the value; a call outside any layer call clears
    the layer's losses, as Keras does for the call that opens a context) and
    call ``layer.call(x, training=..., mask=None)``.  The result is that call's,
    so the values are those of Keras's path (``tests/torch_path_cases.py``).
    On this backend ``Layer.__call__`` takes about 100 us around a BN call
    (``benchmarks/RESULTS-keras.md``, session 12), twice the layer's own call.
    """
    if len(args) != 1 or not _use_fast_call[0]:
        return None
    if kwargs:   # training=..., mask=None (a functional model passes both)
        for k, v in kwargs.items():
            if k != "training" and (k != "mask" or v is not None):
                return None
    x = args[0]
    if type(x) is not torch.Tensor or not layer.built or not layer._called \
            or _is_compiling() or torch._C._get_tracing_state() is not None:
        return None
    spec = layer.input_spec
    if spec is None or type(spec) is not keras.layers.InputSpec or spec.ndim != x.dim() \
            or spec.shape is not None or spec.dtype is not None:
        return None
    shape = x.shape
    for a, n in (spec.axes or {}).items():
        if shape[a] != n:
            return None
    name = _DTYPE_NAME.get(x.dtype)
    if name is None or name != layer.input_dtype or layer.compute_dtype != layer.variable_dtype:
        return None
    if layer.activity_regularizer is not None or layer._remat_mode \
            or getattr(layer, "quantization_mode", None) is not None or _hooked(layer):
        return None
    if _get_global("distribution") is not None or _get_global("autocast_scope") is not None \
            or _get_keras_mask(x) is not None:
        return None
    _fast_calls[0] += 1
    ctx = _get_global("current_call_ctx")
    if "training" in kwargs:
        training = kwargs["training"]
    else:
        training = None if ctx is None else ctx.get_value("training")
    if ctx is None:
        layer._clear_losses()
    else:
        ctx.set_value("training", training)
    if training is None:
        return layer.call(x, mask=None)
    return layer.call(x, training=training, mask=None)


def affine_infer(x, scale, offset, axes):
    """``x * scale + offset`` per channel in one PyTorch op (``torch.addcmul``), for
    a folded layer's call the dispatch rule leaves to the framework; None where
    it is not a plain eager call on CPU tensors of one dtype (Keras ops then).
    ``scale``/``offset`` are flat, channel axes ``axes``.  Equal to Keras's
    ``x * scale + offset`` to float rounding (one op instead of two passes and
    two reshapes, which cost more than the arithmetic on small tensors)."""
    if type(x) is not torch.Tensor or x.device.type != "cpu" or _is_compiling() \
            or scale.dtype is not x.dtype or offset.dtype is not x.dtype:
        return None
    shape = [x.shape[i] if i in axes else 1 for i in range(x.dim())]
    return torch.addcmul(offset.reshape(shape), x, scale.reshape(shape))


def _bump_versions(tensors):  # pragma: no cover - PyTorch before increment_version
    with torch.no_grad():
        for t in tensors:
            t.mul_(1)   # an in-place op: bumps the version, keeps every value


_increment_version = getattr(torch.autograd.graph, "increment_version", _bump_versions)

try:  # Keras internals layer_call reads (as Layer.__call__ does); without them it declines
    from keras.src.backend.common.global_state import get_global_attribute as _get_global
    from keras.src.backend.common.masking import get_keras_mask as _get_keras_mask
except ImportError:  # pragma: no cover - a Keras without them
    def layer_call(layer, args, kwargs):
        return None

try:
    from keras.src.backend.common.stateless_scope import in_stateless_scope as \
        _in_stateless_scope
except ImportError:  # pragma: no cover - a Keras without it: never take the common case
    def _in_stateless_scope():
        return True
