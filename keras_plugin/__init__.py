"""Keras 3 adapter for ckbn: ``BatchNormalization`` on ckbn's CPU kernels.

>>> from keras_plugin import BatchNormalization, swap_batch_normalization

* :class:`BatchNormalization` -- a drop-in subclass of
  ``keras.layers.BatchNormalization`` (same class name, weights and config;
  plus ``tf.keras``'s ``virtual_batch_size``, list ``axis``, ``fused``,
  ``adjustment``, ``renorm``), registered as ``ckbn>BatchNormalization``.
* :func:`swap_batch_normalization` -- a model with every Keras
  ``BatchNormalization`` replaced by it, weights copied.
* ``swap_batch_normalization(model, fuse_activations=True)`` -- also each BN
  followed only by a ReLU/ReLU6/leaky ReLU/swish as one
  :class:`BatchNormalizationActivation` (``ckbn>BatchNormalizationActivation``).
* :func:`fold_batch_normalization` -- a new inference model with every batch
  normalization after a Dense/convolution folded into its weights (the others
  become :class:`~keras_plugin.fold.ChannelAffine` layers).
* :func:`kernels_disabled` -- a context in which the layers use Keras ops
  (for ``model.export``); :func:`set_jax_min_elements` -- the JAX threshold;
  :func:`jax_sync_axis` -- the mapped axis of ``synchronized=True`` on JAX.

Backends: TensorFlow, PyTorch and JAX train on the kernels (CPU tensors);
NumPy runs inference on them.  See ``keras_plugin.layer`` for what falls back
to Keras ops and for the OpenMP notes.
"""

from keras_plugin._engine import kernels_disabled, kernels_enabled
from keras_plugin._sync import jax_sync_axis
from keras_plugin.layer import BatchNormalization
from keras_plugin.swap import swap_batch_normalization
from keras_plugin.fold import ChannelAffine, fold_batch_normalization
from keras_plugin.fuse import BatchNormalizationActivation

__all__ = [
    "BatchNormalization",
    "swap_batch_normalization",
    "fold_batch_normalization",
    "ChannelAffine",
    "BatchNormalizationActivation",
    "kernels_disabled",
    "kernels_enabled",
    "set_jax_min_elements",
    "get_jax_min_elements",
    "jax_sync_axis",
]


def set_jax_min_elements(n: int | None) -> None:
    """JAX backend: use the kernels for inputs of at least ``n`` elements (None: never).

    The kernels run through the XLA FFI handler where it is available (by
    default for every size), else through host callbacks (only once a
    threshold is set here).  The threshold applies to training and inference
    calls; it is ``keras_plugin._policy.set_min_elements("jax", None, n)``,
    where every backend's thresholds live.  ``n`` must be an int >= 0 or None
    (``TypeError``/``ValueError`` otherwise, the threshold unchanged).
    """
    from keras_plugin import _policy

    _policy.set_min_elements("jax", None, n)


def get_jax_min_elements() -> int | None:
    """JAX backend: the smallest input (elements) the kernels serve now, training or
    inference (None: never); by default the measured crossover, 0."""
    from keras_plugin import _policy

    return _policy.min_elements("jax", None)


def _load_native_ops():
    """TensorFlow backend: load ckbn's op library now (built on first use), so that a
    SavedModel holding its ops loads in a process that imported keras_plugin."""
    import keras

    if keras.backend.backend() == "tensorflow":
        from keras_plugin import _tf_native

        _tf_native.load()


_load_native_ops()
