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
* TensorFlow: in a ``tf.distribute`` replica context with more than one
  replica (MirroredStrategy, e.g. over logical CPU devices;
  MultiWorkerMirroredStrategy), the kernels compute each replica's
  (count, mean, M2); ``ReplicaContext.all_gather`` collects them and every
  replica merges them in replica order; backward all-reduces the sums.
  Outside a strategy (one replica) it is plain batch normalization.
* JAX: inside ``shard_map``/``pmap`` over a mapped axis whose name is given
  with ``keras_plugin.jax_sync_axis(name)``: the kernels (the XLA FFI handler
  of ``keras_plugin._jax_ffi`` where it serves; host callbacks otherwise and
  for masked calls) compute each shard's (count, mean, M2), ``lax.all_gather``
  collects the rows
  (float64 bits carried as uint32 pairs, so no precision is lost without x64),
  each shard merges them in axis order; backward ``lax.psum`` of the sums.
  Without an axis name a training call raises ``ValueError``.
* NumPy: a training call raises ``NotImplementedError`` (no communication).

Masked calls (Keras's mask of shape ``inputs.shape[:-1]``, channels on the
last axis) are synchronized too: the statistics of the unmasked positions of
the global batch, as Keras computes them for one process.  Inference never
communicates.  Ghost batches, renorm, adjustment, ``fused=True`` and masks
with channels elsewhere than the last axis are not combined with
synchronization: a clear ``NotImplementedError``.
"""

from __future__ import annotations
from typing import Iterator

import contextlib
import contextvars

import keras
import numpy as np

import ckbn
from keras_plugin import _engine, _kernels


_jax_axis = contextvars.ContextVar("ckbn_jax_sync_axis", default=None)


@contextlib.contextmanager
def jax_sync_axis(name: str) -> Iterator[None]:
    """JAX backend: synchronized layers called (traced) in this block reduce over
    the mapped axis ``name`` of the enclosing ``shard_map``/``pmap``."""
    token = _jax_axis.set(name)
    try:
        yield
    finally:
        _jax_axis.reset(token)


def engine(layer, inputs, training, mask):
    """The engine of a synchronized layer's call, or None for Keras's own code."""
    backend = _engine.kernels_for_backend()
    if not training:
        return None if mask is not None else _engine.kernel_impl(inputs)
    if backend == "tensorflow":
        return _tf_engine(layer, inputs, mask)
    if backend == "jax":
        name = _jax_axis.get()
        if name is None:
            raise ValueError(
                f"{layer.name}: synchronized=True on the jax backend needs the mapped axis: "
                f"call the model inside shard_map/pmap within "
                f"`with keras_plugin.jax_sync_axis(name):`")
        _check_supported(layer, mask, "jax")
        return _JaxSync(name, mask)
    if backend != "torch":
        raise NotImplementedError(
            f"{layer.name}: synchronized=True is not implemented on the "
            f"{keras.backend.backend()} backend by keras_plugin; a training call would "
            f"only see this process's batch. Use the torch or tensorflow backend.")
    _check_supported(layer, mask, "torch")
    comm = ckbn.distributed.get_communicator()
    if comm is None:
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(
                f"{layer.name}: synchronized=True needs torch.distributed.init_process_group("
                f"...) or ckbn.distributed.set_communicator(...) before a training call")
        comm = ckbn.distributed.from_torch()
    if comm.size == 1:
        _check_torch_input(layer.name, inputs)
        return _engine.kernel_impl(inputs)
    point = getattr(layer, "_ckbn_sync_point", None)
    if point is None:
        point = layer._ckbn_sync_point = ckbn.distributed.SyncPoint(layer.name)
    return _TorchSync(point, comm, mask, layer.name)


def _check_torch_input(name, inputs):
    from keras_plugin import _torch
    if not _torch.usable(inputs):
        raise NotImplementedError(
            f"{name}: synchronized=True on the torch backend runs on CPU float tensors; "
            f"got a tensor on {getattr(inputs, 'device', '?')} of dtype "
            f"{getattr(inputs, 'dtype', '?')}")


def _check_supported(layer, mask, backend):
    last = layer._channel_axes == (len(layer._reduction_axes) + len(layer._channel_axes) - 1,)
    problems = [what for what, bad in (
        ("a mask unless the channel axis is the last", mask is not None and not last),
        ("virtual_batch_size", layer.virtual_batch_size),
        ("renorm", layer.renorm), ("adjustment", layer.adjustment is not None),
        ("fused=True", bool(layer.fused))) if bad]
    if problems:
        raise NotImplementedError(
            f"{layer.name}: synchronized=True on the {backend} backend does not support "
            f"{', '.join(problems)}")


def _tf_engine(layer, inputs, mask):
    import tensorflow as tf
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        raise ValueError(
            f"{layer.name}: a synchronized training call in a tf.distribute cross-replica "
            f"context; call the model inside strategy.run(...) or model.fit")
    if ctx.num_replicas_in_sync == 1:
        return None if mask is not None else _engine.kernel_impl(inputs)
    _check_supported(layer, mask, "tensorflow")
    from keras_plugin import _tf
    if not _tf.usable(inputs):
        raise NotImplementedError(
            f"{layer.name}: synchronized=True on the tensorflow backend runs on CPU float "
            f"tensors outside XLA; got {inputs.dtype} on {getattr(inputs, 'device', '?')!r}")
    return _TFSync(ctx, mask)


class _TFSync:
    """Plain training with global statistics over the replicas of a tf.distribute strategy."""

    def __init__(self, ctx, mask):
        self.ctx, self.mask = ctx, mask

    def train(self, x, scale, offset, axes, eps):
        import tensorflow as tf

        from keras_plugin import _tf
        ctx = self.ctx
        axes = tuple(axes)
        sd = tf.float32 if x.dtype == tf.float16 else x.dtype
        n_ch = int(np.prod([x.shape[a] for a in axes]))
        kshape = [x.shape[i] if i in axes else 1 for i in range(len(x.shape))]

        masked = self.mask is not None
        mask = tf.cast(self.mask, tf.bool) if masked else tf.zeros([0], tf.bool)

        def local(x_, m_):
            count, mean, m2 = ckbn.distributed.local_moments(x_, axes, m_ if masked else None)
            return np.concatenate([[float(count)], mean, m2])

        def merged(rows):
            n, mean, var = ckbn.distributed.merge(rows[:, 0], rows[:, 1:1 + n_ch],
                                                  rows[:, 1 + n_ch:])
            if n <= 1:
                raise ValueError(f"the global batch has {int(n)} value(s) per channel; "
                                 f"synchronized batch normalization needs at least 2")
            return np.concatenate([[n], mean, var])

        @tf.custom_gradient
        def op(x, scale, offset):
            row = tf.numpy_function(local, [tf.stop_gradient(x), mask], tf.float64,
                                    stateful=False, name="ckbn_local_moments")
            row.set_shape([1 + 2 * n_ch])
            rows = ctx.all_gather(row[None], axis=0)           # (replicas, 1 + 2C), in order
            g = tf.numpy_function(merged, [rows], tf.float64, stateful=False,
                                  name="ckbn_merge_moments")
            g.set_shape([1 + 2 * n_ch])
            n, mean64, var64 = g[0], g[1:1 + n_ch], g[1 + n_ch:]
            mean, var = tf.cast(mean64, sd), tf.cast(var64, sd)
            y = tf.cond(tf.size(x) > 0,
                        lambda: _tf.given(x, scale, offset, mean, var, axes, eps, False),
                        lambda: tf.zeros_like(x))

            def grad(dy, dmean, dvar):
                dx0, ds, do = tf.cond(
                    tf.size(x) > 0,
                    lambda: _tf.grad(dy, x, scale, mean, var, axes, eps, False),
                    lambda: (tf.zeros_like(x), tf.zeros_like(scale), tf.zeros_like(scale)))
                tot = ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                                     tf.cast(tf.concat([ds, do], 0), tf.float64))
                g_ds, g_do = tot[:n_ch], tot[n_ch:]
                _, k2, k3 = ckbn.distributed.grad_coefficients(
                    tf.cast(scale, tf.float64), mean64, var64, eps, n, g_do, g_ds,
                    rsqrt=tf.math.rsqrt)
                dt = tf.float32 if x.dtype == tf.float16 else x.dtype
                corr = (tf.cast(x, dt) * tf.reshape(tf.cast(k2, dt), kshape)
                        + tf.reshape(tf.cast(k3, dt), kshape))
                if masked:   # only the unmasked positions feed the statistics
                    corr = corr * tf.cast(mask, dt)[..., None]
                return tf.cast(tf.cast(dx0, dt) + corr, x.dtype), ds, do

            return (y, mean, var), grad

        return op(x, scale, offset)


class _TorchSync:
    """The engine interface of ``_engine`` (plain training only) with global statistics.

    The forward runs under ``ckbn.distributed.guard``: an error this process
    raises before the statistics exchange (an unusable tensor, a mask that
    does not fit the input, ...) is exchanged instead of the statistics, and
    every process raises it (the same type and message, naming the rank).  The
    backward is guarded the same way around the exchange of the sums.
    """

    def __init__(self, point, comm, mask, name):
        self.point, self.comm, self.mask, self.name = point, comm, mask, name

    def train(self, x, scale, offset, axes, eps):
        return ckbn.distributed.guard(self.point, self.comm, "forward", self._train, x, scale,
                                      offset, axes, eps)

    def _train(self, x, scale, offset, axes, eps):
        _check_torch_input(self.name, x)
        return _function().apply(x, scale, offset, self.mask, self.point, self.comm,
                                 tuple(axes), float(eps))


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
        def forward(ctx, x, scale, offset, mask, point, comm, axes, eps):
            xn = npy(x)
            mn = None if mask is None else npy(mask).astype(bool)
            mean, var, n = ckbn.distributed.sync_moments(point, comm, xn, axes, mn)
            sd = _kernels.stat_dtype(xn.dtype)
            m, v = mean.astype(sd), var.astype(sd)
            if xn.size:
                y = _kernels.given(xn, npy(scale), npy(offset), m, v, axes, eps)
                y = torch.from_numpy(np.ascontiguousarray(y))
            else:
                y = torch.empty_like(x)
            ctx.save_for_backward(x, scale)
            ctx.stats = (m, v, mean, var, n, mn)
            ctx.point, ctx.comm, ctx.step, ctx.axes, ctx.eps = point, comm, point.step, axes, eps
            return y, torch.from_numpy(m), torch.from_numpy(v)

        @staticmethod
        def backward(ctx, dy, dmean, dvar):
            return ckbn.distributed.guard(ctx.point, ctx.comm, "backward", _backward, ctx, dy)

    def _backward(ctx, dy):
        x, scale = ctx.saved_tensors
        m, v, mean, var, n, mn = ctx.stats
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
        g_do, g_ds = ckbn.distributed.sync_sums(ctx.point, ctx.comm, ctx.step, do, ds)
        _, k2, k3 = ckbn.distributed.grad_coefficients(
            npy(scale).astype(np.float64), mean, var, ctx.eps, n, g_do, g_ds)
        shape = [1] * xn.ndim
        for a in ctx.axes:
            shape[a % xn.ndim] = xn.shape[a % xn.ndim]
        dt = xn.dtype if xn.dtype != np.float16 else np.float32
        corr = xn.astype(dt) * k2.astype(dt).reshape(shape) + k3.astype(dt).reshape(shape)
        if mn is not None:   # only the unmasked positions feed the statistics
            corr *= mn[..., None]
        dx = (dx0.astype(dt) + corr).astype(xn.dtype)
        return (torch.from_numpy(np.ascontiguousarray(dx)), torch.from_numpy(ds),
                torch.from_numpy(do), None, None, None, None, None)

    _FUNCTION = SyncBatchNorm
    return _FUNCTION


class _JaxSync:
    """Plain training with global statistics over a mapped JAX axis."""

    def __init__(self, axis_name, mask):
        self.axis_name, self.mask = axis_name, mask

    def train(self, x, scale, offset, axes, eps):
        import jax.numpy as jnp

        from keras_plugin import _jax, _jax_ffi
        if self.mask is None and _jax.native(x):   # the XLA FFI handler, no callback
            return _jax_ffi.sync_train(x, scale, offset, axes, eps, self.axis_name)
        mask = (jnp.zeros(x.shape[:-1], bool) if self.mask is None
                else jnp.asarray(self.mask).astype(bool))
        return _jax_function()(x, scale, offset, mask, tuple(axes), float(eps),
                               self.axis_name, self.mask is not None)


_JAX_FUNCTION = None


def _jax_function():
    global _JAX_FUNCTION
    if _JAX_FUNCTION is not None:
        return _JAX_FUNCTION
    from functools import partial

    import jax
    import jax.numpy as jnp

    def struct(shape, dtype):
        return jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype))

    def local_row(x, mask, axes, n_ch, masked):
        # (count, mean, M2) in float64, its bits as uint32 pairs (x64 may be off).
        def cb(x_, m_):
            count, mean, m2 = ckbn.distributed.local_moments(
                np.asarray(x_), axes, np.asarray(m_) if masked else None)
            return np.concatenate([[float(count)], mean, m2]).view(np.uint32)
        return jax.pure_callback(cb, struct((2 * (1 + 2 * n_ch),), np.uint32), x, mask,
                                 vmap_method="sequential")

    def merged(rows, n_ch, sd):
        def cb(r):
            r = np.ascontiguousarray(r).view(np.float64)
            n, mean, var = ckbn.distributed.merge(r[:, 0], r[:, 1:1 + n_ch], r[:, 1 + n_ch:])
            if n <= 1:
                raise ValueError(f"the global batch has {int(n)} value(s) per channel; "
                                 f"synchronized batch normalization needs at least 2")
            return (np.asarray(n, np.float32), mean.astype(sd), var.astype(sd))
        return jax.pure_callback(cb, (struct((), np.float32), struct((n_ch,), sd),
                                      struct((n_ch,), sd)), rows, vmap_method="sequential")

    def forward(x, scale, offset, mask, axes, eps, axis_name, masked):
        from keras_plugin import _jax
        n_ch = int(np.prod([x.shape[a] for a in axes]))
        sd = _kernels.stat_dtype(x.dtype)
        rows = jax.lax.all_gather(local_row(x, mask, axes, n_ch, masked), axis_name)
        n, mean, var = merged(rows, n_ch, sd)
        if x.size:
            y = _jax.given(x, scale, offset, mean, var, axes, eps)
        else:
            y = jnp.zeros_like(x)
        return (y, mean, var), (x, scale, mask, mean, var, n)

    @partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
    def sync_train(x, scale, offset, mask, axes, eps, axis_name, masked):
        return forward(x, scale, offset, mask, axes, eps, axis_name, masked)[0]

    def fwd(x, scale, offset, mask, axes, eps, axis_name, masked):
        return forward(x, scale, offset, mask, axes, eps, axis_name, masked)

    def bwd(axes, eps, axis_name, masked, res, cts):
        from keras_plugin import _jax
        x, scale, mask, mean, var, n = res
        dy = cts[0]
        if x.size:
            dx0, ds, do = _jax.grad(dy, x, scale, mean, var, axes, eps, False)
        else:
            dx0, ds, do = jnp.zeros_like(x), jnp.zeros_like(mean), jnp.zeros_like(mean)
        tot = jax.lax.psum(jnp.concatenate([ds, do]), axis_name)
        k = mean.shape[0]
        g_ds, g_do = tot[:k], tot[k:]
        _, k2, k3 = ckbn.distributed.grad_coefficients(
            scale.astype(var.dtype), mean, var, eps, n, g_do, g_ds, rsqrt=jax.lax.rsqrt)
        shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
        dt = jnp.float32 if x.dtype == jnp.float16 else x.dtype
        corr = x.astype(dt) * k2.astype(dt).reshape(shape) + k3.astype(dt).reshape(shape)
        if masked:   # only the unmasked positions feed the statistics
            corr = corr * mask.astype(dt)[..., None]
        dx = (dx0.astype(dt) + corr).astype(x.dtype)
        return (dx, ds.astype(scale.dtype), do.astype(scale.dtype),
                np.zeros(mask.shape, jax.dtypes.float0))

    sync_train.defvjp(fwd, bwd)
    _JAX_FUNCTION = sync_train
    return _JAX_FUNCTION
