"""``keras_plugin.BatchNormalization``: Keras 3's layer, computed by ckbn kernels.

A subclass of ``keras.layers.BatchNormalization`` with the same class name,
weights (names, order, shapes, float32 under mixed precision) and config keys,
so weight files and ``.keras`` archives are interchangeable with stock models.
It also accepts what Keras 3 dropped from Keras 2 (``tf.keras``):
``virtual_batch_size``, a list/tuple ``axis``, ``fused`` and ``adjustment``, and
``renorm``/``renorm_clipping``/``renorm_momentum`` on Keras versions without
them; these config keys are written only when set.

Where the computation happens
-----------------------------
For CPU tensors the forward and backward passes run on ``ckbn.nn`` kernels
(one kernel call per pass).  Tensors reach them as NumPy arrays in
:mod:`keras_plugin._kernels` (the single conversion point), zero-copy where the
framework allows; on TensorFlow and PyTorch they run as compiled framework
ops instead (``keras_plugin._tf_native``, ``keras_plugin._torch_native``), and
on PyTorch a layer's common eager call also skips Keras's ``Layer.__call__``
bookkeeping (``keras_plugin._torch.layer_call``).  Keras's own ops (the
stock layer's code) are used instead for GPU tensors, masks, XLA compilation
and export (``torch.export``; a SavedModel keeps the TensorFlow ops).  On
JAX the kernels run inside ``jax.jit`` as XLA FFI custom calls
(``keras_plugin._jax_ffi``, no host callback, no copy); where that handler
cannot be built, JAX runs Keras's code unless
``keras_plugin.set_jax_min_elements(n)`` opts in to host callbacks, which
measured slower than XLA at every size (``keras_plugin._jax``).  Where the framework's own op
was measured faster for a call of this size and mode, the layer runs Keras's
code too (:mod:`keras_plugin._policy`); on PyTorch, inference left to Keras
runs in one PyTorch op where the layout allows (``addcmul`` channels last,
``batch_norm`` channels first; ``keras_plugin._torch.layer_infer``: one pass
instead of Keras's three).
The layer decides once per input shape, dtype and mode and keeps the
decision until one of them, ``kernels_disabled`` or the dispatch thresholds
change (``keras_plugin._engine.route``).  Results agree to float rounding.

``synchronized=True`` (statistics of the global batch across processes or
replicas, masked calls included) is computed by :mod:`keras_plugin._sync` on
the torch, tensorflow and jax backends; where it cannot synchronize it raises.

On the TensorFlow backend the layer sets ``supports_jit = False``, so a model
that contains it compiles with ``jit_compile=False`` by default: **XLA is off for
such a model** (``jit_compile=True`` warns and is turned off by Keras).

OpenMP notes
------------
ckbn's kernels use the OpenMP runtime they were built with (libgomp with gcc).
Avoid loading a second, different OpenMP runtime (Intel's libiomp5, LLVM's
libomp) into the same process: mixing runtimes can crash or oversubscribe.
With a libgomp-built ckbn, data loaders that ``fork()`` after the kernels ran
may hang in the child if it calls the kernels; use the ``spawn``/``forkserver``
start method (PyTorch ``DataLoader(multiprocessing_context="spawn")``) or
keep ckbn out of the workers.  Threads: ``ckbn.set_num_threads(n)``.
"""

from __future__ import annotations

import inspect
import math
import warnings

import keras
from keras import ops

from keras_plugin import _activation, _engine, _sync

__all__ = ["BatchNormalization"]

_Stock = keras.layers.BatchNormalization
_STOCK_PARAMS = set(inspect.signature(_Stock.__init__).parameters)
_STOCK_HAS_RENORM = "renorm" in _STOCK_PARAMS
_RENORM_KEYS = ("rmax", "rmin", "dmax")


def _check_axis(axis):
    if isinstance(axis, (list, tuple)):
        if not axis:
            raise ValueError(f"axis must name at least one axis, got {axis!r}")
        for a in axis:
            if isinstance(a, bool) or not isinstance(a, int):
                raise TypeError(f"axis entries must be ints, got {axis!r}")
        if len(set(axis)) != len(axis):
            raise ValueError(f"Duplicate axis in {axis!r}")
        return int(axis[0]) if len(axis) == 1 else [int(a) for a in axis]
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"axis must be an int or a list of ints, got {axis!r}")
    return int(axis)


def _check_renorm_clipping(clipping):
    clipping = dict(clipping or {})
    if set(clipping) - set(_RENORM_KEYS):
        raise ValueError(
            f"Received invalid keys for `renorm_clipping` argument: {clipping}. "
            f"Supported values: {list(_RENORM_KEYS)}.")
    rmax, rmin, dmax = (clipping.get(k) for k in _RENORM_KEYS)
    if rmax is not None and rmin is not None and rmax < rmin:
        raise ValueError(f"rmax should be greater than rmin in `renorm_clipping`; "
                         f"received rmax={rmax}, rmin={rmin}.")
    if dmax is not None and dmax < 0:
        raise ValueError(f"dmax should be non-negative in `renorm_clipping`; received {dmax}.")
    return clipping


def _clone_initializer(init):
    return keras.initializers.deserialize(keras.initializers.serialize(init))


@keras.saving.register_keras_serializable(package="ckbn", name="BatchNormalization")
class BatchNormalization(_Stock):
    """Batch normalization on ckbn's CPU kernels; a drop-in for Keras's layer.

    Arguments are those of ``keras.layers.BatchNormalization`` plus:

    axis : int or list of int
        A list normalizes over several axes at once (one statistic per element
        of those axes, as ``tf.keras``); the weights then have the input's rank
        with 1s elsewhere.
    virtual_batch_size : int, optional
        Ghost batch normalization as ``tf.keras`` computes it: in training, the
        batch is split into ``batch // virtual_batch_size`` ghost batches,
        **strided** (sample ``b`` belongs to ghost ``b % (batch // vbs)``), each
        normalized with its own statistics; the moving statistics are updated
        once with the mean of the ghost means and of the ghost variances.  The
        weights get ``tf.keras``'s shape (the input's rank + 1, 1s except the
        channel axes).  Inference accepts any batch size.
    fused : bool, optional
        Accepted for ``tf.keras`` compatibility.  ``True`` raises where
        ``tf.keras``'s fused kernel could not be used (renorm, ghost batches,
        adjustment, an axis other than 1 or 3 of 4-D input) and, as that kernel
        does, feeds the Bessel-corrected batch variance to ``moving_variance``.
        ``None``/``False`` keep Keras 3's (biased) update.
    adjustment : callable, optional
        ``adjustment(shape) -> (adj_scale, adj_bias)``, applied in training to
        the normalized value before ``gamma``/``beta``, as ``tf.keras``; not
        serializable (omitted from the config with a warning).
    renorm, renorm_clipping, renorm_momentum
        Batch renormalization as Keras 3.14+ (equal to ``tf.keras``), also on
        Keras versions without it.
    """

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones",
                 moving_mean_initializer="zeros", moving_variance_initializer="ones",
                 beta_regularizer=None, gamma_regularizer=None, beta_constraint=None,
                 gamma_constraint=None, renorm=False, renorm_clipping=None,
                 renorm_momentum=0.99, synchronized=False, virtual_batch_size=None,
                 fused=None, adjustment=None, **kwargs) -> None:
        axis = _check_axis(axis)
        stock_kwargs = dict(
            axis=axis if isinstance(axis, int) else -1, momentum=momentum, epsilon=epsilon,
            center=center, scale=scale, beta_initializer=beta_initializer,
            gamma_initializer=gamma_initializer,
            moving_mean_initializer=moving_mean_initializer,
            moving_variance_initializer=moving_variance_initializer,
            beta_regularizer=beta_regularizer, gamma_regularizer=gamma_regularizer,
            beta_constraint=beta_constraint, gamma_constraint=gamma_constraint)
        if "synchronized" in _STOCK_PARAMS:
            # Keras's own layer synchronizes on some backends only; keras_plugin._sync the rest.
            stock_kwargs["synchronized"] = bool(synchronized) and _engine.keras_synchronizes()
        elif synchronized:
            raise ValueError("synchronized=True needs a Keras version that supports it")
        if _STOCK_HAS_RENORM:
            stock_kwargs.update(renorm=renorm, renorm_clipping=renorm_clipping,
                                renorm_momentum=renorm_momentum)
        super().__init__(**stock_kwargs, **kwargs)
        self.axis = axis
        self.synchronized = bool(synchronized)
        self.renorm = bool(renorm)
        self.renorm_clipping = _check_renorm_clipping(renorm_clipping) if renorm else (
            renorm_clipping)
        self.renorm_momentum = renorm_momentum
        if virtual_batch_size is not None:
            if isinstance(virtual_batch_size, bool) or not isinstance(virtual_batch_size, int) \
                    or virtual_batch_size <= 0:
                raise ValueError(
                    "`virtual_batch_size` must be a positive integer that divides the true "
                    f"batch size of the input tensor. Received: {virtual_batch_size!r}")
            if adjustment is not None:
                raise ValueError("When using `virtual_batch_size`, adjustment cannot be "
                                 "specified.")
        if adjustment is not None and not callable(adjustment):
            raise TypeError(f"adjustment must be callable, got {adjustment!r}")
        self.virtual_batch_size = virtual_batch_size
        self.adjustment = adjustment
        if fused not in (None, True, False):
            raise TypeError(f"fused must be None, True or False, got {fused!r}")
        if fused:
            self._raise_if_fused_cannot_be_used()
        self.fused = fused
        self._channel_axes = None
        self._param_shape = None
        self._n_channels = None

    # ------------------------------------------------------------------ config
    def _raise_if_fused_cannot_be_used(self):
        if self.renorm:
            raise ValueError("Passing both `fused=True` and `renorm=True` is not supported")
        axis = [self.axis] if isinstance(self.axis, int) else self.axis
        if len(axis) > 1 or axis[0] not in (-3, -1, 1, 3):
            raise ValueError("Passing `fused=True` is only supported when axis is 1 or 3 "
                             f"for input rank 4. Got axis {self.axis}")
        if self.virtual_batch_size is not None:
            raise ValueError("Passing `fused=True` is not supported when "
                             "`virtual_batch_size` is specified.")
        if self.adjustment is not None:
            raise ValueError("Passing `fused=True` is not supported when `adjustment` is "
                             "specified.")

    @property
    def _uses_extras(self):
        """Whether the stock layer's own code cannot compute this layer."""
        return (not isinstance(self.axis, int) or self.virtual_batch_size is not None
                or self.adjustment is not None or bool(self.fused)
                or (self.renorm and not _STOCK_HAS_RENORM))

    def get_config(self):
        config = super().get_config()
        config["axis"] = self.axis
        if not _STOCK_HAS_RENORM:
            for key in ("renorm", "renorm_clipping", "renorm_momentum"):
                config.pop(key, None)
            if self.renorm:
                config.update(renorm=True, renorm_clipping=self.renorm_clipping,
                              renorm_momentum=self.renorm_momentum)
        if self.virtual_batch_size is not None:
            config["virtual_batch_size"] = self.virtual_batch_size
        if self.fused is not None:
            config["fused"] = self.fused
        if self.adjustment is not None:
            warnings.warn("The `adjustment` function of this BatchNormalization layer cannot "
                          "be serialized and has been omitted from the layer config.",
                          stacklevel=2)
        return config

    # ------------------------------------------------------------------- build
    def build(self, input_shape):
        ndim = len(input_shape)
        axes = [self.axis] if isinstance(self.axis, int) else list(self.axis)
        for a in axes:
            if not -ndim <= a < ndim:
                raise ValueError(f"Axis {a} is out of bounds for input shape {input_shape}. "
                                 f"Received: axis={self.axis}")
        axes = sorted({a % ndim for a in axes})
        if len(axes) != (1 if isinstance(self.axis, int) else len(self.axis)):
            raise ValueError(f"Duplicate axis in {self.axis} for input rank {ndim}")
        if self.virtual_batch_size is not None and 0 in axes:
            raise ValueError("When using `virtual_batch_size`, the batch dimension must be 0 "
                             f"and thus axis cannot include 0. Received axis={self.axis}")
        if self.fused and ndim != 4:
            raise ValueError("Batch normalization layers with `fused=True` only support "
                             f"4D input tensors. Received tensor with shape: {input_shape}")
        sizes = {a: input_shape[a] for a in axes}
        for a, n in sizes.items():
            if n is None:
                raise ValueError(f"Input has undefined `axis` dimension. Received input with "
                                 f"shape {tuple(input_shape)} and axis={self.axis}")
        if len(axes) == 1 and self.virtual_batch_size is None:
            param_shape = (sizes[axes[0]],)
        else:
            param_shape = [sizes.get(i, 1) for i in range(ndim)]
            if self.virtual_batch_size is not None:
                param_shape.insert(1, 1)
            param_shape = tuple(param_shape)
        self._channel_axes = tuple(axes)
        self._param_shape = param_shape
        self._n_channels = math.prod(sizes.values())

        def weight(name, initializer, trainable, **kw):
            return self.add_weight(shape=param_shape, name=name, initializer=initializer,
                                   trainable=trainable, autocast=False, **kw)

        if self.scale:
            self.gamma = weight("gamma", self.gamma_initializer, True,
                                regularizer=self.gamma_regularizer,
                                constraint=self.gamma_constraint)
        if self.center:
            self.beta = weight("beta", self.beta_initializer, True,
                               regularizer=self.beta_regularizer,
                               constraint=self.beta_constraint)
        self.moving_mean = weight("moving_mean", self.moving_mean_initializer, False)
        self.moving_variance = weight("moving_variance", self.moving_variance_initializer,
                                      False)
        if self.renorm:
            def stddev_init(shape, dtype=None):
                return ops.sqrt(_clone_initializer(self.moving_variance_initializer)(
                    shape, dtype=dtype))

            self.moving_stddev = weight("moving_stddev", stddev_init, False)
            self.renorm_mean = weight("renorm_mean",
                                      _clone_initializer(self.moving_mean_initializer), False)
            self.renorm_stddev = weight("renorm_stddev", stddev_init, False)

        self.input_spec = keras.layers.InputSpec(ndim=ndim, axes=sizes)
        self._reduction_axes = [i for i in range(ndim) if i not in axes]
        if not _engine.supports_jit():
            self.supports_jit = False  # keeps jit_compile="auto" off XLA

    def compute_output_shape(self, input_shape):
        return input_shape

    # -------------------------------------------------------------------- call
    #: The activation applied after the normalization, as ``_activation.spec``
    #: returns it: None here; ``BatchNormalizationActivation`` sets it.
    _fused_act = None
    #: The cached dispatch decision (``_engine.Route``), made on the first call
    #: (a layer swapped in place by ``swap_batch_normalization`` skips ``__init__``).
    _route = None

    __call__ = _engine.fast_call

    def call(self, inputs, training=None, mask=None):
        train = bool(training and self.trainable)
        act = self._fused_act
        infer = None
        if mask is None and not self.synchronized:
            # The common case: the dispatch decision cached per shape, dtype and mode.
            cache = self._route
            if cache is None:
                cache = self._route = _engine.Route()
            inputs, impl, infer = _engine.route(cache, inputs, "train" if train else "infer")
        else:
            if mask is not None and len(mask.shape) != len(inputs.shape) - 1:
                raise ValueError("The mask provided should be one dimension less than the "
                                 f"inputs. Received: mask.shape={mask.shape}, "
                                 f"inputs.shape={inputs.shape}")
            if keras.backend.standardize_dtype(inputs.dtype) == "bfloat16":
                # Computed in float32 either way (as the stock layer does); NumPy has no
                # bfloat16.
                inputs = ops.cast(inputs, "float32")
            impl = None
            if self.synchronized:   # global statistics across processes: keras_plugin._sync
                impl = _sync.engine(self, inputs, train, mask)
        if impl is None:
            if not self._uses_extras:
                y = None
                if infer is not None and not train:
                    # the framework's own fused inference op (keras_plugin._torch)
                    y = infer(self, inputs)
                if y is None:
                    y = super().call(inputs, training=training, mask=mask)
                return _activation.apply(y, act)
            if mask is not None:
                raise NotImplementedError("Masks are not supported together with list axis, "
                                          "virtual_batch_size, adjustment or fused=True.")
            impl = _engine.OPS
        if act is not None and impl is not _engine.OPS and impl is not _engine.backend_module():
            # an engine without the activation (keras_plugin._sync): apply it afterwards
            y = _engine.forward(self, inputs, train, impl)
            return _activation.apply(y, act)
        return _engine.forward(self, inputs, train, impl, act)
