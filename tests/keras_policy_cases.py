"""The dispatch rule (``keras_plugin._policy``) inside the layer, for ONE Keras backend.

Not collected by a plain ``pytest`` run: ``tests/test_policy.py`` runs this file
once per installed backend, each in its own process.  With the crossover set
between a small and a large input, the small call must run on the
framework's ops and the large one on ckbn's kernels, and both must give the
float64 NumPy results (output, gradients, moving statistics).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

import keras
from keras import ops

import keras_plugin
from keras_plugin import _kernels, _policy
from tests.twin import TWIN

BACKEND = keras.backend.backend()
TRAINS = BACKEND != "numpy"
CROSS = 1000
SMALL = (4, 3, 3, 8)     # 288 elements: below the crossover
LARGE = (8, 6, 6, 8)     # 2304 elements: above it
EPS, MOMENTUM = 1e-3, 0.9


@pytest.fixture
def crossover():
    """The crossover at CROSS elements for both modes; restored afterwards."""
    previous = _policy.set_min_elements(BACKEND, None, CROSS)
    if BACKEND == "jax":
        keras_plugin.set_jax_min_elements(CROSS)
    yield
    for mode, n in previous.items():
        _policy.set_min_elements(BACKEND, mode, n)
    if BACKEND == "jax":
        keras_plugin.set_jax_min_elements(None)


@pytest.fixture
def kernel_calls(monkeypatch):
    """Number of calls into the kernel glue (the real functions still run)."""
    count = [0]
    for name in dir(_kernels):
        fn = getattr(_kernels, name)
        if name.startswith("_") or not callable(fn) or getattr(fn, "__module__", "") \
                != _kernels.__name__ or name in ("stat_dtype", "has_fused_activation"):
            continue

        def counted(*a, _fn=fn, **k):
            count[0] += 1
            return _fn(*a, **k)

        monkeypatch.setattr(_kernels, name, counted)
    if BACKEND == "jax":
        # The count is of the Python glue, which a host callback runs; the XLA
        # FFI handler runs none (tests/test_jax_ffi.py checks it in the jaxpr),
        # so counted calls take the callback path, under the same rule.
        from keras_plugin import _jax_ffi

        monkeypatch.setattr(_jax_ffi, "supports", lambda x: False)
    if BACKEND == "tensorflow":  # the same for the TensorFlow native ops
        from keras_plugin import _tf_native

        monkeypatch.setattr(_tf_native, "usable", lambda x, axes: False)
    with _python_functions_on_torch():   # and the PyTorch ones
        yield count


@contextlib.contextmanager
def _python_functions_on_torch():
    """On PyTorch, eager calls through the Python autograd Functions (which call the
    glue), not the compiled operators; elsewhere nothing."""
    if BACKEND != "torch":
        yield
        return
    from keras_plugin import _torch

    previous = _torch.use_native(False)
    try:
        yield
    finally:
        _torch.use_native(previous)


def _layer(shape, seed):
    layer = keras_plugin.BatchNormalization(momentum=MOMENTUM, epsilon=EPS)
    layer.build(shape)
    rng = np.random.default_rng(seed)
    c = shape[-1]
    layer.set_weights([rng.normal(size=c).astype("float32"),
                       rng.normal(size=c).astype("float32"),
                       rng.normal(size=c).astype("float32"),
                       (np.abs(rng.normal(size=c)) + 0.5).astype("float32")])
    return layer


def _reference(x, dy, gamma, beta, mm, mv, training):
    """float64 NumPy: y, dx, dgamma, dbeta, new moving mean and variance."""
    x, dy = x.astype(np.float64), dy.astype(np.float64)
    red = tuple(range(x.ndim - 1))
    if training:
        mean, var = x.mean(red), x.var(red)
    else:
        mean, var = mm.astype(np.float64), mv.astype(np.float64)
    inv = 1.0 / np.sqrt(var + EPS)
    xhat = (x - mean) * inv
    y = xhat * gamma + beta
    dgamma, dbeta = (dy * xhat).sum(red), dy.sum(red)
    if training:
        n = x.size // x.shape[-1]
        dx = gamma * inv * (dy - dbeta / n - xhat * dgamma / n)
        mm = mm * MOMENTUM + mean * (1 - MOMENTUM)
        mv = mv * MOMENTUM + var * (1 - MOMENTUM)
    else:
        dx = dy * gamma * inv
    return y, dx, dgamma, dbeta, mm, mv


def _run(layer, x, dy, training):
    """The layer's y and the gradients of sum(y * dy) w.r.t. x, gamma, beta (backend autodiff)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = layer(xt, training=training)
            loss = tf.reduce_sum(y * dy)
        g = tape.gradient(loss, [xt, layer.gamma.value, layer.beta.value])
        return np.asarray(y), [np.asarray(t) for t in g]
    if BACKEND == "torch":
        import torch

        xt = torch.tensor(x, requires_grad=True)
        y = layer(xt, training=training)
        g = torch.autograd.grad((y * torch.tensor(dy)).sum(),
                                [xt, layer.gamma.value, layer.beta.value])
        return y.detach().numpy(), [t.detach().numpy() for t in g]
    import jax

    tv = [v.value for v in layer.trainable_variables]
    ntv = [v.value for v in layer.non_trainable_variables]

    def loss(x_, tv_):
        y, ntv2 = layer.stateless_call(tv_, ntv, x_, training=training)
        return (y * dy).sum(), (y, ntv2)

    (_, (y, ntv2)), (gx, gw) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(x, tv)
    for v, value in zip(layer.non_trainable_variables, ntv2):
        v.assign(value)
    return np.asarray(y), [np.asarray(gx)] + [np.asarray(g) for g in gw]


@pytest.mark.parametrize("shape,uses_kernels", [(SMALL, False), (LARGE, True)])
@pytest.mark.parametrize("training", [True, False])
def test_same_results_either_side_of_the_crossover(shape, uses_kernels, training,
                                                   crossover, kernel_calls):
    if training and not TRAINS:
        pytest.skip("the NumPy backend cannot train")
    layer = _layer(shape, seed=1)
    rng = np.random.default_rng(2)
    x = (rng.normal(size=shape) * 2.0 + 0.7).astype("float32")
    dy = rng.normal(size=shape).astype("float32")
    gamma, beta, mm, mv = [np.asarray(ops.convert_to_numpy(v)) for v in layer.weights]
    ref = _reference(x, dy, gamma, beta, mm, mv, training)
    if TRAINS:
        y, (dx, dgamma, dbeta) = _run(layer, x, dy, training)
        np.testing.assert_allclose(dx, ref[1], rtol=2e-4, atol=2e-4)
        np.testing.assert_allclose(dgamma, ref[2], rtol=2e-4, atol=2e-4)
        np.testing.assert_allclose(dbeta, ref[3], rtol=2e-4, atol=2e-4)
    else:
        y = np.asarray(layer(x, training=False))
    np.testing.assert_allclose(y, ref[0], rtol=1e-5, atol=1e-5)
    new_mm, new_mv = [np.asarray(ops.convert_to_numpy(v)) for v in layer.weights[2:]]
    np.testing.assert_allclose(new_mm, ref[4], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_mv, ref[5], rtol=1e-5, atol=1e-6)
    # Which side of the crossover ran: the framework's ops below, ckbn's kernels above.
    assert (kernel_calls[0] > 0) == uses_kernels, (shape, kernel_calls[0])


def test_measured_crossover_is_what_the_layer_follows(kernel_calls):
    """Without an override the layer follows CROSSOVER (kernels iff size >= it)."""
    shape = LARGE
    threshold = _policy.min_elements(BACKEND, "infer")
    expected = threshold is not None and int(np.prod(shape)) >= threshold
    if BACKEND == "jax":  # the JAX switch is keras_plugin.set_jax_min_elements
        expected = expected and keras_plugin.get_jax_min_elements() is not None
    layer = _layer(shape, seed=3)
    x = np.random.default_rng(4).normal(size=shape).astype("float32")
    y = np.asarray(ops.convert_to_numpy(layer(x, training=False)))
    gamma, beta, mm, mv = [np.asarray(ops.convert_to_numpy(v)) for v in layer.weights]
    np.testing.assert_allclose(y, _reference(x, x, gamma, beta, mm, mv, False)[0],
                               rtol=1e-5, atol=1e-5)
    assert (kernel_calls[0] > 0) == expected


@pytest.mark.parametrize("size", ["small", "large"])
def test_kernel_calls_run_on_the_thread_rule(size, monkeypatch):
    """Each kernel call runs with _policy.op_threads(backend, its size) threads."""
    import ckbn

    shape = (4, 8, 8, 16) if size == "small" else (16, 32, 32, 32)  # 4 Ki / 512 Ki
    assert (int(np.prod(shape)) < _policy.PARALLEL_MIN_ELEMENTS) == (size == "small")
    seen = []
    real = ckbn.nn.fused_batch_norm

    def spy(x, *a, **k):
        seen.append((x.size, ckbn.get_num_threads()))
        return real(x, *a, **k)

    monkeypatch.setattr(ckbn.nn, "fused_batch_norm", spy)
    if BACKEND == "jax":  # the spy sees the callback path; the FFI runs no Python
        from keras_plugin import _jax_ffi

        monkeypatch.setattr(_jax_ffi, "supports", lambda x: False)
    if BACKEND == "tensorflow":
        from keras_plugin import _tf_native

        monkeypatch.setattr(_tf_native, "usable", lambda x, axes: False)
    previous = _policy.set_min_elements(BACKEND, None, 0)
    if BACKEND == "jax":
        keras_plugin.set_jax_min_elements(0)
    default = ckbn.get_num_threads()
    ckbn.set_num_threads(2)  # process-wide: TensorFlow calls back from its own threads
    try:
        layer = _layer(shape, seed=5)
        x = np.random.default_rng(6).normal(size=shape).astype("float32")
        with _python_functions_on_torch():
            np.asarray(ops.convert_to_numpy(layer(x, training=False)))
    finally:
        ckbn.set_num_threads(default)
        for mode, n in previous.items():
            _policy.set_min_elements(BACKEND, mode, n)
        if BACKEND == "jax":
            keras_plugin.set_jax_min_elements(None)
    assert seen, "the kernels did not run"
    for n, threads in seen:
        # The NumPy twin (CKBN_KERNELS=numpy) has no OpenMP: one thread always.
        expected = 1 if (BACKEND in ("tensorflow", "jax") and size == "small") or TWIN else 2
        assert threads == expected, (BACKEND, n, threads)
