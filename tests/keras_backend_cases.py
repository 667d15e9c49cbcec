"""keras_plugin tests for ONE Keras backend (the one in ``KERAS_BACKEND``).

Not collected by a plain ``pytest`` run (the file name does not start with
``test_``): ``tests/test_keras_plugin.py`` runs this file once per installed
backend, each in its own process, because Keras fixes its backend at import.

Every test compares real values: ckbn's layer against stock
``keras.layers.BatchNormalization`` on the same backend, against golden values
measured on tf.keras (docs/behaviour.md lists them), or against ``tf_keras``
itself on the TensorFlow backend.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import keras
from keras import ops

import keras_plugin
from keras_plugin import BatchNormalization, swap_batch_normalization

BACKEND = keras.backend.backend()
# The kernels at every size on TensorFlow and PyTorch too: the measured dispatch rule
# (keras_plugin._policy) would send these small tensors to the framework's ops; it has
# its own tests (tests/test_policy.py).
keras_plugin._policy.set_min_elements(BACKEND, None, 0)
TRAINS = BACKEND != "numpy"  # the NumPy backend cannot compute gradients
needs_training = pytest.mark.skipif(not TRAINS, reason="the NumPy backend cannot train")

if BACKEND == "jax":
    # Force the kernels for every size so the tests exercise them (the default
    # threshold sends small tensors to XLA).
    keras_plugin.set_jax_min_elements(0)


def np_(t):
    return np.asarray(ops.convert_to_numpy(t))


def _close(a, b, rtol=1e-5, atol=1e-5):
    np.testing.assert_allclose(np_(a).astype(np.float64), np_(b).astype(np.float64),
                               rtol=rtol, atol=atol)


def _weights_close(m1, m2, rtol=1e-5, atol=1e-5):
    w1, w2 = m1.get_weights(), m2.get_weights()
    assert len(w1) == len(w2)
    for a, b in zip(w1, w2):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def _rand(shape, seed=0, loc=1.5, scale=3.0, dtype="float32"):
    return (np.random.default_rng(seed).normal(size=shape) * scale + loc).astype(dtype)


def _randomize_bn(layer, seed=1):
    """Non-trivial gamma, beta and moving statistics (positive variances)."""
    rng = np.random.default_rng(seed)
    new = []
    for v in layer.weights:
        w = rng.normal(size=v.shape).astype("float32")
        if "variance" in v.path or "stddev" in v.path:
            w = np.abs(w) + 0.5
        new.append(w)
    layer.set_weights(new)


class _KernelCalls(dict):
    """Calls of the kernel glue, plus, on TensorFlow and PyTorch, the runs of the
    native ops since the test began (``call_counts`` of ``keras_plugin._tf_native``
    or ``keras_plugin._torch_native``)."""

    def __init__(self, names, native):
        super().__init__(dict.fromkeys(names, 0))
        self.native = native
        self.base = native.call_counts() if native is not None else None

    def __getitem__(self, name):
        value = super().__getitem__(name)
        if self.native is not None:
            value += self.native.call_counts().get(name, 0) - self.base.get(name, 0)
        return value


def native_ops():
    """``keras_plugin._tf_native`` or ``keras_plugin._torch_native`` where the
    backend's native ops are loaded, else None."""
    if BACKEND == "torch":
        from keras_plugin import _torch_native

        return _torch_native if _torch_native.available() else None
    if BACKEND != "tensorflow":
        return None
    from keras_plugin import _tf_native

    return _tf_native if _tf_native.available() else None


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts kernel calls (the real functions still run)."""
    from keras_plugin import _kernels

    counts = _KernelCalls(["train", "given", "grad", "moments"], native_ops())
    for name in list(counts):
        real = getattr(_kernels, name)

        def counted(*a, _real=real, _name=name, **k):
            dict.__setitem__(counts, _name, dict.__getitem__(counts, _name) + 1)
            return _real(*a, **k)

        monkeypatch.setattr(_kernels, name, counted)
    if BACKEND == "jax":
        # These counts are of the Python glue, which a host callback runs on
        # every execution; the XLA FFI handler runs none (tests/test_jax_ffi.py
        # checks it through the jaxpr), so counted tests take the callback path.
        from keras_plugin import _jax_ffi

        monkeypatch.setattr(_jax_ffi, "supports", lambda x: False)
    return counts


def _pair(**kwargs):
    return keras.layers.BatchNormalization(**kwargs), BatchNormalization(**kwargs)


# ---------------------------------------------------------------- layer parity
SHAPES_AXES = [((8, 5), -1), ((6, 4, 5, 3), -1), ((6, 4, 5, 3), 1), ((4, 3, 7), 1),
               ((3, 2, 3, 2, 4), -1), ((4, 3, 7), 2)]


@pytest.mark.parametrize("shape,axis", SHAPES_AXES)
def test_inference_and_training_outputs_match_stock(shape, axis, kernel_calls):
    x = _rand(shape)
    stock, ours = _pair(axis=axis, momentum=0.7)
    stock.build(shape)
    ours.build(shape)
    _randomize_bn(stock)
    ours.set_weights(stock.get_weights())
    _close(ours(x, training=False), stock(x, training=False))
    _close(ours(x), stock(x))  # training=None: inference
    for _ in range(2):
        _close(ours(x, training=True), stock(x, training=True), rtol=1e-5, atol=2e-5)
        for a, b in zip(ours.weights, stock.weights):
            _close(a, b, rtol=1e-5, atol=1e-6)
    assert kernel_calls["given"] == 2 and kernel_calls["train"] == 2


def test_same_weights_and_config_keys_as_stock():
    stock, ours = _pair(momentum=0.9, epsilon=1e-4, center=False,
                        gamma_regularizer="l2", beta_constraint="non_neg")
    stock.build((None, 4, 4, 8))
    ours.build((None, 4, 4, 8))
    assert type(ours).__name__ == "BatchNormalization"
    assert [v.path for v in ours.weights] == [v.path.replace(stock.name, ours.name)
                                              for v in stock.weights]
    assert [v.shape for v in ours.weights] == [v.shape for v in stock.weights]
    assert [v.trainable for v in ours.weights] == [v.trainable for v in stock.weights]
    cs, co = stock.get_config(), ours.get_config()
    assert set(cs) == set(co)
    cs.pop("name"), co.pop("name")
    assert cs == co
    # Stock Keras reads a config that uses no extras.
    back = keras.layers.BatchNormalization.from_config(ours.get_config())
    assert back.get_config() == ours.get_config()
    assert keras.saving.get_registered_name(BatchNormalization) == "ckbn>BatchNormalization"


def test_extras_emitted_only_when_set():
    plain = BatchNormalization().get_config()
    assert not {"virtual_batch_size", "fused", "adjustment"} & set(plain)
    cfg = BatchNormalization(axis=[1, 2], virtual_batch_size=4, fused=False).get_config()
    assert cfg["axis"] == [1, 2] and cfg["virtual_batch_size"] == 4 and cfg["fused"] is False
    again = BatchNormalization.from_config(cfg)
    assert again.get_config() == cfg
    assert BatchNormalization(axis=[3]).get_config()["axis"] == 3


@pytest.mark.parametrize("kwargs,match", [
    (dict(axis="x"), "axis"),
    (dict(axis=[1, 1]), "Duplicate"),
    (dict(virtual_batch_size=0), "virtual_batch_size"),
    (dict(renorm=True, renorm_clipping={"rmx": 1}), "invalid keys"),
    (dict(renorm=True, fused=True), "fused"),
    (dict(virtual_batch_size=2, adjustment=lambda s: (1.0, 0.0)), "adjustment"),
    (dict(axis=2, fused=True), "axis is 1 or 3"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        BatchNormalization(**kwargs)


def test_virtual_batch_must_divide_the_training_batch():
    layer = BatchNormalization(virtual_batch_size=4)
    x = _rand((6, 3))
    with pytest.raises(ValueError, match="virtual_batch_size=4 does not divide"):
        np_(layer(x, training=True))
    np_(layer(x, training=False))  # inference takes any batch size


def test_trainable_false_is_inference():
    x = _rand((8, 6))
    stock, ours = _pair()
    stock.build(x.shape)
    ours.build(x.shape)
    _randomize_bn(stock)
    ours.set_weights(stock.get_weights())
    stock.trainable = ours.trainable = False
    before = [np_(v) for v in ours.weights]
    _close(ours(x, training=True), stock(x, training=True))
    _close(ours(x, training=True), ours(x, training=False))
    for b, v in zip(before, ours.weights):
        np.testing.assert_array_equal(b, np_(v))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy, kernel_calls):
    x = _rand((16, 4, 4, 8), scale=2.0)
    keras.config.set_dtype_policy(policy)
    try:
        stock, ours = _pair(momentum=0.5)
        stock.build(x.shape)
        ours.build(x.shape)
        _randomize_bn(stock)
        ours.set_weights(stock.get_weights())
        assert all(keras.backend.standardize_dtype(v.dtype) == "float32" for v in ours.weights)
        for training in (False, True):
            ya, yb = ours(x, training=training), stock(x, training=training)
            assert keras.backend.standardize_dtype(ya.dtype) == policy.split("_")[1]
            tol = 2e-2 if "bfloat" in policy else 4e-3
            _close(ya, yb, rtol=tol, atol=tol)
        for a, b in zip(ours.weights, stock.weights):
            _close(a, b, rtol=1e-4, atol=1e-4)
        assert kernel_calls["given"] == 1 and kernel_calls["train"] == 1
    finally:
        keras.config.set_dtype_policy("float32")


def test_float64_layer():
    x = _rand((10, 3), dtype="float64")
    stock, ours = _pair(dtype="float64")
    y, ys = ours(x, training=True), stock(x, training=True)
    dt = keras.backend.standardize_dtype
    assert dt(y.dtype) == dt(ys.dtype)
    assert dt(ours.moving_mean.dtype) == dt(stock.moving_mean.dtype)
    ref = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3)
    # float64 end to end on TensorFlow; other backends pass numpy float64 inputs through
    # float32 (JAX without x64), for the stock layer too.
    tol = 1e-10 if BACKEND == "tensorflow" else 1e-6
    _close(y, ref, rtol=tol, atol=tol)
    _close(y, ys, rtol=tol, atol=tol)
    _close(ours.moving_variance, stock.moving_variance, rtol=tol, atol=tol)


def test_mask_falls_back_to_stock():
    x = _rand((4, 5, 3))
    mask = np.array([[1, 1, 1, 0, 0]] * 4, dtype=bool)
    stock, ours = _pair()
    _close(ours(x, training=True, mask=mask), stock(x, training=True, mask=mask))
    _close(ours.moving_mean, stock.moving_mean)


def test_kernels_disabled_gives_the_same_numbers(kernel_calls):
    x = _rand((12, 4))
    a, b = BatchNormalization(), BatchNormalization()
    ya = a(x, training=True)
    with keras_plugin.kernels_disabled():
        yb = b(x, training=True)
    assert kernel_calls["train"] == 1
    _close(ya, yb)
    _close(a.moving_variance, b.moving_variance)


# ---------------------------------------------------- goldens (tf.keras numbers)
G1_X = np.array([[1, 2, 3], [4, 0, -1], [2, 2, 5], [-3, 1, 0.5]], np.float32)


def test_golden_g1_plain():
    layer = BatchNormalization(momentum=0.9, gamma_initializer=keras.initializers.Constant(2.0),
                               beta_initializer=keras.initializers.Constant(3.0))
    y = layer(G1_X, training=True)
    _close(y, [[3.0, 4.807754, 3.977534], [5.353212, -0.012923, 0.501859],
               [3.784404, 4.807754, 5.715371], [-0.137617, 2.397415, 1.805237]], atol=2e-6)
    _close(layer.moving_mean, [0.1, 0.125, 0.1875])
    _close(layer.moving_variance, [1.55, 0.96875, 1.429688])
    _close(layer(G1_X, training=False),
           [[4.445329, 6.808039, 7.702731], [9.26309, 2.746131, 1.014402],
            [6.05125, 6.808039, 11.046895], [-1.978354, 4.777085, 3.522526]], atol=2e-6)


def test_golden_g3_ghost_batches():
    x = np.array([[1, 10], [2, 20], [3, 30], [5, 15], [7, 35], [11, 5]], np.float32)
    layer = BatchNormalization(virtual_batch_size=3, momentum=0.8)
    y = layer(x, training=True)
    _close(y, [[-1.068959, -1.388724], [-1.069007, 1.069031], [-0.26724, 0.462908],
               [-0.267252, 0.267258], [1.336199, 0.925816], [1.336259, -1.336289]], atol=2e-6)
    assert tuple(layer.moving_mean.shape) == (1, 1, 2)
    _close(layer.moving_mean, [[[0.966667, 3.833333]]])
    _close(layer.moving_variance, [[[2.822222, 16.355556]]])
    _close(layer(x, training=False),
           [[0.019838, 1.524771], [0.61499, 3.997372], [1.210141, 6.469973],
            [2.400444, 2.761071], [3.590747, 7.706274], [5.971353, 0.28847]], atol=2e-6)


def test_golden_g4_multi_axis():
    x = np.array([[[1, 2], [3, 4]], [[2, 0], [1, 9]], [[0.5, 4], [6, 0]]], np.float32)
    layer = BatchNormalization(axis=[1, 2], momentum=0.9)
    y = layer(x, training=True)
    assert tuple(layer.gamma.shape) == (1, 2, 2)
    _close(y, [[[-0.266918, 0.0], [-0.162202, -0.090532]],
               [[1.334591, -1.224515], [-1.135415, 1.267454]],
               [[-1.067673, 1.224515], [1.297618, -1.176921]]], atol=2e-6)
    _close(layer.moving_mean, [[[0.116667, 0.2], [0.333333, 0.433333]]])
    _close(layer.moving_variance, [[[0.938889, 1.166667], [1.322222, 2.255556]]])
    _close(layer(x, training=False),
           [[[0.911143, 1.665762], [2.318208, 2.374321]],
            [[1.942625, -0.185085], [0.579552, 5.70281]],
            [[0.395402, 3.516609], [4.926191, -0.288469]]], atol=2e-6)


def test_golden_g5_renorm():
    layer = BatchNormalization(axis=1, momentum=0.9, renorm=True, renorm_momentum=0.5,
                               renorm_clipping={"rmax": 1.5, "rmin": 0.5, "dmax": 0.5})
    _close(layer(G1_X, training=True),
           [[0.5, 1.25, 1.23315], [2.26491, -0.75, -1.373606], [1.088303, 1.25, 2.536528],
            [-1.853213, 0.25, -0.396072]], atol=2e-6)
    _close(layer(G1_X, training=True),
           [[0.281713, 1.31978, 1.181465], [1.971994, -0.8663, -1.241521],
            [0.84514, 1.31978, 2.392958], [-1.971994, 0.22674, -0.332901]], atol=2e-6)
    _close(layer.moving_mean, [0.19, 0.2375, 0.35625])
    _close(layer.moving_variance, [1.674585, 0.935355, 1.55482])
    _close(layer.renorm_mean, [0.75, 0.9375, 1.40625])
    _close(layer.renorm_stddev, [2.162279, 0.872319, 1.976284])
    _close(layer(G1_X, training=False),
           [[0.625751, 1.821415, 2.119535], [2.943348, -0.245439, -1.087327],
            [1.398284, 1.821415, 3.722967], [-2.464378, 0.787988, 0.115247]], atol=2e-6)


def test_golden_g7_fused_bessel():
    x = np.array([0.0, 2.0], np.float32).reshape(2, 1, 1, 1)
    fused = BatchNormalization(momentum=0.5, moving_variance_initializer="zeros", fused=True)
    plain = BatchNormalization(momentum=0.5, moving_variance_initializer="zeros")
    fused(x, training=True)
    plain(x, training=True)
    _close(fused.moving_variance, [1.0])
    _close(plain.moving_variance, [0.5])


def test_renorm_and_ghost_match_the_keras_ops_path():
    """Kernels vs the same layer on Keras ops: renorm x ghost x multi-axis x adjustment."""
    x = _rand((12, 3, 4))
    configs = [dict(renorm=True, virtual_batch_size=3, renorm_momentum=0.7),
               dict(axis=[1, 2], virtual_batch_size=4, momentum=0.6),
               dict(axis=1, renorm=True, renorm_clipping={"rmax": 1.2, "dmax": 0.3}),
               dict(adjustment=lambda shape: (np.full((4,), 1.1, "float32"),
                                              np.full((4,), -0.2, "float32")))]
    for cfg in configs:
        a, b = BatchNormalization(**cfg), BatchNormalization(**cfg)
        a.build(x.shape)
        b.build(x.shape)
        _randomize_bn(a)
        b.set_weights(a.get_weights())
        for step in range(3):
            xs = x + step
            ya = a(xs, training=True)
            with keras_plugin.kernels_disabled():
                yb = b(xs, training=True)
            _close(ya, yb, atol=2e-5)
        _weights_close(a, b, atol=2e-6)
        with keras_plugin.kernels_disabled():
            yb = b(x, training=False)
        _close(a(x, training=False), yb)


def test_against_the_ckbn_layer_when_available():
    import ckbn

    if not hasattr(ckbn, "BatchNormalization"):
        pytest.skip("ckbn.BatchNormalization (the NumPy layer) is not in this build yet")
    x = _rand((12, 3, 4))
    for cfg in [dict(renorm=True, virtual_batch_size=3, renorm_momentum=0.7,
                     renorm_clipping={"rmax": 1.5, "rmin": 0.5, "dmax": 0.5}),
                dict(axis=[1, 2], virtual_batch_size=4, momentum=0.6)]:
        ours = BatchNormalization(**cfg)
        with ckbn.eager_mode():
            ref = ckbn.BatchNormalization(**cfg)
            for step in range(3):
                _close(ours(x + step, training=True), ref(x + step, training=True), atol=2e-5)
            for name in ("moving_mean", "moving_variance"):
                _close(np_(getattr(ours, name)).ravel(),
                       np.asarray(getattr(ref, name).numpy()).ravel(), atol=2e-5)
            _close(ours(x, training=False), ref(x, training=False), atol=2e-5)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf_keras needs the TensorFlow backend")
def test_extras_against_tf_keras():
    tf_keras = pytest.importorskip("tf_keras")
    x = _rand((12, 3, 4, 5))
    configs = [dict(virtual_batch_size=4, momentum=0.7),
               dict(axis=[1, 3], momentum=0.8),
               dict(renorm=True, virtual_batch_size=6, renorm_momentum=0.6,
                    renorm_clipping={"rmax": 1.3, "rmin": 0.7, "dmax": 0.4}),
               dict(axis=[2], renorm=True, renorm_momentum=0.5)]
    for cfg in configs:
        ref = tf_keras.layers.BatchNormalization(**cfg)
        ours = BatchNormalization(**cfg)
        ref.build(x.shape)
        ours.build(x.shape)
        _randomize_bn(ours)
        by_name = {v.name.split("/")[-1].split(":")[0]: v for v in ref.weights}
        for v in ours.weights:
            by_name[v.name].assign(np_(v))
        for step in range(3):
            _close(ours(x * (1 + step), training=True), ref(x * (1 + step), training=True),
                   atol=3e-5)
        for v in ours.weights:
            _close(v, by_name[v.name], atol=2e-5)
        _close(ours(x, training=False), ref(x, training=False), atol=2e-5)


# ---------------------------------------------------------------- models
def _cnn(bn=keras.layers.BatchNormalization, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(6, 3, padding="same")(inputs)
    h = bn(momentum=0.8)(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Conv2D(5, 3, strides=2)(h)
    h = bn(axis=1)(h)  # axis != -1
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(8)(h)
    h = bn()(h)
    outputs = keras.layers.Dense(3)(h)
    return keras.Model(inputs, outputs)


def _bn_layers(model):
    return [la for la in model._flatten_layers() if isinstance(la, keras.layers.BatchNormalization)]


def _randomize_model_bns(model):
    for i, layer in enumerate(_bn_layers(model)):
        _randomize_bn(layer, seed=10 + i)


def test_swap_functional_predictions_equal():
    model = _cnn()
    _randomize_model_bns(model)
    swapped = swap_batch_normalization(model)
    assert swapped is not model
    assert all(type(la) is BatchNormalization for la in _bn_layers(swapped))
    names = [la.name for la in model.layers if not isinstance(la, keras.layers.InputLayer)]
    assert [la.name for la in swapped.layers
            if not isinstance(la, keras.layers.InputLayer)] == names
    x = _rand((10, 8, 8, 3))
    _close(swapped.predict(x, verbose=0), model.predict(x, verbose=0), atol=2e-5)
    _close(swapped(x, training=True), model(x, training=True), atol=5e-5, rtol=1e-4)


def test_swap_sequential_and_nested():
    inner = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5),
                              keras.layers.BatchNormalization()], name="inner")
    inputs = keras.Input((6,))
    h = inner(inputs)
    h = keras.layers.BatchNormalization(center=False)(h)
    outer = keras.Model(inputs, keras.layers.Dense(2)(h))
    _randomize_model_bns(outer)
    swapped = swap_batch_normalization(outer)
    bns = _bn_layers(swapped)
    assert len(bns) == 2 and all(type(la) is BatchNormalization for la in bns)
    x = _rand((7, 6))
    _close(swapped.predict(x, verbose=0), outer.predict(x, verbose=0))
    seq = keras.Sequential([keras.Input((6,)), keras.layers.BatchNormalization()])
    _randomize_model_bns(seq)
    s2 = swap_batch_normalization(seq)
    assert isinstance(s2, keras.Sequential) and type(s2.layers[0]) is BatchNormalization
    _close(s2(x), seq(x))


class SubModel(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(4)
        self.bns = [keras.layers.BatchNormalization(), keras.layers.BatchNormalization()]

    def call(self, x, training=None):
        return self.bns[1](self.bns[0](self.dense(x), training=training), training=training)


def test_swap_subclassed_in_place(kernel_calls):
    model = SubModel()
    x = _rand((9, 3))
    model(x)
    _randomize_model_bns(model)
    before = model.predict(x, verbose=0)  # traces Keras's predict step with stock layers
    expected = np_(model(x))
    expected_train = np_(model(x, training=True))
    _randomize_model_bns(model)
    n_weights = len(model.weights)
    assert swap_batch_normalization(model) is model
    assert all(type(la) is BatchNormalization for la in model.bns)
    assert len(model.weights) == n_weights
    _close(model(x), expected)
    calls = kernel_calls["given"]
    _close(model.predict(x, verbose=0), expected, atol=1e-5)
    if BACKEND != "jax" or keras_plugin.get_jax_min_elements() is not None:
        assert kernel_calls["given"] > calls  # re-traced: the swapped layers run
    del before
    # The swapped layers compute training steps like the stock ones.
    ref = SubModel()
    ref(x)
    ref.set_weights(model.get_weights())
    _close(model(x, training=True), ref(x, training=True), atol=2e-5)
    _weights_close(model, ref)
    del expected_train


@needs_training
@pytest.mark.parametrize("inference_bn", [False, True])
def test_fit_step_matches_stock(inference_bn, kernel_calls):
    """One SGD step: kernel gradients (x, gamma, beta) and moving statistics."""
    def build(bn):
        keras.utils.set_random_seed(3)
        inputs = keras.Input((8, 8, 3))
        h = keras.layers.Conv2D(4, 3, padding="same")(inputs)
        h = bn(momentum=0.8)(h, training=False if inference_bn else None)
        h = keras.layers.Conv2D(3, 3, strides=2)(h)
        h = bn(axis=1)(h)
        h = keras.layers.Flatten()(h)
        return keras.Model(inputs, keras.layers.Dense(2)(bn()(keras.layers.Dense(6)(h))))

    stock = build(keras.layers.BatchNormalization)
    _randomize_model_bns(stock)
    ours = swap_batch_normalization(stock)
    x, y = _rand((16, 8, 8, 3)), _rand((16, 2), seed=5)
    for m in (stock, ours):
        m.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    h1 = stock.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    h2 = ours.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    np.testing.assert_allclose(h2.history["loss"], h1.history["loss"], rtol=1e-4)
    _weights_close(ours, stock, rtol=1e-4, atol=1e-5)
    assert kernel_calls["grad"] >= 2 * (3 if not inference_bn else 3)
    _close(ours.predict(x, verbose=0), stock.predict(x, verbose=0), atol=1e-4)


@needs_training
def test_fit_with_frozen_bn_is_inference(kernel_calls):
    """trainable=False inside fit: no statistic updates, no gamma/beta updates."""
    stock = _cnn()
    _randomize_model_bns(stock)
    for layer in _bn_layers(stock):
        layer.trainable = False
    ours = swap_batch_normalization(stock)
    assert not any(la.trainable for la in _bn_layers(ours))
    frozen = [np_(v) for la in _bn_layers(ours) for v in la.weights]
    x, y = _rand((16, 8, 8, 3)), _rand((16, 3), seed=5)
    for m in (stock, ours):
        m.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        m.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    _weights_close(ours, stock, rtol=1e-4, atol=1e-5)
    for a, v in zip(frozen, [v for la in _bn_layers(ours) for v in la.weights]):
        np.testing.assert_array_equal(a, np_(v))
    assert kernel_calls["train"] == 0 and kernel_calls["grad"] >= 3


@needs_training
def test_fit_mixed_float16():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        stock = _cnn()
        ours = swap_batch_normalization(stock)
        x, y = _rand((16, 8, 8, 3), scale=1.0), _rand((16, 3), seed=2)
        for m in (stock, ours):
            m.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
        h1 = stock.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        h2 = ours.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        assert np.isfinite(h2.history["loss"][0])
        np.testing.assert_allclose(h2.history["loss"], h1.history["loss"], rtol=2e-2)
        _weights_close(ours, stock, rtol=2e-2, atol=2e-2)
    finally:
        keras.config.set_dtype_policy("float32")


@needs_training
def test_fit_extras_trains_like_the_ops_path():
    """Ghost batches + renorm + list axis inside fit: kernels vs Keras ops."""
    def build():
        keras.utils.set_random_seed(4)
        inputs = keras.Input((6, 5))
        h = keras.layers.Dense(5)(inputs)
        h = BatchNormalization(virtual_batch_size=4, renorm=True, renorm_momentum=0.8)(h)
        h = BatchNormalization(axis=[1, 2], momentum=0.7)(h)
        h = keras.layers.Flatten()(h)
        return keras.Model(inputs, keras.layers.Dense(2)(h))

    x, y = _rand((16, 6, 5)), _rand((16, 2), seed=7)
    a, b = build(), build()
    for m in (a, b):
        m.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    a.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    with keras_plugin.kernels_disabled():
        b.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    _weights_close(a, b, rtol=1e-4, atol=1e-5)


def test_save_load_keras_and_weights_both_ways(tmp_path):
    stock = _cnn()
    _randomize_model_bns(stock)
    ours = swap_batch_normalization(stock)
    x = _rand((4, 8, 8, 3))
    expected = stock.predict(x, verbose=0)

    p = str(tmp_path / "ours.keras")
    ours.save(p)
    loaded = keras.models.load_model(p)
    assert all(type(la) is BatchNormalization for la in _bn_layers(loaded))
    _close(loaded.predict(x, verbose=0), expected, atol=2e-5)
    # ... and plain Keras (a process without keras_plugin) reads it, mapping the
    # registered name to its own layer.
    np.save(tmp_path / "x.npy", x)
    code = (
        "import sys, numpy as np, keras\n"
        "m = keras.models.load_model(sys.argv[1], custom_objects={"
        "'ckbn>BatchNormalization': keras.layers.BatchNormalization})\n"
        "assert 'keras_plugin' not in sys.modules\n"
        "assert all(type(la) is keras.layers.BatchNormalization for la in m.layers\n"
        "           if 'batch_normalization' in la.name)\n"
        "np.save(sys.argv[3], m.predict(np.load(sys.argv[2]), verbose=0))\n")
    subprocess.run([sys.executable, "-c", code, p, str(tmp_path / "x.npy"),
                    str(tmp_path / "y.npy")], check=True, cwd=str(tmp_path),
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    _close(np.load(tmp_path / "y.npy"), expected, atol=2e-5)

    q = str(tmp_path / "stock.keras")
    stock.save(q)
    into_ours = swap_batch_normalization(keras.models.load_model(q))
    assert all(type(la) is BatchNormalization for la in _bn_layers(into_ours))
    _close(into_ours.predict(x, verbose=0), expected, atol=2e-5)

    w1 = str(tmp_path / "stock.weights.h5")
    stock.save_weights(w1)
    fresh = swap_batch_normalization(_cnn(seed=9))
    fresh.load_weights(w1)
    _weights_close(fresh, stock, rtol=0, atol=0)
    w2 = str(tmp_path / "ours.weights.h5")
    ours.save_weights(w2)
    fresh_stock = _cnn(seed=8)
    fresh_stock.load_weights(w2)
    _weights_close(fresh_stock, ours, rtol=0, atol=0)


def test_learning_phase_propagates_into_nested_models():
    inner = keras.Sequential([keras.Input((4,)), BatchNormalization()])
    stock_inner = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization()])
    x = _rand((6, 4))
    for training in (None, False, True):
        _close(inner(x, training=training), stock_inner(x, training=training))


@needs_training
def test_keras_application_swapped_and_trained():
    keras.utils.set_random_seed(0)
    stock = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None,
                                           classes=4)
    n_bn = len(_bn_layers(stock))
    assert n_bn > 30
    twin = keras.models.clone_model(stock)
    twin.set_weights(stock.get_weights())
    ours = swap_batch_normalization(stock)
    assert sum(type(la) is BatchNormalization for la in _bn_layers(ours)) == n_bn
    x = _rand((8, 32, 32, 3), scale=1.0, loc=0.0)
    y = keras.utils.to_categorical(np.arange(8) % 4, 4)
    _close(ours.predict(x, verbose=0), stock.predict(x, verbose=0), atol=1e-5)
    for m in (stock, twin, ours):
        m.compile(optimizer=keras.optimizers.SGD(0.05), loss="categorical_crossentropy")
    # A net this deep on 8 samples is ill-conditioned: stock Keras itself moves by a
    # measurable amount when x is perturbed by 1e-6.  One step of the swapped model must
    # stay within a few times that intrinsic sensitivity of the stock one.
    l_stock = stock.train_on_batch(x, y)
    l_twin = twin.train_on_batch(x * (1 + 1e-6), y)
    l_ours = ours.train_on_batch(x, y)
    np.testing.assert_allclose(l_ours, l_stock, rtol=1e-4)
    noise = max(np.abs(a - b).max() for a, b in zip(stock.get_weights(), twin.get_weights()))
    ours_dev = max(np.abs(a - b).max() for a, b in zip(stock.get_weights(), ours.get_weights()))
    assert ours_dev <= 4 * noise + 1e-4, (ours_dev, noise, l_twin)
    losses = [ours.train_on_batch(x, y) for _ in range(3)]
    assert np.all(np.isfinite(losses))
    assert np.all(np.isfinite(ours.predict(x, verbose=0)))


# ------------------------------------------------------- backend specifics
@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow only")
def test_tf_function_xla_and_jit_compile_flag(kernel_calls):
    import tensorflow as tf

    x = tf.constant(_rand((8, 5)))
    layer = BatchNormalization()
    layer.build(x.shape)
    ref = keras.layers.BatchNormalization()
    ref.build(x.shape)

    @tf.function
    def graph(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = layer(t, training=True)
            loss = tf.reduce_sum(y * y * t)
        return y, tape.gradient(loss, t)

    @tf.function(jit_compile=True)
    def xla(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = ref(t, training=True)
            loss = tf.reduce_sum(y * y * t)
        return y, tape.gradient(loss, t)

    ya, ga = graph(x)
    yb, gb = xla(x)
    _close(ya, yb)
    _close(ga, gb, atol=1e-4)
    assert kernel_calls["train"] == 1 and kernel_calls["grad"] == 1

    layer2 = BatchNormalization()
    layer2.build(x.shape)
    xla2 = tf.function(lambda t: layer2(t, training=True), jit_compile=True)
    before = kernel_calls["train"]
    _close(xla2(x), yb)  # falls back to Keras ops under XLA
    assert kernel_calls["train"] == before

    model = keras.Sequential([keras.Input((5,)), BatchNormalization()])
    assert not model.layers[0].supports_jit
    with pytest.warns(UserWarning, match="jit_compile"):
        model.compile(optimizer="sgd", loss="mse", jit_compile=True)
    assert model.jit_compile is False


@pytest.mark.skipif(BACKEND != "torch", reason="PyTorch only")
def test_torch_compile_and_zero_copy(kernel_calls):
    import torch

    layer = BatchNormalization()
    ref = keras.layers.BatchNormalization()
    x = torch.from_numpy(_rand((8, 6)))
    layer.build(x.shape)
    ref.build(x.shape)

    def loss_of(bn, t):
        t = t.clone().requires_grad_(True)
        y = bn(t, training=True)
        (y * y * t).sum().backward()
        return y.detach(), t.grad

    ya, ga = loss_of(layer, x)
    yb, gb = loss_of(ref, x)
    _close(ya, yb)
    _close(ga, gb, atol=1e-4)
    compiled = torch.compile(lambda t: layer(t, training=False), fullgraph=False)
    _close(compiled(x), ref(x, training=False), atol=2e-5)

    from keras_plugin import _torch

    # Zero-copy both ways: the kernels read the tensor's memory and torch adopts their output.
    assert _torch._np(x).ctypes.data == x.data_ptr()
    out = np.arange(6, dtype=np.float32)
    assert _torch._t(out).data_ptr() == out.ctypes.data
    # torch.library's own consistency checks of the custom ops
    torch.library.opcheck(torch.ops.ckbn.bn_train.default,
                          (x, torch.ones(6), torch.zeros(6), [1], 1e-3))


@pytest.mark.skipif(BACKEND != "torch", reason="PyTorch only")
@pytest.mark.parametrize("act", [None, ("leaky_relu", 0.3)])
def test_torch_eager_path_equals_the_custom_ops(act):
    """Eager calls go through the compiled operators (or, without them, autograd
    Functions); the custom ops, which torch.compile uses, give the same values and
    gradients; both match float64 NumPy."""
    import torch

    from keras_plugin import _torch

    x0 = _rand((6, 3, 5), 21)
    s0, o0 = _rand((3,), 22) + 2.0, _rand((3,), 23)
    dy = torch.from_numpy(_rand((6, 3, 5), 24))
    results = []
    for eager in (True, False):
        x, s, o = (torch.tensor(a, requires_grad=True) for a in (x0, s0, o0))
        if eager:
            y, mean, var = _torch.train(x, s, o, (1,), 1e-3, act)
            node = "Ckbn" if native_ops() is not None else "_EagerTrain"
            assert node in y.grad_fn.name()
        else:
            name, slope = (None, 0.0) if act is None else act
            y, mean, var = torch.ops.ckbn.bn_train(x, s, o, [1], 1e-3, name, slope)
            assert "_EagerTrain" not in type(y.grad_fn).__name__
        y.backward(dy)
        results.append([t.detach().numpy() for t in (y, mean, var, x.grad, s.grad, o.grad)])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    # float64 NumPy reference of the forward and the input gradient
    x64 = x0.astype(np.float64)
    m64, v64 = x64.mean(axis=(0, 2)), x64.var(axis=(0, 2))
    xhat = (x64 - m64[:, None]) / np.sqrt(v64[:, None] + 1e-3)
    z = xhat * s0[:, None] + o0[:, None]
    slope = 1.0 if act is None else act[1]
    y64 = np.where(z > 0, z, slope * z)
    _close(results[0][0], y64, atol=1e-5)
    _close(results[0][1], m64)
    _close(results[0][2], v64)
    e = dy.numpy().astype(np.float64) * np.where(z > 0, 1.0, slope)
    k = s0[:, None] / np.sqrt(v64[:, None] + 1e-3)
    dx64 = k * (e - e.mean(axis=(0, 2))[:, None] - xhat * (e * xhat).mean(axis=(0, 2))[:, None])
    _close(results[0][3], dx64, atol=1e-4)
    _close(results[0][4], (e * xhat).sum(axis=(0, 2)), atol=1e-4)
    _close(results[0][5], e.sum(axis=(0, 2)), atol=1e-4)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX only")
def test_jax_jit_gradients_match_xla():
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(_rand((8, 4, 6)))

    def make():
        layer = BatchNormalization(axis=1)
        layer.build(x.shape)
        _randomize_bn(layer)
        return layer

    layer = make()
    tv = [v.value for v in layer.trainable_variables]
    ntv = [v.value for v in layer.non_trainable_variables]

    def loss(tv, x):
        y, _ = layer.stateless_call(tv, ntv, x, training=True)
        return jnp.sum(y * y * x)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    keras_plugin.set_jax_min_elements(0)
    g_kernels = grad(tv, x)
    keras_plugin.set_jax_min_elements(None)
    try:
        g_xla = jax.jit(jax.grad(loss, argnums=(0, 1)))(tv, x)
    finally:
        keras_plugin.set_jax_min_elements(0)
    for a, b in zip(jax.tree_util.tree_leaves(g_kernels), jax.tree_util.tree_leaves(g_xla)):
        _close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(BACKEND != "numpy", reason="NumPy only")
def test_numpy_backend_runs_inference_on_kernels(kernel_calls):
    stock, ours = _pair()
    x = _rand((5, 3, 4))
    stock.build(x.shape)
    ours.build(x.shape)
    _randomize_bn(stock)
    ours.set_weights(stock.get_weights())
    y = ours(x)
    assert isinstance(y, np.ndarray) and kernel_calls["given"] == 1
    _close(y, stock(x))
