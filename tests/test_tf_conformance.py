"""TensorFlow's own tests of ``tf.layers.BatchNormalization``, on ckbn.

Ported by their facts (inputs, expected values, tolerances) from tf-keras 2.21,
``tf_keras/legacy_tf_layers/normalization_test.py`` (class ``BNTest``).  The
reference passes every one of them in graph mode; these run the same checks on
``ckbn.BatchNormalization``.  How TensorFlow's graph constructs map here:

* ``training=<bool placeholder>`` fed True/False -> calls with ``training=True``
  / ``training=False`` on the same input array;
* ``sess.run([outputs] + bn.updates)`` -> a training call, then
  ``ckbn.run_updates(bn.updates)`` (the earlier calls' updates are done and do
  not run again, as each TF run applies that step's updates once);
* ``assertAlmostEqual(a, b, places=p)`` -> ``round(a - b, p) == 0``.

Not portable (TensorFlow machinery with no NumPy counterpart):

* ``testHalfPrecision`` and the nine ``testCheckpoint*`` tests: a ``conv2d``
  model trained with ``GradientDescentOptimizer`` and saved/restored with
  ``tf.train.Saver`` on CPU and GPU devices;
* in ``testCreateFusedBNFloat16``, ``var.dtype._is_ref_dtype`` (TF1 reference
  variables); the rest of that test is ported;
* ``test4DInputAxis1`` and ``test4DInputAxis1Fused`` run in TensorFlow only on
  a CUDA GPU (NCHW); they are ported and run here on the CPU.
"""

import numpy as np
import pytest

import ckbn


@pytest.fixture(autouse=True)
def _fresh_graph(fresh_graph):
    yield fresh_graph


def _almost(a, b, places):
    """unittest's assertAlmostEqual(a, b, places=places)."""
    assert round(abs(float(a) - float(b)), places) == 0, (a, b, places)


def _normalized(y, bn, eps, shape):
    g = np.reshape(bn.gamma.numpy(), shape)
    b = np.reshape(bn.beta.numpy(), shape)
    return ((y - eps) * g) + b


# (test name, input shape, axis, fused, gamma/beta broadcast shape, reduction axes,
#  keepdims of the numpy statistics, places of the training mean check)
_AXIS_CASES = [
    ("test3DInputAxis1", (5, 4, 3), 1, None, (1, 4, 1), (0, 2), False, 1),
    ("test3DInputAxis2", (5, 4, 3), 2, None, (1, 1, 3), (0, 1), False, 1),
    ("test4DInputAxis1", (5, 4, 3, 6), 1, None, (1, 4, 1, 1), (0, 2, 3), False, 1),
    ("test4DInputAxis2", (5, 4, 3, 6), 2, None, (1, 1, 3, 1), (0, 1, 3), False, 1),
    ("test4DInputAxis3", (5, 4, 3, 6), 3, None, (1, 1, 1, 6), (0, 1, 2), False, 1),
    ("test4DInputAxis3Fused", (5, 4, 3, 6), 3, True, (1, 1, 1, 6), (0, 1, 2), False, 1),
    ("test4DInputAxis1Fused", (5, 4, 3, 6), 1, True, (1, 4, 1, 1), (0, 2, 3), False, 1),
    ("testNegativeAxis", (5, 4, 3, 6), -1, None, (1, 1, 1, 6), (0, 1, 2), False, 1),
    ("test3DInputMultiAxis12", (5, 4, 3), [1, 2], None, (1, 4, 3), (0,), True, 1),
    ("test5DInputMultiAxis123", (5, 3, 4, 4, 3), [1, 2, 3], None, (1, 3, 4, 4, 1), (0, 4),
     True, 1),
]


@pytest.mark.parametrize("case", _AXIS_CASES, ids=[c[0] for c in _AXIS_CASES])
def test_axis_training_then_inference(case):
    """100 training steps on one input: each output is normalized, the moving
    statistics reach the input's, and inference normalizes with them."""
    _, shape, axis, fused, bshape, red, keep, places = case
    eps = 1e-3
    kwargs = {} if fused is None else {"fused": fused}
    bn = ckbn.BatchNormalization(axis=axis, epsilon=eps, momentum=0.9, **kwargs)
    x = (np.random.default_rng(0).random(shape) + 100).astype(np.float32)
    for _ in range(100):
        y = bn(x, training=True)
        ckbn.run_updates(bn.updates)
        normed = _normalized(y, bn, eps, bshape)
        _almost(np.mean(normed), 0.0, places)
        _almost(np.std(normed), 1.0, 1)
    mean = np.mean(x, axis=red, keepdims=keep)
    var = np.square(np.std(x, axis=red, keepdims=keep))
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, atol=1e-2, rtol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), var, atol=1e-2, rtol=1e-6)
    normed = _normalized(bn(x, training=False), bn, eps, bshape)
    _almost(np.mean(normed), 0.0, 1)
    _almost(np.std(normed), 1.0, 1)


def test_boolean_learning_phase():
    """testBooleanLearningPhase: separate training=True and training=False calls."""
    eps = 1e-3
    bn = ckbn.BatchNormalization(axis=-1, epsilon=eps, momentum=0.9)
    x = (np.random.default_rng(1).random((5, 4, 3, 6)) + 100).astype(np.float32)
    for _ in range(100):
        y = bn(x, training=True)
        ckbn.run_updates(bn.updates)
        normed = _normalized(y, bn, eps, (1, 1, 1, 6))
        _almost(np.mean(normed), 0.0, 2)
        _almost(np.std(normed), 1.0, 1)
    np.testing.assert_allclose(bn.moving_mean.numpy(), x.mean(axis=(0, 1, 2)), atol=1e-2,
                               rtol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), np.square(x.std(axis=(0, 1, 2))),
                               atol=1e-2, rtol=1e-6)
    normed = _normalized(bn(x, training=False), bn, eps, (1, 1, 1, 6))
    _almost(np.mean(normed), 0.0, 1)
    _almost(np.std(normed), 1.0, 1)


def _by_name():
    return {v.name: v for v in ckbn.get_collection(ckbn.GraphKeys.GLOBAL_VARIABLES)}


def test_create_bn():
    """testCreateBN."""
    bn = ckbn.BatchNormalization(axis=1)
    x = np.random.default_rng(1).random((5, 4, 3)).astype(np.float32)
    y = bn(x, training=True)
    assert list(y.shape) == [5, 4, 3]
    assert len(bn.updates) == 2
    assert len(bn.variables) == 4
    assert len(bn.trainable_variables) == 2
    assert len(bn.non_trainable_variables) == 2
    assert ckbn.get_collection(ckbn.GraphKeys.UPDATE_OPS) == bn.updates
    assert ckbn.get_collection(ckbn.GraphKeys.TRAINABLE_VARIABLES) == bn.trainable_variables


def test_create_fused_bn_float16():
    """testCreateFusedBNFloat16 (without the TF1 reference-dtype check)."""
    bn = ckbn.BatchNormalization(axis=1, fused=True)
    x = np.random.default_rng(1).random((5, 4, 3, 3)).astype(np.float16)
    y = bn(x, training=True)
    assert list(y.shape) == [5, 4, 3, 3]
    assert len(bn.updates) == 2
    assert len(bn.variables) == 4
    assert len(bn.trainable_variables) == 2
    assert len(bn.non_trainable_variables) == 2
    assert ckbn.get_collection(ckbn.GraphKeys.UPDATE_OPS) == bn.updates
    assert ckbn.get_collection(ckbn.GraphKeys.TRAINABLE_VARIABLES) == bn.trainable_variables


def test_functional_no_reuse():
    """testFunctionalNoReuse: ``batch_norm(..., name="bn")`` and its collections."""
    eps = 1e-3
    x = np.random.default_rng(2).random((5, 4, 3, 6)).astype(np.float32)
    y = ckbn.batch_norm(x, axis=-1, momentum=0.9, epsilon=eps, training=True, name="bn")
    updates = ckbn.get_collection(ckbn.GraphKeys.UPDATE_OPS)
    v = _by_name()
    mm, mv = v["bn/moving_mean:0"], v["bn/moving_variance:0"]
    g = v["bn/gamma:0"].numpy().reshape(1, 1, 1, 6)
    b = v["bn/beta:0"].numpy().reshape(1, 1, 1, 6)
    assert len(updates) == 2
    # The functional form makes a new layer per call; its 100 training runs
    # re-run the same graph: one call, updates run each step (as TF's session runs).
    for step in range(100):
        if step:
            y = ckbn.batch_norm(x, axis=-1, momentum=0.9, epsilon=eps, training=True,
                                name="bn", reuse=True)
        ckbn.run_updates(ckbn.get_collection(ckbn.GraphKeys.UPDATE_OPS))
        normed = ((y - eps) * g) + b
        _almost(np.mean(normed), 0.0, 1)
        _almost(np.std(normed), 1.0, 1)
    np.testing.assert_allclose(mm.numpy(), x.mean(axis=(0, 1, 2)), atol=1e-2, rtol=1e-6)
    np.testing.assert_allclose(mv.numpy(), np.square(x.std(axis=(0, 1, 2))), atol=1e-2,
                               rtol=1e-6)
    y = ckbn.batch_norm(x, axis=-1, momentum=0.9, epsilon=eps, training=False, name="bn",
                        reuse=True)
    normed = ((y - eps) * g) + b
    _almost(np.mean(normed), 0.0, 1)
    _almost(np.std(normed), 1.0, 1)


def test_functional_reuse():
    """testFunctionalReuse: the second ``batch_norm`` with ``reuse=True`` trains
    the shared variables; its last two update ops are run."""
    eps = 1e-3
    rng = np.random.default_rng(3)
    x1 = rng.random((5, 4, 3, 6)).astype(np.float32)
    x2 = rng.random((5, 4, 3, 6)).astype(np.float32)
    ckbn.batch_norm(x1, axis=-1, momentum=0.9, epsilon=eps, training=True, name="bn")
    for _ in range(100):
        y = ckbn.batch_norm(x2, axis=-1, momentum=0.9, epsilon=eps, training=True, name="bn",
                            reuse=True)
        ckbn.run_updates(ckbn.get_collection(ckbn.GraphKeys.UPDATE_OPS)[-2:])
    v = _by_name()
    assert len(v) == 4
    np.testing.assert_allclose(v["bn/moving_mean:0"].numpy(), x2.mean(axis=(0, 1, 2)),
                               atol=1e-2, rtol=1e-6)
    np.testing.assert_allclose(v["bn/moving_variance:0"].numpy(),
                               np.square(x2.std(axis=(0, 1, 2))), atol=1e-2, rtol=1e-6)
    g = v["bn/gamma:0"].numpy().reshape(1, 1, 1, 6)
    b = v["bn/beta:0"].numpy().reshape(1, 1, 1, 6)
    normed = ((y - eps) * g) + b
    _almost(np.mean(normed), 0.0, 2)
    _almost(np.std(normed), 1.0, 1)
    y = ckbn.batch_norm(x2, axis=-1, momentum=0.9, epsilon=eps, training=False, name="bn",
                        reuse=True)
    normed = ((y - eps) * g) + b
    _almost(np.mean(normed), 0.0, 2)
    _almost(np.std(normed), 1.0, 1)


def test_functional_reuse_from_scope():
    """testFunctionalReuseFromScope: TF counts five global variables before and
    after reuse, the fifth being the test's input ``tf.Variable``; here the
    input is an array, so four."""
    x = np.random.default_rng(4).random((5, 4, 3, 6)).astype(np.float32)
    with ckbn.variable_scope("scope"):
        ckbn.batch_norm(x, axis=-1, momentum=0.9, epsilon=1e-3, training=True)
        assert len(ckbn.get_collection(ckbn.GraphKeys.GLOBAL_VARIABLES)) == 4
    with ckbn.variable_scope("scope", reuse=True):
        ckbn.batch_norm(x, axis=-1, momentum=0.9, epsilon=1e-3, training=True)
        assert len(ckbn.get_collection(ckbn.GraphKeys.GLOBAL_VARIABLES)) == 4


@pytest.mark.parametrize("arg", ["center", "scale"])
def test_no_center_no_scale(arg):
    """testNoCenter, testNoScale."""
    bn = ckbn.BatchNormalization(axis=1, **{arg: False})
    y = bn(np.random.default_rng(1).random((5, 4, 3)).astype(np.float32), training=True)
    assert list(y.shape) == [5, 4, 3]
    assert len(bn.updates) == 2
    assert len(bn.variables) == 3
    assert len(bn.trainable_variables) == 1
    assert len(bn.non_trainable_variables) == 2


def test_regularizers():
    """testRegularizers: one loss for a beta or a gamma regularizer."""
    def reg(v):
        return 0.1 * np.sum(v)

    x = np.random.default_rng(1).random((5, 4, 3)).astype(np.float32)
    bn = ckbn.BatchNormalization(axis=1, beta_regularizer=reg)
    bn(x, training=True)
    assert len(bn.losses) == 1
    assert bn.losses[0] == pytest.approx(0.0)              # 0.1 * sum(beta = 0)
    bn = ckbn.BatchNormalization(axis=1, gamma_regularizer=reg)
    bn(x, training=True)
    assert len(bn.losses) == 1
    assert bn.losses[0] == pytest.approx(0.4)              # 0.1 * sum(gamma = 1, 4 channels)


def test_constraints():
    """testConstraints: the constraints given are the layer's."""
    def g_constraint(v):
        return v / np.sum(v)

    def b_constraint(v):
        return v / np.max(v)

    bn = ckbn.BatchNormalization(axis=1, gamma_constraint=g_constraint,
                                 beta_constraint=b_constraint)
    bn(np.random.default_rng(1).random((5, 4, 3)).astype(np.float32))
    assert bn.gamma_constraint is g_constraint
    assert bn.beta_constraint is b_constraint


def _renorm_layer(momentum, renorm_momentum, clipping, adjustment=None):
    return ckbn.BatchNormalization(
        axis=1, gamma_initializer=ckbn.initializers.constant_initializer(2.0),
        beta_initializer=ckbn.initializers.constant_initializer(3.0), epsilon=0.001,
        momentum=momentum, renorm=True, renorm_clipping=clipping,
        renorm_momentum=renorm_momentum, adjustment=adjustment)


@pytest.mark.parametrize("with_adjustment", [False, True],
                         ids=["testRenorm", "testRenormWithAdjustment"])
def test_renorm(with_adjustment):
    shape = (4, 3)
    momentum, renorm_momentum = 0.99, 0.8
    rmax, rmin, dmax = 1.1, 0.9, 0.1
    gamma, beta, eps = 2.0, 3.0, 0.001
    rng = np.random.default_rng(5)
    adj_s = rng.uniform(0.5, 1.5, shape[-1:]).astype(np.float32)
    adj_b = rng.uniform(-0.2, 0.2, shape[-1:]).astype(np.float32)
    adjustment = (lambda _: (adj_s, adj_b)) if with_adjustment else None
    bn = _renorm_layer(momentum, renorm_momentum, {"rmax": rmax, "rmin": rmin, "dmax": dmax},
                       adjustment)
    moving_mean, moving_stddev, renorm_mean, renorm_stddev = 0.0, 1.0, 0.0, 1.0
    for _ in range(5):
        x = rng.random(shape)
        mean = x.mean(0)
        stddev = np.sqrt(x.var(0) + eps)
        r = (stddev / renorm_stddev).clip(rmin, rmax)
        d = ((mean - renorm_mean) / renorm_stddev).clip(-dmax, dmax)
        core = (x - mean) / stddev * r + d
        if with_adjustment:
            core = core * adj_s + adj_b
        y_train = core * gamma + beta
        renorm_mean += (mean - renorm_mean) * (1.0 - renorm_momentum)
        renorm_stddev += (stddev - renorm_stddev) * (1.0 - renorm_momentum)
        moving_mean += (mean - moving_mean) * (1.0 - momentum)
        moving_stddev += (stddev - moving_stddev) * (1.0 - momentum)
        y_test = ((x - moving_mean) / (moving_stddev * moving_stddev) ** 0.5 * gamma) + beta
        xf = x.astype(np.float32)
        got_train = bn(xf, training=True)
        ckbn.run_updates(bn.updates)
        got_test = bn(xf, training=False)
        np.testing.assert_allclose(got_train, y_train, atol=1e-5, rtol=1e-6)
        np.testing.assert_allclose(got_test, y_test, atol=1e-5, rtol=1e-6)


def test_renorm_no_clipping_same_momentum_gives_same_test_train():
    """testRenormNoClippingSameMomentumGivesSameTestTrain."""
    shape = (4, 3)
    momentum = 0.9
    gamma, beta, eps = 2.0, 3.0, 0.001
    bn = _renorm_layer(momentum, momentum, None)
    moving_mean, moving_stddev, renorm_mean, renorm_stddev = 0.0, 1.0, 0.0, 1.0
    rng = np.random.default_rng(6)
    for step in range(6):
        x = rng.random(shape)
        mean = x.mean(0)
        stddev = np.sqrt(x.var(0) + eps)
        r = stddev / renorm_stddev
        d = (mean - renorm_mean) / renorm_stddev
        y_test = ((x - moving_mean) / (moving_stddev * moving_stddev) ** 0.5 * gamma) + beta
        y_train = ((x - mean) / stddev * r + d) * gamma + beta
        renorm_mean += (mean - renorm_mean) * (1.0 - momentum)
        renorm_stddev += (stddev - renorm_stddev) * (1.0 - momentum)
        moving_mean += (mean - moving_mean) * (1.0 - momentum)
        moving_stddev += (stddev - moving_stddev) * (1.0 - momentum)
        xf = x.astype(np.float32)
        got_test = bn(xf, training=False)          # before this step's updates
        got_train = bn(xf, training=True)
        ckbn.run_updates(bn.updates)
        atol = eps * 1.5 if step == 0 else 1e-5
        np.testing.assert_allclose(got_train, y_train, atol=atol, rtol=1e-6)
        np.testing.assert_allclose(got_test, y_test, atol=atol, rtol=1e-6)
        np.testing.assert_allclose(got_train, got_test, atol=atol, rtol=1e-6)


def test_adjustment():
    """testAdjustment: adjustment in training only; inference uses the moving statistics."""
    shape = (4, 3)
    momentum, gamma, beta, eps = 0.99, 2.0, 3.0, 0.001
    rng = np.random.default_rng(7)
    adj_s = rng.uniform(0.5, 1.5, shape[-1:]).astype(np.float32)
    adj_b = rng.uniform(-0.2, 0.2, shape[-1:]).astype(np.float32)
    bn = ckbn.BatchNormalization(
        axis=1, gamma_initializer=ckbn.initializers.constant_initializer(gamma),
        beta_initializer=ckbn.initializers.constant_initializer(beta), epsilon=eps,
        momentum=momentum, adjustment=lambda _: (adj_s, adj_b))
    moving_mean, moving_variance = 0.0, 1.0
    for _ in range(5):
        x = rng.random(shape)
        xf = x.astype(np.float32)
        got_train = bn(xf, training=True)
        ckbn.run_updates(bn.updates)
        got_test = bn(xf, training=False)
        mean, variance = x.mean(0), x.var(0)
        y_train = (((x - mean) / (variance + eps) ** 0.5) * adj_s + adj_b) * gamma + beta
        moving_mean += (mean - moving_mean) * (1.0 - momentum)
        moving_variance += (variance - moving_variance) * (1.0 - momentum)
        y_test = ((x - moving_mean) / (moving_variance + eps) ** 0.5 * gamma) + beta
        np.testing.assert_allclose(got_train, y_train, atol=1e-5, rtol=1e-6)
        np.testing.assert_allclose(got_test, y_test, atol=1e-5, rtol=1e-6)


def test_ghost_bn_negative_virtual_batch():
    """testGhostBNNegativeVirtualBatch."""
    x = np.random.default_rng(1).random((6, 5, 4, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="virtual_batch_size"):
        ckbn.batch_normalization(x, virtual_batch_size=-1)


def test_ghost_bn_virtual_batch_full():
    """testGhostBNVirtualBatchFull: one ghost batch of the whole batch is plain BN
    (both in their default inference mode)."""
    x = np.random.default_rng(8).random((6, 5, 4, 3)).astype(np.float32)
    y1 = ckbn.batch_normalization(x)
    y2 = ckbn.batch_normalization(x, virtual_batch_size=6)
    assert y1.shape == y2.shape
    np.testing.assert_allclose(y1, y2, atol=1e-5, rtol=1e-6)


def test_ghost_bn_input_output_shapes_match():
    """testGhostBNInputOutputShapesMatch."""
    x = np.random.default_rng(9).random((6, 4, 3)).astype(np.float32)
    assert list(ckbn.batch_normalization(x, virtual_batch_size=3).shape) == [6, 4, 3]


def test_ghost_bn_unknown_batch_size():
    """testGhostBNUnknownBatchSize: NumPy shapes are always known; a batch of 10
    in ghost batches of 2 keeps its shape."""
    x = np.random.default_rng(10).random((10, 5, 4)).astype(np.float32)
    assert list(ckbn.batch_normalization(x, virtual_batch_size=2).shape) == [10, 5, 4]


# (test name, shape, axis, virtual batch, ghost statistics axes, moving shape, fused, atol)
_GHOST_CASES = [
    ("testGhostBN2Dims", [6, 2], -1, 3, (0,), [2, 2], None, 1e-5),
    ("testGhostBN4DimsAxis3", [6, 10, 10, 3], 3, 2, (0, 2, 3), [1, 1, 1, 1, 3], None, 1e-2),
    ("testGhostBN4DimsAxis1", [6, 3, 10, 10], 1, 2, (0, 3, 4), [1, 1, 3, 1, 1], False, 1e-2),
    ("testGhostBN5DimsMultiAxis14", [6, 3, 10, 10, 4], [1, 4], 3, (0, 3, 4),
     [1, 1, 3, 1, 1, 4], False, 1e-2),
]


@pytest.mark.parametrize("case", _GHOST_CASES, ids=[c[0] for c in _GHOST_CASES])
def test_ghost_bn(case):
    _, shape, axis, vbs, red, mshape, fused, atol = case
    beta, gamma, momentum, eps = 2.0, 3.0, 0.8, 1e-3
    moving_means = np.zeros(mshape, dtype=np.float32)
    moving_vars = np.ones(mshape, dtype=np.float32)
    kwargs = {} if fused is None else {"fused": fused}
    bn = ckbn.BatchNormalization(
        axis=axis, momentum=momentum, epsilon=eps, virtual_batch_size=vbs,
        beta_initializer=ckbn.initializers.constant_initializer(beta),
        gamma_initializer=ckbn.initializers.constant_initializer(gamma), **kwargs)
    ghost = [vbs, shape[0] // vbs] + shape[1:]
    rng = np.random.default_rng(11)
    for _ in range(5):
        x = rng.random(shape)
        sub = np.reshape(x, ghost)
        means = np.mean(sub, axis=red, keepdims=True)
        variances = np.var(sub, axis=red, keepdims=True)
        moving_means = moving_means * momentum + np.mean(means, axis=1, keepdims=True) * (
            1.0 - momentum)
        moving_vars = moving_vars * momentum + np.mean(variances, axis=1, keepdims=True) * (
            1.0 - momentum)
        y_train = np.reshape((sub - means) / (variances + eps) ** 0.5 * gamma + beta, shape)
        y_test = np.reshape((sub - moving_means) / (moving_vars + eps) ** 0.5 * gamma + beta,
                            shape)
        xf = x.astype(np.float32)
        got_train = bn(xf, training=True)
        ckbn.run_updates(bn.updates)
        got_test = bn(xf, training=False)
        np.testing.assert_allclose(got_train, y_train, atol=atol, rtol=1e-6)
        np.testing.assert_allclose(got_test, y_test, atol=atol, rtol=1e-6)


def test_multi_axis_invalid():
    """testMultiAxisInvalid: out-of-bounds and duplicate axes."""
    x = np.random.default_rng(1).random((6, 5, 4, 3)).astype(np.float32)
    for axis in ([1, 4], [-5, 1], [1, 2, 1]):
        with pytest.raises(ValueError):
            ckbn.batch_normalization(x, axis=axis)
