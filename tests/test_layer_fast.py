"""The compiled eager training call of ckbn.BatchNormalization (small float32
inputs, pyx/ckbn/_k_small.pxi ``small_layer_train``): same outputs, moving
statistics, records and gradients as the general path, bit for bit, and
against float64 NumPy; every error of the general path, with state
unchanged."""

import numpy as np
import pytest

import ckbn
from ckbn import _ops
from tests.twin import TWIN


class _General(ckbn.BatchNormalization):
    """The same layer with an overridden step: it keeps the general path."""

    def _remember(self, inputs, rec):
        super()._remember(inputs, rec)


def _x(shape, seed=0, dtype=np.float32):
    return (np.random.default_rng(seed).standard_normal(shape) * 2 + 0.5).astype(dtype)


def _pair(axis=-1, **kw):
    a = ckbn.BatchNormalization(axis=axis, **kw)
    b = _General(axis=axis, **kw)
    return a, b


def _state(layer):
    return [v.numpy() for v in layer.weights]


@pytest.fixture
def counted(monkeypatch):
    """Counts the calls that reach the compiled layer entry (and runs it)."""
    calls = []
    real = _ops.small_layer_train

    def spy(*args):
        r = real(*args)
        calls.append(r is not None)
        return r

    monkeypatch.setattr(_ops, "small_layer_train", spy)
    return calls


def _entry_ran(counted, n):
    """Whether ``n`` calls reached the compiled entry and it ran each of them.
    The NumPy twin (CKBN_KERNELS=numpy) has no compiled entry: there those
    calls take the general path, whose results the tests compare all the same,
    so this is always true on the twin."""
    return TWIN or counted == [True] * n


def _ref_train(x, axis, gamma, beta, eps):
    x64 = x.astype(np.float64)
    red = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
    m = x64.mean(axis=red, keepdims=True)
    v = x64.var(axis=red, keepdims=True)
    shp = [1] * x.ndim
    shp[axis] = -1
    y = (x64 - m) / np.sqrt(v + eps) * gamma.astype(np.float64).reshape(shp) \
        + beta.astype(np.float64).reshape(shp)
    return y, m.reshape(-1), v.reshape(-1), x64.size // x.shape[axis]


@pytest.mark.parametrize("shape,axis", [((16, 8, 8, 32), -1), ((16, 32, 8, 8), 1),
                                        ((64, 24), -1), ((4, 3, 5, 7, 6), -1)])
def test_fast_call_matches_general_path_and_numpy(shape, axis, counted):
    fast, general = _pair(axis, momentum=0.9, epsilon=1e-3)
    rng = np.random.default_rng(1)
    with ckbn.eager_mode():
        for step in range(4):
            x = _x(shape, seed=step)
            if step == 2:      # parameters changed by an optimizer between calls
                g = rng.random(fast.gamma.shape).astype(np.float32) + .5
                b = rng.standard_normal(fast.beta.shape).astype(np.float32)
                for layer in (fast, general):
                    layer.gamma.assign(g)
                    layer.beta.assign(b)
            nc = shape[axis]
            if fast.built:
                before = fast.moving_mean.numpy(), fast.moving_variance.numpy()
                old_value = fast.moving_mean.value
            else:
                before = np.zeros(nc, np.float32), np.ones(nc, np.float32)
                old_value = before[0]
            yf = fast(x, training=True)
            yg = general(x, training=True)
            np.testing.assert_array_equal(yf, yg)
            for vf, vg in zip(fast.weights, general.weights):
                np.testing.assert_array_equal(vf.value, vg.value)
                assert vf.value.dtype == vg.value.dtype and vf.value.shape == vg.value.shape
            # the variable gets a new array, as assign_moving_average gives it
            np.testing.assert_array_equal(old_value, before[0])
            # against float64 NumPy
            y, m, v, n = _ref_train(x, axis, fast.gamma.numpy(), fast.beta.numpy(), 1e-3)
            fused = len(shape) in (4, 5)    # the fused rule: Bessel-corrected moving variance
            assert fast.fused == fused
            np.testing.assert_allclose(yf, y, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(fast.moving_mean.numpy(),
                                       before[0] * 0.9 + 0.1 * m, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(fast.moving_variance.numpy(),
                                       before[1] * 0.9 + 0.1 * v * (n / (n - 1) if fused
                                                                    else 1.0),
                                       rtol=1e-5, atol=1e-6)
            dy = _x(shape, seed=10 + step)
            dxf, gf = fast.backward(dy)
            dxg, gg = general.backward(dy)
            np.testing.assert_array_equal(dxf, dxg)
            for a, b in zip(gf, gg):
                np.testing.assert_array_equal(a, b)
    # the first call of each layer takes the general path, the others the entry
    assert _entry_ran(counted, 3)
    assert fast._fast is not None and general._fast is None


def test_backward_on_an_earlier_fast_call(counted):
    fast, general = _pair()
    x1, x2 = _x((8, 4, 4, 16), 1), _x((8, 4, 4, 16), 2)
    dy = _x((8, 4, 4, 16), 3)
    with ckbn.eager_mode():
        for layer in (fast, general):
            layer(x1, training=True)
            layer(x2, training=True)
            layer(x1, training=True)
            layer(x2, True)          # training as a positional argument
    assert _entry_ran(counted, 3)
    for inputs in (x1, x2):
        dxf, gf = fast.backward(dy, inputs)
        dxg, gg = general.backward(dy, inputs)
        np.testing.assert_array_equal(dxf, dxg)
        np.testing.assert_array_equal(gf[0], gg[0])
        np.testing.assert_array_equal(gf[1], gg[1])


@pytest.mark.parametrize("kw", [{"trainable": False}, {"fused": False}, {"center": False},
                                {"scale": False}, {"momentum": 0.0}, {"momentum": 1.0},
                                {"epsilon": 0.0}])
def test_fast_call_options(kw, counted):
    fast, general = _pair(**kw)
    with ckbn.eager_mode():
        for step in range(3):
            x = _x((16, 8, 8, 32), seed=step)
            np.testing.assert_array_equal(fast(x, training=True), general(x, training=True))
            for vf, vg in zip(fast.weights, general.weights):
                np.testing.assert_array_equal(vf.value, vg.value)
    assert _entry_ran(counted, 2)
    if kw == {"trainable": False}:
        np.testing.assert_array_equal(fast.moving_mean.numpy(), np.zeros(32, np.float32))
        np.testing.assert_array_equal(fast.moving_variance.numpy(), np.ones(32, np.float32))


def test_attributes_changed_after_the_first_call_are_read(counted):
    fast, general = _pair()
    x = _x((16, 8, 8, 32))
    with ckbn.eager_mode():
        for layer in (fast, general):
            layer(x, training=True)
            layer.momentum = 0.5
            layer.epsilon = 0.25
            layer.trainable = False
            layer(x, training=True)
            layer.trainable = True
            layer.fused = False
            layer(x, training=True)
    assert _entry_ran(counted, 2)
    for vf, vg in zip(fast.weights, general.weights):
        np.testing.assert_array_equal(vf.value, vg.value)
    np.testing.assert_array_equal(fast.backward(x)[0], general.backward(x)[0])


def test_fast_call_does_not_depend_on_the_thread_count(counted):
    """The entry runs one thread, whatever ckbn.num_threads says; the general
    path asked for two gives the same bits."""
    fast, general = _pair()
    x = _x((16, 8, 8, 63))
    with ckbn.eager_mode():
        fast(x, training=True)
        general(x, training=True)
        with ckbn.num_threads(1):
            yf = fast(x, training=True)
        with ckbn.num_threads(2):
            yg = general(x, training=True)
    assert _entry_ran(counted, 1)
    np.testing.assert_array_equal(yf, yg)
    for vf, vg in zip(fast.weights, general.weights):
        np.testing.assert_array_equal(vf.value, vg.value)


def test_other_calls_keep_the_general_path(counted):
    layer = ckbn.BatchNormalization()
    x = _x((16, 8, 8, 32))
    with ckbn.eager_mode():
        layer(x, training=True)
        layer(x, training=False)                           # inference
        layer(x, training=np.True_)                        # not the bool True
        layer(np.asfortranarray(x), training=True)         # not C-contiguous
    layer(x, training=True)                                # graph mode
    assert layer.updates                                   # pending, as graph mode records
    big = ckbn.BatchNormalization()
    with ckbn.eager_mode():
        big(_x((64, 16, 16, 64)), training=True)            # >= PARALLEL_MIN elements
        big(_x((64, 16, 16, 64)), training=True)
    assert big._fast is None
    for kw in ({"virtual_batch_size": 4}, {"renorm": True}, {"dtype": "float64"},
               {"adjustment": lambda shape: (1.0, 0.0)}, {"axis": [1, 2]}):
        other = ckbn.BatchNormalization(**kw)
        with ckbn.eager_mode():
            other(_x((16, 8, 8, 32)), training=True)
            other(_x((16, 8, 8, 32)), training=True)
        assert other._fast is None, kw
    # the non-contiguous call declined by the entry ran the general path
    assert counted == [False]


@pytest.mark.parametrize("bad,err", [
    (np.ones((16, 8, 8, 31), np.float32), ValueError),        # channel count
    (np.ones((16, 8, 32), np.float32), ValueError),           # rank
    (np.ones((16, 8, 8, 32), np.int32), TypeError),           # dtype
    (np.ones((0, 8, 8, 32), np.float32), ValueError),         # empty
    ("not an array", TypeError),
])
def test_errors_after_fast_calls_leave_state_unchanged(bad, err, counted):
    layer = ckbn.BatchNormalization()
    x = _x((16, 8, 8, 32))
    with ckbn.eager_mode():
        layer(x, training=True)
        layer(x, training=True)
        state = _state(layer)
        last = layer._last
        with pytest.raises(err):
            layer(bad, training=True)
        with pytest.raises(TypeError, match="training"):
            layer(x, training="yes")
    for a, b in zip(state, _state(layer)):
        np.testing.assert_array_equal(a, b)
    assert layer._last is last
    assert _entry_ran(counted, 1)
    with pytest.raises(ValueError, match="dy has shape"):
        layer.backward(np.ones((16, 8, 8, 31), np.float32))


def test_float64_input_of_a_float32_layer_takes_the_general_path(counted):
    fast, general = _pair()
    x = _x((16, 8, 8, 32))
    with ckbn.eager_mode():
        for layer in (fast, general):
            layer(x, training=True)
            layer(x.astype(np.float64), training=True)
    assert counted == []
    for vf, vg in zip(fast.weights, general.weights):
        np.testing.assert_array_equal(vf.value, vg.value)
