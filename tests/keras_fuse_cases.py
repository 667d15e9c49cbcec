"""``swap_batch_normalization(model, fuse_activations=True)`` tests for ONE Keras backend.

Not collected by a plain ``pytest`` run: ``tests/test_keras_fuse.py`` runs this
file once per installed backend, each in its own process.  The reference is
the unfused model built from Keras's own layers on the same backend: outputs,
gradients (input and weights) and moving statistics must agree to float32
rounding.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import keras
from keras import layers as L
from keras import ops

import keras_plugin
from keras_plugin import _kernels, swap_batch_normalization
from keras_plugin.fuse import BatchNormalizationActivation

BACKEND = keras.backend.backend()
# The kernels at every size on TensorFlow and PyTorch too: the measured dispatch rule
# (keras_plugin._policy) would send these small tensors to the framework's ops; it has
# its own tests (tests/test_policy.py).
keras_plugin._policy.set_min_elements(BACKEND, None, 0)
TRAINS = BACKEND != "numpy"
needs_training = pytest.mark.skipif(not TRAINS, reason="the NumPy backend cannot train")
if BACKEND == "jax":
    keras_plugin.set_jax_min_elements(0)  # exercise the kernels on every size


def np_(t):
    return np.asarray(ops.convert_to_numpy(t))


def _rand(shape, seed=0):
    return (np.random.default_rng(seed).normal(size=shape) * 2.0 + 0.3).astype("float32")


def _bns(model):
    return [la for la in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(la, L.BatchNormalization)]


def _randomize_bns(model, seed=1):
    rng = np.random.default_rng(seed)
    for bn in _bns(model):
        new = []
        for v in bn.weights:
            w = rng.normal(size=v.shape).astype("float32")
            if "variance" in v.path:
                w = np.abs(w) + 0.3
            new.append(w)
        bn.set_weights(new)


def _close(a, b, rtol=1e-5, atol=1e-5):
    a = np_(a).astype(np.float64)
    b = np_(b).astype(np.float64)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol * max(1.0, np.abs(b).max()))


def _model():
    """Every pair kind, and pairs that must not fuse.  Seeded: with random
    conv weights a normalized value can land within rounding of the ReLU kink,
    where the fused and unfused orders of operations may mask it differently."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 3))
    h = L.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(inp)
    h = L.BatchNormalization(name="bn_relu")(h)
    h = L.ReLU(name="relu_a")(h)
    h = L.Conv2D(8, 3, padding="same", name="c2")(h)
    h = L.BatchNormalization(name="bn_relu6")(h)
    h = L.ReLU(max_value=6.0, name="relu6_a")(h)
    h = L.DepthwiseConv2D(3, padding="same", name="dw")(h)
    h = L.BatchNormalization(name="bn_leaky")(h)
    h = L.LeakyReLU(negative_slope=0.1, name="leaky_a")(h)
    h = L.Conv2D(8, 1, name="c3")(h)
    h = L.BatchNormalization(name="bn_act")(h)
    h = L.Activation("relu", name="act_relu")(h)
    h = L.Conv2D(8, 1, name="c4")(h)
    h = L.BatchNormalization(name="bn_slope")(h)
    h = L.ReLU(negative_slope=0.05, name="relu_slope")(h)
    b = L.BatchNormalization(name="bn_two_users")(h)           # feeds two layers: kept
    h = L.Add()([L.ReLU(name="relu_b")(b), b])
    h = L.BatchNormalization(name="bn_threshold")(h)
    h = L.ReLU(threshold=0.5, name="relu_threshold")(h)        # not a fusable activation
    h = L.BatchNormalization(name="bn_elu")(h)
    h = L.Activation("elu", name="elu")(h)
    h = L.GlobalAveragePooling2D()(h)
    h = L.Dense(6, name="d1")(h)
    h = L.BatchNormalization(name="bn_dense")(h)
    out = L.Activation("relu6", name="act_relu6")(h)
    model = keras.Model(inp, out, name="pairs")
    _randomize_bns(model)
    return model


FUSED = {"bn_relu": ("relu", "relu_a"), "bn_relu6": ("relu6", "relu6_a"),
         "bn_leaky": ("leaky_relu", "leaky_a"), "bn_act": ("relu", "act_relu"),
         "bn_slope": ("leaky_relu", "relu_slope"), "bn_dense": ("relu6", "act_relu6")}


def _fused(model):
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="swap_batch_normalization")
        return swap_batch_normalization(model, fuse_activations=True)


def test_pairs_become_one_layer_with_names_and_weights():
    model = _model()
    fused = _fused(model)
    swapped = swap_batch_normalization(model)
    names = [la.name for la in fused.layers]
    for bn_name, (act, act_name) in FUSED.items():
        layer = fused.get_layer(bn_name)
        assert type(layer) is BatchNormalizationActivation
        assert layer.fused_activation == act and layer.activation_name == act_name
        assert act_name not in names
        ref = swapped.get_layer(bn_name)
        assert [v.path for v in layer.weights] == [v.path for v in ref.weights]
        for v, w in zip(layer.weights, ref.weights):
            np.testing.assert_array_equal(np_(v), np_(w))
    assert fused.get_layer("bn_leaky").negative_slope == pytest.approx(0.1)
    assert fused.get_layer("bn_slope").negative_slope == pytest.approx(0.05)
    for kept in ("bn_two_users", "bn_threshold", "bn_elu"):
        assert type(fused.get_layer(kept)) is keras_plugin.BatchNormalization
    for kept in ("relu_b", "relu_threshold", "elu"):
        assert kept in names
    assert len(fused.layers) == len(model.layers) - len(FUSED)
    assert len(fused.weights) == len(model.weights)


def test_inference_and_training_outputs_match_the_unfused_model():
    model = _model()
    fused = _fused(model)
    x = _rand((4, 6, 6, 3), 2)
    _close(fused(x, training=False), model(x, training=False))
    _close(fused(x, training=True), model(x, training=True), rtol=1e-4, atol=1e-4)
    for a, b in zip(fused.weights, model.weights):  # moving statistics updated alike
        _close(a, b, rtol=1e-5, atol=1e-6)


def _grads(model, x, dy, training=True):
    """d sum(model(x) * dy) / d (x, trainable weights), as NumPy arrays."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss = tf.reduce_sum(model(xt, training=training) * dy)
        g = tape.gradient(loss, [xt] + [v.value for v in model.trainable_weights])
        return [np.asarray(t) for t in g]
    if BACKEND == "torch":
        import torch

        xt = torch.tensor(x, requires_grad=True)
        params = [v.value for v in model.trainable_weights]
        loss = (model(xt, training=training) * torch.tensor(dy)).sum()
        g = torch.autograd.grad(loss, [xt] + params)
        return [t.detach().numpy() for t in g]
    import jax

    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]

    def loss(x_, tv_):
        y, _ = model.stateless_call(tv_, ntv, x_, training=training)
        return (y * dy).sum()

    gx, gw = jax.grad(loss, argnums=(0, 1))(x, tv)
    return [np.asarray(gx)] + [np.asarray(g) for g in gw]


@needs_training
@pytest.mark.parametrize("training", [True, False])
def test_gradients_match_the_unfused_model(training):
    model = _model()
    fused = _fused(model)
    x = _rand((4, 6, 6, 3), 3)
    dy = _rand((4, 6), 4)
    want = _grads(model, x, dy, training)
    got = _grads(fused, x, dy, training)
    assert len(want) == len(got)
    for g, w in zip(got, want):
        _close(g, w, rtol=1e-4, atol=1e-4)


@needs_training
def test_fit_steps_match_the_unfused_model():
    model = _model()
    fused = _fused(model)
    x = _rand((8, 6, 6, 3), 5)
    y = _rand((8, 6), 6)
    for m in (model, fused):
        m.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
        for _ in range(2):
            m.train_on_batch(x, y)
    for a, b in zip(fused.weights, model.weights):
        _close(a, b, rtol=1e-4, atol=1e-4)


def test_keras_file_round_trip(tmp_path):
    model = _model()
    fused = _fused(model)
    path = os.path.join(tmp_path, "fused.keras")
    fused.save(path)
    loaded = keras.models.load_model(path)
    layer = loaded.get_layer("bn_leaky")
    assert type(layer) is BatchNormalizationActivation
    assert layer.activation_name == "leaky_a" and layer.negative_slope == pytest.approx(0.1)
    x = _rand((3, 6, 6, 3), 7)
    _close(loaded(x, training=False), model(x, training=False))
    # A fresh process that imports only keras_plugin loads it too.
    np.save(os.path.join(tmp_path, "x.npy"), x)
    code = ("import sys, numpy as np, keras, keras_plugin\n"
            "m = keras.models.load_model(sys.argv[1])\n"
            "assert type(m.get_layer('bn_relu')).__name__ == 'BatchNormalizationActivation'\n"
            "y = m(np.load(sys.argv[2]), training=False)\n"
            "np.save(sys.argv[3], keras.ops.convert_to_numpy(y))\n")
    out = os.path.join(tmp_path, "y.npy")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code, path, os.path.join(tmp_path, "x.npy"),
                           out], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _close(np.load(out), model(x, training=False))


def test_sequential_and_fold_of_the_fused_model():
    model = keras.Sequential([keras.Input((5,)), L.Dense(4), L.BatchNormalization(),
                              L.ReLU(), L.Dense(3), L.BatchNormalization(), L.LeakyReLU()])
    _randomize_bns(model)
    fused = _fused(model)
    assert isinstance(fused, keras.Sequential)
    assert [type(la).__name__ for la in fused.layers] == [
        "Dense", "BatchNormalizationActivation", "Dense", "BatchNormalizationActivation"]
    x = _rand((6, 5), 8)
    _close(fused(x, training=False), model(x, training=False))
    folded = keras_plugin.fold_batch_normalization(fused)
    assert [type(la).__name__ for la in folded.layers] == ["Dense", "ReLU", "Dense",
                                                           "LeakyReLU"]
    _close(folded(x, training=False), model(x, training=False))


class _Sub(keras.Model):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.bn = L.BatchNormalization(name="bn_in_subclass")
        self.act = L.ReLU()

    def call(self, x, training=None):
        return self.act(self.bn(x, training=training))


def test_subclassed_model_is_swapped_without_fusion_and_says_so():
    model = _Sub()
    model(_rand((2, 3)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = swap_batch_normalization(model, fuse_activations=True)
    assert out is model and type(model.bn) is keras_plugin.BatchNormalization
    assert any("'bn_in_subclass'" in str(w.message) for w in caught)


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(activation="tanh"), ValueError, "activation must be"),
    (dict(activation=None), ValueError, "needs an activation"),
    (dict(negative_slope=-0.5), ValueError, "negative_slope"),
    (dict(negative_slope="0.2"), TypeError, "negative_slope"),
    (dict(activation_name=3), TypeError, "activation_name"),
])
def test_bad_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        BatchNormalizationActivation(**kwargs)
    with pytest.raises(TypeError, match="fuse_activations"):
        swap_batch_normalization(_model(), fuse_activations="yes")


def _native_runs(monkeypatch):
    """On TensorFlow with the native ops: a function giving the runs of each op
    since this call (``keras_plugin._tf_native.call_counts``); else None.  On
    PyTorch the calls are then seen in the Python glue: the compiled operators
    are turned off for the test (``tests/torch_native_cases.py`` checks that they
    compute what the glue does, each activation included)."""
    if BACKEND == "torch":
        from keras_plugin import _torch_native

        monkeypatch.setattr(_torch_native, "load", lambda: None)
    if BACKEND != "tensorflow":
        return None
    from keras_plugin import _tf_native

    if not _tf_native.available():
        return None
    base = _tf_native.call_counts()
    return lambda name: _tf_native.call_counts()[name] - base[name]


def _native_activations(model, x, training):
    """(activation, negative_slope) attributes of the native ops in a traced step."""
    import tensorflow as tf

    @tf.function
    def step(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = model(t, training=training)
        return tape.gradient(y, t)

    ops_ = step.get_concrete_function(tf.constant(x)).graph.get_operations()
    return {(op.get_attr("activation"), float(op.get_attr("negative_slope")))
            for op in ops_ if op.type in ("CkbnBatchNormTrain", "CkbnBatchNormApply",
                                          "CkbnBatchNormGrad")}


def test_fused_layer_runs_the_fused_kernels(monkeypatch):
    """The activation goes into the kernel calls (``act``), not after them."""
    calls = {"train": [], "given": [], "grad": []}
    for name in calls:
        real = getattr(_kernels, name)

        def counted(*a, _real=real, _name=name, **k):
            calls[_name].append(a[{"train": 5, "given": 7, "grad": 8}[_name]])
            return _real(*a, **k)

        monkeypatch.setattr(_kernels, name, counted)
    if BACKEND == "jax":  # the calls are seen in the Python glue: the callback path
        from keras_plugin import _jax_ffi

        monkeypatch.setattr(_jax_ffi, "supports", lambda x: False)
    native = _native_runs(monkeypatch)  # the same kernels through the TensorFlow native ops
    layer = BatchNormalizationActivation(activation="leaky_relu", negative_slope=0.3)
    x = _rand((4, 3, 5), 9)
    model = keras.Sequential([keras.Input((3, 5)), layer])
    _randomize_bns(model)
    ref_bn = keras.layers.BatchNormalization()
    ref = keras.Sequential([keras.Input((3, 5)), ref_bn, L.LeakyReLU(negative_slope=0.3)])
    ref_bn.set_weights(layer.get_weights())
    _close(model(x, training=False), ref(x, training=False))
    if native is None:
        assert calls["given"] == [("leaky_relu", 0.3)]
    else:  # the activation is an attribute of the native ops
        assert native("given") == 1
    _close(model(x, training=True), ref(x, training=True), 1e-4, 1e-4)
    if native is None:
        assert calls["train"] == [("leaky_relu", 0.3)]
    else:
        assert native("train") == 1
        for training in (True, False):
            assert _native_activations(model, x, training) == {(b"leaky_relu", 0.3)}
    for a, b in zip(layer.weights, ref_bn.weights):  # moving statistics
        _close(a, b, 1e-5, 1e-6)
    if not TRAINS:
        return
    dy = _rand((4, 3, 5), 10)
    for training in (True, False):
        got, want = _grads(model, x, dy, training), _grads(ref, x, dy, training)
        for g, w in zip(got, want):
            _close(g, w, 1e-4, 1e-4)
    if native is None:
        assert len(calls["grad"]) >= 2 and set(calls["grad"]) == {("leaky_relu", 0.3)}
    else:
        assert native("grad") >= 2


def test_shared_batch_norm_is_not_fused_and_says_so():
    bn = L.BatchNormalization(name="shared_bn")
    a, b = keras.Input((4,)), keras.Input((4,))
    out = L.Add()([L.ReLU()(bn(a)), L.ReLU()(bn(b))])
    model = keras.Model([a, b], out)
    _randomize_bns(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fused = swap_batch_normalization(model, fuse_activations=True)
    assert any("'shared_bn'" in str(w.message) and "shared" in str(w.message) for w in caught)
    assert type(fused.get_layer("shared_bn")) is keras_plugin.BatchNormalization
    x = [_rand((3, 4), 1), _rand((3, 4), 2)]
    _close(fused(x, training=False), model(x, training=False))


# -- swish (SiLU): EfficientNet's BN -> swish pairs -----------------------------------

def _efficientnet_block():
    """An EfficientNet-like MBConv block: stem Conv -> BN -> swish, expansion
    Conv -> BN -> Activation("silu"), depthwise -> BN -> Activation(swish function),
    squeeze-and-excitation, projection Conv -> BN (no activation), residual add;
    then BN -> hard_swish, which is not swish and must not fuse."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 3))
    h = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem_conv")(inp)
    h = L.BatchNormalization(name="stem_bn")(h)
    h = L.Activation("swish", name="stem_activation")(h)
    x0 = h
    h = L.Conv2D(16, 1, use_bias=False, name="expand_conv")(h)
    h = L.BatchNormalization(name="expand_bn")(h)
    h = L.Activation("silu", name="expand_activation")(h)
    h = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dwconv")(h)
    h = L.BatchNormalization(name="bn")(h)
    h = L.Activation(keras.activations.swish, name="activation")(h)
    se = L.GlobalAveragePooling2D(name="se_squeeze")(h)
    se = L.Reshape((1, 1, 16), name="se_reshape")(se)
    se = L.Conv2D(4, 1, activation="swish", name="se_reduce")(se)
    se = L.Conv2D(16, 1, activation="sigmoid", name="se_expand")(se)
    h = L.Multiply(name="se_excite")([h, se])
    h = L.Conv2D(8, 1, use_bias=False, name="project_conv")(h)
    h = L.BatchNormalization(name="project_bn")(h)
    h = L.Add(name="add")([h, x0])
    h = L.BatchNormalization(name="bn_hard_swish")(h)
    h = L.Activation("hard_swish", name="hard_swish")(h)
    h = L.GlobalAveragePooling2D()(h)
    out = L.Dense(5, name="head")(h)
    model = keras.Model(inp, out, name="mbconv")
    _randomize_bns(model)
    return model


SWISH_FUSED = {"stem_bn": "stem_activation", "expand_bn": "expand_activation",
               "bn": "activation"}


def test_efficientnet_block_fuses_its_swish_pairs():
    model = _efficientnet_block()
    fused = _fused(model)
    names = [la.name for la in fused.layers]
    for bn_name, act_name in SWISH_FUSED.items():
        layer = fused.get_layer(bn_name)
        assert type(layer) is BatchNormalizationActivation
        assert layer.fused_activation == "swish" and layer.activation_name == act_name
        assert act_name not in names
    for kept in ("project_bn", "bn_hard_swish"):
        assert type(fused.get_layer(kept)) is keras_plugin.BatchNormalization
    assert "hard_swish" in names
    assert len(fused.layers) == len(model.layers) - len(SWISH_FUSED)
    x = _rand((4, 8, 8, 3), 11)
    _close(fused(x, training=False), model(x, training=False))
    _close(fused(x, training=True), model(x, training=True), rtol=1e-4, atol=1e-4)
    for a, b in zip(fused.weights, model.weights):  # moving statistics updated alike
        _close(a, b, rtol=1e-5, atol=1e-6)


@needs_training
@pytest.mark.parametrize("training", [True, False])
def test_efficientnet_block_gradients_match_the_stock_model(training):
    model = _efficientnet_block()
    fused = _fused(model)
    x = _rand((4, 8, 8, 3), 12)
    dy = _rand((4, 5), 13)
    want = _grads(model, x, dy, training)
    got = _grads(fused, x, dy, training)
    assert len(want) == len(got)
    for g, w in zip(got, want):
        _close(g, w, rtol=1e-4, atol=1e-4)


@needs_training
def test_efficientnet_block_fit_steps_match_the_stock_model():
    model = _efficientnet_block()
    fused = _fused(model)
    x = _rand((8, 8, 8, 3), 14)
    y = _rand((8, 5), 15)
    for m in (model, fused):
        m.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
        for _ in range(2):
            m.train_on_batch(x, y)
    for a, b in zip(fused.weights, model.weights):
        _close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["swish", "silu"])
def test_swish_layer_runs_the_fused_kernels(monkeypatch, name):
    """swish goes into the kernel calls as ("swish", 0.0) (on TensorFlow: as the
    native ops' activation attribute; on JAX: through the FFI handler), with the
    results of BN followed by Keras's swish."""
    calls = {"train": [], "given": [], "grad": []}
    for op in calls:
        real = getattr(_kernels, op)

        def counted(*a, _real=real, _name=op, **k):
            calls[_name].append(a[{"train": 5, "given": 7, "grad": 8}[_name]])
            return _real(*a, **k)

        monkeypatch.setattr(_kernels, op, counted)
    native = _native_runs(monkeypatch)
    layer = BatchNormalizationActivation(activation=name)
    assert layer.fused_activation == "swish" and layer.get_config()["activation"] == "swish"
    x = _rand((4, 3, 5), 16)
    model = keras.Sequential([keras.Input((3, 5)), layer])
    _randomize_bns(model)
    ref_bn = keras.layers.BatchNormalization()
    ref = keras.Sequential([keras.Input((3, 5)), ref_bn, L.Activation("swish")])
    ref_bn.set_weights(layer.get_weights())
    _close(model(x, training=False), ref(x, training=False))
    _close(model(x, training=True), ref(x, training=True), 1e-4, 1e-4)
    for a, b in zip(layer.weights, ref_bn.weights):
        _close(a, b, 1e-5, 1e-6)
    if BACKEND == "jax":
        from keras_plugin import _jax_ffi

        if _jax_ffi.available():
            import jax

            tv = [v.value for v in model.trainable_variables]
            ntv = [v.value for v in model.non_trainable_variables]
            text = str(jax.make_jaxpr(
                lambda t: model.stateless_call(tv, ntv, t, training=True)[0])(x))
            assert "ffi_call" in text and "('act', 2)" in text, text[-2000:]
    elif native is None:
        assert calls["given"] == [("swish", 0.0)] and calls["train"] == [("swish", 0.0)]
    else:
        assert native("given") == 1 and native("train") == 1
        for training in (True, False):
            assert _native_activations(model, x, training) == {(b"swish", 0.0)}
    if not TRAINS:
        return
    dy = _rand((4, 3, 5), 17)
    for training in (True, False):
        got, want = _grads(model, x, dy, training), _grads(ref, x, dy, training)
        for g, w in zip(got, want):
            _close(g, w, 1e-4, 1e-4)
    if native is None and BACKEND != "jax":
        assert len(calls["grad"]) >= 2 and set(calls["grad"]) == {("swish", 0.0)}


def test_efficientnet_block_keras_file_round_trip_and_fold(tmp_path):
    model = _efficientnet_block()
    fused = _fused(model)
    path = os.path.join(tmp_path, "fused_swish.keras")
    fused.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_layer("bn").fused_activation == "swish"
    x = _rand((3, 8, 8, 3), 18)
    _close(loaded(x, training=False), model(x, training=False))
    folded = keras_plugin.fold_batch_normalization(fused)
    _close(folded(x, training=False), model(x, training=False))
