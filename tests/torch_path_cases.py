"""The PyTorch backend's per-call shortcuts (``keras_plugin._torch``), under
``KERAS_BACKEND=torch``; run by ``tests/test_torch_path.py`` in its own process.

* ``layer_forward``: the layer's common case (eager, one channel axis, no
  ghost batches/renorm/adjustment/fused, no casts) with the moving averages
  updated in place;
* the table's ``train``/``given`` without autograd when nothing needs a gradient
  (inference under ``torch.no_grad``).

Each is compared bit for bit with the general path (``_engine.forward`` on the
same op table without the shortcut) and, within float tolerance, with float64
NumPy.
"""

from __future__ import annotations

import contextlib
import types

import numpy as np
import pytest

import keras

import keras_plugin
from keras_plugin import BatchNormalization, BatchNormalizationActivation, _engine

torch = pytest.importorskip("torch")
if keras.backend.backend() != "torch":  # pragma: no cover - run with KERAS_BACKEND=torch
    pytest.skip("PyTorch backend only", allow_module_level=True)

from keras_plugin import _torch  # noqa: E402

keras_plugin._policy.set_min_elements("torch", None, 0)   # the kernels at every size

# The torch op table without the shortcut: _engine.forward's general path.
GENERAL = types.SimpleNamespace(train=_torch.train, given=_torch.given,
                                moments=_torch.moments)
EPS = 1e-3
MOMENTUM = 0.9


def _rand(shape, seed, dtype="float32"):
    return (np.random.default_rng(seed).normal(size=shape) * 2.0 + 0.7).astype(dtype)


def _pair(axis, dtype, act=None, **kw):
    """Two built layers with the same (non-trivial) weights."""
    layers = []
    for _ in range(2):
        if act is None:
            layer = BatchNormalization(axis=axis, momentum=MOMENTUM, epsilon=EPS, dtype=dtype,
                                       **kw)
        else:
            layer = BatchNormalizationActivation(activation=act, axis=axis, momentum=MOMENTUM,
                                                 epsilon=EPS, dtype=dtype, **kw)
        layers.append(layer)
    return layers


def _build(layers, shape, axis):
    n = shape[axis]
    for layer in layers:
        layer.build(shape)
        ws = [_rand((n,), 1) + 3.0, _rand((n,), 2), _rand((n,), 3), np.abs(_rand((n,), 4)) + 0.5]
        names = [v.path.split("/")[-1] for v in layer.weights]
        by_name = dict(zip(["gamma", "beta", "moving_mean", "moving_variance"], ws))
        layer.set_weights([by_name[nm].astype(layer.weights[i].dtype)
                           for i, nm in enumerate(names)])


def _call(layer, x, training, general, dy=None, grad=True):
    """Output, input gradient, weight gradients of one call, and the variables after it."""
    x = x.clone().requires_grad_(grad)
    if general:
        y = _engine.forward(layer, x, training and layer.trainable, GENERAL,
                            layer._fused_act)
    else:
        taken = _torch.layer_forward(layer, x.detach(), False, layer._fused_act) is not None
        assert taken == _shortcut_expected(x.dtype)
        y = layer(x, training=training)
    out = [y.detach().numpy().copy()]
    if dy is not None:
        y.backward(dy)
        out.append(x.grad.numpy().copy())
        out += [v.value.grad.numpy().copy() for v in layer.trainable_weights]
        for v in layer.trainable_weights:
            v.value.grad = None
    out += [np.array(v.numpy()) for v in layer.non_trainable_weights]
    return out


def _computes_float64():
    """Keras's promotion on this backend: ``result_type("float64", "float32")`` is float32
    on PyTorch in Keras 3.x, so float64 layers compute in float32 (stock and ckbn)."""
    return keras.backend.result_type("float64", "float32") == "float64"


def _shortcut_expected(dtype):
    return dtype != torch.float64 or _computes_float64()


def _bn64(x, axis, gamma, beta, mean=None, var=None):
    x = x.astype(np.float64)
    red = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
    shape = [1] * x.ndim
    shape[axis] = -1
    if mean is None:
        mean, var = x.mean(axis=red), x.var(axis=red)
    g, b, m, v = (np.asarray(a, np.float64).reshape(shape) for a in (gamma, beta, mean, var))
    return (x - m) / np.sqrt(v + EPS) * g + b, mean, var


@pytest.mark.parametrize("dtype", ["float32", "float64", "mixed_float16"])
@pytest.mark.parametrize("axis,shape", [(-1, (6, 3, 4, 5)), (1, (6, 5, 3, 4)), (-1, (7, 5))])
@pytest.mark.parametrize("act", [None, "relu6"])
def test_training_equals_the_general_path_and_numpy(dtype, axis, shape, act):
    general, fast = _pair(axis, dtype, act)
    _build([general, fast], shape, axis)
    xdt = "float16" if dtype == "mixed_float16" else dtype
    x = torch.from_numpy(_rand(shape, 5, xdt))
    dy = torch.from_numpy(_rand(shape, 6, xdt))
    before = [np.array(v.numpy()) for v in fast.weights]
    for step in range(2):   # the second step starts from updated moving statistics
        a = _call(general, x, True, True, dy)
        b = _call(fast, x, True, False, dy)
        assert len(a) == len(b) == 6
        for u, v in zip(a, b):
            assert u.dtype == v.dtype
            np.testing.assert_array_equal(u, v)
    # float64 NumPy: output and the moving statistics after two identical steps
    gamma, beta, mm0, mv0 = before
    y64, mean, var = _bn64(x.numpy(), axis, gamma, beta)
    if act == "relu6":
        y64 = np.clip(y64, 0.0, 6.0)
    tol = {"float64": 1e-9 if _computes_float64() else 1e-4, "float32": 1e-4,
           "mixed_float16": 1e-2}[dtype]
    np.testing.assert_allclose(b[0].astype(np.float64), y64, rtol=tol, atol=tol)
    m = MOMENTUM
    mm, mv = mm0.astype(np.float64), mv0.astype(np.float64)
    for _ in range(2):
        mm, mv = mm * m + mean * (1 - m), mv * m + var * (1 - m)
    tol = 1e-12 if dtype == "float64" and _computes_float64() else 1e-5
    np.testing.assert_allclose(b[4], mm, rtol=tol, atol=tol)
    np.testing.assert_allclose(b[5], mv, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("axis,shape", [(-1, (6, 3, 4, 5)), (1, (6, 5, 3, 4))])
def test_inference_with_and_without_autograd(dtype, axis, shape):
    general, fast = _pair(axis, dtype)
    _build([general, fast], shape, axis)
    x = torch.from_numpy(_rand(shape, 7, dtype))
    dy = torch.from_numpy(_rand(shape, 8, dtype))
    gamma, beta, mm, mv = (np.array(v.numpy()) for v in fast.weights)
    y64 = _bn64(x.numpy(), axis, gamma, beta, mm, mv)[0]
    with torch.no_grad():
        y = fast(x, training=False)
        assert y.grad_fn is None and not y.requires_grad
        ref = _engine.forward(general, x, False, GENERAL)
    np.testing.assert_array_equal(y.numpy(), ref.numpy())
    tol = 1e-12 if dtype == "float64" and _computes_float64() else 1e-5
    np.testing.assert_allclose(y.numpy(), y64, rtol=tol, atol=tol)
    # grad on: the autograd Function runs, and the gradients are those of the general path
    a = _call(general, x, False, True, dy)
    b = _call(fast, x, False, False, dy)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    k = (gamma / np.sqrt(mv + EPS)).astype(np.float64)
    sh = [1] * len(shape)
    sh[axis] = -1
    np.testing.assert_allclose(b[1], dy.numpy() * k.reshape(sh), rtol=tol, atol=tol)
    # and the moving statistics did not move
    np.testing.assert_array_equal(b[4], mm)
    np.testing.assert_array_equal(b[5], mv)


def test_table_without_autograd_equals_the_function():
    x = torch.from_numpy(_rand((8, 4, 3), 9))
    s, o = torch.from_numpy(_rand((4,), 10)), torch.from_numpy(_rand((4,), 11))
    with torch.no_grad():
        plain = _torch.train(x, s, o, (1,), EPS)
        assert all(t.grad_fn is None for t in plain)
        yg = _torch.given(x, s, o, plain[1], plain[2], (1,), EPS)
    sg = s.clone().requires_grad_(True)
    recorded = _torch.train(x, sg, o, (1,), EPS)
    assert recorded[0].grad_fn is not None
    for u, v in zip(plain, recorded):
        np.testing.assert_array_equal(u.numpy(), v.detach().numpy())
    np.testing.assert_array_equal(yg.numpy(), _torch.given(x, sg, o, plain[1], plain[2], (1,),
                                                           EPS).detach().numpy())


@pytest.mark.parametrize("kw", [dict(renorm=True), dict(virtual_batch_size=2),
                                dict(fused=True), dict(axis=[1, 2]), dict(center=False),
                                dict(scale=False)])
def test_which_calls_take_the_shortcut(kw):
    shape = (4, 3, 2, 5)
    layer = BatchNormalization(**kw)
    layer.build(shape)
    x = torch.from_numpy(_rand(shape, 12))
    taken = _torch.layer_forward(layer, x, False) is not None
    assert taken == (set(kw) <= {"center", "scale"})
    # float16 data in a float32 layer is cast by the general path: no shortcut
    assert _torch.layer_forward(layer, x.half(), False) is None


@pytest.mark.parametrize("kw", [dict(center=False), dict(scale=False)])
def test_no_center_or_scale_equals_the_general_path(kw):
    shape = (6, 3, 2, 5)
    layers = [BatchNormalization(momentum=MOMENTUM, **kw) for _ in range(2)]
    for layer in layers:
        layer.build(shape)
    x = torch.from_numpy(_rand(shape, 13))
    dy = torch.from_numpy(_rand(shape, 14))
    for u, v in zip(_call(layers[0], x, True, True, dy), _call(layers[1], x, True, False, dy)):
        np.testing.assert_array_equal(u, v)


def test_stateless_scope_takes_the_general_path():
    shape = (6, 3, 2, 5)
    layer = BatchNormalization(momentum=MOMENTUM)
    layer.build(shape)
    x = torch.from_numpy(_rand(shape, 15))
    before = [np.array(v.numpy()) for v in layer.non_trainable_weights]
    with keras.StatelessScope() as scope:
        assert _torch.layer_forward(layer, x, True) is None
        layer(x, training=True)
    after = [np.array(v.numpy()) for v in layer.non_trainable_weights]
    for u, v in zip(before, after):
        np.testing.assert_array_equal(u, v)     # recorded in the scope, not assigned
    mean = x.numpy().astype(np.float64).mean(axis=(0, 1, 2))
    got = scope.get_current_value(layer.moving_mean)
    np.testing.assert_allclose(got.numpy(), before[0] * MOMENTUM + mean * (1 - MOMENTUM),
                               rtol=1e-5, atol=1e-6)


def test_bad_input_clear_error_and_state_unchanged():
    layer = BatchNormalization()
    layer.build((4, 3, 2, 5))
    x = torch.from_numpy(_rand((4, 3, 2, 6), 16))
    before = [np.array(v.numpy()) for v in layer.weights]
    for training in (True, False):
        with pytest.raises(ValueError, match=r"have value 5.*shape \(4, 3, 2, 6\)"):
            layer(x, training=training)
    for u, v in zip(before, layer.weights):
        np.testing.assert_array_equal(u, v.numpy())


# ------------------------------------------- the cached dispatch decision (layer.call)
# A layer decides once per input shape, dtype and mode which computation serves
# (_engine.route); these tests prove that the decision follows every input of
# the rule.  Which computation ran is read off the output's autograd node:
# ckbn's kernels record a C++ node named after CkbnTrain/CkbnGiven (the compiled
# operators of keras_plugin._torch_native) or keras_plugin._torch's autograd
# Functions (without them), Keras's code records ATen's arithmetic, and the
# inference hook (_torch.layer_infer) records one addcmul (channels last) or
# ATen's native batch norm (channels first).
@contextlib.contextmanager
def _min_elements(mode, n):
    previous = keras_plugin._policy.set_min_elements("torch", mode, n)
    try:
        yield
    finally:
        for m, v in previous.items():
            keras_plugin._policy.set_min_elements("torch", m, v)


def _computed_by(y):
    node = y.grad_fn
    while type(node).__name__.startswith("Permute"):   # the channels-last view
        node = node.next_functions[0][0]
    name = node.name()
    if "_Eager" in name or "Ckbn" in name:   # the Python Functions, or the C++ node
        return "kernels"
    if "BatchNorm" in name:
        return "torch batch_norm"
    if "Addcmul" in name:
        return "torch addcmul"
    return "keras"


def _stock_twin(layer, shape):
    """Keras's own layer with ``layer``'s arguments and weights."""
    axis = layer.axis
    stock = keras.layers.BatchNormalization(axis=axis, momentum=layer.momentum,
                                            epsilon=layer.epsilon, center=layer.center,
                                            scale=layer.scale)
    stock.build(shape)
    stock.set_weights(layer.get_weights())
    return stock


def _grads(layer, x, training, dy):
    """Output, input gradient and weight gradients of one call (autograd on)."""
    x = x.clone().requires_grad_(True)
    y = layer(x, training=training)
    how = _computed_by(y)
    y.backward(dy)
    out = [y.detach().numpy().copy(), x.grad.numpy().copy()]
    for v in layer.trainable_weights:
        out.append(v.value.grad.numpy().copy())
        v.value.grad = None
    return how, out


_ADDCMUL, _BATCH_NORM, _KERAS = "torch addcmul", "torch batch_norm", "keras"


@pytest.mark.parametrize("axis,shape", [(-1, (6, 3, 4, 5)), (1, (6, 5, 3, 4))])
def test_inference_then_training_in_one_graph(axis, shape):
    """One layer called in inference and then in training before a single backward
    (a frozen branch beside a training one): the training call updates the moving
    statistics in place, bumping their versions as a PyTorch in-place op would, and
    the inference call's gradients are still those of the statistics it used, as
    with Keras's own layer and float64 NumPy."""
    layer = BatchNormalization(axis=axis, momentum=MOMENTUM, epsilon=EPS)
    _build([layer], shape, axis)
    stock = _stock_twin(layer, shape)
    gamma, _, _, mv_before = (np.array(v.numpy()) for v in layer.weights)
    x1, x2, dy1, dy2 = (torch.from_numpy(_rand(shape, seed)) for seed in (31, 32, 33, 34))

    def run(bn):
        a = x1.clone().requires_grad_(True)
        b = x2.clone().requires_grad_(True)
        versions = [v.value._version for v in bn.non_trainable_weights]
        y1 = bn(a, training=False)
        y2 = bn(b, training=True)
        bumped = [v.value._version > n for v, n in zip(bn.non_trainable_weights, versions)]
        torch.autograd.backward([y1, y2], [dy1, dy2])
        out = [a.grad.numpy().copy(), b.grad.numpy().copy()]
        out += [v.value.grad.numpy().copy() for v in bn.trainable_weights]
        out += [np.array(v.numpy()) for v in bn.non_trainable_weights]
        return (_computed_by(y1), _computed_by(y2)), bumped, out

    how, bumped, got = run(layer)
    assert how == ("kernels", "kernels")
    assert bumped == [True, True]
    _, _, want = run(stock)
    for u, v in zip(got, want):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-4)
    sh = [1] * len(shape)
    sh[axis] = -1
    k = gamma.astype(np.float64) / np.sqrt(mv_before.astype(np.float64) + EPS)
    np.testing.assert_allclose(got[0], dy1.numpy() * k.reshape(sh), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axis,shape,hooked", [
    (-1, (6, 3, 4, 5), _ADDCMUL), (1, (6, 5, 3, 4), _BATCH_NORM), (-1, (7, 5), _ADDCMUL),
    (-1, (3, 2, 3, 4, 5), _ADDCMUL), (1, (3, 5, 2, 3, 4), _BATCH_NORM),
    (1, (4, 5, 6), _BATCH_NORM), (-1, (4, 6, 5), _ADDCMUL), (-1, (2, 3, 2, 2, 2, 4), _ADDCMUL),
    (2, (3, 4, 5, 6), _KERAS), (1, (2, 3, 2, 2, 2, 2), _KERAS)])
@pytest.mark.parametrize("kw", [{}, dict(center=False), dict(scale=False)])
def test_inference_hook_equals_stock_keras(axis, shape, hooked, kw):
    """Inference left to Keras's code (the measured rule) runs one torch op where it
    can (_torch.layer_infer: addcmul channels last, batch_norm channels first): the
    stock layer's values and gradients (input, gamma, beta), to float rounding, and
    float64 NumPy."""
    with _min_elements("infer", None):
        layer = BatchNormalization(axis=axis, epsilon=EPS, **kw)
        _build([layer], shape, axis)
        stock = _stock_twin(layer, shape)
        x = torch.from_numpy(_rand(shape, 21))
        dy = torch.from_numpy(_rand(shape, 22))
        with torch.no_grad():
            y = layer(x, training=False)
            ref = stock(x, training=False)
        assert y.grad_fn is None
        np.testing.assert_allclose(y.numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)
        how, got = _grads(layer, x, False, dy)
        assert how == hooked
        how_stock, want = _grads(stock, x, False, dy)
        assert how_stock == "keras"
        for u, v in zip(got, want):
            np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-4)
        w = {v.path.split("/")[-1]: np.array(v.numpy()) for v in layer.weights}
        y64 = _bn64(x.numpy(), axis, w.get("gamma", np.ones(shape[axis])),
                    w.get("beta", np.zeros(shape[axis])), w["moving_mean"],
                    w["moving_variance"])[0]
        np.testing.assert_allclose(got[0], y64, rtol=1e-5, atol=1e-5)
        before = [np.array(v.numpy()) for v in layer.non_trainable_weights]
        for u, v in zip(before, [s.numpy() for s in stock.non_trainable_weights]):
            np.testing.assert_array_equal(u, v)   # inference moves no statistics


def test_inference_hook_with_activation_and_channels_last_layout():
    shape = (4, 3, 5, 6)
    with _min_elements("infer", None):
        fast = BatchNormalizationActivation(activation="relu6", epsilon=EPS)
        _build([fast], shape, -1)
        stock = _stock_twin(fast, shape)
        x = torch.from_numpy(_rand(shape, 23))
        with torch.no_grad():
            y = fast(x, training=False)
            ref = torch.clamp(stock(x, training=False), 0.0, 6.0)
        assert y.is_contiguous()    # NHWC in, NHWC out
        np.testing.assert_allclose(y.numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)
        assert fast._route.entry[3] is _torch.layer_infer   # the hook the layer chose


def test_inference_hook_declines_other_dtypes():
    shape = (4, 3, 2, 5)
    with _min_elements("infer", None):
        for dtype in ("float64", "mixed_float16"):
            layer = BatchNormalization(dtype=dtype, epsilon=EPS)
            _build([layer], shape, -1)
            xdt = "float16" if dtype == "mixed_float16" else dtype
            x = torch.from_numpy(_rand(shape, 24, xdt))
            assert _torch.layer_infer(layer, x) is None
            stock = keras.layers.BatchNormalization(dtype=dtype, epsilon=EPS)
            stock.build(shape)
            stock.set_weights(layer.get_weights())
            with torch.no_grad():
                np.testing.assert_array_equal(layer(x, training=False).numpy(),
                                              stock(x, training=False).numpy())


def _train_twins(shape):
    layer = BatchNormalization(momentum=MOMENTUM, epsilon=EPS)
    _build([layer], shape, -1)
    return layer, _stock_twin(layer, shape)


def _check_step(layer, stock, x, dy, expected):
    how, got = _grads(layer, x, True, dy)
    assert how == expected
    _, want = _grads(stock, x, True, dy)
    for u, v in zip(got, want):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-4)
    for u, v in zip(layer.non_trainable_weights, stock.non_trainable_weights):
        np.testing.assert_allclose(u.numpy(), v.numpy(), rtol=1e-5, atol=1e-6)


def test_cached_decision_follows_the_input_size():
    """Called at one size and then at another across the crossover, the layer decides
    again (a stale decision would run the first size's computation)."""
    small, large = (16, 2, 2, 8), (16, 4, 4, 8)     # 512 and 2048 elements
    with _min_elements("train", 1000):
        layer = BatchNormalization(momentum=MOMENTUM, epsilon=EPS)
        _build([layer], small, -1)
        stock = _stock_twin(layer, small)
        for shape, expected in ((small, "keras"), (large, "kernels"), (small, "keras"),
                                (large, "kernels")):
            x = torch.from_numpy(_rand(shape, 25))
            dy = torch.from_numpy(_rand(shape, 26))
            _check_step(layer, stock, x, dy, expected)


def test_cached_decision_follows_the_kernels_switch():
    shape = (6, 3, 4, 5)
    layer, stock = _train_twins(shape)
    x = torch.from_numpy(_rand(shape, 27))
    dy = torch.from_numpy(_rand(shape, 28))
    with _min_elements("train", 0), _min_elements("infer", None):
        _check_step(layer, stock, x, dy, "kernels")
        with keras_plugin.kernels_disabled():
            _check_step(layer, stock, x, dy, "keras")
            how, _ = _grads(layer, x, False, dy)
            assert how == "keras"      # no hook either: Keras's own code
        _check_step(layer, stock, x, dy, "kernels")
        how, _ = _grads(layer, x, False, dy)
        assert how == _ADDCMUL   # channels last


def test_cached_decision_follows_the_crossover_setting():
    shape = (6, 3, 4, 5)
    layer, stock = _train_twins(shape)
    x = torch.from_numpy(_rand(shape, 29))
    dy = torch.from_numpy(_rand(shape, 30))
    for n, expected in ((0, "kernels"), (None, "keras"), (0, "kernels"),
                        (10 ** 9, "keras")):
        with _min_elements("train", n):
            _check_step(layer, stock, x, dy, expected)
    for n, expected in ((0, "kernels"), (None, _ADDCMUL), (0, "kernels")):
        with _min_elements("infer", n):
            how, _ = _grads(layer, x, False, dy)
            assert how == expected


# ---------------------------------------- Keras's __call__ for the common call
# keras_plugin._torch.layer_call serves layer(x) / layer(x, training=...) without
# Keras's Layer.__call__ bookkeeping where that bookkeeping does nothing; these
# tests compare it, bit for bit, with Keras's __call__ (use_fast_call(False)).
@contextlib.contextmanager
def _keras_call():
    previous = _torch.use_fast_call(False)
    try:
        yield
    finally:
        _torch.use_fast_call(previous)


def _served(fn):
    """``fn()``'s result and how many calls layer_call served during it."""
    before = _torch.fast_call_count()
    out = fn()
    return out, _torch.fast_call_count() - before


@pytest.mark.parametrize("kwargs", [dict(training=True), dict(training=False),
                                    dict(training=None), {}])
def test_fast_call_equals_keras_call(kwargs):
    shape = (6, 3, 4, 5)
    layers = _pair(-1, "float32")
    _build(layers, shape, -1)
    x = torch.from_numpy(_rand(shape, 40))
    dy = torch.from_numpy(_rand(shape, 41))
    got, want = [], []
    for layer, out, keras_path in ((layers[0], got, False), (layers[1], want, True)):
        _, served = _served(lambda: layer(x, training=False))
        assert served == 0   # a layer's first call goes through Keras
        for _ in range(2):
            xg = x.clone().requires_grad_(True)
            if keras_path:
                with _keras_call():
                    y, served = _served(lambda: layer(xg, **kwargs))
            else:
                y, served = _served(lambda: layer(xg, **kwargs))
            assert served == (0 if keras_path else 1)
            y.backward(dy)
            out += [y.detach().numpy().copy(), xg.grad.numpy().copy()]
            out += [np.array(v.numpy()) for v in layer.weights]
    for u, w in zip(got, want):
        np.testing.assert_array_equal(u, w)
    # training=True moves the moving mean between the two calls; anything else leaves it
    trained = kwargs.get("training") is True
    assert (not np.array_equal(got[4], got[4 + 6])) == trained


class _Block(keras.Model):
    """A subclassed model that calls its BN layer without ``training``: the value
    comes from the enclosing call (Keras's call context)."""

    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Dense(5)
        self.bn = BatchNormalization(momentum=MOMENTUM, epsilon=EPS)

    def call(self, x):
        return self.bn(self.conv(x))


@pytest.mark.parametrize("functional", [True, False])
def test_fast_call_inside_models_equals_keras_call(functional):
    """In a model (functional: training passed explicitly; subclassed: inherited from
    the model's call), train_on_batch, a training call and predict give the bits of
    Keras's __call__, and layer_call serves the BN calls."""
    rng = np.random.default_rng(42)
    xs = rng.normal(size=(8, 4, 4, 3)).astype("float32")
    ys = rng.normal(size=(8, 4, 4, 5)).astype("float32")
    results = []
    for keras_path in (False, True):
        keras.utils.set_random_seed(3)
        if functional:
            inp = keras.Input((4, 4, 3))
            out = BatchNormalization(momentum=MOMENTUM, epsilon=EPS)(keras.layers.Dense(5)(inp))
            model = keras.Model(inp, keras.layers.ReLU()(out))
        else:
            model = _Block()
            model(xs[:1])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        ctx = _keras_call() if keras_path else contextlib.nullcontext()
        with ctx:
            _, served = _served(lambda: [model.train_on_batch(xs, ys) for _ in range(2)])
            y_train, served_t = _served(lambda: model(torch.from_numpy(xs), training=True))
            y_pred = model.predict(xs, verbose=0)
        assert (served + served_t > 0) != keras_path
        results.append([np.array(w.numpy()) for w in model.weights]
                       + [y_train.detach().numpy(), y_pred])
    for u, w in zip(*results):
        np.testing.assert_array_equal(u, w)
    bn = [layer for layer in model._flatten_layers() if isinstance(layer, BatchNormalization)][0]
    assert not np.array_equal(np.array(bn.moving_mean.numpy()), np.zeros(5))   # trained


def test_fast_call_declines_masks_hooks_conversions_and_mixed_precision():
    shape = (6, 3, 4, 5)
    layer = BatchNormalization(epsilon=EPS)
    _build([layer], shape, -1)
    x = torch.from_numpy(_rand(shape, 43))
    layer(x)   # the first call goes through Keras
    # a Keras mask: Keras's path, which passes the mask on to the output
    xm = x.clone()
    mask = torch.ones(shape[:-1], dtype=torch.bool)
    keras.src.backend.set_keras_mask(xm, mask)
    y, served = _served(lambda: layer(xm, training=False))
    assert served == 0 and keras.src.backend.get_keras_mask(y) is mask
    # a forward hook: Keras's path (through torch.nn.Module.__call__), the hook runs
    seen = []
    handle = layer.register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    try:
        _, served = _served(lambda: layer(x, training=False))
    finally:
        handle.remove()
    assert served == 0 and seen == [torch.Size(shape)]
    # float64 data into a float32 layer: Keras converts it first
    y64, served = _served(lambda: layer(x.double(), training=False))
    assert served == 0 and y64.dtype == torch.float32
    # a mixed dtype policy: Keras's autocast scope
    mixed = BatchNormalization(epsilon=EPS, dtype="mixed_float16")
    mixed.build(shape)
    mixed(x.half())
    y16, served = _served(lambda: mixed(x.half(), training=True))
    assert served == 0 and y16.dtype == torch.float16
    # a mask argument: Keras's path, which checks it
    with pytest.raises(ValueError, match="one dimension less than the inputs"):
        layer(x, mask=torch.ones(shape, dtype=torch.bool))
    # positional training: Keras's path, which refuses it
    with pytest.raises(ValueError, match="Only input tensors may be passed as positional"):
        layer(x, False)
    y_none, served = _served(lambda: layer(x, training=False, mask=None))
    assert served == 1


def test_fast_call_clears_losses_as_an_outermost_call():
    shape = (6, 3, 4, 5)
    layer = BatchNormalization(epsilon=EPS)
    _build([layer], shape, -1)
    x = torch.from_numpy(_rand(shape, 44))
    layer(x)
    for keras_path in (False, True):
        layer.add_loss(torch.tensor(1.0))
        assert len(layer.losses) == 1
        ctx = _keras_call() if keras_path else contextlib.nullcontext()
        with ctx:
            _, served = _served(lambda: layer(x, training=True))
        assert served == (0 if keras_path else 1)
        assert layer.losses == []


def test_fast_call_serves_folded_layers_with_keras_call_values():
    """fold_batch_normalization's ChannelAffine layers take the same shortcut: a
    folded model's output is that of Keras's __call__, bit for bit."""
    rng = np.random.default_rng(45)
    inp = keras.Input((4, 4, 3))
    h = BatchNormalizationActivation(activation="relu6", epsilon=EPS)(
        keras.layers.Dense(5)(inp))
    model = keras.Model(inp, BatchNormalization(epsilon=EPS)(h))
    for layer in model.layers:
        if isinstance(layer, BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([_rand((n,), 46) + 2.0, _rand((n,), 47), _rand((n,), 48),
                               np.abs(_rand((n,), 49)) + 0.5])
    folded = keras_plugin.fold_batch_normalization(model)
    x = torch.from_numpy(rng.normal(size=(8, 4, 4, 3)).astype("float32"))
    with torch.no_grad():
        folded(x)
        y_fast, served = _served(lambda: folded(x, training=False))
        with _keras_call():
            y_keras, served_keras = _served(lambda: folded(x, training=False))
        y_bn = model(x, training=False)
    affines = [layer for layer in folded.layers if type(layer).__name__ == "ChannelAffine"]
    assert affines and served == len(affines) and served_keras == 0
    # under the measured rule (inference to the framework) the affine layer's path is
    # one addcmul (_torch.affine_infer); with the kernels forced, the custom op
    xa = torch.from_numpy(_rand((8, 4, 4, 5), 50)).requires_grad_(True)
    assert "channel_affine" in affines[0](xa, training=False).grad_fn.name()
    with _min_elements("infer", None):
        ya = affines[0](xa, training=False)
    assert "Addcmul" in ya.grad_fn.name()
    w = {v.path.split("/")[-1]: v.numpy() for v in affines[0].weights}
    np.testing.assert_allclose(ya.detach().numpy(), xa.detach().numpy() * w["scale"]
                               + w["offset"], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(y_fast.numpy(), y_keras.numpy())
    np.testing.assert_allclose(y_fast.numpy(), y_bn.numpy(), rtol=1e-5, atol=1e-5)
