"""``keras_plugin.fold_batch_normalization`` tests for ONE Keras backend (``KERAS_BACKEND``).

Not collected by a plain ``pytest`` run: ``tests/test_keras_fold.py`` runs this
file once per installed backend, each in its own process.  Every test compares
the folded model's inference outputs with the original model's (the
reference: Keras's own layers on the same backend), or checks the folded
weights against float64 NumPy.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import keras
from keras import layers as L
from keras import ops

import keras_plugin
from keras_plugin import ChannelAffine, fold_batch_normalization

BACKEND = keras.backend.backend()
# The kernels at every size on TensorFlow and PyTorch too: the measured dispatch rule
# (keras_plugin._policy) would send these small tensors to the framework's ops; it has
# its own tests (tests/test_policy.py).
keras_plugin._policy.set_min_elements(BACKEND, None, 0)
if BACKEND == "jax":
    keras_plugin.set_jax_min_elements(0)  # exercise the kernels on every size


def np_(t):
    return np.asarray(ops.convert_to_numpy(t))


def _rand(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _bns(model):
    return [la for la in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(la, keras.layers.BatchNormalization)]


def _randomize_bns(model, seed=1):
    """Non-trivial gamma, beta and moving statistics (positive variances)."""
    rng = np.random.default_rng(seed)
    for bn in _bns(model):
        new = []
        for v in bn.weights:
            w = rng.normal(size=v.shape).astype("float32")
            if "variance" in v.path:
                w = np.abs(w) + 0.3
            new.append(w)
        bn.set_weights(new)


def _assert_same_inference(model, folded, x, rtol=1e-5):
    a = np_(model(x, training=False)).astype(np.float64)
    b = np_(folded(x, training=False)).astype(np.float64)
    assert a.shape == b.shape
    np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol * np.abs(a).max())


def _fold_quiet(model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folded = fold_batch_normalization(model)
    return folded, [str(w.message) for w in caught if "fold_batch_normalization" in
                    str(w.message)]


# ------------------------------------------------- every producer kind, both layouts
def _producer_model(kind, data_format):
    cl = data_format == "channels_last"
    axis = -1 if cl else 1
    if kind == "dense":
        inp = keras.Input((6, 5))
        h = L.Dense(4, use_bias=False)(inp)
        return keras.Model(inp, L.BatchNormalization(axis=-1)(h))
    rank = {"conv1d": 1, "depthwise1d": 1, "separable1d": 1, "transpose1d": 1, "conv3d": 3,
            "transpose3d": 3}.get(kind, 2)
    spatial = (6,) * rank
    inp = keras.Input(spatial + (3,) if cl else (3,) + spatial)
    kw = dict(padding="same", data_format=data_format)
    make = {
        "conv1d": lambda: L.Conv1D(4, 3, **kw),
        "conv2d": lambda: L.Conv2D(4, 3, **kw),
        "conv2d_groups": lambda: L.Conv2D(6, 3, groups=3, use_bias=False, **kw),
        "conv3d": lambda: L.Conv3D(4, 2, **kw),
        "depthwise1d": lambda: L.DepthwiseConv1D(3, depth_multiplier=2, **kw),
        "depthwise2d": lambda: L.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False, **kw),
        "separable1d": lambda: L.SeparableConv1D(4, 3, depth_multiplier=2, **kw),
        "separable2d": lambda: L.SeparableConv2D(4, 3, use_bias=False, **kw),
        "transpose1d": lambda: L.Conv1DTranspose(4, 3, strides=2, **kw),
        "transpose2d": lambda: L.Conv2DTranspose(4, 3, strides=2, use_bias=False, **kw),
        "transpose3d": lambda: L.Conv3DTranspose(4, 2, strides=2, **kw),
    }[kind]
    h = make()(inp)
    return keras.Model(inp, L.BatchNormalization(axis=axis)(h))


KINDS = ["dense", "conv1d", "conv2d", "conv2d_groups", "conv3d", "depthwise1d", "depthwise2d",
         "separable1d", "separable2d", "transpose1d", "transpose2d", "transpose3d"]


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_producer_kind_folds(kind, data_format):
    if data_format == "channels_first" and kind == "dense":
        pytest.skip("Dense has no data_format")
    if data_format == "channels_first" and BACKEND == "tensorflow":
        # Measured (Keras 3.15, TF 2.21, CPU): a channels_first Conv2D with a bias
        # disagrees with the same weights in channels_last by up to the bias's size,
        # so the folded bias cannot be checked on this backend; PyTorch and JAX agree.
        pytest.skip("Keras's TensorFlow backend: channels_first convolutions with a bias")
    if data_format == "channels_first" and BACKEND in ("jax", "numpy") and kind != "conv2d":
        pytest.skip("channels_first convolutions: one kind is enough on the slower backends")
    model = _producer_model(kind, data_format)
    _randomize_bns(model)
    producer = model.layers[1]
    before = [np_(w).copy() for w in model.weights]
    folded, notes = _fold_quiet(model)
    assert notes == []
    assert not _bns(folded)
    assert [type(la) for la in folded.layers] == [type(la) for la in model.layers[:2]]
    new = folded.layers[1]
    assert new.name == producer.name and new.use_bias
    x = _rand((2,) + tuple(model.inputs[0].shape[1:]), seed=3)
    _assert_same_inference(model, folded, x)
    # The original model is untouched.
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(np_(w), b)


def test_folded_dense_weights_are_the_float64_formula():
    model = _producer_model("dense", "channels_last")
    _randomize_bns(model)
    dense, bn = model.layers[1], model.layers[2]
    gamma, beta, mean, var = (np_(w).astype(np.float64) for w in bn.weights)
    a = gamma / np.sqrt(var + bn.epsilon)
    folded, _ = _fold_quiet(model)
    kernel, bias = (np_(w) for w in folded.layers[1].weights)
    np.testing.assert_array_equal(kernel, (np_(dense.kernel).astype(np.float64) * a)
                                  .astype(np.float32))
    np.testing.assert_array_equal(bias, (beta - mean * a).astype(np.float32))


# ------------------------------------------------------------- what is not folded
def test_activation_between_prevents_folding_and_says_so():
    inp = keras.Input((5,))
    h = L.Dense(4, activation="relu", name="dense_relu")(inp)
    out = L.BatchNormalization(name="bn_after_relu")(h)
    model = keras.Model(inp, out)
    _randomize_bns(model)
    folded, notes = _fold_quiet(model)
    assert len(notes) == 1 and "'bn_after_relu'" in notes[0] and "'dense_relu'" in notes[0]
    assert "relu" in notes[0]
    assert isinstance(folded.get_layer("bn_after_relu"), ChannelAffine)
    _assert_same_inference(model, folded, _rand((7, 5)))


def test_producer_output_used_twice_is_not_folded():
    inp = keras.Input((5,))
    h = L.Dense(4, name="dense_shared_out")(inp)
    out = L.Add()([L.BatchNormalization(name="bn_a")(h), h])
    model = keras.Model(inp, out)
    _randomize_bns(model)
    folded, notes = _fold_quiet(model)
    assert any("'bn_a'" in n and "also feeds" in n for n in notes)
    assert isinstance(folded.get_layer("bn_a"), ChannelAffine)
    assert not folded.get_layer("dense_shared_out").weights[1] is None
    _assert_same_inference(model, folded, _rand((7, 5)))


def test_shared_batch_norm_is_left_unchanged_with_a_message():
    bn = L.BatchNormalization(name="shared_bn")
    a, b = keras.Input((4,)), keras.Input((4,))
    model = keras.Model([a, b], L.Add()([bn(L.Dense(4)(a)), bn(L.Dense(4)(b))]))
    _randomize_bns(model)
    folded, notes = _fold_quiet(model)
    assert len(notes) == 1 and "'shared_bn'" in notes[0] and "shared" in notes[0]
    kept = folded.get_layer("shared_bn")
    assert type(kept) is L.BatchNormalization and kept is not bn
    x = [_rand((3, 4), 1), _rand((3, 4), 2)]
    _assert_same_inference(model, folded, x)


def test_training_true_in_the_graph_is_left_unchanged():
    inp = keras.Input((4,))
    out = L.BatchNormalization(name="always_training")(L.Dense(4)(inp), training=True)
    model = keras.Model(inp, out)
    _randomize_bns(model)
    folded, notes = _fold_quiet(model)
    assert len(notes) == 1 and "'always_training'" in notes[0]
    assert type(folded.get_layer("always_training")) is L.BatchNormalization
    x = _rand((6, 4))
    np.testing.assert_allclose(np_(folded(x)), np_(model(x)), rtol=1e-5, atol=1e-5)


class _Sub(keras.Model):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.dense = L.Dense(4)
        self.bn = L.BatchNormalization(name="bn_in_subclass")

    def call(self, x, training=None):
        return self.bn(self.dense(x), training=training)


def test_subclassed_model_is_returned_unchanged_with_a_message():
    model = _Sub(name="my_subclass")
    model(_rand((2, 3)))
    folded, notes = _fold_quiet(model)
    assert folded is model
    assert len(notes) == 1 and "'bn_in_subclass'" in notes[0] and "'my_subclass'" in notes[0]


@keras.saving.register_keras_serializable(package="ckbn_tests")
class _Block(L.Layer):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.dense = L.Dense(4)
        self.bn = L.BatchNormalization(name="bn_in_block")

    def call(self, x, training=None):
        return self.bn(self.dense(x), training=training)


def test_batch_norm_inside_a_custom_layer_is_left_unchanged_with_a_message():
    inp = keras.Input((3,))
    h = _Block(name="block")(inp)
    out = L.BatchNormalization(name="bn_top")(L.Dense(5)(h))
    model = keras.Model(inp, out)
    _randomize_bns(model)
    folded, notes = _fold_quiet(model)
    assert len(notes) == 1 and "'bn_in_block'" in notes[0] and "'block'" in notes[0]
    assert [b.name for b in _bns(folded)] == ["bn_in_block"]
    assert "bn_top" not in [la.name for la in folded.layers]
    _assert_same_inference(model, folded, _rand((4, 3)))


def test_bad_argument():
    with pytest.raises(TypeError, match="keras.Model"):
        fold_batch_normalization(L.Dense(3))


# --------------------------------------------------------- model kinds and layers
def test_sequential_nested_and_ckbn_layers():
    inner = keras.Sequential([keras.Input((6,)), L.Dense(6), L.BatchNormalization()],
                             name="inner")
    outer = keras.Sequential([keras.Input((5,)), L.Dense(6), L.BatchNormalization(),
                              inner, L.BatchNormalization(), L.Dense(3)], name="outer")
    _randomize_bns(outer)
    swapped = keras_plugin.swap_batch_normalization(outer)
    for model in (outer, swapped):
        folded, notes = _fold_quiet(model)
        assert notes == []
        assert isinstance(folded, keras.Sequential) and folded.name == "outer"
        assert not _bns(folded)
        kinds = [type(la).__name__ for la in folded.layers]
        assert kinds == ["Dense", "Sequential", "ChannelAffine", "Dense"]
        _assert_same_inference(outer, folded, _rand((4, 5)))


def test_extras_become_channel_affine():
    """ckbn's multi-axis and ghost-batch layers: inference is an affine of their weights."""
    inp = keras.Input((4, 5, 3))
    h = keras_plugin.BatchNormalization(axis=[1, 3], name="bn_multi")(inp)
    h = L.Conv2D(3, 1)(h)
    out = keras_plugin.BatchNormalization(virtual_batch_size=2, name="bn_ghost")(h)
    model = keras.Model(inp, out)
    _randomize_bns(model)
    folded, notes = _fold_quiet(model)
    assert isinstance(folded.get_layer("bn_multi"), ChannelAffine)
    assert notes == [] and "bn_ghost" not in [la.name for la in folded.layers]
    _assert_same_inference(model, folded, _rand((4, 4, 5, 3)))


def _native_runs():
    """A function giving the runs of each TensorFlow native op since this call
    (``keras_plugin._tf_native.call_counts``); always 0 off TensorFlow or
    without the op library."""
    if BACKEND != "tensorflow":
        return lambda name: 0
    from keras_plugin import _tf_native

    if not _tf_native.available():
        return lambda name: 0
    base = _tf_native.call_counts()
    return lambda name: _tf_native.call_counts()[name] - base[name]


def test_channel_affine_runs_on_the_kernels_and_differentiates(monkeypatch):
    from keras_plugin import _kernels

    calls = []
    real = _kernels.affine
    monkeypatch.setattr(_kernels, "affine", lambda *a: calls.append(1) or real(*a))
    if BACKEND == "jax":  # the count is of the Python glue: the callback path
        from keras_plugin import _jax_ffi

        monkeypatch.setattr(_jax_ffi, "supports", lambda x: False)
    native = _native_runs()  # on TensorFlow: the native apply op with mean 0, variance 1
    layer = ChannelAffine(axis=1)
    x = _rand((3, 4, 5))
    layer.build(x.shape)
    scale, offset = _rand((4,), 5), _rand((4,), 6)
    layer.set_weights([scale, offset])
    want = x.astype(np.float64) * scale[:, None] + offset[:, None]
    np.testing.assert_allclose(np_(layer(x)), want, rtol=1e-6, atol=1e-6)
    assert len(calls) + native("given") == 1
    if BACKEND == "numpy":
        return
    dy = _rand((3, 4, 5), 7)
    np.testing.assert_allclose(_input_grad(layer, x, dy), dy * scale[:, None], rtol=1e-6,
                               atol=1e-6)


def _input_grad(layer, x, dy):
    if BACKEND == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss = tf.reduce_sum(layer(xt) * dy)
        return tape.gradient(loss, xt).numpy()
    if BACKEND == "torch":
        import torch

        xt = torch.tensor(x, requires_grad=True)
        (layer(xt) * torch.tensor(dy)).sum().backward()
        return xt.grad.numpy()
    import jax

    return np.asarray(jax.grad(lambda t: (layer(t) * dy).sum())(x))


def test_folded_model_saves_and_loads(tmp_path):
    inp = keras.Input((5,))
    h = L.BatchNormalization(name="first_bn")(inp)
    out = L.BatchNormalization()(L.Dense(3)(h))
    model = keras.Model(inp, out)
    _randomize_bns(model)
    folded, _ = _fold_quiet(model)
    path = os.path.join(tmp_path, "folded.keras")
    folded.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("first_bn"), ChannelAffine)
    _assert_same_inference(model, loaded, _rand((4, 5)))


# ------------------------------------------------------------- Keras applications
def _trained_application(build, shape, steps=3):
    keras.utils.set_random_seed(0)
    model = build()
    for bn in _bns(model):
        bn.momentum = 0.5  # a few steps move the moving statistics far from (0, 1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8,) + shape).astype("float32") + 0.5
    y = rng.integers(0, 10, size=(8,))
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for _ in range(steps):
        model.train_on_batch(x, y)
    mean = np.concatenate([np_(bn.moving_mean).ravel() for bn in _bns(model)])
    assert np.abs(mean).max() > 0.05  # the statistics moved
    return model, x


def _check_application(build, shape):
    model, x = _trained_application(build, shape)
    n_bn = len(_bns(model))
    folded, _ = _fold_quiet(model)
    remaining = sum(isinstance(la, ChannelAffine) for la in folded.layers)
    assert not _bns(folded) and remaining < n_bn
    _assert_same_inference(model, folded, x)
    if BACKEND != "jax":  # predict() compiles each model with XLA on JAX: slow, same maths
        np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0),
                                   rtol=1e-5, atol=1e-5 * np.abs(np_(model(x))).max())
    return n_bn, remaining


@pytest.mark.skipif(BACKEND == "numpy", reason="the NumPy backend cannot train")
def test_mobilenet_v2_folds_exactly():
    n_bn, remaining = _check_application(
        lambda: keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35,
                                               weights=None, classes=10,
                                               classifier_activation=None), (32, 32, 3))
    assert remaining == 0 and n_bn == 52


# JAX compiles each of these models' train and inference steps with XLA (minutes on
# 2 cores); MobileNetV2 covers the same layer kinds there.
big_models = pytest.mark.skipif(BACKEND in ("numpy", "jax"),
                                reason="NumPy cannot train; JAX: XLA compile time")


@pytest.mark.slow
@big_models
def test_efficientnet_b0_folds_exactly():
    _check_application(
        lambda: keras.applications.EfficientNetB0(input_shape=(32, 32, 3), weights=None,
                                                  classes=10, classifier_activation=None),
        (32, 32, 3))


@pytest.mark.slow
@big_models
def test_resnet50_folds_exactly():
    n_bn, remaining = _check_application(
        lambda: keras.applications.ResNet50(input_shape=(32, 32, 3), weights=None,
                                            classes=10, classifier_activation=None),
        (32, 32, 3))
    assert remaining == 0
