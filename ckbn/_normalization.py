"""``ckbn.BatchNormalization``: ``tf.layers.BatchNormalization`` (TF 1.x) on NumPy.

The semantics follow the running reference, ``tf.compat.v1.layers``'s layer
from tf-keras 2.21 (TensorFlow 1.15 "V1" code path), including the fused
path's Bessel-corrected moving variance, 1.15 batch renormalization, strided
ghost batches with averaged moving statistics, and adjustment.  Every path
runs on the compiled kernels (``ckbn._ops``).  Beyond the reference:

* float64 layers work with renorm (the reference crashes there);
* inference with ``virtual_batch_size`` accepts any batch size;
* ``momentum`` and ``renorm_momentum`` must lie in [0, 1] and ``epsilon``
  must be finite and >= 0 (the reference does not check): a ``ValueError``
  at construction;
* ``layer.backward(dy)`` gives the gradients TensorFlow gets by autodiff
  (renorm's r and d held constant).
"""

from __future__ import annotations
from typing import Any

from numpy.typing import ArrayLike

import math
import numbers
import weakref

import numpy as np

from ckbn import _coefs, _ops
from ckbn import distributed as _distributed
from ckbn import constraints as _constraints
from ckbn import initializers as _inits
from ckbn import regularizers as _regularizers
from ckbn._config import PARALLEL_MIN as _PARALLEL_MIN
from ckbn._framework import InputSpec, Layer, Update, Variable, executing_eagerly
from ckbn._layout import make_layout
from ckbn._validation import FLOAT_DTYPES

__all__ = ["BatchNormalization", "batch_normalization", "BatchNorm", "batch_norm"]

_RENORM_KEYS = ["rmax", "rmin", "dmax"]
_F32 = np.dtype(np.float32)


def _check_unit_interval(value, name):
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a float in [0, 1], got {value!r}")
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


def _training_flag(training):
    if training is None:
        return False
    if isinstance(training, (bool, np.bool_)):
        return bool(training)
    if isinstance(training, (int, np.integer)) and training in (0, 1):
        return bool(training)
    if isinstance(training, np.ndarray) and training.shape == () and training.dtype == np.bool_:
        return bool(training)
    raise TypeError(
        f"`training` must be a Python bool, or 1 or 0, or None (inference). Found instead: "
        f"{training!r}")


# var <- var - (var - value) * (1 - momentum), atomically.  The unbound method
# keeps the variable among an Update's arguments, so a deep copy of a layer
# gets updates of its own variables.
_ema = Variable.assign_moving_average


class _RenormStep:
    """Renorm's own moving averages, run once by whichever update runs first."""

    __slots__ = ("args", "__weakref__")

    def __init__(self, *args):
        self.args = args

    def __call__(self):
        if self.args is None:
            return
        (rmean, rstd, mean, std, rm), self.args = self.args, None
        _ema(rmean, mean, rm)
        _ema(rstd, std, rm)


def _renorm_mean_update(step, moving_mean, mean, momentum):
    step()
    _ema(moving_mean, mean, momentum)


def _renorm_var_update(step, moving_stddev, moving_variance, stddev, momentum, eps):
    step()
    _ema(moving_stddev, stddev, momentum)
    s = moving_stddev.value
    moving_variance.assign(np.maximum(s * s - s.dtype.type(eps), 0))


class _SyncCalls:
    """The layer's side of synchronized training: its exchange point, the
    communicator of the call in progress (None: local), whether the latest
    call was a synchronized training call, and which call records were
    (record -> (communicator, step))."""

    __slots__ = ("point", "comm", "last_train", "records")

    def __init__(self, name):
        self.point = _distributed.SyncPoint(name)
        self.comm = None
        self.last_train = False
        self.records = weakref.WeakKeyDictionary()

    @property
    def seq(self):
        """Synchronized training steps exchanged so far."""
        return self.point.step

    def __deepcopy__(self, memo):
        return _SyncCalls(self.point.name)    # a copied layer starts its own exchanges


class _CallRecord:
    """What backward needs from a training or inference call."""

    __slots__ = ("in_shape", "layout", "training", "mean", "var", "eps", "g_eff",
                 "r", "d", "adj_scale", "adj_bias", "batch", "ref", "__weakref__")


class BatchNormalization(Layer):
    """Batch normalization layer (Ioffe and Szegedy, 2015) with the TF 1.x API.

    Parameters
    ----------
    axis : int or list of int, default -1
        The axis or axes that keep their own statistics (the features).
    momentum : float, default 0.99
        Weight of the old value in the moving averages.
    epsilon : float, default 1e-3
        Added to the variance.
    center, scale : bool, default True
        Add ``beta`` / multiply by ``gamma``.
    beta_initializer, gamma_initializer, moving_mean_initializer, moving_variance_initializer
        Strings, ``ckbn.initializers`` objects or callables ``(shape, dtype)``.
    beta_regularizer, gamma_regularizer : callable, optional
    beta_constraint, gamma_constraint : callable, optional
        Applied by the optimizers after each update.
    renorm : bool, default False
        Batch Renormalization (TF 1.15 semantics).
    renorm_clipping : dict, optional
        Keys ``'rmax'``, ``'rmin'``, ``'dmax'``.
    renorm_momentum : float, default 0.99
    fused : bool or None
        A request; ``layer.fused`` after build says whether the fused rule
        applied: 4-D input with axis 1 or 3, or 5-D input with axis 1 or 4;
        no renorm, virtual batch or adjustment; a float16/float32 layer.  The
        fused path feeds the Bessel-corrected batch variance to
        ``moving_variance``.
    trainable : bool, default True
        When False the weights are created non-trainable and no updates are
        exposed; training calls still normalize with batch statistics.
    virtual_batch_size : int, optional
        Ghost batch normalization with the reference's strided grouping.
    adjustment : callable, optional
        ``adjustment(input_shape) -> (scale, bias)`` applied in training.
    synchronized : bool, default False
        Training calls use the statistics of the global batch of every
        process (see :mod:`ckbn.distributed`); not with ``virtual_batch_size``.
    communicator : optional
        From ``ckbn.distributed.from_mpi4py`` / ``from_torch``; default: the
        one given to ``ckbn.distributed.set_communicator``.
    name : str, optional
    **kwargs
        ``dtype``, ``activity_regularizer``, ``input_shape``, ``batch_size``.
    """

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones",
                 moving_mean_initializer="zeros", moving_variance_initializer="ones",
                 beta_regularizer=None, gamma_regularizer=None, beta_constraint=None,
                 gamma_constraint=None, renorm=False, renorm_clipping=None,
                 renorm_momentum=0.99, fused=None, trainable=True, virtual_batch_size=None,
                 adjustment=None, synchronized=False, communicator=None, name=None,
                 **kwargs) -> None:
        # Validate everything before any state (the layer name counter) changes.
        if isinstance(axis, (list, tuple)):
            axis = list(axis)
        elif not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
            raise TypeError(f"axis must be int or list, type given: {type(axis)}")
        momentum = _check_unit_interval(momentum, "momentum")
        if isinstance(epsilon, bool) or not isinstance(epsilon, (numbers.Real, np.floating)):
            raise TypeError(f"epsilon must be a float, got {epsilon!r}")
        if not (math.isfinite(float(epsilon)) and float(epsilon) >= 0):
            raise ValueError(f"epsilon must be a finite float >= 0, got {epsilon!r}")
        if virtual_batch_size is not None and (
                isinstance(virtual_batch_size, bool)
                or not isinstance(virtual_batch_size, (int, np.integer))):
            raise TypeError(f"virtual_batch_size must be an int, got {virtual_batch_size!r}")
        if adjustment is not None and not callable(adjustment):
            raise TypeError(f"adjustment must be callable, got {adjustment!r}")
        inits = [_inits.get(i) for i in (beta_initializer, gamma_initializer,
                                         moving_mean_initializer, moving_variance_initializer)]
        regs = [_regularizers.get(r) for r in (beta_regularizer, gamma_regularizer)]
        cons = [_constraints.get(c) for c in (beta_constraint, gamma_constraint)]
        if renorm:
            renorm_clipping = renorm_clipping or {}
            keys = set(renorm_clipping) - set(_RENORM_KEYS)
            if keys:
                raise ValueError(
                    f"renorm_clipping {renorm_clipping} contains keys not in {_RENORM_KEYS}")
            renorm_momentum = _check_unit_interval(renorm_momentum, "renorm_momentum")
        # -- synchronized batch statistics (ckbn.distributed) --
        if not isinstance(synchronized, (bool, np.bool_)):
            raise TypeError(f"synchronized must be a bool, got {synchronized!r}")
        if synchronized and virtual_batch_size is not None:
            raise ValueError(
                "synchronized=True cannot be combined with virtual_batch_size "
                f"({virtual_batch_size!r}): ghost batches are local by definition")
        communicator = _distributed._as_communicator(communicator)
        # -- end synchronized --
        super().__init__(name=name, trainable=trainable, **kwargs)
        self.axis = axis
        self.momentum = momentum
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        (self.beta_initializer, self.gamma_initializer, self.moving_mean_initializer,
         self.moving_variance_initializer) = inits
        self.beta_regularizer, self.gamma_regularizer = regs
        self.beta_constraint, self.gamma_constraint = cons
        self.renorm = bool(renorm)
        self.virtual_batch_size = virtual_batch_size
        self.adjustment = adjustment
        self.fused = True if fused is None else bool(fused)
        self._bessels_correction_test_only = True
        self.synchronized = bool(synchronized)
        self._communicator = communicator
        self._sync = _SyncCalls(self.name)
        if renorm:
            self.renorm_clipping = dict(renorm_clipping)
            self.renorm_momentum = renorm_momentum
        self.gamma = self.beta = None
        self._records = {}
        self._last = None
        self._last_input = None
        self._layout_cache = None
        self._fast = None            # see _fast_entry
        self._fast_rate = None       # (momentum, 1 - momentum rounded to float32)
        self._update_names = (f"{self.name}/AssignMovingAvg", f"{self.name}/AssignMovingAvg_1")

    # -- build ----------------------------------------------------------------
    def build(self, input_shape):
        shape = tuple(input_shape)
        ndims = len(shape)
        if not ndims:
            raise ValueError("Input has undefined rank:", shape)
        axis = [self.axis] if isinstance(self.axis, (int, np.integer)) else list(self.axis)
        for a in axis:
            if isinstance(a, bool) or not isinstance(a, (int, np.integer)):
                raise TypeError(f"axis must contain ints, got {self.axis!r}")
        axis = [int(a) + ndims if a < 0 else int(a) for a in axis]
        for a in axis:
            if a < 0 or a >= ndims:
                raise ValueError("Invalid axis: %d" % a)
        if len(axis) != len(set(axis)):
            raise ValueError("Duplicate axis: %s" % axis)
        vbs = self.virtual_batch_size
        if vbs is not None:
            if vbs <= 0:
                raise ValueError(
                    "virtual_batch_size must be a positive integer that divides the true "
                    "batch size of the input Tensor")
            if 0 in axis:
                raise ValueError(
                    "When using virtual_batch_size, the batch dimension must be 0 and thus "
                    "axis cannot include 0")
            if self.adjustment is not None:
                raise ValueError(
                    "When using virtual_batch_size, adjustment cannot be specified")
        dims = {a: shape[a] for a in axis}
        for a, d in dims.items():
            if d is None:
                raise ValueError("Input has undefined `axis` dimension. Input shape: ", shape)
        dtype = np.dtype(self.dtype or "float32")
        if self.fused:
            self.fused = (not self.renorm and ndims in (4, 5) and axis in ([1], [ndims - 1])
                          and vbs is None and self.adjustment is None
                          and dtype in (np.float16, np.float32))
        param_dtype = np.float32 if dtype == np.float16 else dtype
        self._param_dtype = np.dtype(param_dtype)
        self._ndims = ndims
        self._orig_axis = axis
        if len(axis) == 1 and vbs is None:
            param_shape = (shape[axis[0]],)
        else:
            param_shape = tuple(shape[i] if i in axis else 1 for i in range(ndims))
        if vbs is not None:
            param_shape = param_shape[:1] + (1,) + param_shape[1:]
            axis = [a + 1 for a in axis]
        self.axis = axis
        self.input_spec = InputSpec(ndim=ndims, axes=dims)
        self._param_shape = param_shape
        pd = self._param_dtype
        if self.scale:
            self.gamma = self.add_variable("gamma", param_shape, pd, self.gamma_initializer,
                                           self.gamma_regularizer, True, self.gamma_constraint)
        if self.center:
            self.beta = self.add_variable("beta", param_shape, pd, self.beta_initializer,
                                          self.beta_regularizer, True, self.beta_constraint)
        self.moving_mean = self.add_variable("moving_mean", param_shape, pd,
                                             self.moving_mean_initializer, trainable=False)
        self.moving_variance = self.add_variable("moving_variance", param_shape, pd,
                                                 self.moving_variance_initializer,
                                                 trainable=False)
        if self.renorm:
            mvi = self.moving_variance_initializer

            def sqrt_init(shp, dt, _i=mvi):
                return np.sqrt(np.asarray(_i(shp, dt), dtype=dt))

            self.moving_stddev = self.add_variable("moving_stddev", param_shape, pd, sqrt_init,
                                                   trainable=False)
            self.renorm_mean = self.add_variable("renorm_mean", param_shape, pd,
                                                 self.moving_mean_initializer, trainable=False)
            self.renorm_stddev = self.add_variable("renorm_stddev", param_shape, pd, sqrt_init,
                                                   trainable=False)
        self.built = True

    # -- input checks (before any state changes) --------------------------------
    def _validate_inputs(self, inputs):
        if not isinstance(inputs, np.ndarray):
            if isinstance(inputs, (list, tuple, numbers.Number)):
                inputs = np.asarray(inputs)
                if inputs.dtype == np.float64 and self._dtype not in (None, "float64"):
                    inputs = inputs.astype(self._dtype)
            else:
                raise TypeError(
                    f"{self.name}: inputs must be a numpy array, got {type(inputs).__name__}")
        if inputs.dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"{self.name}: inputs must have dtype float16, float32 or float64, got "
                f"dtype {inputs.dtype}")
        if inputs.ndim == 0:
            raise ValueError("Input has undefined rank:", inputs.shape)
        if inputs.size == 0 and not (self.synchronized and inputs.ndim > 1
                                     and inputs.shape[0] == 0):
            raise ValueError(f"{self.name}: empty input of shape {inputs.shape}")
        return inputs

    # -- forward ----------------------------------------------------------------
    def __call__(self, inputs, *args, **kwargs):
        fast = self._fast
        if (fast is not None and type(inputs) is np.ndarray and inputs.shape == fast[0]
                and inputs.dtype == _F32
                and ((not args and len(kwargs) == 1 and kwargs.get("training") is True)
                     or (not kwargs and len(args) == 1 and args[0] is True))
                and executing_eagerly()):
            y = self._fast_train(inputs, fast)
            if y is not None:
                return y
        # Synchronized training calls run guarded: an error raised on this
        # process before the statistics exchange is still exchanged, so every
        # process raises it (ckbn.distributed).
        st = self._sync
        st.comm = None
        st.last_train = False
        if self.synchronized:
            if _training_flag(kwargs.get("training", args[0] if args else False)):
                comm = self._sync_communicator()
                if comm is not None:
                    st.comm = comm
                    st.last_train = True
                    return _distributed.guard(st.point, comm, "forward", super().__call__,
                                              inputs, *args, **kwargs)
            elif np.size(inputs) == 0:
                raise ValueError(
                    f"{self.name}: empty input of shape {np.shape(inputs)} (an empty local "
                    f"batch takes part in synchronized training calls only)")
        out = super().__call__(inputs, *args, **kwargs)
        if self._fast is None and executing_eagerly() and self._last is not None \
                and self._last.training and self._last_input is inputs:
            self._fast = self._fast_entry(inputs)
        return out

    apply = __call__

    # -- the eager training call of small float32 inputs, compiled ---------------
    def _fast_entry(self, inputs):
        """What the compiled eager training call needs, after a general one on
        ``inputs`` succeeded: ``(shape, layout, input_spec)``, or None when
        this layer's calls cannot take it.  It takes what the general path
        would do in one kernel call: float32 data and parameters, no ghost
        batches, renorm, adjustment or synchronization, a layout viewed
        without a copy, fewer than PARALLEL_MIN elements, and this class's
        own methods (a subclass that overrides a step keeps the general
        path)."""
        cls = type(self)
        layout = self._last.layout
        if (self.synchronized or self.renorm or self.adjustment is not None
                or self.virtual_batch_size is not None or np.dtype(self._dtype) != _F32
                or self._param_dtype != _F32 or layout.perm is not None
                or layout.shape != inputs.shape or inputs.dtype != _F32
                or inputs.size >= _PARALLEL_MIN or len(self._param_shape) != 1
                or any(getattr(cls, k) is not getattr(BatchNormalization, k)
                       for k in _FAST_METHODS)):
            return None
        return (inputs.shape, layout, self.input_spec)

    def _fast_train(self, inputs, fast):
        """The eager training call on the compiled entry (same results, updates
        and record as the general path, bit for bit); None to take the general
        path."""
        _, layout, spec = fast
        if spec is not self.input_spec:
            self._fast = None
            return None
        momentum = self.momentum
        rates = self._fast_rate
        if rates is None or rates[0] != momentum:
            rates = self._fast_rate = (momentum, float(np.float32(1.0 - momentum)))
        n = layout.count
        factor = n / (n - 1.0) if (self.fused and n > 1
                                   and self._bessels_correction_test_only) else 1.0
        gamma, beta = self.gamma, self.beta
        g = gamma.value if gamma is not None else None
        b = beta.value if beta is not None else None
        eps = self.epsilon
        st = self._sync
        st.comm = None
        st.last_train = False
        if self.trainable:
            mm, mv = self.moving_mean, self.moving_variance
            with mm._lock, mv._lock:
                r = _ops.small_layer_train(inputs, layout.dims, g, b, eps, mm._value,
                                           mv._value, rates[1], factor)
                if r is None:
                    return None
                mm._value = r[4]
                mv._value = r[5]
        else:
            r = _ops.small_layer_train(inputs, layout.dims, g, b, eps, None, None, rates[1],
                                       factor)
            if r is None:
                return None
        rec = _CallRecord()
        rec.layout = layout
        rec.training = True
        rec.adj_scale = rec.adj_bias = None
        rec.mean, rec.var, rec.eps, rec.r, rec.d = r[1], r[2], eps, None, None
        rec.g_eff = r[3]
        rec.batch = n
        rec.in_shape = inputs.shape
        self._remember(inputs, rec)
        return r[0]

    def _sync_communicator(self):
        """The communicator of a synchronized training call, or None in a world
        of one process (plain batch normalization)."""
        comm = self._communicator or _distributed.get_communicator()
        if comm is None:
            raise ValueError(
                f"{self.name}: synchronized=True needs a communicator: pass communicator="
                f"ckbn.distributed.from_mpi4py(...) or from_torch(...), or call "
                f"ckbn.distributed.set_communicator(...)")
        return comm if comm.size > 1 else None

    def _param(self, var, layout, default):
        """A parameter or statistic (param_shape) as a flat per-channel float64 array."""
        if var is None:
            return np.full(layout.n_channels, default)
        v = var.value if hasattr(var, "value") else np.asarray(var)
        if v.size == layout.n_channels:       # no ghost groups: same order, just flatten
            return v.astype(np.float64).reshape(-1)
        v = np.asarray(v, dtype=np.float64)
        if v.shape != layout.keepdims_shape:
            v = v.reshape(self._broadcast_shape(layout))
        return np.broadcast_to(v, layout.keepdims_shape).reshape(-1)

    def call(self, inputs, training=False):
        train = _training_flag(training)
        x = inputs
        dtype = np.dtype(self._dtype)
        if x.dtype != dtype:
            x = x.astype(dtype)
        vbs = self.virtual_batch_size
        if vbs is not None and train:
            if x.shape[0] % vbs:
                raise ValueError(
                    f"{self.name}: virtual_batch_size {vbs} does not divide the batch size "
                    f"{x.shape[0]} of the training input of shape {x.shape}")
            xg = x.reshape((vbs, x.shape[0] // vbs) + x.shape[1:])
            chan = sorted([1] + list(self.axis))
        elif vbs is not None:
            xg = x
            chan = [a - 1 for a in self.axis]
        else:
            xg = x
            chan = self.axis
        key = (xg.shape, train)
        cached = self._layout_cache
        if cached is not None and cached[0] == key:
            layout = cached[1]
        else:
            layout = make_layout(xg.shape, chan)
            self._layout_cache = (key, layout)
        if train:
            y, rec = self._train_forward(xg, layout, inputs)
        else:
            y, rec = self._infer_forward(xg, layout)
        rec.in_shape = inputs.shape
        self._remember(inputs, rec)
        return y.reshape(inputs.shape) if y.shape != inputs.shape else y

    def _broadcast_shape(self, layout):
        """Shape to reshape a param_shape array into so it broadcasts on the layout."""
        ps = self._param_shape
        if len(ps) == len(layout.shape):
            return ps
        if len(ps) == 1:
            return layout.keepdims_shape
        # Ghost parameters used on an ungrouped input: drop the group axis.
        return ps[:1] + ps[2:]

    def _affine_coefs(self, layout, train):
        """(A, B) of y = xhat' * A + B from gamma, beta and (in training) adjustment."""
        g = self._param(self.gamma, layout, 1.0)
        b = self._param(self.beta, layout, 0.0)
        adj_s = adj_b = None
        if train and self.adjustment is not None:
            bshape = self._broadcast_shape(layout)
            adj_s, adj_b = self.adjustment(layout.shape)
            adj_s = np.broadcast_to(np.asarray(adj_s, np.float64).reshape(
                bshape if np.size(adj_s) > 1 else ()), layout.keepdims_shape).reshape(-1)
            adj_b = np.broadcast_to(np.asarray(adj_b, np.float64).reshape(
                bshape if np.size(adj_b) > 1 else ()), layout.keepdims_shape).reshape(-1)
            b = adj_b * g + b
            g = adj_s * g
        return g, b, adj_s, adj_b

    def _train_forward(self, xg, layout, inputs):
        eps = self.epsilon
        A, B, adj_s, adj_b = self._affine_coefs(layout, True)
        rec = _CallRecord()
        rec.layout = layout
        rec.training = True
        rec.adj_scale, rec.adj_bias = adj_s, adj_b
        st = self._sync
        r = d = None
        if st.comm is None and not self.renorm and adj_s is None:
            # One kernel call: statistics, coefficients and normalization.
            y, mean, var = _ops.forward_train(xg, layout, A, B, eps)
            count = layout.count
        else:
            if st.comm is not None:
                # Synchronized, exchange point 1: the statistics and count of the
                # global batch (every process gets the same bits).
                mean, var, count = _distributed.sync_moments(st.point, st.comm, xg,
                                                             layout.channel_axes)
                st.records[rec] = (st.comm, st.point.step)
            else:
                mean, var = _ops.stats(xg, layout)
                count = layout.count
            if self.renorm:
                r, d = self._renorm_rd(mean, var, layout)
            a, b = _coefs.forward(mean, var, eps, A, B, r, d)
            y = _ops.affine(xg, layout, a, b) if xg.size else np.empty(xg.shape, xg.dtype)
        rec.mean, rec.var, rec.eps, rec.r, rec.d = mean, var, eps, r, d
        rec.g_eff = A if r is None else A * r
        rec.batch = int(count)
        self._add_moving_updates(mean, var, layout, inputs, count)
        return y, rec

    def _infer_forward(self, xg, layout):
        A, B, _, _ = self._affine_coefs(layout, False)
        mm = self._param(self.moving_mean, layout, 0.0)
        mv = self._param(self.moving_variance, layout, 1.0)
        y = _ops.forward_infer(xg, layout, A, B, mm, mv, self.epsilon)
        rec = _CallRecord()
        rec.layout, rec.training, rec.mean, rec.var, rec.eps = layout, False, mm, mv, self.epsilon
        rec.g_eff, rec.r, rec.d, rec.adj_scale, rec.adj_bias = A, None, None, None, None
        rec.batch = layout.count
        return y, rec

    def _group_mean(self, flat, layout):
        """Per-channel stats (flat, layout order) as param_shape arrays; ghost
        statistics are averaged over the ghost batches."""
        v = flat.reshape(layout.keepdims_shape)
        if self.virtual_batch_size is not None:
            v = v.mean(axis=1, keepdims=True)
        return v.reshape(self._param_shape)

    def _renorm_rd(self, mean, var, layout):
        eps = self.epsilon
        new_mean = self._group_mean(mean, layout)
        new_var = self._group_mean(var, layout)
        std = np.sqrt(new_var + eps)
        rstd = np.maximum(self.renorm_stddev.value.astype(np.float64), math.sqrt(eps))
        r = std / rstd
        d = (new_mean - self.renorm_mean.value) / rstd
        clip = self.renorm_clipping
        if "rmin" in clip:
            r = np.maximum(r, clip["rmin"])
        if "rmax" in clip:
            r = np.minimum(r, clip["rmax"])
        if "dmax" in clip:
            d = np.clip(d, -clip["dmax"], clip["dmax"])
        ks = layout.keepdims_shape
        shp = self._broadcast_shape(layout) if self.virtual_batch_size is None else r.shape
        r = np.broadcast_to(r.reshape(shp), ks).reshape(-1)
        d = np.broadcast_to(d.reshape(shp), ks).reshape(-1)
        return r, d

    def _moving_steps(self, mean, var, layout, count):
        """The moving-average steps of one training call, as ``(fn, args)``
        pairs: graph mode wraps them in pending ``Update`` objects, eager mode
        runs them at once.  The fused path feeds the Bessel-corrected batch
        variance ``var * n / (n - 1)`` (``n = count`` values per channel, of the
        global batch when synchronized) to
        ``moving_variance``; renorm feeds its own moving averages (see
        ``_renorm_var_update``)."""
        new_mean = self._group_mean(mean, layout)
        new_var = self._group_mean(var, layout)
        m = self.momentum
        if self.renorm:
            std = np.sqrt(new_var + self.epsilon)
            step = _RenormStep(self.renorm_mean, self.renorm_stddev, new_mean, std,
                               self.renorm_momentum)
            return ((_renorm_mean_update, (step, self.moving_mean, new_mean, m)),
                    (_renorm_var_update, (step, self.moving_stddev, self.moving_variance,
                                          std, m, self.epsilon)))
        if self.fused:
            n = count
            if n > 1 and self._bessels_correction_test_only:
                new_var = new_var * (n / (n - 1.0))
        return ((_ema, (self.moving_mean, new_mean, m)),
                (_ema, (self.moving_variance, new_var, m)))

    def _add_moving_updates(self, mean, var, layout, inputs, count):
        (f1, a1), (f2, a2) = self._moving_steps(mean, var, layout, count)
        if executing_eagerly():
            if self.trainable:
                f1(*a1)
                f2(*a2)
            return
        n1, n2 = self._update_names
        self.add_update([Update(f1, *a1, name=n1), Update(f2, *a2, name=n2)], inputs=inputs)

    # -- backward -----------------------------------------------------------------
    def _remember(self, inputs, rec):
        """Keep what backward needs: the latest call strongly, earlier ones while
        their input array lives (looked up by identity)."""
        key = id(inputs)
        records = self._records

        def _drop(_ref, key=key, records=records):
            hit = records.get(key)
            if hit is not None and hit[0] is _ref:
                del records[key]

        rec.ref = weakref.ref(inputs, _drop)
        records[key] = (rec.ref, rec)
        self._last = rec
        self._last_input = inputs

    def backward(self, dy: ArrayLike, inputs: ArrayLike | None = None
                 ) -> tuple[np.ndarray[Any, np.dtype[Any]], list[np.ndarray[Any, np.dtype[Any]]]]:
        """Gradients of the call made on ``inputs`` (default: the latest call).

        For a synchronized training call, dx is the gradient of the global
        batch's normalization (one all-reduce of the per-channel sums); gamma's
        and beta's gradients are this process's sums.

        Returns
        -------
        dx : ndarray of the input's shape and dtype
        grads : list of ndarray
            Aligned with ``self.trainable_weights`` (gamma, then beta, when
            they exist and the layer is trainable).
        """
        st = self._sync
        if st.last_train and st.comm is not None:
            return _distributed.guard(st.point, st.comm, "backward", self._backward, dy,
                                      inputs)
        return self._backward(dy, inputs)

    def _backward(self, dy, inputs=None):
        if inputs is None:
            rec = self._last
            if rec is None:
                raise RuntimeError(f"{self.name}: backward() before any call")
        else:
            hit = self._records.get(id(inputs))
            if hit is None or hit[0]() is not inputs:
                raise ValueError(f"{self.name}: no call on these inputs is recorded")
            rec = hit[1]
        x = rec.ref()
        if x is None:
            raise RuntimeError(f"{self.name}: the input of that call no longer exists")
        layout = rec.layout
        dtype = np.dtype(self._dtype)
        x = np.asarray(x).astype(dtype, copy=False).reshape(layout.shape)
        dy = np.asarray(dy)
        if dy.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{self.name}: dy must be a float array, got dtype {dy.dtype}")
        if dy.shape != rec.in_shape:
            raise ValueError(
                f"{self.name}: dy has shape {dy.shape}, expected the call's output shape "
                f"{rec.in_shape}")
        dy = dy.astype(dtype, copy=False).reshape(layout.shape)
        sync = self._sync.records.get(rec)
        if sync is not None:
            # Synchronized, exchange point 2: the sums of the global batch give
            # dx; gamma's and beta's gradients stay this process's sums.
            comm, step = sync
            if x.size:
                sum_dy, sum_dyxc = _ops.grad_sums(dy, x, layout, rec.mean)
            else:
                sum_dy = sum_dyxc = np.zeros(layout.n_channels)
            inv = _coefs.inv_std(rec.var, rec.eps)
            sum_dy_xhat = sum_dyxc * inv
            g_dy, g_dy_xhat = _distributed.sync_sums(self._sync.point, comm, step, sum_dy,
                                                     sum_dy_xhat)
            k1, k2, k3 = _coefs.backward(rec.g_eff, rec.mean, rec.var, rec.eps, rec.batch,
                                         g_dy, g_dy_xhat, inv=inv)
            dx = _ops.grad_dx(dy, x, layout, k1, k2, k3) if x.size else np.empty_like(dy)
        else:
            # Renorm's r and d are constants of the graph (as in TF): the gradient
            # with respect to x is plain batch norm's with the scale g_eff = A * r.
            dx, sum_dy_xhat, sum_dy = _ops.backward(dy, x, layout, rec.g_eff, rec.mean,
                                                    rec.var, rec.eps, rec.training)
        grads = []
        if self.trainable:
            if self.gamma is not None:
                train = rec.training
                core = _coefs.gamma_grad(sum_dy_xhat, sum_dy, rec.r if train else None,
                                         rec.d if train else None, rec.adj_scale,
                                         rec.adj_bias)
                grads.append(self._reduce_to_param(core, layout))
            if self.beta is not None:
                grads.append(self._reduce_to_param(sum_dy, layout))
        return dx.reshape(rec.in_shape), grads

    def _reduce_to_param(self, flat, layout):
        v = flat.reshape(layout.keepdims_shape)
        if len(layout.shape) != len(self._param_shape) or v.shape != self._param_shape:
            ghost = len(layout.shape) == self._ndims + 1
            if ghost:
                v = v.sum(axis=1, keepdims=True)
        return v.reshape(self._param_shape).astype(self._param_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(axis=self._orig_axis if self.built else self.axis, momentum=self.momentum,
                   epsilon=self.epsilon, center=self.center, scale=self.scale,
                   renorm=self.renorm, virtual_batch_size=self.virtual_batch_size,
                   synchronized=self.synchronized)
        if self.renorm:
            cfg.update(renorm_clipping=self.renorm_clipping, renorm_momentum=self.renorm_momentum)
        return cfg


# The steps of an eager training call the compiled entry replaces: a subclass
# that overrides one of them keeps the general path.
_FAST_METHODS = ("call", "_train_forward", "_affine_coefs", "_param", "_moving_steps",
                 "_add_moving_updates", "_group_mean", "_remember", "_validate_inputs",
                 "_assert_input_compatibility", "build")


def batch_normalization(inputs, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                        beta_initializer="zeros", gamma_initializer="ones",
                        moving_mean_initializer="zeros", moving_variance_initializer="ones",
                        beta_regularizer=None, gamma_regularizer=None, beta_constraint=None,
                        gamma_constraint=None, training=False, trainable=True, name=None,
                        reuse=None, renorm=False, renorm_clipping=None, renorm_momentum=0.99,
                        fused=None, virtual_batch_size=None,
                        adjustment=None) -> np.ndarray[Any, np.dtype[Any]]:
    """Functional form of :class:`BatchNormalization` (``training`` defaults to False)."""
    layer = BatchNormalization(
        axis=axis, momentum=momentum, epsilon=epsilon, center=center, scale=scale,
        beta_initializer=beta_initializer, gamma_initializer=gamma_initializer,
        moving_mean_initializer=moving_mean_initializer,
        moving_variance_initializer=moving_variance_initializer,
        beta_regularizer=beta_regularizer, gamma_regularizer=gamma_regularizer,
        beta_constraint=beta_constraint, gamma_constraint=gamma_constraint, renorm=renorm,
        renorm_clipping=renorm_clipping, renorm_momentum=renorm_momentum, fused=fused,
        trainable=trainable, virtual_batch_size=virtual_batch_size, adjustment=adjustment,
        name=name, _reuse=reuse, _scope=name)
    return layer.apply(inputs, training=training)


BatchNorm = BatchNormalization
batch_norm = batch_normalization
