"""PyTorch backend: ckbn kernels as ``torch.library`` custom ops with autograd.

The ops (``ckbn::bn_train``, ``ckbn::bn_given``, ``ckbn::bn_grad``,
``ckbn::bn_moments``) share memory with CPU tensors both ways
(``Tensor.numpy()`` in, ``torch.from_numpy`` out), have fake (meta)
implementations so ``torch.compile`` can trace around them, and register
their backward with ``torch.library.register_autograd``.  CUDA and other
devices fall back to Keras ops.
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np
import torch

from keras_plugin import _kernels

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


@torch.library.custom_op("ckbn::bn_train", mutates_args=())
def _bn_train(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, axes: List[int],
              eps: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    y, mean, var = _kernels.train(_np(x), _np(scale), _np(offset), axes, eps)
    return _t(y), _t(mean), _t(var)


@_bn_train.register_fake
def _(x, scale, offset, axes, eps):
    sd = _stat_dtype(x)
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            scale.new_empty(scale.shape, dtype=sd), scale.new_empty(scale.shape, dtype=sd))


@torch.library.custom_op("ckbn::bn_given", mutates_args=())
def _bn_given(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, mean: torch.Tensor,
              var: torch.Tensor, axes: List[int], eps: float) -> torch.Tensor:
    return _t(_kernels.given(_np(x), _np(scale), _np(offset), _np(mean), _np(var), axes, eps))


@_bn_given.register_fake
def _(x, scale, offset, mean, var, axes, eps):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("ckbn::bn_grad", mutates_args=())
def _bn_grad(dy: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, mean: torch.Tensor,
             var: torch.Tensor, axes: List[int], eps: float,
             training: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dx, ds, do = _kernels.grad(_np(dy), _np(x), _np(scale), _np(mean), _np(var), axes, eps,
                               training)
    return _t(dx), _t(ds), _t(do)


@_bn_grad.register_fake
def _(dy, x, scale, mean, var, axes, eps, training):
    sd = _stat_dtype(x)
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            scale.new_empty(scale.shape, dtype=sd), scale.new_empty(scale.shape, dtype=sd))


@torch.library.custom_op("ckbn::bn_moments", mutates_args=())
def _bn_moments(x: torch.Tensor, axes: List[int], n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    mean, var = _kernels.moments(_np(x), axes)
    return _t(mean), _t(var)


@_bn_moments.register_fake
def _(x, axes, n):
    sd = _stat_dtype(x)
    return x.new_empty((n,), dtype=sd), x.new_empty((n,), dtype=sd)


def _train_setup(ctx, inputs, output):
    x, scale, _, axes, eps = inputs
    _, mean, var = output
    ctx.save_for_backward(x, scale, mean, var)
    ctx.axes, ctx.eps = axes, eps


def _train_backward(ctx, dy, dmean, dvar):
    x, scale, mean, var = ctx.saved_tensors
    dx, ds, do = _bn_grad(dy, x, scale, mean, var, ctx.axes, ctx.eps, True)
    return dx, ds, do, None, None


_bn_train.register_autograd(_train_backward, setup_context=_train_setup)


def _given_setup(ctx, inputs, output):
    x, scale, _, mean, var, axes, eps = inputs
    ctx.save_for_backward(x, scale, mean, var)
    ctx.axes, ctx.eps = axes, eps
    ctx.training = False


def _given_backward(ctx, dy):
    x, scale, mean, var = ctx.saved_tensors
    dx, ds, do = _bn_grad(dy, x, scale, mean, var, ctx.axes, ctx.eps, ctx.training)
    return dx, ds, do, None, None, None, None


_bn_given.register_autograd(_given_backward, setup_context=_given_setup)


# The renorm path: statistics given, but they are x's batch statistics, so the
# gradient is the training one.  A second op keeps each op's autograd static.
@torch.library.custom_op("ckbn::bn_given_train", mutates_args=())
def _bn_given_train(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor,
                    mean: torch.Tensor, var: torch.Tensor, axes: List[int],
                    eps: float) -> torch.Tensor:
    return _t(_kernels.given(_np(x), _np(scale), _np(offset), _np(mean), _np(var), axes, eps))


@_bn_given_train.register_fake
def _(x, scale, offset, mean, var, axes, eps):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _given_train_setup(ctx, inputs, output):
    _given_setup(ctx, inputs, output)
    ctx.training = True


_bn_given_train.register_autograd(_given_backward, setup_context=_given_train_setup)


def train(x, scale, offset, axes, eps):
    return _bn_train(x, scale, offset, list(axes), float(eps))


def given(x, scale, offset, mean, var, axes, eps, train_grad):
    op = _bn_given_train if train_grad else _bn_given
    return op(x, scale, offset, mean.detach(), var.detach(), list(axes), float(eps))


def moments(x, axes):
    n = 1
    for a in axes:
        n *= x.shape[a]
    return _bn_moments(x.detach(), list(axes), int(n))


# ---------------------------------------------------------------- folding (issue 14)
@torch.library.custom_op("ckbn::channel_affine", mutates_args=())
def _channel_affine(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor,
                    axes: List[int]) -> torch.Tensor:
    return _t(_kernels.affine(_np(x), _np(scale), _np(offset), axes))


@_channel_affine.register_fake
def _(x, scale, offset, axes):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


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


def affine(x, scale, offset, axes):
    """``x * scale + offset`` per channel on the kernel (fold_batch_normalization)."""
    return _channel_affine(x, scale, offset, [int(a) for a in axes])


# ---------------------------------------------------- fused activation (issue 14)
@torch.library.custom_op("ckbn::bn_train_act", mutates_args=())
def _bn_train_act(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, axes: List[int],
                  eps: float, activation: str,
                  slope: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    y, mean, var = _kernels.train_act(_np(x), _np(scale), _np(offset), axes, eps, activation,
                                      slope)
    return _t(y), _t(mean), _t(var)


@_bn_train_act.register_fake
def _(x, scale, offset, axes, eps, activation, slope):
    sd = _stat_dtype(x)
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            scale.new_empty(scale.shape, dtype=sd), scale.new_empty(scale.shape, dtype=sd))


@torch.library.custom_op("ckbn::bn_given_act", mutates_args=())
def _bn_given_act(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor,
                  mean: torch.Tensor, var: torch.Tensor, axes: List[int], eps: float,
                  activation: str, slope: float) -> torch.Tensor:
    return _t(_kernels.given_act(_np(x), _np(scale), _np(offset), _np(mean), _np(var), axes,
                                 eps, activation, slope))


@_bn_given_act.register_fake
def _(x, scale, offset, mean, var, axes, eps, activation, slope):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("ckbn::bn_grad_act", mutates_args=())
def _bn_grad_act(dy: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor,
                 mean: torch.Tensor, var: torch.Tensor, axes: List[int], eps: float,
                 training: bool, activation: str,
                 slope: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dx, ds, do = _kernels.grad_act(_np(dy), _np(x), _np(scale), _np(offset), _np(mean),
                                   _np(var), axes, eps, training, activation, slope)
    return _t(dx), _t(ds), _t(do)


@_bn_grad_act.register_fake
def _(dy, x, scale, offset, mean, var, axes, eps, training, activation, slope):
    sd = _stat_dtype(x)
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            scale.new_empty(scale.shape, dtype=sd), scale.new_empty(scale.shape, dtype=sd))


def _train_act_setup(ctx, inputs, output):
    x, scale, offset, axes, eps, activation, slope = inputs
    _, mean, var = output
    ctx.save_for_backward(x, scale, offset, mean, var)
    ctx.args = (axes, eps, True, activation, slope)


def _train_act_backward(ctx, dy, dmean, dvar):
    x, scale, offset, mean, var = ctx.saved_tensors
    dx, ds, do = _bn_grad_act(dy.contiguous(), x, scale, offset, mean, var, *ctx.args)
    return dx, ds, do, None, None, None, None


_bn_train_act.register_autograd(_train_act_backward, setup_context=_train_act_setup)


def _given_act_setup(ctx, inputs, output):
    x, scale, offset, mean, var, axes, eps, activation, slope = inputs
    ctx.save_for_backward(x, scale, offset, mean, var)
    ctx.args = (axes, eps, False, activation, slope)


def _given_act_backward(ctx, dy):
    x, scale, offset, mean, var = ctx.saved_tensors
    dx, ds, do = _bn_grad_act(dy.contiguous(), x, scale, offset, mean, var, *ctx.args)
    return dx, ds, do, None, None, None, None, None, None


_bn_given_act.register_autograd(_given_act_backward, setup_context=_given_act_setup)


def train_act(x, scale, offset, axes, eps, activation, slope):
    return _bn_train_act(x, scale, offset, list(axes), float(eps), str(activation),
                         float(slope))


def given_act(x, scale, offset, mean, var, axes, eps, activation, slope):
    return _bn_given_act(x, scale, offset, mean.detach(), var.detach(), list(axes), float(eps),
                         str(activation), float(slope))
