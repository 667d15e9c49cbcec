"""Every public name of ckbn, ckbn.nn, ckbn.distributed and keras_plugin, used
as a user would, fully typed.

Two jobs: ``mypy --strict`` must accept this file (tests/test_typing.py runs
it, and checks that every name in the packages' ``__all__`` appears here),
and pytest runs it, checking the values against float64 NumPy.
"""

from __future__ import annotations

import contextlib
import io
import types
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import ckbn
import ckbn.distributed
import ckbn.nn

F64 = npt.NDArray[np.float64]


def _data(seed: int = 0) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((16, 4, 4, 6)) * 2 + 1).astype(np.float32)


def _reference(x: npt.NDArray[np.floating[Any]], eps: float) -> F64:
    x64 = x.astype(np.float64)
    axes = tuple(range(x.ndim - 1))
    out: F64 = (x64 - x64.mean(axes)) / np.sqrt(x64.var(axes) + eps)
    return out


def test_nn() -> None:
    x = _data()
    scale, offset = np.ones(6, np.float32), np.zeros(6, np.float32)
    mean, var = ckbn.nn.moments(x, axes=[0, 1, 2])
    np.testing.assert_allclose(mean, x.astype(np.float64).mean((0, 1, 2)), rtol=1e-5)
    y: np.ndarray[Any, np.dtype[Any]] = ckbn.nn.batch_normalization(x, mean, var, offset,
                                                                    scale, 1e-3)
    np.testing.assert_allclose(y, _reference(x, 1e-3), rtol=1e-4, atol=1e-4)
    y2, m2, v2 = ckbn.nn.fused_batch_norm(x, scale, offset, epsilon=1e-3, activation="relu")
    np.testing.assert_allclose(y2, np.maximum(_reference(x, 1e-3), 0), rtol=1e-4, atol=1e-4)
    dx, dscale, doffset = ckbn.nn.fused_batch_norm_grad(np.ones_like(x), x, scale, m2, v2)
    np.testing.assert_allclose(doffset, np.full(6, x.size / 6), rtol=1e-6)
    np.testing.assert_allclose(dx, np.zeros_like(dx), atol=1e-4)   # d(sum y)/dx = 0


def test_layer_and_framework() -> None:
    ckbn.reset_default_graph()
    graph: ckbn.Graph = ckbn.get_default_graph()
    x = _data(1)
    bn: ckbn.BatchNormalization = ckbn.BatchNormalization(axis=-1, epsilon=1e-3)
    layer: ckbn.Layer = bn
    y = bn(x, training=True)
    np.testing.assert_allclose(y, _reference(x, 1e-3), rtol=1e-4, atol=1e-4)
    updates: list[ckbn.Update] = bn.updates
    assert len(updates) == 2 and len(ckbn.get_collection(ckbn.GraphKeys.UPDATE_OPS)) == 2
    ckbn.run_updates(updates)
    moving_mean = bn.weights[2].numpy()
    np.testing.assert_allclose(moving_mean, 0.01 * x.astype(np.float64).mean((0, 1, 2)),
                               rtol=1e-5)
    dx, grads = bn.backward(np.ones_like(y))
    assert [g.shape for g in grads] == [(6,), (6,)]
    opt = ckbn.optimizers.SGD(0.5)
    gamma_before = bn.trainable_weights[0].numpy().copy()
    opt.apply_gradients(zip(grads, layer.trainable_weights))
    np.testing.assert_allclose(bn.trainable_weights[0].numpy(), gamma_before - 0.5 * grads[0])

    var = ckbn.Variable(np.arange(3.0), name="v:0")
    np.testing.assert_array_equal(var.read_value(), [0.0, 1.0, 2.0])
    ran: list[int] = []
    ckbn.run_updates([ckbn.Update(lambda: ran.append(1), name="u")])
    assert ran == [1]
    with ckbn.variable_scope("outer") as scope:
        assert isinstance(scope, ckbn.VariableScope)
        y2 = ckbn.batch_normalization(x, training=True, name="bn")
    np.testing.assert_allclose(y2, y, rtol=1e-6)
    assert ckbn.BatchNorm is ckbn.BatchNormalization
    assert ckbn.batch_norm is ckbn.batch_normalization
    spec: type[ckbn.InputSpec] = ckbn.InputSpec
    assert spec.__name__ == "InputSpec"
    with ckbn.eager_mode():
        assert ckbn.executing_eagerly()
        with ckbn.graph_mode():
            assert not ckbn.executing_eagerly()
    assert graph is ckbn.get_default_graph()
    mods: list[types.ModuleType] = [ckbn.initializers, ckbn.regularizers, ckbn.constraints,
                                    ckbn.optimizers, ckbn.nn, ckbn.distributed]
    assert all(isinstance(m, types.ModuleType) for m in mods)


def test_threads_and_build() -> None:
    before = ckbn.get_num_threads()
    with ckbn.num_threads(1):
        assert ckbn.get_num_threads() == 1
    ckbn.set_num_threads(before)
    assert ckbn.openmp_enabled() in (True, False)
    buf = io.StringIO()
    ckbn.show_config(file=buf)
    assert f"ckbn: {ckbn.__version__}" in buf.getvalue()
    version: str = ckbn.__version__
    assert version
    include: str = ckbn.get_include()
    assert include.endswith("include")
    try:
        table: object = ckbn.kernel_table()
    except RuntimeError as exc:                  # a variant built without the table
        assert "no C-level table" in str(exc)
    else:
        assert type(table).__name__ == "PyCapsule"


class _OneProcess:
    """A duck-typed communicator of a world of one process."""

    rank = 0
    size = 1

    def allgather(self, vec: F64) -> F64:
        return vec[None, :]

    def allreduce(self, vec: F64) -> F64:
        return vec


def test_distributed() -> None:
    x = _data(2)
    comm = _OneProcess()
    old = ckbn.distributed.get_communicator()
    ckbn.distributed.set_communicator(comm)
    try:
        current = ckbn.distributed.get_communicator()
        assert isinstance(current, ckbn.distributed.Communicator)
        np.testing.assert_array_equal(current.allreduce([1.0, 2.0]), [1.0, 2.0])
        np.testing.assert_array_equal(current.allgather([1.0, 2.0]), [[1.0, 2.0]])
        bn = ckbn.BatchNormalization(synchronized=True, epsilon=1e-3)
        y = bn(x, training=True)
        np.testing.assert_allclose(y, _reference(x, 1e-3), rtol=1e-4, atol=1e-4)
    finally:
        ckbn.distributed.set_communicator(old)
    point = ckbn.distributed.SyncPoint("bn")
    assert point.step == 0
    factories = (ckbn.distributed.from_mpi4py, ckbn.distributed.from_torch)
    helpers = (ckbn.distributed.sync_moments, ckbn.distributed.sync_sums,
               ckbn.distributed.local_moments, ckbn.distributed.merge)
    assert all(callable(f) for f in factories + helpers)
    counts, means, m2s = np.array([2.0, 2.0]), np.array([[0.0], [2.0]]), np.array([[2.0], [2.0]])
    n, mean, var = ckbn.distributed.merge(counts, means, m2s)   # [-1, 1] and [1, 3]
    assert n == 4.0
    np.testing.assert_allclose(mean, [1.0])
    np.testing.assert_allclose(var, [np.var([-1.0, 1.0, 1.0, 3.0])])
    # The backward coefficients: dx = dy*k1 + x*k2 + k3 equals the float64 formula.
    xs, dys = np.array([1.0, 2.0, 4.0]), np.array([0.5, -1.0, 2.0])
    g, eps_ = 1.5, 1e-3
    inv = 1.0 / np.sqrt(xs.var() + eps_)
    xhat = (xs - xs.mean()) * inv
    k1, k2, k3 = ckbn.distributed.grad_coefficients(
        g, xs.mean(), xs.var(), eps_, 3, dys.sum(), (dys * xhat).sum())
    want = g * inv * (dys - dys.mean() - xhat * (dys * xhat).mean())
    np.testing.assert_allclose(dys * k1 + xs * k2 + k3, want, rtol=1e-12)
    with pytest.raises(ValueError, match="phase"):
        ckbn.distributed.guard(point, comm, "sideways", lambda: None)
    count, local_mean, m2 = ckbn.distributed.local_moments(np.array([[1.0], [3.0]]), [1])
    assert count == 2
    np.testing.assert_allclose(local_mean, [2.0])
    np.testing.assert_allclose(m2, [2.0])


def test_keras_plugin() -> None:
    keras = pytest.importorskip("keras")
    import keras_plugin

    inputs = keras.Input((5,))
    h = keras.layers.Dense(3)(inputs)
    model = keras.Model(inputs, keras.layers.ReLU()(keras.layers.BatchNormalization()(h)))
    x = np.random.default_rng(3).random((4, 5)).astype(np.float32)
    want = np.asarray(model.predict(x, verbose=0))
    swapped = keras_plugin.swap_batch_normalization(model, fuse_activations=True)
    assert any(isinstance(layer, keras_plugin.BatchNormalizationActivation)
               for layer in swapped.layers)
    np.testing.assert_allclose(np.asarray(swapped.predict(x, verbose=0)), want, atol=1e-5)
    folded = keras_plugin.fold_batch_normalization(model)
    np.testing.assert_allclose(np.asarray(folded.predict(x, verbose=0)), want, atol=1e-5)
    layer = keras_plugin.BatchNormalization(axis=-1)
    affine = keras_plugin.ChannelAffine(axis=-1)
    assert layer.__class__.__name__ == "BatchNormalization" and affine is not None
    with keras_plugin.kernels_disabled():
        assert keras_plugin.kernels_enabled() is False
    assert keras_plugin.kernels_enabled() is True
    old = keras_plugin.get_jax_min_elements()
    keras_plugin.set_jax_min_elements(0)
    assert keras_plugin.get_jax_min_elements() == 0
    keras_plugin.set_jax_min_elements(old)
    with keras_plugin.jax_sync_axis("batch"):
        pass
    with contextlib.suppress(ValueError, TypeError):
        keras_plugin.set_jax_min_elements(-1)
