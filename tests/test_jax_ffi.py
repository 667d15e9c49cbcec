"""The JAX XLA FFI handler (``keras_plugin._jax_ffi``, ``keras_plugin/native/xla_ffi.cc``).

Keras fixes its backend at import and JAX its float64 switch at start-up, so
a plain ``pytest`` run collects one test here, which runs this same file in a
fresh process with ``KERAS_BACKEND=jax`` and ``JAX_ENABLE_X64=1``
(``CKBN_JAX_FFI_CASES=1`` selects the cases).  The cases compare the native
ops against float64 NumPy, JAX's autodiff of the float64 formula, the
callback path (``keras_plugin._kernels`` through ``ckbn.nn``) and the stock
Keras layer, in ``jax.jit`` and eagerly, and prove that the native op is what
runs (``ffi_call`` with the ckbn targets in the jaxpr, no callback).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.twin import compiled_only

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CASES = os.environ.get("CKBN_JAX_FFI_CASES") == "1"


def _env(**extra):
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu",
               TF_CPP_MIN_LOG_LEVEL="3", XLA_FLAGS="--xla_force_host_platform_device_count=4",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


if not CASES:
    @compiled_only("has no C-level table, which the XLA FFI handler calls")
    @pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax not installed")
    @pytest.mark.slow
    def test_jax_ffi_cases(tmp_path):
        cmd = [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider",
               "-W", "ignore::DeprecationWarning", "--rootdir", str(ROOT),
               "--basetemp", str(tmp_path / "cases")]
        proc = subprocess.run(cmd, env=_env(CKBN_JAX_FFI_CASES="1"), cwd=str(ROOT),
                              capture_output=True, text=True, timeout=1200)
        tail = (proc.stdout + proc.stderr)[-8000:]
        assert proc.returncode == 0, tail
        assert " passed" in proc.stdout and " failed" not in proc.stdout, tail

else:
    import jax
    import jax.numpy as jnp

    import ckbn
    from keras_plugin import _jax_ffi, _kernels

    assert jax.config.jax_enable_x64, "the cases need JAX_ENABLE_X64=1"
    if not _jax_ffi.available():
        pytest.skip("the XLA FFI handler could not be built here", allow_module_level=True)

    F16 = _jax_ffi.available_float16()
    DTYPES = ["float32", "float64"] + (["float16"] if F16 else [])
    TOL = {"float16": 2e-2, "float32": 2e-5, "float64": 1e-10}
    GTOL = {"float16": 5e-2, "float32": 2e-4, "float64": 1e-9}
    ACTS = [(None, 0.0), ("relu", 0.0), ("relu6", 0.0), ("leaky_relu", 0.3), ("swish", 0.0)]
    # (shape, channel axes): channels last, channels first, 2-D, ghost batches
    # (two runs of channel axes), and axes that need a transpose.
    LAYOUTS = [((6, 5, 4, 8), (3,)), ((6, 8, 5, 4), (1,)), ((40, 12), (1,)),
               ((3, 2, 4, 5, 6), (1, 4)), ((6, 5, 4, 3), (0, 2))]
    EPS = 1e-3

    def _data(shape, axes, dtype, seed=0):
        rng = np.random.default_rng(seed)
        n = int(np.prod([shape[a] for a in axes]))
        x = (rng.normal(size=shape) * 2.0 + 0.7).astype(dtype)
        sd = np.float32 if dtype == "float16" else dtype
        scale = rng.uniform(0.5, 2.0, size=n).astype(sd)
        offset = rng.normal(size=n).astype(sd)
        return x, scale, offset

    def _kshape(shape, axes):
        return tuple(n if i in axes else 1 for i, n in enumerate(shape))

    def _act_np(z, activation, slope):
        if activation is None:
            return z
        if activation == "relu":
            return np.maximum(z, 0)
        if activation == "relu6":
            return np.clip(z, 0, 6)
        if activation == "swish":
            return z / (1.0 + np.exp(-z))
        return np.where(z > 0, z, slope * z)

    def _ref_train(x, scale, offset, axes, activation=None, slope=0.0):
        """float64 NumPy: (y, mean, var) of training batch normalization."""
        x = np.asarray(x, np.float64)
        red = tuple(i for i in range(x.ndim) if i not in axes)
        ks = _kshape(x.shape, axes)
        mean = x.mean(axis=red, keepdims=True)
        var = x.var(axis=red, keepdims=True)
        z = ((x - mean) / np.sqrt(var + EPS) * np.asarray(scale, np.float64).reshape(ks)
             + np.asarray(offset, np.float64).reshape(ks))
        return _act_np(z, activation, slope), mean.reshape(-1), var.reshape(-1)

    def _jnp_act(z, activation, slope):
        if activation is None:
            return z
        if activation == "relu":
            return jnp.maximum(z, 0.0)
        if activation == "relu6":
            return jnp.clip(z, 0.0, 6.0)
        if activation == "swish":
            return z * jax.nn.sigmoid(z)
        return jnp.where(z > 0, z, slope * z)

    def _ref_loss(x, scale, offset, axes, activation, slope, w, mean=None, var=None):
        """float64 JAX ops of the formula (autodiff gives the reference gradients)."""
        red = tuple(i for i in range(x.ndim) if i not in axes)
        ks = _kshape(x.shape, axes)
        if mean is None:
            m, v = jnp.mean(x, axis=red, keepdims=True), jnp.var(x, axis=red, keepdims=True)
        else:
            m, v = mean.reshape(ks), var.reshape(ks)
        z = (x - m) / jnp.sqrt(v + EPS) * scale.reshape(ks) + offset.reshape(ks)
        return jnp.sum(_jnp_act(z, activation, slope) * w)

    def _close(a, b, tol):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                   rtol=tol, atol=tol)

    def _targets(jaxpr):
        """The custom-call target names in a jaxpr (nested jaxprs included)."""
        text = str(jaxpr)
        return {t for t in ("ckbn_bn_train", "ckbn_bn_given", "ckbn_bn_grad",
                            "ckbn_bn_stats") if t in text}

    # ------------------------------------------------------------ native op runs
    def test_ffi_call_is_in_the_jaxpr():
        x, s, o = _data((4, 3, 5, 6), (3,), "float32")

        def loss(x, s, o):
            y, mean, var = _jax_ffi.train(x, s, o, (3,), EPS, "relu")
            y2 = _jax_ffi.given(x, s, o, mean, var, (3,), EPS, True)
            m2, _ = _jax_ffi.moments(x, (3,))
            return jnp.sum(y * y2) + jnp.sum(m2)

        jaxpr = jax.make_jaxpr(jax.grad(loss, (0, 1, 2)))(x, s, o)
        text = str(jaxpr)
        assert "ffi_call" in text
        assert _targets(jaxpr) == {"ckbn_bn_train", "ckbn_bn_given", "ckbn_bn_grad",
                                   "ckbn_bn_stats"}
        assert "callback" not in text
        # The compiled program calls the targets as XLA custom calls.
        hlo = jax.jit(jax.grad(loss, (0, 1, 2))).lower(x, s, o).as_text()
        assert "custom_call" in hlo and "ckbn_bn_grad" in hlo

    def test_attributes_carry_layout_activation_and_threads():
        x, s, o = _data((6, 8, 5, 4), (1,), "float32")
        with ckbn.num_threads(1):
            text = str(jax.make_jaxpr(
                lambda x: _jax_ffi.train(x, s, o, (1,), 0.25, "leaky_relu", 0.5))(x))
        for attr in ("('P', 6)", "('G', 8)", "('R', 20)", "('C', 1)", "('eps', 0.25)",
                     "('act', 1)", "('slope', 0.5)", "('hi', inf)", "('n_threads', 1)"):
            assert attr in text, (attr, text)
        with ckbn.num_threads(2):
            text = str(jax.make_jaxpr(lambda x: _jax_ffi.moments(x, (1,)))(x))
            expected = _jax_ffi.n_threads(x.size)   # the thread rule, at most 2
        assert 1 <= expected <= 2 and f"('n_threads', {expected})" in text

    # ----------------------------------------------------------- values vs NumPy
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("shape,axes", LAYOUTS)
    @pytest.mark.parametrize("jit", [True, False])
    def test_train_matches_float64_numpy(dtype, shape, axes, jit):
        x, s, o = _data(shape, axes, dtype)
        for activation, slope in ACTS:
            def f(x, s, o):
                return _jax_ffi.train(x, s, o, axes, EPS, activation, slope)
            y, mean, var = (jax.jit(f) if jit else f)(x, s, o)
            ry, rm, rv = _ref_train(x, s, o, axes, activation, slope)
            assert y.dtype == np.dtype(dtype) and y.shape == x.shape
            sd = "float32" if dtype == "float16" else dtype
            assert mean.dtype == np.dtype(sd) and mean.shape == rm.shape
            _close(y, ry, TOL[dtype])
            _close(mean, rm, TOL[dtype])
            _close(var, rv, TOL[dtype])

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("shape,axes", LAYOUTS)
    def test_given_and_moments_match_float64_numpy(dtype, shape, axes):
        x, s, o = _data(shape, axes, dtype)
        _, rm, rv = _ref_train(x, s, o, axes)
        mean, var = jax.jit(lambda x: _jax_ffi.moments(x, axes))(x)
        _close(mean, rm, TOL[dtype])
        _close(var, rv, TOL[dtype])
        rng = np.random.default_rng(5)
        m = (rm + rng.normal(size=rm.shape)).astype(s.dtype)
        v = (rv * rng.uniform(0.5, 2.0, size=rv.shape)).astype(s.dtype)
        ks = _kshape(shape, axes)
        for activation, slope in ACTS:
            y = jax.jit(lambda x: _jax_ffi.given(x, s, o, m, v, axes, EPS, False, activation,
                                                 slope))(x)
            z = ((x.astype(np.float64) - m.reshape(ks)) / np.sqrt(v.reshape(ks) + EPS)
                 * s.reshape(ks) + o.reshape(ks))
            _close(y, _act_np(z, activation, slope), TOL[dtype])

    # ------------------------------------------------------------ gradients
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("shape,axes", LAYOUTS)
    def test_training_gradients_match_float64_autodiff(dtype, shape, axes):
        x, s, o = _data(shape, axes, dtype)
        w = np.random.default_rng(9).normal(size=shape)
        for activation, slope in ACTS:
            def loss(x, s, o):
                y = _jax_ffi.train(x, s, o, axes, EPS, activation, slope)[0]
                return jnp.sum(y.astype(jnp.float64) * w)
            got = jax.jit(jax.grad(loss, (0, 1, 2)))(x, s, o)
            want = jax.grad(_ref_loss, (0, 1, 2))(
                jnp.asarray(x, jnp.float64), jnp.asarray(s, jnp.float64),
                jnp.asarray(o, jnp.float64), axes, activation, slope, w)
            for g, r, arg in zip(got, want, (x, s, o)):
                assert g.dtype == arg.dtype
                scale = max(1.0, float(np.abs(r).max()))
                _close(np.asarray(g, np.float64) / scale, np.asarray(r) / scale, GTOL[dtype])

    @pytest.mark.parametrize("train_grad", [False, True])
    @pytest.mark.parametrize("shape,axes", LAYOUTS[:2])
    def test_given_gradients_match_float64_autodiff(shape, axes, train_grad):
        """train_grad=False: mean/var are constants; True: they are x's batch statistics."""
        x, s, o = _data(shape, axes, "float64")
        w = np.random.default_rng(4).normal(size=shape)
        _, rm, rv = _ref_train(x, s, o, axes)
        for activation, slope in ACTS:
            def loss(x, s, o):
                m, v = _jax_ffi.moments(x, axes)
                y = _jax_ffi.given(x, s, o, m, v, axes, EPS, train_grad, activation, slope)
                return jnp.sum(y * w)

            got = jax.jit(jax.grad(loss, (0, 1, 2)))(x, s, o)
            if train_grad:
                want = jax.grad(_ref_loss, (0, 1, 2))(x, s, o, axes, activation, slope, w)
            else:
                want = jax.grad(_ref_loss, (0, 1, 2))(x, s, o, axes, activation, slope, w,
                                                      jnp.asarray(rm), jnp.asarray(rv))
            for g, r in zip(got, want):
                _close(g, r, 1e-9)

    def test_grad_op_matches_ckbn_nn():
        """The backward op alone, against ckbn.nn.fused_batch_norm_grad (NumPy path)."""
        shape, axes = (6, 8, 5, 4), (1,)
        x, s, o = _data(shape, axes, "float32")
        dy = np.random.default_rng(2).normal(size=shape).astype(np.float32)
        _, m, v = _kernels.train(x, s, o, axes, EPS)
        for training in (True, False):
            for activation, slope in ACTS[1:]:
                got = jax.jit(lambda dy, x: _jax_ffi.grad(dy, x, s, o, m, v, axes, EPS, training,
                                                          activation, slope))(dy, x)
                want = _kernels.grad(dy, x, s, m, v, axes, EPS, training, (activation, slope),
                                     o)
                for g, r in zip(got, want):
                    _close(g, r, 1e-5)

    # ---------------------------------------------- the callback path, eager, vmap
    @pytest.mark.parametrize("shape,axes", LAYOUTS)
    def test_matches_the_callback_path(shape, axes):
        x, s, o = _data(shape, axes, "float32")
        for activation, slope in ACTS[1:]:
            y, m, v = _jax_ffi.train(x, s, o, axes, EPS, activation, slope)
            ry, rm, rv = _kernels.train(x, s, o, axes, EPS, (activation, slope))
            _close(y, ry, 1e-6)
            _close(m, rm, 1e-6)
            _close(v, rv, 1e-6)

    def test_vmap_normalizes_each_element():
        shape, axes = (5, 6, 4, 3), (3,)
        xs = np.stack([_data(shape, axes, "float32", seed=i)[0] for i in range(3)])
        _, s, o = _data(shape, axes, "float32")

        def f(x):
            return _jax_ffi.train(x, s, o, axes, EPS, "relu")

        y, m, v = jax.jit(jax.vmap(f))(xs)
        for i in range(3):
            ry, rm, rv = _ref_train(xs[i], s, o, axes, "relu")
            _close(y[i], ry, 2e-5)
            _close(m[i], rm, 2e-5)
            _close(v[i], rv, 2e-5)
        w = np.random.default_rng(1).normal(size=xs.shape)
        g = jax.jit(jax.grad(lambda xs: jnp.sum(jax.vmap(f)(xs)[0] * w)))(xs)
        for i in range(3):
            r = jax.grad(_ref_loss)(jnp.asarray(xs[i], jnp.float64), jnp.asarray(s, jnp.float64),
                                    jnp.asarray(o, jnp.float64), axes, "relu", 0.0, w[i])
            _close(g[i], r, 2e-4)


    # ------------------------------------------------- the Keras layer on JAX
    def _layer_pair(shape, axis, seed=0, dtype="float32", cls=None, **kw):
        import keras

        from keras_plugin import BatchNormalization

        stock = keras.layers.BatchNormalization(axis=axis, momentum=0.8, dtype=dtype)
        ours = (cls or BatchNormalization)(axis=axis, momentum=0.8, dtype=dtype, **kw)
        for layer in (stock, ours):
            layer.build(shape)
        rng = np.random.default_rng(seed)
        c = shape[axis]
        weights = [rng.uniform(0.5, 2.0, c), rng.normal(size=c), rng.normal(size=c),
                   rng.uniform(0.5, 2.0, c)]
        stock.set_weights([w.astype("float32") for w in weights])
        ours.set_weights([w.astype("float32") for w in weights])
        return stock, ours

    def _step(layer, after=None):
        """A jitted training step: output, gradients of (x, gamma, beta), moving stats."""
        tv = [v.value for v in layer.trainable_variables]
        ntv = [v.value for v in layer.non_trainable_variables]

        def loss(tv, x, w):
            y, new = layer.stateless_call(tv, ntv, x, training=True)
            if after is not None:
                y = after(y)
            return jnp.sum(y.astype(jnp.float32) * w), (y, new)

        f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
        return f, (tv, ntv)

    @pytest.mark.parametrize("shape,axis", [((6, 5, 4, 8), -1), ((6, 8, 5, 4), 1),
                                            ((40, 12), -1)])
    def test_keras_layer_runs_the_ffi_handler_and_matches_stock(shape, axis):
        import keras_plugin
        from keras_plugin import _policy

        stock, ours = _layer_pair(shape, axis)
        x = np.random.default_rng(1).normal(size=shape).astype(np.float32) * 2 + 1
        w = np.random.default_rng(2).normal(size=shape).astype(np.float32)
        f_ours, (tv, _) = _step(ours)
        f_stock, _ = _step(stock)
        jaxpr = jax.make_jaxpr(f_ours)(tv, x, w)
        assert {"ckbn_bn_train", "ckbn_bn_grad"} <= _targets(jaxpr)
        assert "callback" not in str(jaxpr)
        (_, (y, new)), (gtv, gx) = f_ours(tv, x, w)
        (_, (ry, rnew)), (rgtv, rgx) = f_stock([v.value for v in stock.trainable_variables],
                                               x, w)
        _close(y, ry, 2e-5)
        _close(gx, rgx, 2e-4)
        for a, b in zip(gtv, rgtv):
            _close(a, b, 2e-4)
        for a, b in zip(new, rnew):   # moving mean and variance
            _close(a, b, 2e-5)
        # Eager inference and training calls of the layer itself.
        _close(ours(x, training=False), stock(x, training=False), 2e-5)
        _close(ours(x, training=True), stock(x, training=True), 2e-5)
        for a, b in zip(ours.non_trainable_variables, stock.non_trainable_variables):
            _close(a.value, b.value, 2e-5)
        # The Keras-ops path is still there on request, with the same results.
        keras_plugin.set_jax_min_elements(None)
        try:
            f_ops = _step(ours)[0]          # a new function: traced again
            jaxpr = jax.make_jaxpr(f_ops)(tv, x, w)
            (_, (y2, _)), (gtv2, gx2) = f_ops(tv, x, w)
            _close(y2, ry, 2e-5)
            _close(gx2, rgx, 2e-4)
        finally:
            _policy.set_min_elements("jax", None, "measured")
        assert not _targets(jaxpr)

    def test_fused_activation_layer_runs_the_ffi_handler():
        import keras

        from keras_plugin import BatchNormalizationActivation

        shape = (6, 5, 4, 8)
        stock, ours = _layer_pair(shape, -1, cls=BatchNormalizationActivation,
                                  activation="relu6")
        x = np.random.default_rng(1).normal(size=shape).astype(np.float32) * 3
        w = np.random.default_rng(2).normal(size=shape).astype(np.float32)
        f_ours, (tv, _) = _step(ours)
        f_stock, _ = _step(stock, after=keras.activations.relu6)
        jaxpr = jax.make_jaxpr(f_ours)(tv, x, w)
        assert "('hi', 6.0)" in str(jaxpr) and "ckbn_bn_train" in _targets(jaxpr)
        (_, (y, new)), (gtv, gx) = f_ours(tv, x, w)
        (_, (ry, rnew)), (rgtv, rgx) = f_stock([v.value for v in stock.trainable_variables],
                                               x, w)
        _close(y, ry, 2e-5)
        _close(gx, rgx, 2e-4)
        for a, b in zip(list(gtv) + list(new), list(rgtv) + list(rnew)):
            _close(a, b, 2e-4)

    def test_folded_affine_runs_the_ffi_handler():
        import keras

        from keras_plugin import fold_batch_normalization

        inputs = keras.Input((6, 6, 3))
        h = keras.layers.ReLU()(keras.layers.Conv2D(4, 3)(inputs))
        model = keras.Model(inputs, keras.layers.BatchNormalization()(h))
        bn = model.layers[-1]
        rng = np.random.default_rng(0)
        bn.set_weights([rng.uniform(0.5, 2, 4).astype("float32"),
                        rng.normal(size=4).astype("float32"),
                        rng.normal(size=4).astype("float32"),
                        rng.uniform(0.5, 2, 4).astype("float32")])
        folded = fold_batch_normalization(model)
        assert type(folded.layers[-1]).__name__ == "ChannelAffine"
        x = rng.normal(size=(5, 6, 6, 3)).astype("float32")
        from keras_plugin import _policy

        # By default inference runs XLA's own ops (measured: XLA fuses the
        # affine into the convolution's output); asked for, the FFI handler.
        assert _policy.min_elements("jax", "infer") is None
        text = str(jax.make_jaxpr(lambda x: folded(x, training=False))(x))
        assert "ckbn_bn_given" not in text and "callback" not in text
        _close(folded(x, training=False), model(x, training=False), 2e-5)
        _policy.set_min_elements("jax", "infer", 0)
        try:
            text = str(jax.make_jaxpr(lambda x: folded(x, training=False))(x))
            assert "ckbn_bn_given" in text and "callback" not in text
            _close(folded(x, training=False), model(x, training=False), 2e-5)
        finally:
            _policy.set_min_elements("jax", "infer", "measured")

    # ---------------------------------------------- synchronized, in shard_map

    def test_synchronized_keras_layer_in_shard_map_runs_the_ffi_handler():
        import keras
        from jax.sharding import Mesh
        from jax.sharding import PartitionSpec as P

        import keras_plugin

        shard_map = getattr(jax, "shard_map", None)
        if shard_map is None:  # older JAX
            from jax.experimental.shard_map import shard_map
        mesh = Mesh(np.array(jax.devices("cpu")), ("batch",))
        shape = (8, 3, 4, 5)
        stock, ours = _layer_pair(shape, -1)
        ours = keras_plugin.BatchNormalization(axis=-1, momentum=0.8, synchronized=True)
        ours.build(shape)
        ours.set_weights(stock.get_weights())
        x = np.random.default_rng(1).normal(size=shape).astype(np.float32) * 2 + 1
        w = np.random.default_rng(2).normal(size=shape).astype(np.float32)
        tv = [v.value for v in ours.trainable_variables]
        ntv = [v.value for v in ours.non_trainable_variables]

        def shard_step(tv, x, w):
            def loss(tv, x):
                with keras_plugin.jax_sync_axis("batch"):
                    y, new = ours.stateless_call(tv, ntv, x, training=True)
                return jnp.sum(y * w), (y, new)

            (_, (y, new)), (gtv, gx) = jax.value_and_grad(loss, (0, 1), has_aux=True)(tv, x)
            return y, gx, [g[None] for g in gtv], [v[None] for v in new]

        specs = dict(mesh=mesh, in_specs=(P(), P("batch"), P("batch")),
                     out_specs=(P("batch"), P("batch"), P("batch"), P("batch")))
        try:
            f = jax.jit(shard_map(shard_step, check_vma=False, **specs))
        except TypeError:  # older JAX
            f = jax.jit(shard_map(shard_step, check_rep=False, **specs))
        text = str(jax.make_jaxpr(f)(tv, x, w))
        assert "ckbn_bn_merge" in text and "ckbn_bn_backward_dx" in text
        assert "callback" not in text
        y, gx, gtv, new = f(tv, x, w)
        f_stock, _ = _step(stock)
        (_, (ry, rnew)), (rgtv, rgx) = f_stock([v.value for v in stock.trainable_variables],
                                               x, w)
        _close(y, ry, 2e-5)
        _close(gx, rgx, 2e-4)
        for a, b in zip(gtv, rgtv):   # per-shard sums add up to the global gradient
            _close(np.asarray(a).sum(0), b, 2e-4)
        for a, b in zip(new, rnew):   # moving statistics, the same on every shard
            for k in range(4):
                np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(a[0]))
            _close(a[0], b, 2e-5)


    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    @pytest.mark.parametrize("activation,slope", [(None, 0.0), ("relu6", 0.0)])
    def test_sync_train_in_shard_map_matches_the_global_batch(dtype, activation, slope):
        from jax.sharding import Mesh
        from jax.sharding import PartitionSpec as P

        shard_map = getattr(jax, "shard_map", None)
        if shard_map is None:  # older JAX
            from jax.experimental.shard_map import shard_map
        devices = jax.devices("cpu")
        assert len(devices) == 4, "XLA_FLAGS must give 4 host devices"
        mesh = Mesh(np.array(devices), ("b",))
        shape, axes = (8, 5, 3, 6), (3,)
        x, s, o = _data(shape, axes, dtype)
        w = np.random.default_rng(3).normal(size=shape).astype(dtype)

        def local(x, w, s, o):
            y, mean, var = _jax_ffi.sync_train(x, s, o, axes, EPS, "b", activation, slope)
            return y, mean[None], var[None]

        def local_loss(x, w, s, o):
            y = _jax_ffi.sync_train(x, s, o, axes, EPS, "b", activation, slope)[0]
            return jnp.sum(y * w)[None]

        def shard_grads(x, w, s, o):
            dx, ds, do = jax.grad(lambda *a: local_loss(*a)[0], (0, 2, 3))(x, w, s, o)
            return dx, ds[None], do[None]

        kw = dict(mesh=mesh, in_specs=(P("b"), P("b"), P(), P()))
        try:
            fwd = jax.jit(shard_map(local, out_specs=(P("b"), P("b"), P("b")),
                                    check_vma=False, **kw))
            grads = jax.jit(shard_map(shard_grads, out_specs=(P("b"), P("b"), P("b")),
                                      check_vma=False, **kw))
        except TypeError:  # older JAX: check_rep
            fwd = jax.jit(shard_map(local, out_specs=(P("b"), P("b"), P("b")),
                                    check_rep=False, **kw))
            grads = jax.jit(shard_map(shard_grads, out_specs=(P("b"), P("b"), P("b")),
                                      check_rep=False, **kw))
        text = str(jax.make_jaxpr(grads)(x, w, s, o))
        assert "ckbn_bn_merge" in text and "ckbn_bn_backward_dx" in text
        assert "callback" not in text
        y, mean, var = fwd(x, w, s, o)
        ry, rm, rv = _ref_train(x, s, o, axes, activation, slope)
        _close(y, ry, TOL[dtype])
        for k in range(4):   # every shard has the same statistics, bit for bit
            np.testing.assert_array_equal(np.asarray(mean[k]), np.asarray(mean[0]))
            np.testing.assert_array_equal(np.asarray(var[k]), np.asarray(var[0]))
        _close(mean[0], rm, TOL[dtype])
        _close(var[0], rv, TOL[dtype])
        dx, ds, do = grads(x, w, s, o)
        want = jax.grad(_ref_loss, (0, 1, 2))(
            jnp.asarray(x, jnp.float64), jnp.asarray(s, jnp.float64),
            jnp.asarray(o, jnp.float64), axes, activation, slope, jnp.asarray(w, jnp.float64))
        _close(dx, want[0], GTOL[dtype])
        # gamma's and beta's gradients are per shard; their sum is the global one.
        _close(np.asarray(ds).sum(0), want[1], GTOL[dtype] * 10)
        _close(np.asarray(do).sum(0), want[2], GTOL[dtype] * 10)

    # ----------------------------------------------------------- bad input
    def test_bad_input_gets_clear_errors():
        x, s, o = _data((4, 3, 5, 6), (3,), "float32")
        with pytest.raises(TypeError, match="int32"):
            _jax_ffi.train(x.astype(np.int32), s, o, (3,), EPS)
        with pytest.raises(ValueError, match=r"scale must have shape \(6,\).*\(5,\)"):
            _jax_ffi.train(x, s[:5], o, (3,), EPS)
        with pytest.raises(ValueError, match="axis 4 is out of range"):
            _jax_ffi.train(x, s, o, (4,), EPS)
        with pytest.raises(ValueError, match="'gelu'"):
            _jax_ffi.train(x, s, o, (3,), EPS, "gelu")
        with pytest.raises(ValueError, match=r"\(0, 3, 5, 6\)"):
            _jax_ffi.train(x[:0], s, o, (3,), EPS)
        with pytest.raises(TypeError, match="offset must be a float array"):
            _jax_ffi.train(x, s, o.astype(np.int64), (3,), EPS)
        with pytest.raises(ValueError, match=r"dy must have x's shape"):
            _jax_ffi.grad(x[:2], x, s, o, s, s, (3,), EPS, True)

    def test_handlers_check_their_buffers_with_the_shared_messages():
        """The handlers' own checks and status messages (native/ckbn_native.h), reached
        with raw ffi_calls whose attributes the Python side never sends."""
        f32 = jnp.float32

        def out(*shapes, dtype=f32):
            return tuple(jax.ShapeDtypeStruct(sh, dtype) for sh in shapes)

        def stats(x, **attrs):
            n = attrs["G"] * attrs["C"]
            return jax.ffi.ffi_call("ckbn_bn_stats", out((n,), (n,)))(x, **attrs)

        x = jnp.asarray(np.arange(12, dtype=np.float32).reshape(4, 3))
        # the right attributes first: the handler's result against float64 NumPy
        mean, var = stats(x, P=4, G=1, R=1, C=3, n_threads=1)
        ref = np.arange(12, dtype=np.float64).reshape(4, 3)
        np.testing.assert_allclose(np.asarray(mean), ref.mean(0), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(var), ref.var(0), rtol=1e-6)
        err = jax.errors.JaxRuntimeError
        with pytest.raises(err, match=r"ckbn_bn_stats: layout \(5, 1, 1, 3\) does not "
                                      r"match 12 elements"):
            stats(x, P=5, G=1, R=1, C=3, n_threads=1)
        with pytest.raises(err, match="ckbn_bn_stats: n_threads must be >= 1"):
            stats(x, P=4, G=1, R=1, C=3, n_threads=0)
        with pytest.raises(err, match="ckbn_bn_stats: data must be float16, float32 or "
                                      "float64"):
            stats(x.astype(jnp.int32), P=4, G=1, R=1, C=3, n_threads=1)
        # a status from the kernel table: an empty reduction
        with pytest.raises(err, match=r"ckbn_bn_stats: bad dimensions \(negative, or an "
                                      r"empty reduction\)"):
            stats(jnp.zeros((0, 3), f32), P=0, G=1, R=1, C=3, n_threads=1)
        attrs = dict(P=4, G=1, R=1, C=3, eps=1e-3, act=0, slope=0.0, hi=6.0, n_threads=1)
        s3 = jnp.ones((3,), f32)
        given = jax.ffi.ffi_call("ckbn_bn_given", out((4, 3)))
        with pytest.raises(err, match="ckbn_bn_given: scale has 2 values, expected 3"):
            given(x, s3[:2], s3, s3, s3, **attrs)
        with pytest.raises(err, match="ckbn_bn_given: var must be float32 or float64"):
            given(x, s3, s3, s3, s3.astype(jnp.int32), **attrs)

    def test_supports():
        assert _jax_ffi.supports(jnp.ones((2, 3), jnp.float32))
        assert not _jax_ffi.supports(jnp.ones((0, 3), jnp.float32))
        assert not _jax_ffi.supports(jnp.ones((2, 3), jnp.int32))

    # ------------------------------------------------------ a missing library
    def test_missing_compiler_falls_back_with_one_warning(tmp_path):
        script = textwrap.dedent("""
            import warnings
            import numpy as np
            warnings.simplefilter("always")
            with warnings.catch_warnings(record=True) as caught:
                from keras_plugin import _jax_ffi
                first = _jax_ffi.available()
                second = _jax_ffi.available()
                supported = _jax_ffi.supports(np.ones((2, 3), np.float32))
            msgs = [str(w.message) for w in caught if "XLA FFI" in str(w.message)]
            print("RESULT", first, second, supported, len(msgs))
            print(msgs[0] if msgs else "")
        """)
        proc = subprocess.run([sys.executable, "-c", script], cwd=str(ROOT), timeout=300,
                              env=_env(CXX="/bin/false", CKBN_CACHE_DIR=str(tmp_path)),
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert "RESULT False False False 1" in proc.stdout, proc.stdout + proc.stderr[-3000:]
        assert "building ckbn_xla_ffi failed" in proc.stdout
