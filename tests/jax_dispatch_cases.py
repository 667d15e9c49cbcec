"""The layer's cached dispatch decision on JAX (``keras_plugin._engine.route``), under
``KERAS_BACKEND=jax``; run by ``tests/test_keras_plugin.py`` in its own process.

* Inference that the measured rule leaves to XLA (``_policy.CROSSOVER``) traces
  exactly the stock layer's program: the same jaxpr, the same values bit for
  bit, so a swapped model's jitted inference is the stock model's.
* Training with the kernels (the XLA FFI handler) matches the stock layer's
  output, gradients and moving statistics to float rounding.
* The decision follows the call's size, ``kernels_disabled`` and
  ``_policy.set_min_elements``: which computation was traced is read off the
  jaxpr (``ffi_call`` with ckbn's targets, or none).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

import keras

import keras_plugin
from keras_plugin import BatchNormalization

jax = pytest.importorskip("jax")
if keras.backend.backend() != "jax":  # pragma: no cover - run with KERAS_BACKEND=jax
    pytest.skip("JAX backend only", allow_module_level=True)

from keras_plugin import _jax_ffi  # noqa: E402

EPS = 1e-3
MOMENTUM = 0.9


def _rand(shape, seed):
    return (np.random.default_rng(seed).normal(size=shape) * 2.0 + 0.7).astype("float32")


@contextlib.contextmanager
def _min_elements(mode, n):
    previous = keras_plugin._policy.set_min_elements("jax", mode, n)
    try:
        yield
    finally:
        for m, v in previous.items():
            keras_plugin._policy.set_min_elements("jax", m, v)


def _twins(shape, axis=-1):
    """A ckbn layer and Keras's own, built, with the same non-trivial weights."""
    layer = BatchNormalization(axis=axis, momentum=MOMENTUM, epsilon=EPS)
    stock = keras.layers.BatchNormalization(axis=axis, momentum=MOMENTUM, epsilon=EPS)
    n = shape[axis]
    for bn in (layer, stock):
        bn.build(shape)
        bn.set_weights([_rand((n,), 1) + 3.0, _rand((n,), 2), _rand((n,), 3),
                        np.abs(_rand((n,), 4)) + 0.5])
    return layer, stock


def _fn(bn, training):
    """``x -> (y, new non-trainable values)``, pure (``stateless_call``)."""
    tv = [v.value for v in bn.trainable_variables]
    ntv = [v.value for v in bn.non_trainable_variables]

    def run(x, tv=tv):
        return bn.stateless_call(tv, ntv, x, training=training)

    return run


def _loss_and_grads(bn, x, dy, training):
    """Output, new moving statistics, and the gradients of sum(y * dy) in x and the
    trainable weights, all under jax.jit."""
    ntv = [v.value for v in bn.non_trainable_variables]

    def loss(tv, x):
        y, new = bn.stateless_call(tv, ntv, x, training=training)
        return (y * dy).sum(), (y, new)

    tv = [v.value for v in bn.trainable_variables]
    (_, (y, new)), (dtv, dx) = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(tv, x)
    return [np.asarray(y), np.asarray(dx)] + [np.asarray(g) for g in dtv] + \
        [np.asarray(v) for v in new]


def _uses_kernels(bn, x, training):
    text = str(jax.make_jaxpr(_fn(bn, training))(x))
    return "ffi_call" in text and "ckbn_bn_" in text


def _need_ffi():
    if not _jax_ffi.available():
        pytest.skip("the XLA FFI handler could not be built here")


@pytest.mark.parametrize("axis,shape", [(-1, (6, 3, 4, 5)), (1, (6, 5, 3, 4)), (-1, (7, 5))])
def test_inference_left_to_xla_is_the_stock_program(axis, shape):
    layer, stock = _twins(shape, axis)
    x = _rand(shape, 5)
    with _min_elements("infer", None):
        ours = jax.make_jaxpr(_fn(layer, False))(x)
        theirs = jax.make_jaxpr(_fn(stock, False))(x)
        assert [e.primitive.name for e in ours.jaxpr.eqns] == \
            [e.primitive.name for e in theirs.jaxpr.eqns]
        assert "ffi_call" not in str(ours)
        y = jax.jit(_fn(layer, False))(x)[0]
        ref = jax.jit(_fn(stock, False))(x)[0]
    np.testing.assert_array_equal(np.asarray(y), np.asarray(ref))


@pytest.mark.parametrize("axis,shape", [(-1, (6, 3, 4, 5)), (1, (6, 5, 3, 4))])
def test_training_with_the_kernels_equals_stock(axis, shape):
    _need_ffi()
    layer, stock = _twins(shape, axis)
    x, dy = _rand(shape, 6), _rand(shape, 7)
    with _min_elements("train", 0):
        assert _uses_kernels(layer, x, True)
        got = _loss_and_grads(layer, x, dy, True)
    want = _loss_and_grads(stock, x, dy, True)
    assert len(got) == len(want) == 6
    for u, v in zip(got, want):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-4)
    # and float64 NumPy for the moving statistics
    red = tuple(i for i in range(len(shape)) if i != axis % len(shape))
    x64 = x.astype(np.float64)
    mm0 = _rand((shape[axis],), 3).astype(np.float64)
    np.testing.assert_allclose(got[4], mm0 * MOMENTUM + x64.mean(axis=red) * (1 - MOMENTUM),
                               rtol=1e-5, atol=1e-5)


def test_cached_decision_follows_the_input_size():
    _need_ffi()
    small, large = (16, 2, 2, 8), (16, 4, 4, 8)     # 512 and 2048 elements
    layer, stock = _twins(small)
    with _min_elements("train", 1000):
        for shape, kernels in ((small, False), (large, True), (small, False), (large, True)):
            x, dy = _rand(shape, 8), _rand(shape, 9)
            assert _uses_kernels(layer, x, True) == kernels
            for u, v in zip(_loss_and_grads(layer, x, dy, True),
                            _loss_and_grads(stock, x, dy, True)):
                np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-4)


def test_cached_decision_follows_the_kernels_switch_and_the_crossover():
    _need_ffi()
    shape = (6, 3, 4, 5)
    layer, _ = _twins(shape)
    x = _rand(shape, 10)
    with _min_elements("train", 0):
        assert _uses_kernels(layer, x, True)
        with keras_plugin.kernels_disabled():
            assert not _uses_kernels(layer, x, True)
        assert _uses_kernels(layer, x, True)
    for n, kernels in ((None, False), (0, True), (10 ** 9, False), (0, True)):
        with _min_elements("train", n):
            assert _uses_kernels(layer, x, True) == kernels
    for n, kernels in ((0, True), (None, False), (0, True)):
        with _min_elements("infer", n):
            assert _uses_kernels(layer, x, False) == kernels
