"""swap / fuse / fold on every functional graph Keras builds, for ONE Keras backend.

Not collected by a plain ``pytest`` run: ``tests/test_keras_graph.py`` runs this
file once per installed backend, each in its own process.  The graphs have
Keras operations between layers (``x + 3.0``, ``x * y``: MobileNetV3), nested
models, shared layers, several inputs and outputs.  The reference is always the
stock Keras model on the same backend: inference outputs, and the weights and
loss after one ``train_on_batch`` step.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import keras
from keras import layers as L
from keras import ops

import keras_plugin
from keras_plugin import (BatchNormalizationActivation, ChannelAffine, fold_batch_normalization,
                          swap_batch_normalization)

BACKEND = keras.backend.backend()
TRAINS = BACKEND != "numpy"
needs_training = pytest.mark.skipif(not TRAINS, reason="the NumPy backend cannot train")


def np_(t):
    return np.asarray(ops.convert_to_numpy(t)).astype(np.float64)


def _rand(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _all_layers(model):
    return model._flatten_layers(include_self=False, recursive=True)


def _bns(model):
    return [la for la in _all_layers(model) if isinstance(la, L.BatchNormalization)]


def _randomize_bns(model, seed=1):
    rng = np.random.default_rng(seed)
    for bn in _bns(model):
        new = []
        for v in bn.weights:
            w = rng.normal(size=v.shape).astype("float32") * 0.3
            new.append(np.abs(w) + 0.5 if "variance" in v.path else w)
        bn.set_weights(new)


def _close(got, want, rtol=1e-5):
    got, want = np_(got), np_(want)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(1.0, np.abs(want).max()))


def _outputs(model, x, training):
    y = model(x, training=training)
    return y if isinstance(y, (list, tuple)) else [y]


def _same_inference(new, model, x, rtol=1e-5):
    for a, b in zip(_outputs(new, x, False), _outputs(model, x, False), strict=True):
        _close(a, b, rtol)


def _rewrites(model):
    """swap, swap + fuse and fold of ``model``, with the warnings each gave."""
    out = {}
    for name, fn in (("swap", swap_batch_normalization),
                     ("fuse", lambda m: swap_batch_normalization(m, fuse_activations=True)),
                     ("fold", fold_batch_normalization)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            new = fn(model)
        out[name] = (new, [str(w.message) for w in caught
                           if "swap_batch_normalization" in str(w.message)
                           or "fold_batch_normalization" in str(w.message)])
    return out


def _one_step(model, x, y):
    """The loss and the weights after one SGD ``train_on_batch`` step."""
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    losses = model.train_on_batch(x, y)   # several outputs: the total and each loss
    return np.ravel(np.asarray(losses, np.float64)), {v.path: np_(v) for v in model.weights}


def _same_training_step(new, model, x, y, rtol=2e-4):
    """One step of ``new`` equals one step of (a fresh clone of) the stock ``model``."""
    stock = keras.models.clone_model(model)
    stock.set_weights(model.get_weights())
    loss_ref, w_ref = _one_step(stock, x, y)
    loss, w = _one_step(new, x, y)
    np.testing.assert_allclose(loss, loss_ref, rtol=rtol)
    assert sorted(w) == sorted(w_ref)   # the same variables (by layer and name)
    for path, b in w_ref.items():
        np.testing.assert_allclose(w[path], b, rtol=rtol, atol=rtol * max(1.0, np.abs(b).max()),
                                   err_msg=path)


# ------------------------------------------------------------------ MobileNetV3
def _mobilenet_v3(build, size):
    keras.utils.set_random_seed(0)
    model = build(input_shape=(size, size, 3), weights=None, classes=10, dropout_rate=0.0,
                  classifier_activation=None)
    _randomize_bns(model)
    return model


@pytest.mark.parametrize("build", [keras.applications.MobileNetV3Small,
                                   keras.applications.MobileNetV3Large],
                         ids=["small", "large"])
def test_mobilenet_v3_swap_fuse_and_fold(build):
    """The issue's models: Keras operations (x + 3.0, x * y) between layers."""
    model = _mobilenet_v3(build, 32)
    n_bn = len(_bns(model))
    assert any(not isinstance(la, keras.layers.Layer) for la in _all_layers(model)) or any(
        not isinstance(n.operation, keras.layers.Layer)
        for depth in model._nodes_by_depth.values() for n in depth)
    x = _rand((2, 32, 32, 3), 2) * 60.0 + 120.0   # pixel-like: the model rescales
    rewrites = _rewrites(model)
    swapped, notes = rewrites["swap"]
    assert notes == []
    assert all(type(bn) is keras_plugin.BatchNormalization for bn in _bns(swapped))
    assert len(_bns(swapped)) == n_bn
    fused, notes = rewrites["fuse"]
    assert notes == []
    n_fused = sum(type(bn) is BatchNormalizationActivation for bn in _bns(fused))
    assert 0 < n_fused < n_bn   # BN -> ReLU pairs fuse; BN -> hard_swish ones do not
    folded, notes = rewrites["fold"]
    assert notes == [] and _bns(folded) == []
    assert sum(isinstance(la, ChannelAffine) for la in folded.layers) == 0
    for new in (swapped, fused, folded):
        _same_inference(new, model, x)


@needs_training
@pytest.mark.parametrize("build", [keras.applications.MobileNetV3Small,
                                   keras.applications.MobileNetV3Large],
                         ids=["small", "large"])
@pytest.mark.parametrize("fuse", [False, True], ids=["swap", "fuse"])
def test_mobilenet_v3_training_step_matches_stock(build, fuse):
    model = _mobilenet_v3(build, 32)
    x = _rand((4, 32, 32, 3), 3) * 60.0 + 120.0
    y = _rand((4, 10), 4)
    new = swap_batch_normalization(model, fuse_activations=fuse)
    _same_training_step(new, model, x, y)


# ---------------------------------------------------------------- nested models
def _nested_model():
    keras.utils.set_random_seed(1)
    inner_in = keras.Input((6, 6, 4))
    h = L.Conv2D(4, 3, padding="same", name="inner_conv")(inner_in)
    h = L.BatchNormalization(name="inner_bn")(h)
    inner = keras.Model(inner_in, L.ReLU(name="inner_relu")(h), name="inner")
    seq = keras.Sequential([keras.Input((6, 6, 4)), L.Conv2D(4, 1, name="seq_conv"),
                            L.BatchNormalization(name="seq_bn"), L.ReLU(max_value=6.0)],
                           name="seq")
    inp = keras.Input((6, 6, 3))
    h = L.Conv2D(4, 3, padding="same", name="outer_conv")(inp)
    h = L.BatchNormalization(name="outer_bn")(h)
    h = inner(h)
    h = seq(h) * 0.5 + h        # operations between the nested models
    h = L.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, L.Dense(3)(h), name="outer")
    _randomize_bns(model)
    return model


def test_nested_models_are_rewritten_inside():
    model = _nested_model()
    x = _rand((3, 6, 6, 3), 5)
    rewrites = _rewrites(model)
    for name, (new, notes) in rewrites.items():
        assert notes == [], name
        _same_inference(new, model, x)
    swapped = rewrites["swap"][0]
    assert {type(bn) for bn in _bns(swapped)} == {keras_plugin.BatchNormalization}
    fused = rewrites["fuse"][0]
    assert type(fused.get_layer("inner").get_layer("inner_bn")) is BatchNormalizationActivation
    assert type(fused.get_layer("seq").get_layer("seq_bn")) is BatchNormalizationActivation
    assert _bns(rewrites["fold"][0]) == []
    assert type(model.get_layer("inner").get_layer("inner_bn")) is L.BatchNormalization


@needs_training
@pytest.mark.parametrize("fuse", [False, True], ids=["swap", "fuse"])
def test_nested_models_training_step_matches_stock(fuse):
    model = _nested_model()
    new = swap_batch_normalization(model, fuse_activations=fuse)
    _same_training_step(new, model, _rand((4, 6, 6, 3), 6), _rand((4, 3), 7))


# ----------------------------------------------------------------- a shared BN
def _shared_bn_model():
    keras.utils.set_random_seed(2)
    bn = L.BatchNormalization(name="shared_bn")
    relu = L.ReLU(name="shared_relu")
    a, b = keras.Input((5,), name="a"), keras.Input((5,), name="b")
    ha = relu(bn(L.Dense(5, name="da")(a)))
    hb = relu(bn(L.Dense(5, name="db")(b)))
    model = keras.Model([a, b], L.Dense(2, name="head")(ha * hb + ha))
    _randomize_bns(model)
    return model


def test_shared_batch_norm_stays_shared_and_is_named():
    model = _shared_bn_model()
    x = [_rand((4, 5), 8), _rand((4, 5), 9)]
    rewrites = _rewrites(model)
    for name, (new, notes) in rewrites.items():
        _same_inference(new, model, x)
    swapped, notes = rewrites["swap"]
    assert notes == []
    bn = swapped.get_layer("shared_bn")
    assert type(bn) is keras_plugin.BatchNormalization and len(bn._inbound_nodes) == 2
    fused, notes = rewrites["fuse"]
    assert len(notes) == 1 and "'shared_bn'" in notes[0] and "shared" in notes[0]
    assert type(fused.get_layer("shared_bn")) is keras_plugin.BatchNormalization
    assert len(fused.get_layer("shared_bn")._inbound_nodes) == 2
    folded, notes = rewrites["fold"]
    assert len(notes) == 1 and "'shared_bn'" in notes[0]
    assert len(folded.get_layer("shared_bn")._inbound_nodes) == 2


@needs_training
@pytest.mark.parametrize("fuse", [False, True], ids=["swap", "fuse"])
def test_shared_batch_norm_training_step_matches_stock(fuse):
    model = _shared_bn_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        new = swap_batch_normalization(model, fuse_activations=fuse)
    _same_training_step(new, model, [_rand((6, 5), 10), _rand((6, 5), 11)],
                        _rand((6, 2), 12))


# ------------------------------------------------- two inputs and two outputs
def _two_in_two_out():
    keras.utils.set_random_seed(3)
    img = keras.Input((8, 8, 3), name="img")
    vec = keras.Input((4,), name="vec")
    h = L.Conv2D(6, 3, padding="same", use_bias=False, name="conv")(img)
    h = L.BatchNormalization(name="bn_img")(h)
    h = L.ReLU(6.0, name="relu6")(h + 3.0) * (1.0 / 6.0)          # hard sigmoid, as MobileNetV3
    g = L.GlobalAveragePooling2D()(h)
    v = L.Dense(6, name="dense_vec")(vec)
    v = L.BatchNormalization(name="bn_vec")(v)
    v = L.LeakyReLU(negative_slope=0.1, name="leaky")(v)
    both = L.Concatenate()([g * v, v])
    out1 = L.BatchNormalization(name="bn_out1")(L.Dense(3, name="head1")(both))
    out2 = L.Activation("relu", name="out2_relu")(
        L.BatchNormalization(name="bn_out2")(L.Dense(2, name="head2")(both + 1.0)))
    model = keras.Model({"img": img, "vec": vec}, [out1, out2], name="two_by_two")
    _randomize_bns(model)
    return model


def _two_inputs(n, seed):
    return {"img": _rand((n, 8, 8, 3), seed), "vec": _rand((n, 4), seed + 1)}


def test_two_inputs_two_outputs():
    model = _two_in_two_out()
    x = _two_inputs(4, 13)
    rewrites = _rewrites(model)
    for name, (new, notes) in rewrites.items():
        assert notes == [], name
        assert len(new.outputs) == 2 and len(new.inputs) == 2
        _same_inference(new, model, x)
    fused = rewrites["fuse"][0]
    assert type(fused.get_layer("bn_vec")) is BatchNormalizationActivation
    assert type(fused.get_layer("bn_out2")) is BatchNormalizationActivation
    assert type(fused.get_layer("bn_img")) is keras_plugin.BatchNormalization  # feeds x + 3.0
    assert _bns(rewrites["fold"][0]) == []


@needs_training
@pytest.mark.parametrize("fuse", [False, True], ids=["swap", "fuse"])
def test_two_inputs_two_outputs_training_step_matches_stock(fuse):
    model = _two_in_two_out()
    new = swap_batch_normalization(model, fuse_activations=fuse)
    _same_training_step(new, model, _two_inputs(6, 14), [_rand((6, 3), 15), _rand((6, 2), 16)])


# ------------------------------------------------ what is left alone: one warning
@keras.saving.register_keras_serializable(package="ckbn_tests")
class _Block(L.Layer):
    """A custom layer that creates and calls its own batch normalization."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.dense = L.Dense(4, name="block_dense")
        self.bn = L.BatchNormalization(name="bn_in_block")

    def call(self, x, training=None):
        return self.bn(self.dense(x), training=training)


def test_one_warning_names_everything_left_alone():
    keras.utils.set_random_seed(4)
    inp = keras.Input((4,))
    shared = L.BatchNormalization(name="twice")
    h = shared(shared(L.Dense(4)(inp)))
    h = _Block(name="block")(h)
    model = keras.Model(inp, L.BatchNormalization(name="plain")(h))
    model(_rand((2, 4)))
    _randomize_bns(model)
    x = _rand((5, 4), 17)
    rewrites = _rewrites(model)
    folded, notes = rewrites["fold"]
    assert len(notes) == 1
    assert "'twice'" in notes[0] and "'bn_in_block'" in notes[0] and "'block'" in notes[0]
    assert isinstance(folded.get_layer("plain"), ChannelAffine)
    _same_inference(folded, model, x)
    swapped, notes = rewrites["swap"]
    assert notes == []   # the block's own BN is swapped inside the block's copy
    assert type(swapped.get_layer("block").bn) is keras_plugin.BatchNormalization
    assert type(model.get_layer("block").bn) is L.BatchNormalization   # original untouched
    _same_inference(swapped, model, x)
