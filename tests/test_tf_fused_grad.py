"""The gradient of a fused ReLU/ReLU6 on the TensorFlow native ops (session 7).

A batch normalization fused with ``relu`` or ``relu6`` runs its forward in
one ckbn op (``CkbnBatchNormTrain`` or ``CkbnBatchNormApply`` with the
activation attribute).  Its gradient runs ``CkbnBatchNormGrad`` with the
activation by default; ``keras_plugin._tf_native.GRAD_MASK_FROM_OUTPUT``
can instead route relu/relu6 (float32/float64) through TensorFlow's
``ReluGrad``/``Relu6Grad`` on the op's output and ckbn's plain backward (the
alternative ``benchmarks/bench_tf_native.py --part fused`` times; slower
since the kernels' activation sums are register-tiled).  The Keras model
test pins the default route; the other tests fill the table (fixture) and
pin that route structurally (op types and attributes in the traced graph,
which tensor the mask reads, kernel run counts; no timing), and every test
checks the gradients against float64 NumPy or the stock model: the op alone
(train, inference and renorm gradients, eagerly and in ``tf.function``),
the route on 1, 2 and 16 threads (bitwise equal), the activations and
dtypes that keep the activation in ckbn's backward.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("keras")

import ckbn  # noqa: E402
from keras_plugin import _tf_native as N  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EPS = 1e-3
MASK_OPS = {"relu": "ReluGrad", "relu6": "Relu6Grad"}
TOL = {np.float16: dict(rtol=2e-2, atol=2e-2), np.float32: dict(rtol=2e-5, atol=2e-5),
       np.float64: dict(rtol=1e-11, atol=1e-11)}

if N.load() is None:  # pragma: no cover - depends on the machine
    pytest.skip("the TensorFlow op library cannot be built here", allow_module_level=True)


@pytest.fixture(autouse=True)
def _mask_route():
    """The mask route on for the tests in this process (the model test runs
    its own process, on the default route)."""
    saved = dict(N.GRAD_MASK_FROM_OUTPUT)
    N.GRAD_MASK_FROM_OUTPUT.clear()
    N.GRAD_MASK_FROM_OUTPUT.update(MASK_OPS)
    yield
    N.GRAD_MASK_FROM_OUTPUT.clear()
    N.GRAD_MASK_FROM_OUTPUT.update(saved)


def _stat(dtype):
    return np.float32 if dtype == np.float16 else dtype


def _data(shape, dtype, seed=0):
    """x, scale, offset, dy: channels last; offsets spread so that z crosses 0 and 6."""
    rng = np.random.default_rng(seed)
    c = shape[-1]
    x = (rng.standard_normal(shape) * 1.5 + 0.7).astype(dtype)
    scale = rng.uniform(1.0, 3.0, c).astype(_stat(dtype))
    offset = rng.uniform(-1.0, 4.0, c).astype(_stat(dtype))
    dy = rng.standard_normal(shape).astype(dtype)
    return x, scale, offset, dy


# ------------------------------------------------------------- float64 reference
def _ref_stats(x):
    x = x.astype(np.float64)
    red = tuple(range(x.ndim - 1))
    return x.mean(red), x.var(red)


def _ref_grad(dy, x, scale, offset, mean, var, act, slope, training):
    """dx, dscale, doffset of act(BN(x)) in float64, statistics ``mean``/``var``."""
    red = tuple(range(x.ndim - 1))
    m, v = mean.astype(np.float64), var.astype(np.float64)
    s, o = scale.astype(np.float64), offset.astype(np.float64)
    inv = 1.0 / np.sqrt(v + EPS)
    xhat = (x.astype(np.float64) - m) * inv
    z = xhat * s + o
    if act == "relu":
        d = (z > 0).astype(np.float64)
    elif act == "relu6":
        d = ((z > 0) & (z < 6)).astype(np.float64)
    elif act == "leaky_relu":
        d = np.where(z > 0, 1.0, slope)
    else:  # swish
        sig = 1.0 / (1.0 + np.exp(-z))
        d = sig * (1.0 + z * (1.0 - sig))
    e = dy.astype(np.float64) * d
    dscale = (e * xhat).sum(red)
    doffset = e.sum(red)
    if training:
        count = x.size / scale.size
        dx = s * inv * (e - doffset / count - xhat * dscale / count)
    else:
        dx = s * inv * e
    return dx, dscale, doffset


# ------------------------------------------------------------------- the op alone
def _tape_fn(kind, act, slope=0.0):
    """act(BN(x)) on the native op and its gradient for ``dy`` (x, scale, offset)."""

    def fn(x, s, o, m, v, dy):
        with tf.GradientTape() as tape:
            tape.watch([x, s, o])
            if kind == "train":
                y = N.train(x, s, o, [3], EPS, act, slope)[0]
            else:  # "infer": the inference gradient; "renorm": the training one
                y = N.given(x, s, o, m, v, [3], EPS, kind == "renorm", act, slope)
        return tape.gradient(y, [x, s, o], output_gradients=dy)

    return fn


def _args(shape, dtype, seed=0):
    x, s, o, dy = _data(shape, dtype, seed)
    m, v = (a.astype(_stat(dtype)) for a in _ref_stats(x))
    return [tf.constant(a) for a in (x, s, o, m, v, dy)]


def _ckbn_ops(graph):
    return [op for op in graph.get_operations() if op.type.startswith("CkbnBatchNorm")]


def _check_values(got, args, act, slope, kind, dtype):
    x, s, o, m, v, dy = (a.numpy() for a in args)
    if kind == "train":  # the op's own batch statistics
        m, v = _ref_stats(x)
    ref = _ref_grad(dy, x, s, o, m, v, act, slope, kind != "infer")
    for name, g, r in zip(("dx", "dscale", "doffset"), got, ref):
        scale = max(1.0, float(np.max(np.abs(r))))
        np.testing.assert_allclose(np.asarray(g, np.float64) / scale, r / scale,
                                   err_msg=f"{name} ({kind}, {act}, {dtype.__name__})",
                                   **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["train", "infer", "renorm"])
@pytest.mark.parametrize("act", ["relu", "relu6"])
def test_fused_relu_gradient_masks_with_tensorflow_op(act, kind, dtype):
    """The traced gradient: the forward op holds the activation; TensorFlow's mask op
    reads that op's output; ckbn's gradient op runs without the activation; no
    separate forward activation, no Python op."""
    args = _args((4, 5, 6, 8), dtype)
    fn = tf.function(_tape_fn(kind, act))
    graph = fn.get_concrete_function(*args).graph
    types = [op.type for op in graph.get_operations()]
    fwd_type = "CkbnBatchNormTrain" if kind == "train" else "CkbnBatchNormApply"
    (fwd,) = [op for op in _ckbn_ops(graph) if op.type == fwd_type]
    (bwd,) = [op for op in _ckbn_ops(graph) if op.type == "CkbnBatchNormGrad"]
    assert fwd.get_attr("activation") == act.encode()
    assert bwd.get_attr("activation") == b"none"
    assert bwd.get_attr("training") == (kind != "infer")
    masks = [op for op in graph.get_operations() if op.type == MASK_OPS[act]]
    assert len(masks) == 1, types
    assert masks[0].inputs[1] is fwd.outputs[0]          # features: the fused op's y
    assert bwd.inputs[0] is masks[0].outputs[0]          # ckbn's dy: the masked gradient
    assert not {"Relu", "Relu6", "PyFunc", "EagerPyFunc"} & set(types), types
    _check_values(fn(*args), args, act, 0.0, kind, dtype)


@pytest.mark.parametrize("kind", ["train", "infer", "renorm"])
@pytest.mark.parametrize("act", ["relu", "relu6"])
def test_eager_gradient_equals_traced(act, kind):
    """Eagerly (the fast path records the op) the gradient is the traced one, bit for bit."""
    args = _args((4, 5, 6, 8), np.float32, seed=3)
    eager = _tape_fn(kind, act)(*args)
    traced = tf.function(_tape_fn(kind, act))(*args)
    for a, b in zip(eager, traced):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    _check_values(eager, args, act, 0.0, kind, np.float32)


@pytest.mark.parametrize("act,slope,dtype", [
    ("leaky_relu", 0.15, np.float32), ("swish", 0.0, np.float32),
    ("leaky_relu", 0.15, np.float64), ("relu6", 0.0, np.float16), ("relu", 0.0, np.float16)])
def test_other_activations_keep_the_kernel_backward(act, slope, dtype):
    """leaky_relu and swish, and float16 data (whose y is z rounded to half): the
    activation stays in ckbn's backward, no TensorFlow mask op."""
    if dtype == np.float16 and not N.has_float16():
        pytest.skip("the kernel table has no float16 kernels here")
    args = _args((4, 5, 6, 8), dtype, seed=1)
    fn = tf.function(_tape_fn("train", act, slope))
    graph = fn.get_concrete_function(*args).graph
    (bwd,) = [op for op in _ckbn_ops(graph) if op.type == "CkbnBatchNormGrad"]
    assert bwd.get_attr("activation") == act.encode()
    types = {op.type for op in graph.get_operations()}
    assert not {"ReluGrad", "Relu6Grad", "LeakyReluGrad"} & types, types
    _check_values(fn(*args), args, act, slope, "train", dtype)


def test_route_switch_reaches_the_kernel_backward():
    """With ``GRAD_MASK_FROM_OUTPUT`` emptied (the default route) the gradient is ckbn's backward with relu6, and both routes
    give the same values."""
    args = _args((4, 5, 6, 8), np.float32, seed=2)
    fast = tf.function(_tape_fn("train", "relu6"))(*args)
    saved = dict(N.GRAD_MASK_FROM_OUTPUT)
    N.GRAD_MASK_FROM_OUTPUT.clear()
    try:
        fn = tf.function(_tape_fn("train", "relu6"))
        graph = fn.get_concrete_function(*args).graph
        (bwd,) = [op for op in _ckbn_ops(graph) if op.type == "CkbnBatchNormGrad"]
        assert bwd.get_attr("activation") == b"relu6"
        assert "Relu6Grad" not in {op.type for op in graph.get_operations()}
        slow = fn(*args)
    finally:
        N.GRAD_MASK_FROM_OUTPUT.update(saved)
    for a, b in zip(fast, slow):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)


def test_gradient_bitwise_equal_for_1_2_16_threads():
    """16x32x32x32 (above the size where the ops take more than one thread): the
    gradient of a fused relu6 is the same bits for 1, 2 and 16 ckbn threads."""
    args = _args((16, 32, 32, 32), np.float32, seed=4)
    before = ckbn.get_num_threads()
    outs = []
    try:
        for n in (1, 2, 16):
            ckbn.set_num_threads(n)
            fn = tf.function(_tape_fn("train", "relu6"))  # n_threads fixed at tracing
            (bwd,) = [op for op in _ckbn_ops(fn.get_concrete_function(*args).graph)
                      if op.type == "CkbnBatchNormGrad"]
            assert bwd.get_attr("n_threads") == N._n_threads(args[0])
            outs.append([t.numpy() for t in fn(*args)])
    finally:
        ckbn.set_num_threads(before)
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            np.testing.assert_array_equal(a, b)
    _check_values(outs[0], args, "relu6", 0.0, "train", np.float32)


# ------------------------------------------------------------------- Keras models
_MODEL_SCRIPT = r"""
import numpy as np
import tensorflow as tf
import keras
import keras_plugin
from keras_plugin import _policy, _tf_native as N

_policy.set_min_elements("tensorflow", None, 0)  # the kernels at every size
rng = np.random.default_rng(0)
inp = keras.Input((8, 8, 3))
h = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inp)
h = keras.layers.BatchNormalization(name="bn1")(h)
h = keras.layers.ReLU(max_value=6.0, name="act1")(h)
h = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(h)
h = keras.layers.BatchNormalization(name="bn2")(h)
h = keras.layers.ReLU(name="act2")(h)
h = keras.layers.Conv2D(4, 1, use_bias=False)(h)
h = keras.layers.BatchNormalization(name="bn3")(h)   # no activation after it
out = keras.layers.GlobalAveragePooling2D()(h)
stock = keras.Model(inp, out)
for name in ("bn1", "bn2", "bn3"):
    bn = stock.get_layer(name)
    n = bn.gamma.shape[0]
    bn.set_weights([rng.uniform(1.0, 3.0, n), rng.uniform(-1.0, 4.0, n),
                    rng.standard_normal(n), rng.uniform(0.5, 2, n)])
fused = keras_plugin.swap_batch_normalization(stock, fuse_activations=True)
assert [type(l).__name__ for l in fused.layers].count("BatchNormalizationActivation") == 2
x = tf.constant(rng.standard_normal((4, 8, 8, 3)).astype(np.float32))
w = tf.constant(rng.standard_normal((4, 4)).astype(np.float32))


def step_fn(model):
    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x, training=True) * w)
        return tape.gradient(loss, model.trainable_weights)
    return step


weights = stock.get_weights()
step = step_fn(fused)
graph = step.get_concrete_function(x).graph
ops = graph.get_operations()
types = [op.type for op in ops]
fwd = {op.get_attr("activation") for op in ops if op.type == "CkbnBatchNormTrain"}
bwd = [op.get_attr("activation") for op in ops if op.type == "CkbnBatchNormGrad"]
assert types.count("CkbnBatchNormTrain") == 3 and fwd == {b"relu6", b"relu", b"none"}, fwd
assert sorted(bwd) == [b"none", b"relu", b"relu6"], bwd   # the default route
assert not {"Relu", "Relu6", "ReluGrad", "Relu6Grad", "PyFunc", "EagerPyFunc"} & set(types), types

before = N.call_counts()
grads = [g.numpy() for g in step(x)]
after = N.call_counts()
assert after["train"] - before["train"] == 3 and after["grad"] - before["grad"] == 3, (
    before, after)

stock.set_weights(weights)
ref = [g.numpy() for g in step_fn(stock)(x)]   # Keras's own BN + ReLU6/ReLU
assert len(ref) == len(grads)
for a, b in zip(grads, ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
print("ok")
"""


def test_keras_fused_model_keeps_the_activation_in_the_gradient_op(tmp_path):
    """A Keras model with BN+ReLU6 and BN+ReLU fused, on the default route: in its
    traced training step the forward and gradient ops hold the activations, no
    ReLU/ReLU6 op or mask op runs, each op runs once per step, and the weights'
    gradients equal the stock model's."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_MODEL_SCRIPT)],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert proc.stdout.strip().endswith("ok")
