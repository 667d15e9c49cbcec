"""The compiled PyTorch operators (``keras_plugin._torch_native``,
``native/torch_ops.cc``), under ``KERAS_BACKEND=torch``; run by
``tests/test_torch_path.py`` in its own process.

* they are what runs (kernel call counters, the C++ autograd node);
* outputs, gradients and moving statistics are bit for bit those of the
  Python autograd Functions (``_torch.use_native(False)``), and match float64
  NumPy;
* bad arguments raise ValueError/TypeError naming the value, with the moving
  statistics untouched.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import keras

torch = pytest.importorskip("torch")
if keras.backend.backend() != "torch":  # pragma: no cover - run with KERAS_BACKEND=torch
    pytest.skip("PyTorch backend only", allow_module_level=True)

import keras_plugin  # noqa: E402
from keras_plugin import BatchNormalization, _kernels, _torch, _torch_native  # noqa: E402

if not _torch_native.available():  # pragma: no cover - no compiler or headers here
    pytest.skip("the PyTorch native op library could not be built", allow_module_level=True)

keras_plugin._policy.set_min_elements("torch", None, 0)   # the kernels at every size
EPS = 1e-3
ACTS = [None, ("relu", 0.0), ("relu6", 0.0), ("leaky_relu", 0.2), ("swish", 0.0)]


def _rand(shape, seed, dtype=np.float32):
    return (np.random.default_rng(seed).normal(size=shape) * 2.0 + 0.7).astype(dtype)


def _python_path():
    class _Ctx:
        def __enter__(self):
            self.previous = _torch.use_native(False)

        def __exit__(self, *exc):
            _torch.use_native(self.previous)
    return _Ctx()


def _run(fn, x, s, o, dy):
    """Outputs and (x, scale, offset) gradients of ``fn(x, s, o)``."""
    x, s, o = (t.clone().requires_grad_(True) for t in (x, s, o))
    out = fn(x, s, o)
    y = out[0] if isinstance(out, tuple) else out
    y.backward(dy)
    outs = list(out) if isinstance(out, tuple) else [out]
    return [t.detach().numpy().copy() for t in outs] + [t.grad.numpy().copy()
                                                         for t in (x, s, o)]


CASES = [((6, 3, 4, 5), (3,)), ((6, 5, 3, 4), (1,)), ((7, 5), (1,)), ((4, 3, 5, 2), (1, 2)),
         ((3, 4, 2, 5), (1, 3)), ((2, 3, 2, 2, 4), (4,))]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("shape,axes", CASES)
@pytest.mark.parametrize("act", ACTS)
def test_train_and_given_equal_the_python_functions(dtype, shape, axes, act):
    if dtype == np.float16 and not _torch_native.has_float16():
        pytest.skip("no float16 kernels here")
    n = math.prod(shape[a] for a in axes)
    sd = np.float64 if dtype == np.float64 else np.float32
    x = torch.from_numpy(_rand(shape, 1, dtype))
    dy = torch.from_numpy(_rand(shape, 2, dtype))
    s = torch.from_numpy(_rand((n,), 3, sd) + 2.0)
    o = torch.from_numpy(_rand((n,), 4, sd))
    m = torch.from_numpy(_rand((n,), 5, sd))
    v = torch.from_numpy(np.abs(_rand((n,), 6, sd)) + 0.5)
    calls = {
        "train": lambda x, s, o: _torch.train(x, s, o, axes, EPS, act),
        "given": lambda x, s, o: _torch.given(x, s, o, m, v, axes, EPS, False, act),
        "given, training gradient": lambda x, s, o: _torch.given(x, s, o, m, v, axes, EPS,
                                                                True, act),
    }
    in_place = _kernels.in_place(len(shape), axes)
    for name, fn in calls.items():
        before = _torch_native.call_counts()
        got = _run(fn, x, s, o, dy)
        after = _torch_native.call_counts()
        ran = after["train"] + after["given"] - before["train"] - before["given"]
        assert ran == (1 if in_place else 0), name   # a transpose keeps the Python path
        assert after["grad"] - before["grad"] == (1 if in_place else 0), name
        with _python_path():
            want = _run(fn, x, s, o, dy)
        assert len(got) == len(want)
        for u, w in zip(got, want):
            assert u.dtype == w.dtype, name
            np.testing.assert_array_equal(u, w, err_msg=name)


def _bn64(x, axes, s, o, dy, mean=None, var=None):
    """y, dx, dscale, doffset in float64 (training statistics when mean is None)."""
    x, dy = x.astype(np.float64), dy.astype(np.float64)
    red = tuple(i for i in range(x.ndim) if i not in axes)
    shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    train = mean is None
    if train:
        mean, var = x.mean(axis=red), x.var(axis=red)
    mean, var, s, o = (np.asarray(a, np.float64).reshape(shape) for a in (mean, var, s, o))
    inv = 1.0 / np.sqrt(var + EPS)
    xhat = (x - mean) * inv
    y = xhat * s + o
    ds = (dy * xhat).sum(axis=red)
    do = dy.sum(axis=red)
    if train:
        cnt = x.size / s.size
        dx = s * inv * (dy - do.reshape(shape) / cnt - xhat * ds.reshape(shape) / cnt)
    else:
        dx = dy * s * inv
    return y, dx, ds.reshape(-1), do.reshape(-1)


@pytest.mark.parametrize("shape,axes", CASES[:4])
@pytest.mark.parametrize("training", [True, False])
def test_against_float64_numpy(shape, axes, training):
    n = math.prod(shape[a] for a in axes)
    xa, dya = _rand(shape, 7), _rand(shape, 8)
    sa, oa = _rand((n,), 9) + 2.0, _rand((n,), 10)
    ma, va = _rand((n,), 11), np.abs(_rand((n,), 12)) + 0.5
    m, v = torch.from_numpy(ma), torch.from_numpy(va)
    if training:
        fn = lambda x, s, o: _torch.train(x, s, o, axes, EPS)  # noqa: E731
        y64, dx64, ds64, do64 = _bn64(xa, axes, sa, oa, dya)
    else:
        fn = lambda x, s, o: _torch.given(x, s, o, m, v, axes, EPS)  # noqa: E731
        y64, dx64, ds64, do64 = _bn64(xa, axes, sa, oa, dya, ma, va)
    got = _run(fn, torch.from_numpy(xa), torch.from_numpy(sa), torch.from_numpy(oa),
               torch.from_numpy(dya))
    np.testing.assert_allclose(got[0], y64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[-3], dx64, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[-2], ds64, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got[-1], do64, rtol=1e-4, atol=1e-4)
    if training:   # the batch statistics
        red = tuple(i for i in range(len(shape)) if i not in axes)
        np.testing.assert_allclose(got[1], xa.astype(np.float64).mean(axis=red).reshape(-1),
                                   rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(got[2], xa.astype(np.float64).var(axis=red).reshape(-1),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axis,shape", [(-1, (6, 3, 4, 5)), (1, (6, 5, 3, 4))])
def test_layer_training_runs_the_operator_and_bumps_versions(axis, shape):
    """The layer's training call is one operator call: its C++ node is the output's
    grad_fn, the moving statistics move in place (same bits as the Python Functions,
    versions bumped as an in-place op would), and float64 NumPy agrees.  (float32:
    Keras on PyTorch computes float64 layers in float32, through casts; the
    operator's float64 kernels are tested above.)"""
    dtype = "float32"
    layers = []
    for _ in range(2):
        layer = BatchNormalization(axis=axis, momentum=0.9, epsilon=EPS, dtype=dtype)
        layer.build(shape)
        n = shape[axis]
        layer.set_weights([_rand((n,), 1) + 2.0, _rand((n,), 2), _rand((n,), 3),
                           np.abs(_rand((n,), 4)) + 0.5])
        layers.append(layer)
    x = torch.from_numpy(_rand(shape, 5, dtype))
    dy = torch.from_numpy(_rand(shape, 6, dtype))
    mm0 = np.array(layers[0].moving_mean.numpy(), np.float64)
    results = []
    for layer, native in zip(layers, (True, False)):
        previous = _torch.use_native(native)
        try:
            xg = x.clone().requires_grad_(True)
            versions = [v.value._version for v in layer.non_trainable_weights]
            y = layer(xg, training=True)
            assert ("Ckbn" in y.grad_fn.name()) == native
            assert all(v.value._version > k for v, k in zip(layer.non_trainable_weights,
                                                            versions))
            y.backward(dy)
            results.append([y.detach().numpy(), xg.grad.numpy()]
                           + [w.value.grad.numpy() for w in layer.trainable_weights]
                           + [np.array(w.numpy()) for w in layer.non_trainable_weights])
        finally:
            _torch.use_native(previous)
    for u, w in zip(*results):
        np.testing.assert_array_equal(u, w)
    red = tuple(i for i in range(len(shape)) if i != axis % len(shape))
    mean = x.numpy().astype(np.float64).mean(axis=red)
    np.testing.assert_allclose(results[0][4], mm0 * 0.9 + mean * 0.1, rtol=1e-6, atol=1e-6)


def test_threads_give_the_same_bits():
    train, _ = _torch_native.load()
    x = torch.from_numpy(_rand((64, 33, 17, 24), 13))
    s, o = torch.ones(24), torch.zeros(24)
    outs = [train(x, s, o, None, None, 0.0, (3,), EPS, 0, 0.0, math.inf, k)
            for k in (1, 2, 3)]
    for out in outs[1:]:
        for u, w in zip(outs[0], out):
            assert torch.equal(u, w)


def test_given_gradient_uses_the_statistics_of_the_call():
    """Statistics changed in place after the call do not change its gradient."""
    x = torch.from_numpy(_rand((6, 5, 3, 4), 14)).requires_grad_(True)
    s, o = torch.from_numpy(_rand((5,), 15) + 2.0), torch.zeros(5)
    m, v = torch.zeros(5), torch.ones(5)
    y = _torch.given(x, s, o, m, v, (1,), EPS)
    v.mul_(4.0)
    dy = torch.from_numpy(_rand((6, 5, 3, 4), 16))
    y.backward(dy)
    want = dy.numpy() * (s.numpy().astype(np.float64) / math.sqrt(1.0 + EPS)).reshape(1, 5, 1, 1)
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-6, atol=1e-6)


def _op_args(n=5, **over):
    args = dict(x=torch.from_numpy(_rand((4, 3, 2, n), 17)), scale=torch.ones(n),
                offset=torch.zeros(n), moving_mean=torch.zeros(n), moving_var=torch.ones(n),
                momentum=0.9, axes=[3], eps=EPS, act=0, slope=0.0, hi=math.inf, n_threads=1)
    args.update(over)
    return args


@pytest.mark.parametrize("over,error,match", [
    (dict(scale=torch.ones(4)), ValueError, "scale has 4 values, expected 5"),
    (dict(offset=torch.zeros(6)), ValueError, "offset has 6 values, expected 5"),
    (dict(moving_var=torch.ones(3)), ValueError, "moving_var has 3 values, expected 5"),
    (dict(moving_mean=torch.zeros(5, dtype=torch.float64)), TypeError,
     "moving_mean must be Float"),
    (dict(scale=torch.ones(5, dtype=torch.int32)), TypeError, "scale must be float32 or float64"),
    (dict(x=torch.ones(4, 3, 2, 5, dtype=torch.int64)), ValueError,
     "data must be float16, float32 or float64"),
    (dict(axes=[4]), ValueError, "channel axis 4 is out of range"),
    (dict(axes=[0, 2]), ValueError, "need a transpose"),
    (dict(axes=[3, 3]), ValueError, "axis 3 twice"),
    (dict(eps=-1.0), ValueError, "eps must be a finite number >= 0, got -1"),
    (dict(eps=math.nan), ValueError, "eps must be a finite number"),
    (dict(n_threads=0), ValueError, "n_threads must be >= 1, got 0"),
    (dict(act=7), ValueError, "act must be 0, 1 or 2, got 7"),
    (dict(x=torch.ones(0, 3, 2, 5)), ValueError, "x is empty"),
    (dict(momentum=math.inf), ValueError, "momentum must be finite"),
    (dict(moving_var=None), ValueError, "give both moving_mean and moving_var"),
])
def test_bad_arguments_raise_and_change_nothing(over, error, match):
    train, _ = _torch_native.load()
    args = _op_args(**over)
    state = [None if args[k] is None else args[k].clone() for k in ("moving_mean", "moving_var")]
    with pytest.raises(error, match=match):
        train(*args.values())
    for k, before in zip(("moving_mean", "moving_var"), state):
        if before is not None and args[k].numel() == before.numel():
            assert torch.equal(args[k], before)


def test_non_contiguous_input_is_read_as_its_values():
    x = torch.from_numpy(_rand((6, 5, 3, 4), 18)).permute(0, 2, 3, 1)   # NHWC view of NCHW
    assert not x.is_contiguous()
    s, o = torch.ones(5), torch.zeros(5)
    got = _torch.train(x, s, o, (3,), EPS)
    want = _torch.train(x.contiguous(), s, o, (3,), EPS)
    for u, w in zip(got, want):
        assert torch.equal(u, w)
