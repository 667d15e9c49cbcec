"""The TensorFlow native ops (``keras_plugin/native/tf_ops.cc``, ``keras_plugin._tf_native``).

The ops are checked against float64 NumPy and against ``ckbn.nn`` (the
kernels' Python path, what the ``tf.numpy_function`` engine runs), eagerly
and in ``tf.function``, for float16/32/64, channels first and last, several
channel-axis layouts and the activations.  Keras-level checks (the layer on
the ops, a SavedModel reloaded in a fresh process, the fallback without a
compiler) run in subprocesses with ``KERAS_BACKEND=tensorflow``.

The library is built into the user's cache (``$CKBN_CACHE_DIR`` or
``~/.cache/ckbn``) on the first run, about a minute; later runs load it.
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

if N.load() is None:  # pragma: no cover - depends on the machine
    pytest.skip("the TensorFlow op library cannot be built here", allow_module_level=True)

ACTS = [(None, 0.0), ("relu", 0.0), ("relu6", 0.0), ("leaky_relu", 0.15)]
# (shape, channel axes): channels last, channels first, 2-D, 5-D, two adjacent
# channel axes, and two runs (G and C of the canonical layout).
LAYOUTS = [((4, 5, 6, 8), [3]), ((4, 8, 5, 6), [1]), ((16, 8), [1]), ((2, 3, 4, 5, 6), [4]),
           ((3, 4, 5, 6), [2, 3]), ((3, 4, 5, 6), [1, 3])]
DTYPES = [np.float16, np.float32, np.float64]
TOL = {np.float16: dict(rtol=2e-2, atol=2e-2), np.float32: dict(rtol=1e-5, atol=1e-5),
       np.float64: dict(rtol=1e-11, atol=1e-11)}
EPS = 1e-3


def _skip_unsupported(dtype):
    if dtype == np.float16 and not N.has_float16():
        pytest.skip("the kernel table has no float16 kernels here")


def _stat(dtype):
    return np.float32 if dtype == np.float16 else dtype


def _data(shape, axes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    n = int(np.prod([shape[a] for a in axes]))
    x = (rng.standard_normal(shape) * 1.5 + 0.7).astype(dtype)
    scale = rng.uniform(0.5, 1.5, n).astype(_stat(dtype))
    offset = rng.uniform(-0.5, 0.5, n).astype(_stat(dtype))
    w = rng.standard_normal(shape).astype(dtype)  # dy
    return x, scale, offset, w


# ---------------------------------------------------------------- float64 reference
def _bshape(shape, axes):
    return [n if i in axes else 1 for i, n in enumerate(shape)]


def _ref_stats(x, axes):
    x = x.astype(np.float64)
    red = tuple(i for i in range(x.ndim) if i not in axes)
    return x.mean(red).reshape(-1), x.var(red).reshape(-1)


def _act(z, act, slope):
    if act is None:
        return z, np.ones_like(z)
    hi = 6.0 if act == "relu6" else np.inf
    lo_slope = slope if act == "leaky_relu" else 0.0
    y = np.where(z <= 0, lo_slope * z, np.minimum(z, hi))
    d = np.where(z <= 0, lo_slope, np.where(z >= hi, 0.0, 1.0))
    return y, d


def _ref_forward(x, scale, offset, mean, var, axes, act, slope):
    bs = _bshape(x.shape, axes)
    m, v = mean.reshape(bs), var.astype(np.float64).reshape(bs)
    s, o = scale.astype(np.float64).reshape(bs), offset.astype(np.float64).reshape(bs)
    xhat = (x.astype(np.float64) - m) / np.sqrt(v + EPS)
    return _act(xhat * s + o, act, slope)[0]


def _ref_grad(dy, x, scale, offset, mean, var, axes, act, slope, training):
    bs = _bshape(x.shape, axes)
    red = tuple(i for i in range(x.ndim) if i not in axes)
    m, v = mean.astype(np.float64).reshape(bs), var.astype(np.float64).reshape(bs)
    s, o = scale.astype(np.float64).reshape(bs), offset.astype(np.float64).reshape(bs)
    inv = 1.0 / np.sqrt(v + EPS)
    xhat = (x.astype(np.float64) - m) * inv
    e = dy.astype(np.float64) * _act(xhat * s + o, act, slope)[1]
    dscale = (e * xhat).sum(red)
    doffset = e.sum(red)
    if training:
        count = x.size / scale.size
        dx = s * inv * (e - doffset.reshape(bs) / count - xhat * dscale.reshape(bs) / count)
    else:
        dx = s * inv * e
    return dx, dscale.reshape(-1), doffset.reshape(-1)


def _op_types(fn, *args):
    return {op.type for op in fn.get_concrete_function(*args).graph.get_operations()}


def _close(actual, expected, dtype):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, **TOL[dtype])


# ------------------------------------------------------------------------- forward
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
@pytest.mark.parametrize("act,slope", ACTS)
@pytest.mark.parametrize("shape,axes", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_train_forward_and_gradients(dtype, shape, axes, act, slope, graph):
    _skip_unsupported(dtype)
    x, scale, offset, w = _data(shape, axes, dtype)

    def step(x, scale, offset):
        with tf.GradientTape() as tape:
            tape.watch([x, scale, offset])
            y, mean, var = N.train(x, scale, offset, axes, EPS, act, slope)
            loss = tf.reduce_sum(tf.cast(y, tf.float64) * tf.constant(w, tf.float64))
        return (y, mean, var) + tuple(tape.gradient(loss, [x, scale, offset]))

    fn = tf.function(step) if graph else step
    args = [tf.constant(a) for a in (x, scale, offset)]
    y, mean, var, dx, ds, do = (t.numpy() for t in fn(*args))
    if graph:
        types = _op_types(fn, *args)
        assert {"CkbnBatchNormTrain", "CkbnBatchNormGrad"} <= types
        assert "PyFunc" not in types and "EagerPyFunc" not in types

    assert y.dtype == dtype and y.shape == shape
    assert mean.dtype == var.dtype == _stat(dtype) and mean.shape == (scale.size,)
    rm, rv = _ref_stats(x, axes)
    _close(mean, rm, dtype)
    _close(var, rv, dtype)
    _close(y, _ref_forward(x, scale, offset, rm, rv, axes, act, slope), dtype)
    rdx, rds, rdo = _ref_grad(w, x, scale, offset, rm, rv, axes, act, slope, True)
    _close(dx, rdx, dtype)
    _close(ds, rds, dtype)
    _close(do, rdo, dtype)

    # The same kernels through ckbn.nn (the tf.numpy_function path).
    ny, nm, nv = ckbn.nn.fused_batch_norm(x, scale, offset, epsilon=EPS, axis=axes,
                                          activation=act, negative_slope=slope)
    ndx, nds, ndo = ckbn.nn.fused_batch_norm_grad(w, x, scale, nm, nv, epsilon=EPS, axis=axes,
                                                  offset=offset, activation=act,
                                                  negative_slope=slope)
    np.testing.assert_array_equal(y, ny)
    np.testing.assert_array_equal(mean, nm.reshape(-1).astype(_stat(dtype)))
    np.testing.assert_array_equal(var, nv.reshape(-1).astype(_stat(dtype)))
    np.testing.assert_array_equal(dx, ndx)
    _close(ds, nds.reshape(-1).astype(np.float64), dtype)
    _close(do, ndo.reshape(-1).astype(np.float64), dtype)


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
@pytest.mark.parametrize("act,slope", ACTS)
@pytest.mark.parametrize("shape,axes", LAYOUTS[:3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_given_statistics_forward_and_gradients(dtype, shape, axes, act, slope, graph):
    _skip_unsupported(dtype)
    x, scale, offset, w = _data(shape, axes, dtype, seed=1)
    rng = np.random.default_rng(2)
    mean = rng.standard_normal(scale.size).astype(scale.dtype)
    var = rng.uniform(0.5, 2.0, scale.size).astype(scale.dtype)

    def step(*args):
        with tf.GradientTape() as tape:
            tape.watch(args)
            y = N.given(*args, axes, EPS, False, act, slope)
            loss = tf.reduce_sum(tf.cast(y, tf.float64) * tf.constant(w, tf.float64))
        return (y,) + tuple(tape.gradient(loss, args))

    fn = tf.function(step) if graph else step
    args = [tf.constant(a) for a in (x, scale, offset, mean, var)]
    y, dx, ds, do, dm, dv = fn(*args)
    if graph:
        assert {"CkbnBatchNormApply", "CkbnBatchNormGrad"} <= _op_types(fn, *args)
    assert dm is None and dv is None  # the statistics are constants here
    _close(y, _ref_forward(x, scale, offset, mean, var, axes, act, slope), dtype)
    rdx, rds, rdo = _ref_grad(w, x, scale, offset, mean, var, axes, act, slope, False)
    _close(dx, rdx, dtype)
    _close(ds, rds, dtype)
    _close(do, rdo, dtype)
    ny = ckbn.nn.fused_batch_norm(x, scale, offset, mean, var, epsilon=EPS, axis=axes,
                                  is_training=False, activation=act, negative_slope=slope)[0]
    np.testing.assert_array_equal(y.numpy(), ny)


@pytest.mark.parametrize("dtype", DTYPES)
def test_given_with_batch_statistics_has_the_training_gradient(dtype):
    """``train_grad=True`` (renorm): moments + given differentiate like train."""
    _skip_unsupported(dtype)
    shape, axes = (6, 4, 4, 5), [3]
    x, scale, offset, w = _data(shape, axes, dtype, seed=3)
    xs, ss, os_ = (tf.constant(a) for a in (x, scale, offset))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([xs, ss, os_])
        mean, var = N.moments(xs, axes)
        y1 = N.given(xs, ss, os_, mean, var, axes, EPS, True, "relu")
        y2 = N.train(xs, ss, os_, axes, EPS, "relu")[0]
        wt = tf.constant(w)
        l1 = tf.reduce_sum(tf.cast(y1 * wt, tf.float64))
        l2 = tf.reduce_sum(tf.cast(y2 * wt, tf.float64))
    g1 = tape.gradient(l1, [xs, ss, os_])
    g2 = tape.gradient(l2, [xs, ss, os_])
    rm, rv = _ref_stats(x, axes)
    rdx = _ref_grad(w, x, scale, offset, rm, rv, axes, "relu", 0.0, True)[0]
    _close(g1[0], rdx, dtype)
    for a, b in zip(g1, g2):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("shape,axes", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_moments(dtype, shape, axes):
    _skip_unsupported(dtype)
    x = _data(shape, axes, dtype, seed=4)[0]
    xt = tf.constant(x)
    mean, var = N.moments(xt, axes)
    assert mean.dtype == var.dtype == tf.as_dtype(_stat(dtype))
    rm, rv = _ref_stats(x, axes)
    _close(mean, rm, dtype)
    _close(var, rv, dtype)
    with tf.GradientTape() as tape:  # not differentiable: no gradient flows
        tape.watch(xt)
        m, v = N.moments(xt, axes)
        loss = tf.reduce_sum(m) + tf.reduce_sum(v)
    assert tape.gradient(loss, xt) is None


def test_float16_follows_the_table():
    x = tf.zeros((2, 3, 4), tf.float16)
    assert N.usable(x, [2]) == N.has_float16()
    assert N.usable(tf.zeros((2, 3, 4), tf.float32), [2])


# ------------------------------------------------------------- graphs and shapes
def test_dynamic_shapes_one_trace():
    spec = tf.TensorSpec([None, None, None, 4], tf.float32)
    sspec = tf.TensorSpec([4], tf.float32)
    fn = tf.function(lambda x, s, o: N.train(x, s, o, [3], EPS, "relu6"),
                     input_signature=[spec, sspec, sspec])
    conc = fn.get_concrete_function()
    y_sym, m_sym, v_sym = conc.structured_outputs
    assert y_sym.shape.as_list() == [None, None, None, 4]
    assert m_sym.shape.as_list() == v_sym.shape.as_list() == [4]
    for shape in [(2, 3, 5, 4), (7, 1, 2, 4)]:
        x, scale, offset, _ = _data(shape, [3], np.float32, seed=5)
        y, mean, var = fn(x, scale, offset)
        rm, rv = _ref_stats(x, [3])
        _close(y, _ref_forward(x, scale, offset, rm, rv, [3], "relu6", 0.0), np.float32)
        _close(var, rv, np.float32)
    assert fn.experimental_get_tracing_count() == 1


def test_shape_functions():
    @tf.function(input_signature=[tf.TensorSpec([None, 5, 6, None], tf.float32)])
    def fn(x):
        scale = tf.ones([tf.shape(x)[3] * 6])
        y, mean, _ = N.train(x, scale, scale, [2, 3], EPS)
        m2, _ = N.moments(x, [1])
        dx, ds, _ = N.grad(y, x, scale, scale, mean, mean, [2, 3], EPS, True)
        assert y.shape.as_list() == [None, 5, 6, None]
        assert mean.shape.as_list() == [None]  # 6 * unknown
        assert m2.shape.as_list() == [5]
        assert dx.shape.as_list() == [None, 5, 6, None] and ds.shape.as_list() == [None]
        return mean

    assert fn(tf.ones((2, 5, 6, 3))).shape == (18,)


def test_threads_attr_and_results_independent_of_threads():
    x, scale, offset, _ = _data((8, 16, 16, 32), [3], np.float32, seed=6)
    fn = tf.function(lambda x: N.train(x, scale, offset, [3], EPS)[0])
    g = fn.get_concrete_function(tf.TensorSpec(x.shape, tf.float32)).graph
    (op,) = [o for o in g.get_operations() if o.type == "CkbnBatchNormTrain"]
    expected = (N._policy.op_threads("tensorflow", x.size) if N._policy is not None
                else ckbn.get_num_threads())
    assert op.get_attr("n_threads") == expected
    outs = []
    for n in (1, 2):
        with ckbn.num_threads(n):
            outs.append(N.train(x, scale, offset, [3], EPS)[0].numpy())
    np.testing.assert_array_equal(outs[0], outs[1])


def test_not_usable_where_the_ops_cannot_serve():
    x = tf.zeros((2, 3, 4, 5))
    assert N.usable(x, [3]) and N.usable(x, [1]) and N.usable(x, [1, 3])
    assert not N.usable(x, [0, 2])  # needs a transpose
    assert not N.usable(tf.zeros((2, 3), tf.int32), [1])
    seen = []

    @tf.function(jit_compile=True)
    def xla(x):
        seen.append(N.usable(x, [3]))
        return x

    xla(x)
    assert seen == [False]


def test_call_counts_count_kernel_runs():
    x, s, o = tf.ones((4, 3)), tf.ones(3), tf.zeros(3)
    step = tf.function(lambda x: N.given(x, s, o, s, s, [1], EPS))
    before = N.call_counts()
    N.train(x, s, o, [1], EPS)
    for _ in range(3):
        step(x)  # traced once, run three times
    N.moments(x, [1])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = N.train(x, s, o, [1], EPS)[0]
    tape.gradient(y, x)
    after = N.call_counts()
    assert {k: after[k] - before[k] for k in after} == {"train": 2, "given": 3, "grad": 1,
                                                          "moments": 1}


# ------------------------------------------------------ the eager fast path
def _general(monkeypatch):
    """Switches _tf_native's eager fast path off (its general path, as before session 6)."""
    monkeypatch.setattr(N, "_fast_execute", None)


@pytest.mark.parametrize("act,slope", [(None, 0.0), ("leaky_relu", 0.15)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_eager_fast_path_equals_the_general_path(dtype, act, slope, monkeypatch):
    """Outputs and gradients of eager train/given through TensorFlow's C fast path are
    bitwise those of the general path, with non-default epsilon and activation."""
    _skip_unsupported(dtype)
    x, scale, offset, w = _data((4, 5, 6, 8), [3], dtype, seed=11)
    mean, var = (v.astype(_stat(dtype)) for v in _ref_stats(x, [3]))
    xt, st, ot, wt = (tf.constant(a) for a in (x, scale, offset, w))
    mt, vt = tf.constant(mean), tf.constant(var)

    def run():
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([xt, st, ot])
            y, m, v = N.train(xt, st, ot, [3], 2e-3, act, slope)
            z = N.given(xt, st, ot, mt, vt, [3], 2e-3, False, act, slope)
            loss_y = tf.reduce_sum(tf.cast(y, tf.float64) * tf.cast(wt, tf.float64))
            loss_z = tf.reduce_sum(tf.cast(z, tf.float64) * tf.cast(wt, tf.float64))
        gy = tape.gradient(loss_y, [xt, st, ot])
        gz = tape.gradient(loss_z, [xt, st, ot])
        return [t.numpy() for t in [y, m, v, z, *gy, *gz]]

    fast = run()
    with monkeypatch.context() as mp:
        _general(mp)
        general = run()
    for a, b in zip(fast, general):
        np.testing.assert_array_equal(a, b)
    # and both against float64 NumPy
    _close(fast[3], _ref_forward_eps(x, scale, offset, mean, var, act, slope, 2e-3), dtype)


def _ref_forward_eps(x, scale, offset, mean, var, act, slope, eps):
    z = (x.astype(np.float64) - mean.astype(np.float64)) / np.sqrt(var.astype(np.float64) + eps)
    return _act(z * scale.astype(np.float64) + offset.astype(np.float64), act, slope)[0]


def test_eager_calls_skip_the_op_modules_wrappers_graph_calls_use_them(monkeypatch):
    """Eagerly, train/given call TensorFlow's fast path directly (the op module's
    generated wrappers are not needed); in a tf.function they build the graph op."""
    x, scale, offset, _ = _data((4, 3, 3, 6), [3], np.float32, seed=12)
    xt, st, ot = tf.constant(x), tf.constant(scale), tf.constant(offset)
    ops = N.load()

    def broken(*args, **kwargs):
        raise AssertionError("the generated wrapper was called")

    monkeypatch.setattr(ops, "ckbn_batch_norm_train", broken)
    monkeypatch.setattr(ops, "ckbn_batch_norm_apply", broken)
    y, m, v = N.train(xt, st, ot, [3], EPS)
    ref_m, ref_v = _ref_stats(x, [3])
    _close(y, _ref_forward(x, scale, offset, ref_m, ref_v, [3], None, 0.0), np.float32)
    z = N.given(xt, st, ot, m, v, [3], EPS)
    _close(z, _ref_forward(x, scale, offset, m.numpy(), v.numpy(), [3], None, 0.0), np.float32)
    with pytest.raises(AssertionError, match="generated wrapper"):
        tf.function(lambda x: N.train(x, st, ot, [3], EPS))(xt)


def test_fast_path_checks_every_new_signature():
    """A valid call is remembered by its signature; a call that differs in a checked
    value (bool epsilon vs int, another dtype or shape of a per-channel input) is
    checked again and fails as on the general path."""
    x, s = tf.ones((4, 3, 3, 2)), tf.ones(2)
    N.train(x, s, s, [3], 1)  # an int epsilon is fine
    with pytest.raises(TypeError, match="epsilon must be a float, got True"):
        N.train(x, s, s, [3], True)
    N.given(x, s, s, s, s, [3], EPS)
    with pytest.raises(TypeError, match="variance must be float32"):
        N.given(x, s, s, s, tf.ones(2, tf.float64), [3], EPS)
    with pytest.raises(ValueError, match="mean has 3 values"):
        N.given(x, s, s, tf.ones(3), s, [3], EPS)
    with pytest.raises(ValueError, match="channel axis 4 is out of range"):
        N.train(x, s, s, 4, EPS)


def test_gradient_defaults_are_the_ops_defaults():
    """The gradient functions read an attribute the eager fast path left out as
    the op's default; those defaults are the registered ones."""
    x, s = tf.ones((4, 2)), tf.ones(2)
    ops = N.load()

    @tf.function
    def fn(x):
        return ops.ckbn_batch_norm_apply(x, s, s, s, s, channel_axes=[1])

    (op,) = [o for o in fn.get_concrete_function(x).graph.get_operations()
             if o.type == "CkbnBatchNormApply"]
    for name, default in N._DEFAULTS.items():
        value = op.get_attr(name)
        assert (value.decode() if isinstance(value, bytes) else value) == default


@pytest.mark.parametrize("channels", [256, 300])
def test_wide_layers_stage_per_channel_values_right(channels):
    """float32 per-channel values are staged in float64 inline up to 256 channels and
    on the heap beyond: forward, statistics and gradients against float64 NumPy."""
    x, scale, offset, w = _data((6, 2, channels), [2], np.float32, seed=13)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y, m, v = N.train(xt, scale, offset, [2], EPS, "relu", 0.0)
        loss = tf.reduce_sum(y * w)
    dx = tape.gradient(loss, xt)
    ref_m, ref_v = _ref_stats(x, [2])
    _close(m, ref_m, np.float32)
    _close(v, ref_v, np.float32)
    _close(y, _ref_forward(x, scale, offset, ref_m, ref_v, [2], "relu", 0.0), np.float32)
    _close(dx, _ref_grad(w, x, scale, offset, ref_m, ref_v, [2], "relu", 0.0, True)[0],
           np.float32)


def test_training_op_may_write_into_its_input():
    """In a tf.function, x made inside and read by nothing else can give its buffer to
    y; the statistics and y are still those of the original x."""
    x, scale, offset, _ = _data((8, 4, 4, 16), [3], np.float32, seed=14)

    @tf.function
    def fn(x):
        h = x * 2.0  # held by nothing but the op
        return N.train(h, scale, offset, [3], EPS)

    y, m, v = fn(tf.constant(x))
    h = 2.0 * x.astype(np.float64)
    ref_m, ref_v = _ref_stats(h, [3])
    _close(m, ref_m, np.float32)
    _close(v, ref_v, np.float32)
    _close(y, _ref_forward(h, scale, offset, ref_m, ref_v, [3], None, 0.0), np.float32)


_TIMERS_SCRIPT = """
import numpy as np
import tensorflow as tf
from keras_plugin import _tf_native as N

ops = N.load()
x = tf.constant(np.arange(48, dtype=np.float32).reshape(4, 3, 4))
s, o = tf.ones(4), tf.zeros(4)
N.phase_ns("train")
for _ in range(5):
    y, m, v = N.train(x, s, o, [2], 1e-3)
runs, ns = N.phase_ns("train")
assert runs == 5 and set(ns) == set(N.PHASES) and ns["kernel"] > 0, (runs, ns)
assert N.phase_ns("train") == (0, dict.fromkeys(N.PHASES, 0))  # reset by the read
np.testing.assert_allclose(m.numpy(), np.arange(48).reshape(12, 4).mean(0), rtol=1e-6)
y, m, v = ops.ckbn_null_train(x, s, o, channel_axes=[2])
assert y.shape == (4, 3, 4) and m.shape == (4,) and v.shape == (4,)
assert ops.ckbn_null_apply(x, s, o, s, s, channel_axes=[2]).shape == (4, 3, 4)
print("timers ok")
"""


@pytest.mark.slow
def test_timing_build_has_phase_timers_and_the_default_build_has_none(tmp_path):
    """CKBN_TF_OP_TIMERS=1 builds a separate library whose timers count the runs;
    the library the tests load (the default build) has no timers and no null ops."""
    assert N.phase_ns("train") is None
    assert not hasattr(N.load(), "ckbn_null_train")
    assert "timers ok" in _run(_TIMERS_SCRIPT, tmp_path, CKBN_TF_OP_TIMERS="1")


# ------------------------------------------------------------------------- errors
def test_bad_input_raises_clear_errors():
    x = tf.ones((4, 3, 3, 2))
    s = tf.ones(2)
    with pytest.raises(TypeError, match="int32"):
        N.train(tf.ones((4, 2), tf.int32), s, s, [1], EPS)
    with pytest.raises(TypeError, match="float64"):
        N.train(x, tf.ones(2, tf.float64), s, [3], EPS)
    with pytest.raises(ValueError, match="3 values.*2 channels"):
        N.train(x, tf.ones(3), s, [3], EPS)
    with pytest.raises(ValueError, match="channel axis 4 is out of range"):
        N.train(x, s, s, [4], EPS)
    with pytest.raises(ValueError, match="transpose"):
        N.moments(x, [0, 2])
    with pytest.raises(ValueError, match="activation.*'gelu'"):
        N.train(x, s, s, [3], EPS, "gelu")
    with pytest.raises(ValueError, match="epsilon.*-0.1"):
        N.train(x, s, s, [3], -0.1)
    with pytest.raises(ValueError, match="negative_slope.*nan"):
        N.train(x, s, s, [3], EPS, "leaky_relu", float("nan"))
    with pytest.raises(ValueError, match=r"dy has shape \(4, 2\)"):
        N.grad(tf.ones((4, 2)), x, s, s, s, s, [3], EPS, True)


def test_bad_input_in_graph_fails_at_run_time_with_the_shapes():
    spec = tf.TensorSpec([None] * 4, tf.float32)
    fn = tf.function(lambda x, s: N.train(x, s, s, [3], EPS)[0],
                     input_signature=[spec, tf.TensorSpec([None], tf.float32)])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"shape \[3\].*expected \[2\]"):
        fn(tf.ones((4, 3, 3, 2)), tf.ones(3))
    with pytest.raises(tf.errors.InvalidArgumentError, match="empty"):
        fn(tf.ones((0, 3, 3, 2)), tf.ones(2))
    # The raw op, on a tensor of unknown rank: the kernel checks the axes.
    raw = tf.function(lambda x: N.load().ckbn_moments(x, U=tf.float32, channel_axes=[3]),
                      input_signature=[tf.TensorSpec(None, tf.float32)])
    with pytest.raises(tf.errors.InvalidArgumentError, match="out of range for x of rank 2"):
        raw(tf.ones((4, 2)))
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="epsilon.*'-1'"):
        N.load().ckbn_moments(tf.ones((4, 2)), U=tf.float32, channel_axes=[1], epsilon="-1")
    # Inference on an empty batch is fine (nothing to normalize).
    e = N.given(tf.ones((0, 2)), tf.ones(2), tf.ones(2), tf.ones(2), tf.ones(2), [1], EPS)
    assert e.shape == (0, 2)


def test_nan_propagates():
    x = np.ones((4, 3), np.float32)
    x[1, 2] = np.nan
    y, mean, var = N.train(tf.constant(x), tf.ones(3), tf.zeros(3), [1], EPS)
    assert np.isnan(mean.numpy()[2]) and np.isnan(y.numpy()[:, 2]).all()
    assert np.isfinite(y.numpy()[:, :2]).all()


# ----------------------------------------------------------- subprocess checks
def _run(script, tmp_path, *args, **env):
    """Runs ``script`` in a fresh process with the TensorFlow backend; its stdout."""
    full = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3",
                PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    full.update(env)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args],
                          cwd=str(tmp_path), env=full, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return proc.stdout


def test_no_compiler_falls_back_with_one_warning(tmp_path):
    out = _run("""
        import warnings
        import numpy as np
        import tensorflow as tf
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            from keras_plugin import _tf_native as N
            assert N.load() is None and N.load() is None
            assert not N.usable(tf.zeros((2, 3)), [1])
        msgs = [str(m.message) for m in w if "ckbn" in str(m.message)]
        assert len(msgs) == 1, msgs
        assert "TensorFlow native op" in msgs[0] and "using the Python path" in msgs[0], msgs
        assert "/bin/false" in msgs[0], msgs  # the reason: the compiler failed
        print("ok")
        """, tmp_path, CXX="/bin/false", CKBN_CACHE_DIR=str(tmp_path / "cache"))
    assert out.strip().endswith("ok")


_LAYER_SCRIPT = """
import numpy as np
import keras
import tensorflow as tf
import keras_plugin
from keras_plugin import _tf_native as N

# The kernels at every size: this checks the native ops, not the dispatch rule
# (keras_plugin._policy, tests/test_policy.py).
keras_plugin._policy.set_min_elements("tensorflow", None, 0)
assert N.available()
rng = np.random.default_rng(0)
for axis, shape in [(-1, (6, 6, 4)), (1, (4, 6, 6))]:
    x = (rng.standard_normal((8,) + shape) * 2 + 1).astype("float32")
    w = rng.standard_normal((8,) + shape).astype("float32")

    def make():
        inp = keras.Input(shape)
        h = keras.layers.BatchNormalization(axis=axis, momentum=0.8, name="bn")(inp)
        out = keras.layers.ReLU(max_value=6.0, name="act")(h)
        m = keras.Model(inp, out)
        bn = m.get_layer("bn")
        n = 4  # channels, in both layouts
        bn.set_weights([rng.uniform(0.5, 1.5, n), rng.uniform(-0.5, 0.5, n),
                        rng.standard_normal(n), rng.uniform(0.5, 2, n)])
        return m

    stock = make()
    swapped = keras_plugin.swap_batch_normalization(stock)
    fused = keras_plugin.swap_batch_normalization(stock, fuse_activations=True)
    assert type(fused.layers[1]).__name__ == "BatchNormalizationActivation"

    def step_fn(model):
        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = model(x, training=True)
                loss = tf.reduce_sum(y * w)
            grads = tape.gradient(loss, [x] + model.trainable_weights)
            return [y] + grads
        return step

    ref = None
    weights = stock.get_weights()
    for model in (stock, swapped, fused):
        model.set_weights(weights)
        step = step_fn(model)
        out = [t.numpy() for t in step(tf.constant(x))]
        types = {op.type for op in step.get_concrete_function(tf.constant(x)).graph.get_operations()}
        moving = [v.numpy() for v in model.non_trainable_weights]
        infer = tf.function(lambda x: model(x, training=False))
        yi = infer(tf.constant(x)).numpy()
        itypes = {op.type for op in infer.get_concrete_function(tf.constant(x)).graph.get_operations()}
        if model is stock:
            ref = (out, moving, yi)
            assert not any(t.startswith("Ckbn") for t in types)
            continue
        assert {"CkbnBatchNormTrain", "CkbnBatchNormGrad"} <= types, types
        assert "CkbnBatchNormApply" in itypes, itypes
        assert not {"PyFunc", "EagerPyFunc"} & (types | itypes)
        for a, b in zip(out, ref[0]):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
        for a, b in zip(moving, ref[1]):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(yi, ref[2], rtol=1e-5, atol=1e-5)
print("ok")
"""


def test_keras_layers_run_on_the_native_ops(tmp_path):
    """Swapped and fused layers in a Keras model: the native ops in the traced
    train and inference functions, outputs, gradients and moving statistics
    equal to the stock Keras layers."""
    assert _run(_LAYER_SCRIPT, tmp_path).strip().endswith("ok")


_SAVE_SCRIPT = """
import sys
import numpy as np
import keras
import tensorflow as tf
import keras_plugin

keras_plugin._policy.set_min_elements("tensorflow", None, 0)  # the ops, not the rule
path = sys.argv[1]
rng = np.random.default_rng(1)
inp = keras.Input((6, 6, 3))
h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inp)
h = keras_plugin.BatchNormalization(name="bn")(h)
out = keras.layers.ReLU(name="relu")(h)
model = keras.Model(inp, out)
bn = model.get_layer("bn")
bn.set_weights([rng.uniform(0.5, 1.5, 4), rng.uniform(-0.5, 0.5, 4), rng.standard_normal(4),
                rng.uniform(0.5, 2, 4)])
x = rng.standard_normal((5, 6, 6, 3)).astype("float32")
expected = model(x, training=False).numpy()
stock = keras.Model(inp, keras.layers.ReLU()(keras.layers.BatchNormalization()(
    model.get_layer("conv").output)))
stock.set_weights(model.get_weights())
np.testing.assert_allclose(expected, stock(x, training=False).numpy(), rtol=1e-5, atol=1e-5)
model.export(path + "/saved", format="tf_saved_model")
np.save(path + "/x.npy", x)
np.save(path + "/y.npy", expected)
print("saved")
"""

_LOAD_SCRIPT = """
import sys
import numpy as np
import tensorflow as tf
import keras_plugin  # loads the op library

path = sys.argv[1]
loaded = tf.saved_model.load(path + "/saved")
y = loaded.serve(tf.constant(np.load(path + "/x.npy"))).numpy()
np.testing.assert_allclose(y, np.load(path + "/y.npy"), rtol=1e-6, atol=1e-6)
print("loaded")
"""


def test_saved_model_holds_the_op_and_reloads_in_a_fresh_process(tmp_path):
    assert "saved" in _run(_SAVE_SCRIPT, tmp_path, str(tmp_path))
    pb = (tmp_path / "saved" / "saved_model.pb").read_bytes()
    assert b"CkbnBatchNormApply" in pb  # the native op, not Keras ops, is in the graph
    assert "loaded" in _run(_LOAD_SCRIPT, tmp_path, str(tmp_path))
