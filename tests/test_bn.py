"""ckbn.BatchNormalization: documented golden values, arguments, errors that
leave state unchanged, and gradients against finite differences (float64)."""

import numpy as np
import pytest

import ckbn
from ckbn.initializers import constant_initializer as const


pytestmark = pytest.mark.usefixtures("fresh_graph")   # tests/conftest.py


X1 = np.array([[1, 2, 3], [4, 0, -1], [2, 2, 5], [-3, 1, 0.5]], np.float32)


def _train(bn, x, steps=1):
    y = None
    for _ in range(steps):
        y = bn(x, training=True)
        ckbn.run_updates(bn.get_updates_for(x))
    return y


# --- goldens G1-G5, G7: values measured on the reference (docs/behaviour.md) ---

def test_golden_g1_non_fused():
    bn = ckbn.BatchNormalization(momentum=0.9, gamma_initializer=const(2), beta_initializer=const(3))
    y = _train(bn, X1)
    np.testing.assert_allclose(y, [[3., 4.807754, 3.977534], [5.353212, -0.012923, 0.501859],
                                   [3.784404, 4.807754, 5.715371], [-0.137617, 2.397415, 1.805237]],
                               atol=3e-6)
    np.testing.assert_allclose(bn.moving_mean.numpy(), [0.1, 0.125, 0.1875], atol=1e-7)
    np.testing.assert_allclose(bn.moving_variance.numpy(), [1.55, 0.96875, 1.429688], atol=1e-6)
    np.testing.assert_allclose(bn(X1), [[4.445329, 6.808039, 7.702731], [9.26309, 2.746131, 1.014402],
                                        [6.05125, 6.808039, 11.046895],
                                        [-1.978354, 4.777085, 3.522526]], atol=3e-6)


X2 = np.array([[[[0, 1], [2, 4]], [[6, 1], [3, 5]]], [[[1, 3], [6, 2]], [[4, 0], [3, 6]]]], np.float32)


@pytest.mark.parametrize("fused,var", [(None, [2.848214, 2.75]), (False, [2.554688, 2.46875])])
def test_golden_g2_fused_bessel(fused, var):
    bn = ckbn.BatchNormalization(momentum=0.5, fused=fused)
    y = _train(bn, X2)
    assert bn.fused == (fused is None)
    np.testing.assert_allclose(y.reshape(-1, 2)[:3], [[-1.541378, -0.881805], [-0.554896, 0.629861],
                                                      [1.418068, -0.881805]], atol=3e-6)
    np.testing.assert_allclose(bn.moving_mean.numpy(), [1.5625, 1.375], atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), var, atol=2e-6)


def test_golden_g3_ghost_strided():
    x = np.array([[1, 10], [2, 20], [3, 30], [5, 15], [7, 35], [11, 5]], np.float32)
    bn = ckbn.BatchNormalization(virtual_batch_size=3, momentum=0.8)
    y = _train(bn, x)
    np.testing.assert_allclose(y, [[-1.068959, -1.388724], [-1.069007, 1.069031], [-0.26724, 0.462908],
                                   [-0.267252, 0.267258], [1.336199, 0.925816], [1.336259, -1.336289]],
                               atol=3e-6)
    assert bn.moving_mean.shape == (1, 1, 2)
    np.testing.assert_allclose(bn.moving_mean.numpy().ravel(), [0.966667, 3.833333], atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy().ravel(), [2.822222, 16.355556], atol=1e-5)
    np.testing.assert_allclose(bn(x)[:2], [[0.019838, 1.524771], [0.61499, 3.997372]], atol=3e-6)
    # Inference needs no grouping: any batch size.
    assert bn(x[:5]).shape == (5, 2)
    with pytest.raises(ValueError, match="virtual_batch_size 3 does not divide"):
        bn(x[:5], training=True)


def test_golden_g4_multi_axis():
    x = np.array([[[1, 2], [3, 4]], [[2, 0], [1, 9]], [[0.5, 4], [6, 0]]], np.float32)
    bn = ckbn.BatchNormalization(axis=[1, 2], momentum=0.9)
    _train(bn, x)
    assert bn.gamma.shape == (1, 2, 2)
    np.testing.assert_allclose(bn.moving_variance.numpy().ravel(),
                               [0.938889, 1.166667, 1.322222, 2.255556], atol=1e-6)


def test_golden_g5_renorm_115():
    bn = ckbn.BatchNormalization(axis=1, momentum=0.9, renorm=True, renorm_momentum=0.5,
                                 renorm_clipping={"rmax": 1.5, "rmin": 0.5, "dmax": 0.5})
    _train(bn, X1)
    y2 = _train(bn, X1)
    np.testing.assert_allclose(y2[0], [0.281713, 1.31978, 1.181465], atol=3e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), [1.674585, 0.935355, 1.55482], atol=3e-6)
    np.testing.assert_allclose(bn.renorm_stddev.numpy(), [2.162279, 0.872319, 1.976284], atol=3e-6)
    assert bn.count_params() == 21


def test_golden_g7_bessel_keras():
    bn = ckbn.BatchNormalization(momentum=0.5, moving_variance_initializer="zeros")
    _train(bn, np.array([0, 2], np.float32).reshape(2, 1, 1, 1))
    np.testing.assert_allclose(bn.moving_variance.numpy(), [1.0])


# --- arguments ---------------------------------------------------------------

def test_float16_inputs_float32_variables():
    x = np.random.default_rng(0).standard_normal((5, 4, 3, 3)).astype(np.float16)
    bn = ckbn.BatchNormalization(axis=1, fused=True)
    y = bn(x, training=True)
    assert y.dtype == np.float16 and bn.fused
    assert all(v.dtype == np.float32 for v in bn.variables)
    assert len(bn.updates) == 2 and len(bn.variables) == 4


def test_dtype_fixed_by_first_input_and_cast():
    bn = ckbn.BatchNormalization()
    bn(np.ones((4, 3), np.float64), training=True)
    assert bn.dtype == "float64" and bn.gamma.dtype == np.float64 and not bn.fused
    y = bn(np.ones((4, 3), np.float32))
    assert y.dtype == np.float64
    bare = ckbn.BatchNormalization()
    bare.build((None, 3))
    assert bare.gamma.dtype == np.float32


def _renorm_model(xs, eps, momentum, renorm_momentum, clip, moving_variance=1.0):
    """float64 NumPy model of TF 1.15 batch renormalization (gamma 1, beta 0),
    with the moving statistics after each step's updates:

        std = sqrt(var + eps);  s = max(renorm_stddev, sqrt(eps))
        r = clip(std / s, rmin, rmax);  d = clip((mean - renorm_mean) / s, -dmax, dmax)
        y = (x - mean) / std * r + d
        renorm_mean, renorm_stddev <- EMA toward mean, std (renorm_momentum)
        moving_mean, moving_stddev <- EMA toward mean, std (momentum)
        moving_variance = max(moving_stddev**2 - eps, 0)

    An EMA is v - (v - value) * (1 - momentum), with 1 - momentum rounded to
    float32 as TensorFlow does.  renorm_stddev and moving_stddev start at
    sqrt(moving_variance)."""
    rate = float(np.float32(1.0 - momentum))
    rrate = float(np.float32(1.0 - renorm_momentum))
    c = xs[0].shape[-1]
    st = {"moving_mean": np.zeros(c), "moving_variance": np.full(c, moving_variance),
          "moving_stddev": np.full(c, np.sqrt(moving_variance)), "renorm_mean": np.zeros(c),
          "renorm_stddev": np.full(c, np.sqrt(moving_variance))}
    ys = []
    for x in xs:
        mean, var = x.mean(0), x.var(0)
        std = np.sqrt(var + eps)
        s = np.maximum(st["renorm_stddev"], np.sqrt(eps))
        r = np.clip(std / s, clip.get("rmin", -np.inf), clip.get("rmax", np.inf))
        d = np.clip((mean - st["renorm_mean"]) / s, -clip.get("dmax", np.inf),
                    clip.get("dmax", np.inf))
        ys.append((x - mean) / std * r + d)
        st["renorm_mean"] = st["renorm_mean"] - (st["renorm_mean"] - mean) * rrate
        st["renorm_stddev"] = st["renorm_stddev"] - (st["renorm_stddev"] - std) * rrate
        st["moving_mean"] = st["moving_mean"] - (st["moving_mean"] - mean) * rate
        st["moving_stddev"] = st["moving_stddev"] - (st["moving_stddev"] - std) * rate
        st["moving_variance"] = np.maximum(st["moving_stddev"] ** 2 - eps, 0)
    return ys, st


@pytest.mark.parametrize("eager", [False, True])
def test_float64_renorm_matches_a_float64_model(eager):
    """float64 with renorm (the reference crashes there): outputs and every
    moving statistic against the float64 model, over steps whose r and d are
    clipped."""
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((8, 3)) * (1 + 2 * i) + i for i in range(4)]
    clip = {"rmax": 2.0, "rmin": 0.8, "dmax": 0.5}
    ys, st = _renorm_model(xs, 1e-3, 0.9, 0.7, clip)
    bn = ckbn.BatchNormalization(renorm=True, renorm_clipping=clip, momentum=0.9,
                                 renorm_momentum=0.7)
    with ckbn.eager_mode() if eager else ckbn.graph_mode():
        for x, want in zip(xs, ys):
            y = bn(x, training=True)
            if not eager:
                ckbn.run_updates(bn.get_updates_for(x))
            assert y.dtype == np.float64
            np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
    assert all(v.dtype == np.float64 for v in bn.variables)
    for name, want in st.items():
        np.testing.assert_allclose(getattr(bn, name).numpy(), want, rtol=1e-12, atol=1e-12,
                                   err_msg=name)


@pytest.mark.parametrize("training,train_mode", [(True, True), (1, True), (np.bool_(True), True),
                                                 (False, False), (0, False), (None, False)])
def test_training_flag_values(training, train_mode):
    bn = ckbn.BatchNormalization()
    y = bn(X1, training=training)
    assert len(bn.updates) == (2 if train_mode else 0)
    if train_mode:
        np.testing.assert_allclose(y.mean(0), 0, atol=1e-6)
    else:
        np.testing.assert_allclose(y, X1 / np.sqrt(1 + 1e-3), rtol=1e-6)


def test_training_flag_bad_value():
    bn = ckbn.BatchNormalization()
    with pytest.raises(TypeError, match="training"):
        bn(X1, training="yes")


# --- errors leave state unchanged ----------------------------------------------

def _state(bn, graph):
    return ([v.numpy().copy() for v in bn.variables], len(bn._inbound_nodes), len(bn._updates),
            {k: len(graph.get_collection(k)) for k in graph.get_all_collection_keys()})


def _same(a, b):
    assert len(a[0]) == len(b[0]) and all((u == v).all() for u, v in zip(a[0], b[0]))
    assert a[1:] == b[1:]


@pytest.mark.parametrize("bad,exc,match", [
    (np.ones((4, 3), np.int32), TypeError, "dtype"),
    (np.ones((4, 3), np.complex64), TypeError, "dtype"),
    (np.ones((4, 3), bool), TypeError, "dtype"),
    (np.ones((4, 3), object), TypeError, "dtype"),
    (np.ones((4, 5), np.float32), ValueError, "expected axis 1 of input shape to have value 3"),
    (np.ones((4, 3, 1), np.float32), ValueError, "expected ndim=2"),
    (np.ones((0, 3), np.float32), ValueError, "empty"),
    ("abc", TypeError, "numpy array"),
])
def test_bad_call_changes_nothing(fresh_graph, bad, exc, match):
    bn = ckbn.BatchNormalization(virtual_batch_size=2)
    _train(bn, np.random.default_rng(0).random((4, 3), dtype=np.float32))
    before = _state(bn, fresh_graph)
    with pytest.raises(exc, match=match):
        bn(bad, training=True)
    _same(before, _state(bn, fresh_graph))
    with pytest.raises(ValueError, match="does not divide"):
        bn(np.ones((3, 3), np.float32), training=True)
    _same(before, _state(bn, fresh_graph))


def test_bad_backward_changes_nothing(fresh_graph):
    bn = ckbn.BatchNormalization()
    x = np.random.default_rng(0).random((4, 3), dtype=np.float32)
    bn(x, training=True)
    before = _state(bn, fresh_graph)
    with pytest.raises(ValueError, match=r"dy has shape \(4, 2\)"):
        bn.backward(np.ones((4, 2), np.float32))
    with pytest.raises(TypeError, match="dy must be a float"):
        bn.backward(np.ones((4, 3), np.int64))
    with pytest.raises(ValueError, match="no call on these inputs"):
        bn.backward(np.ones((4, 3), np.float32), inputs=x.copy())
    _same(before, _state(bn, fresh_graph))


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"renorm": True, "renorm_clipping": {"rmax": 1, "foo": 2}}, ValueError, "contains keys not in"),
    ({"momentum": 1.5}, ValueError, "momentum must be in"),
    ({"momentum": -0.1}, ValueError, "momentum"),
    ({"epsilon": -1e-3}, ValueError, "epsilon"),
    ({"epsilon": float("nan")}, ValueError, "epsilon"),
    ({"renorm": True, "renorm_momentum": 2.0}, ValueError, "renorm_momentum"),
    ({"axis": 1.5}, TypeError, "axis must be int or list"),
    ({"virtual_batch_size": 1.5}, TypeError, "virtual_batch_size must be an int"),
    ({"beta_initializer": "nope"}, ValueError, "unknown initializer"),
    ({"foo": 1}, TypeError, "Keyword argument not understood"),
])
def test_constructor_errors_consume_no_name(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ckbn.BatchNormalization(**kwargs)
    assert ckbn.BatchNormalization().name == "batch_normalization_1"


@pytest.mark.parametrize("kwargs,shape,match", [
    ({"axis": 4}, (6, 5, 4, 3), "Invalid axis: 4"),
    ({"axis": [1, 4]}, (6, 5, 4, 3), "Invalid axis: 4"),
    ({"axis": [-5, 1]}, (6, 5, 4, 3), "Invalid axis: -1"),
    ({"axis": [1, 2, 1]}, (6, 5, 4, 3), "Duplicate axis"),
    ({"virtual_batch_size": -1}, (6, 5, 4, 3), "virtual_batch_size must be a positive"),
    ({"virtual_batch_size": 2, "axis": 0}, (6, 5), "axis cannot include 0"),
])
def test_build_errors(kwargs, shape, match):
    bn = ckbn.BatchNormalization(**kwargs)
    with pytest.raises(ValueError, match=match):
        bn(np.ones(shape, np.float32), training=True)
    assert bn.variables == []


def test_nan_and_inf_propagate():
    x = np.random.default_rng(0).random((6, 3), dtype=np.float32)
    x[2, 1] = np.nan
    bn = ckbn.BatchNormalization()
    y = bn(x, training=True)
    assert np.isnan(y[:, 1]).all() and np.isfinite(y[:, [0, 2]]).all()


# --- gradients against finite differences (float64) ----------------------------

GRAD_CONFIGS = [
    ({}, (6, 3)),
    ({"axis": 1}, (4, 3, 5)),
    ({"axis": [1, 2]}, (5, 2, 3)),
    ({"virtual_batch_size": 2}, (6, 3)),
    ({"renorm": True, "renorm_clipping": {"rmax": 1.2, "dmax": 0.3}}, (6, 3)),
    ({"scale": False}, (6, 3)),
    ({"center": False, "adjustment": lambda s: (np.array([0.5, 2.0, 1.0]), np.array([0.1, 0.0, -0.3]))},
     (6, 3)),
]


@pytest.mark.parametrize("cfg,shape", GRAD_CONFIGS)
@pytest.mark.parametrize("training", [True, False])
def test_backward_finite_differences(cfg, shape, training):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape) * 2 + 1
    w = rng.standard_normal(shape)
    bn = ckbn.BatchNormalization(gamma_initializer=const(1.3), beta_initializer=const(-0.2),
                                 moving_variance_initializer=const(1.7), **cfg)
    with ckbn.eager_mode():
        bn(x + 0.5, training=True)          # move the renorm/moving statistics off their start
    ckbn.run_updates([])

    def loss(x_=None, var=None, val=None):
        if var is not None:
            old = var.numpy()
            var.assign(val)
        with ckbn.graph_mode():
            y = bn(x if x_ is None else x_, training=training)
        if var is not None:
            var.assign(old)
        return float((w * y).sum())

    with ckbn.graph_mode():
        bn(x, training=training)
    dx, grads = bn.backward(w)
    h = 1e-6
    num = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        num[idx] = (loss(xp) - loss(xm)) / (2 * h)
    if not (training and cfg.get("renorm")):   # r, d are stop-gradient constants
        np.testing.assert_allclose(dx, num, rtol=1e-5, atol=1e-6)
    for g, var in zip(grads, bn.trainable_weights):
        base = var.numpy()
        ng = np.zeros_like(base)
        for idx in np.ndindex(base.shape):
            p, m = base.copy(), base.copy()
            p[idx] += h
            m[idx] -= h
            ng[idx] = (loss(var=var, val=p) - loss(var=var, val=m)) / (2 * h)
        np.testing.assert_allclose(g, ng, rtol=1e-5, atol=1e-6)


# --- TF's checkpoint test, ported by its facts ----------------------------------
# A fixed linear map to NHWC with 2 channels, BatchNormalization(fused=f) with
# _bessels_correction_test_only=False, loss = sum(|bn|), SGD(0.01), 2 steps;
# restore the weights into a fused and a non-fused model, 2 more steps: every
# variable matches (atol 1e-5) and inference losses agree.

def _ckpt_model(fused, freeze, rng_seed=0):
    bn = ckbn.BatchNormalization(fused=fused)
    bn._bessels_correction_test_only = False
    return bn


def _ckpt_train(bn, images, kernel, freeze, steps):
    opt = ckbn.optimizers.SGD(0.01)
    for img in images[:steps]:
        feats = np.tensordot(img, kernel, axes=([3], [0])).astype(np.float32)   # (2,4,5,2)
        with ckbn.eager_mode():
            y = bn(feats, training=not freeze)
        _, grads = bn.backward(np.sign(y))
        opt.apply_gradients(zip(grads, bn.trainable_weights))


@pytest.mark.parametrize("freeze", [True, False])
@pytest.mark.parametrize("fused_a,fused_b", [(True, True), (True, False), (False, True)])
def test_checkpoint_fused_and_non_fused_agree(freeze, fused_a, fused_b):
    rng = np.random.default_rng(0)
    kernel = np.ones((3, 2), np.float32)
    images = [rng.random((2, 4, 5, 3)).astype(np.float32) for _ in range(4)]
    a, b = _ckpt_model(fused_a, freeze), _ckpt_model(fused_b, freeze)
    _ckpt_train(a, images, kernel, freeze, 2)
    _ckpt_train(b, images, kernel, freeze, 2)
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(u, v, atol=1e-5)
    # restore A's weights into fresh models of each kind, train 2 more steps
    ra, rb = _ckpt_model(fused_a, freeze), _ckpt_model(fused_b, freeze)
    for r in (ra, rb):
        r.build((2, 4, 5, 2))
        r.set_weights(a.get_weights())
        _ckpt_train(r, images[2:], kernel, freeze, 2)
    assert ra.fused == fused_a and rb.fused == fused_b
    for u, v in zip(ra.get_weights(), rb.get_weights()):
        np.testing.assert_allclose(u, v, atol=1e-5)
    test = np.tensordot(rng.random((2, 4, 5, 3)), kernel, axes=([3], [0])).astype(np.float32)
    la = float(np.abs(ra(test)).sum())
    lb = float(np.abs(rb(test)).sum())
    np.testing.assert_allclose(la, lb, rtol=3e-4, atol=1e-6)


def test_concurrent_training_and_inference_calls(fresh_graph):
    """One ghost-BN layer called from several threads, in training and in
    inference at once: every output equals the single-threaded result."""
    import threading

    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 4, 3)).astype(np.float32)
    bn = ckbn.BatchNormalization(virtual_batch_size=4, momentum=0.5)
    want_train = bn(x, training=True)
    want_infer = bn(x, training=False)
    errors = []

    def work(training):
        try:
            with fresh_graph.as_default():
                for _ in range(200):
                    got = bn(x, training=training)
                    want = want_train if training else want_infer
                    if not np.array_equal(got, want):
                        errors.append(training)
                        return
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i % 2 == 0,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
