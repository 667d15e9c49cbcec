"""``synchronized=True``: batch statistics of the global batch across processes.

Per backend, for training calls:

* PyTorch: the ckbn kernels inside a ``torch.autograd.Function`` over the
  communicator from ``ckbn.distributed.set_communicator`` or, by default,
  ``ckbn.distributed.from_torch()`` (``torch.distributed`` must be
  initialized).  Forward: one all-gather of each process's (count, mean, M2),
  merged in rank order (the global statistics and moving averages are the same
  bits on every process); backward: one all-reduce of the per-channel sums for
  dx; the gradients of gamma and beta are this process's (the data-parallel
  gradient all-reduce adds them).
* TensorFlow: Keras's own synchronized layer code, which all-reduces the
  batch sums in the ``tf.distribute`` replica context (MirroredStrategy,
  MultiWorkerMirroredStrategy); it runs on TensorFlow ops, not on the kernels.
* JAX and NumPy: no synchronization is implemented; a training call raises
  ``NotImplementedError`` instead of computing local statistics.

Inference never communicates.  Masks, ghost batches, renorm, adjustment and
``fused=True`` are not combined with synchronization on PyTorch (a clear error).
"""

from __future__ import annotations

import keras
import numpy as np

import ckbn
from keras_plugin import _engine, _kernels


def engine(layer, inputs, training, mask):
    """The engine of a synchronized layer's call, or None for Keras's own code."""
    backend = _engine.kernels_for_backend()
    if not training:
        return None if mask is not None else _engine.kernel_impl(inputs)
    if backend == "tensorflow":
        return None
    if backend != "torch":
        raise NotImplementedError(
            f"{layer.name}: synchronized=True is not implemented on the "
            f"{keras.backend.backend()} backend by keras_plugin; a training call would "
            f"only see this process's batch. Use the torch or tensorflow backend.")
    problems = [what for what, bad in (
        ("a mask", mask is not None), ("virtual_batch_size", layer.virtual_batch_size),
        ("renorm", layer.renorm), ("adjustment", layer.adjustment is not None),
        ("fused=True", bool(layer.fused))) if bad]
    if problems:
        raise NotImplementedError(
            f"{layer.name}: synchronized=True on the torch backend does not support "
            f"{', '.join(problems)}")
    from keras_plugin import _torch
    if not _torch.usable(inputs):
        raise NotImplementedError(
            f"{layer.name}: synchronized=True on the torch backend runs on CPU float tensors; "
            f"got a tensor on {getattr(inputs, 'device', '?')} of dtype "
            f"{getattr(inputs, 'dtype', '?')}")
    comm = ckbn.distributed.get_communicator()
    if comm is None:
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(
                f"{layer.name}: synchronized=True needs torch.distributed.init_process_group("
                f"...) or ckbn.distributed.set_communicator(...) before a training call")
        comm = ckbn.distributed.from_torch()
    if comm.size == 1:
        return _engine.kernel_impl(inputs)
    point = getattr(layer, "_ckbn_sync_point", None)
    if point is None:
        point = layer._ckbn_sync_point = ckbn.distributed.SyncPoint(layer.name)
    return _TorchSync(point, comm)


class _TorchSync:
    """The engine interface of ``_engine`` (plain training only) with global statistics."""

    def __init__(self, point, comm):
        self.point, self.comm = point, comm

    def train(self, x, scale, offset, axes, eps):
        return _function().apply(x, scale, offset, self.point, self.comm, tuple(axes),
                                 float(eps))


_FUNCTION = None


def _function():
    """The autograd Function, defined on first use (torch imported only then)."""
    global _FUNCTION
    if _FUNCTION is not None:
        return _FUNCTION
    import torch

    def npy(t):
        return t.detach().numpy()

    class SyncBatchNorm(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, scale, offset, point, comm, axes, eps):
            xn = npy(x)
            mean, var, n = ckbn.distributed.sync_moments(point, comm, xn, axes)
            sd = _kernels.stat_dtype(xn.dtype)
            m, v = mean.astype(sd), var.astype(sd)
            if xn.size:
                y = _kernels.given(xn, npy(scale), npy(offset), m, v, axes, eps)
                y = torch.from_numpy(np.ascontiguousarray(y))
            else:
                y = torch.empty_like(x)
            ctx.save_for_backward(x, scale)
            ctx.stats = (m, v, mean, var, n)
            ctx.point, ctx.comm, ctx.step, ctx.axes, ctx.eps = point, comm, point.step, axes, eps
            return y, torch.from_numpy(m), torch.from_numpy(v)

        @staticmethod
        def backward(ctx, dy, dmean, dvar):
            x, scale = ctx.saved_tensors
            m, v, mean, var, n = ctx.stats
            xn, dyn = npy(x), npy(dy.contiguous()).astype(npy(x).dtype, copy=False)
            sd = m.dtype
            if xn.size:
                # Inference-mode gradient with the global statistics: dx0 = dy*scale*inv,
                # dscale = sum(dy*(x-mean))*inv, doffset = sum(dy) (this process's sums).
                dx0, ds, do = _kernels.grad(dyn, xn, npy(scale), m, v, ctx.axes, ctx.eps,
                                            False)
            else:
                dx0 = np.empty_like(xn)
                ds = do = np.zeros(m.size, sd)
            g_ds, g_do = ckbn.distributed.sync_sums(ctx.point, ctx.comm, ctx.step, ds, do)
            inv = 1.0 / np.sqrt(var + ctx.eps)
            s = npy(scale).astype(np.float64)
            k2 = -s * inv * inv * g_ds / n
            k3 = -s * inv * g_do / n - k2 * mean
            shape = [1] * xn.ndim
            for a in ctx.axes:
                shape[a % xn.ndim] = xn.shape[a % xn.ndim]
            dt = xn.dtype if xn.dtype != np.float16 else np.float32
            dx = (dx0.astype(dt) + xn.astype(dt) * k2.astype(dt).reshape(shape)
                  + k3.astype(dt).reshape(shape)).astype(xn.dtype)
            return (torch.from_numpy(np.ascontiguousarray(dx)), torch.from_numpy(ds),
                    torch.from_numpy(do), None, None, None, None)

    _FUNCTION = SyncBatchNorm
    return _FUNCTION
