"""The compiled entries of ckbn.nn's fused ops for every size of the common
case (pyx/ckbn/_k_small.pxi ``common_forward``/``common_backward``): bit for
bit the general path's results below, at and above PARALLEL_MIN elements, for
every activation, layout and thread count; the general path's errors for
every bad call; the entry is what runs for a common call, with the general
path's thread count and output alignment."""

import numpy as np
import pytest

import ckbn
from ckbn import _config, _ops
from ckbn._config import PARALLEL_MIN
from ckbn._dispatch import kernels
from tests.twin import skip_on_twin

EPS = 1e-3

# (shape, data_format, the general path's axis): below, at and above
# PARALLEL_MIN (65536) elements.
CASES = [
    ((16, 4, 4, 32), "NHWC", [3]),
    ((16, 4, 4, 256), "NHWC", [3]),       # PARALLEL_MIN exactly
    ((16, 4, 4, 576), "NHWC", [3]),       # 147456
    ((8, 28, 28, 64), "NHWC", [3]),
    ((16, 32, 32, 32), "NHWC", [3]),
    ((16, 32, 8, 8), "NCHW", [1]),        # small planes: _small_bwd_cf
    ((16, 16, 16, 16), "NCHW", [1]),      # PARALLEL_MIN exactly
    ((8, 64, 16, 16), "NCHW", [1]),
    ((64, 12), "NC", [1]),
    ((2048, 48), "NC", [1]),
]
IDS = [f"{fmt}-{'x'.join(map(str, s))}" for s, fmt, _ in CASES]

# (activation, negative_slope)
ACTS = [(None, 0.2), ("relu", 0.2), ("relu6", 0.2), ("leaky_relu", 0.1), ("swish", 0.2),
        ("silu", 0.2)]


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    skip_on_twin("has no compiled entries")


def _args(shape, fmt, seed=0):
    rng = np.random.default_rng(seed)
    # Values around 0 after normalization, so every activation's branches run.
    x = (1.0 + 2.0 * rng.standard_normal(shape)).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    c = shape[1] if fmt == "NCHW" else shape[-1]
    scale = rng.uniform(0.5, 2.0, c).astype(np.float32)
    offset = (0.5 * rng.standard_normal(c)).astype(np.float32)
    mean = (1.0 + 0.1 * rng.standard_normal(c)).astype(np.float32)
    var = rng.uniform(3.0, 5.0, c).astype(np.float32)
    return x, dy, scale, offset, mean, var


def _equal(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


@pytest.fixture()
def general_raises(monkeypatch):
    """The general path's kernels raise: a call that still works took the
    compiled entry."""
    def boom(*args, **kwargs):
        raise AssertionError("the general path ran")

    for name in ("forward_train", "forward_infer", "backward"):
        monkeypatch.setattr(_ops, name, boom)


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("activation,slope", ACTS)
@pytest.mark.parametrize("shape,fmt,axis", CASES, ids=IDS)
def test_same_bits_as_the_general_path(shape, fmt, axis, activation, slope, n_threads):
    x, dy, scale, offset, mean, var = _args(shape, fmt)
    act = {"activation": activation, "negative_slope": slope}
    with ckbn.num_threads(n_threads):
        for training in (True, False):
            kw = {"epsilon": EPS, "is_training": training, **act}
            # forward: a new y, into out=, in place (out=x)
            common = ckbn.nn.fused_batch_norm(x, scale, offset, mean, var, data_format=fmt,
                                              **kw)
            general = ckbn.nn.fused_batch_norm(x, scale, offset, mean, var, axis=axis, **kw)
            _equal(common, general)
            out = np.empty_like(x)
            r = ckbn.nn.fused_batch_norm(x, scale, offset, mean, var, data_format=fmt,
                                         out=out, **kw)
            assert r[0] is out
            _equal(r, general)
            xc = x.copy()
            r = ckbn.nn.fused_batch_norm(xc, scale, offset, mean, var, data_format=fmt,
                                         out=xc, **kw)
            assert r[0] is xc
            _equal(r, general)
            # backward, with the training forward's statistics in training
            m, v = (common[1], common[2]) if training else (mean, var)
            kw["offset"] = offset
            common = ckbn.nn.fused_batch_norm_grad(dy, x, scale, m, v, data_format=fmt, **kw)
            general = ckbn.nn.fused_batch_norm_grad(dy, x, scale, m, v, axis=axis, **kw)
            _equal(common, general)


@pytest.mark.parametrize("activation,slope", [(None, 0.2), ("relu6", 0.2), ("swish", 0.2)])
@pytest.mark.parametrize("shape,fmt,axis", [CASES[0], CASES[2], CASES[7]], ids=[
    IDS[0], IDS[2], IDS[7]])
def test_the_entry_runs_for_common_calls(shape, fmt, axis, activation, slope,
                                         general_raises):
    x, dy, scale, offset, mean, var = _args(shape, fmt)
    kw = {"activation": activation, "negative_slope": slope}
    with ckbn.num_threads(2):
        for training in (True, False):
            y, m, v = ckbn.nn.fused_batch_norm(x, scale, offset, mean, var, EPS, fmt,
                                               training, **kw)
            ckbn.nn.fused_batch_norm_grad(dy, x, scale, m, v, EPS, fmt, training,
                                          offset=offset, **kw)
            # ... and axis= takes the general path
            with pytest.raises(AssertionError, match="the general path ran"):
                ckbn.nn.fused_batch_norm(x, scale, offset, mean, var, EPS,
                                         is_training=training, axis=axis, **kw)
            with pytest.raises(AssertionError, match="the general path ran"):
                ckbn.nn.fused_batch_norm_grad(dy, x, scale, m, v, EPS, is_training=training,
                                              axis=axis, offset=offset, **kw)


def test_large_calls_take_the_general_path_thread_policy(monkeypatch):
    """At PARALLEL_MIN elements and more the entry runs under
    kernel_threads(None, size), as the general path's kernels do; below, it
    runs without the thread accounting, on one thread."""
    seen = []
    real = _config.kernel_threads

    class spy(real):
        __slots__ = ()

        def __enter__(self):
            t = real.__enter__(self)
            seen.append(t)
            return t

    monkeypatch.setattr(_config, "kernel_threads", spy)
    x, dy, scale, offset, mean, var = _args((16, 4, 4, 576), "NHWC")
    with ckbn.num_threads(2):
        y, m, v = ckbn.nn.fused_batch_norm(x, scale, offset, activation="relu")
        ckbn.nn.fused_batch_norm_grad(dy, x, scale, m, v, offset=offset, activation="relu")
    expect = 2 if ckbn.openmp_enabled() else 1
    assert seen == [expect, expect]
    seen.clear()
    xs = x[:1].copy()
    assert xs.size < PARALLEL_MIN
    with ckbn.num_threads(2):
        ckbn.nn.fused_batch_norm(xs, scale, offset)
        ckbn.nn.fused_batch_norm_grad(dy[:1].copy(), xs, scale, m, v)
    assert seen == []


def test_large_outputs_are_aligned_as_the_general_path_allocates_them():
    x, dy, scale, offset, mean, var = _args((8, 64, 64, 64), "NHWC")   # 8 MiB
    y, m, v = ckbn.nn.fused_batch_norm(x, scale, offset, activation="swish")
    dx = ckbn.nn.fused_batch_norm_grad(dy, x, scale, m, v, offset=offset,
                                       activation="swish")[0]
    for a in (y, dx):
        assert a.ctypes.data % 64 == 0 and a.flags.c_contiguous and a.flags.writeable
        assert a.shape == x.shape and a.dtype == np.float32


def test_float64_channel_arrays_fall_back_to_the_general_path():
    x, dy, scale, offset, mean, var = _args((16, 4, 4, 576), "NHWC")
    d = {"scale": scale, "offset": offset, "mean": mean, "variance": var}
    for training in (True, False):
        for act in (None, "leaky_relu"):
            want = ckbn.nn.fused_batch_norm(x, **d, is_training=training, activation=act)
            for key in d:
                wide = dict(d, **{key: d[key].astype(np.float64)})
                _equal(ckbn.nn.fused_batch_norm(x, **wide, is_training=training,
                                                activation=act), want)
            m, v = want[1], want[2]
            want = ckbn.nn.fused_batch_norm_grad(dy, x, scale, m, v, is_training=training,
                                                 offset=offset, activation=act)
            for i in range(4):
                a = [scale, m, v, offset]
                a[i] = a[i].astype(np.float64)
                _equal(ckbn.nn.fused_batch_norm_grad(dy, x, a[0], a[1], a[2],
                                                     is_training=training, offset=a[3],
                                                     activation=act), want)


def test_a_numpy_subclass_takes_the_general_path(general_raises):
    x, dy, scale, offset, mean, var = _args((16, 4, 4, 576), "NHWC")
    sub = x.view(type("Sub", (np.ndarray,), {}))
    with pytest.raises(AssertionError, match="the general path ran"):
        ckbn.nn.fused_batch_norm(sub, scale, offset)
    with pytest.raises(AssertionError, match="the general path ran"):
        ckbn.nn.fused_batch_norm_grad(dy.view(type(sub)), sub, scale, mean, var)


def _bad_forward():
    x, dy, scale, offset, mean, var = _args((16, 4, 4, 576), "NHWC")
    xs = x[:1].copy()
    ro = np.empty_like(x)
    ro.flags.writeable = False
    buf = np.concatenate([x.ravel(), np.zeros(8, np.float32)])
    xo = buf[:x.size].reshape(x.shape)
    overlap = buf[4:4 + x.size].reshape(x.shape)
    ok = {"x": x, "scale": scale, "offset": offset, "mean": mean, "variance": var}
    cases = {
        "x int32": dict(ok, x=x.astype(np.int32)),
        "x rank 1": dict(ok, x=x.ravel()),
        "x empty": dict(ok, x=x[:0]),
        "scale length": dict(ok, scale=scale[:-1]),
        "scale float64 length": dict(ok, scale=scale[:-1].astype(np.float64)),
        "offset length": dict(ok, offset=np.zeros(5, np.float32)),
        "small scale length": dict(ok, x=xs, scale=scale[:-1]),
        "mean length, inference": dict(ok, mean=mean[:3], is_training=False),
        "no variance, inference": dict(ok, variance=None, is_training=False),
        "epsilon negative": dict(ok, epsilon=-1.0),
        "epsilon nan": dict(ok, epsilon=float("nan")),
        "epsilon str": dict(ok, epsilon="0.001"),
        "is_training str": dict(ok, is_training="yes"),
        "data_format": dict(ok, data_format="NCDHW"),
        "data_format str": dict(ok, data_format="HWNC"),
        "activation name": dict(ok, activation="gelu"),
        "activation unhashable": dict(ok, activation=["relu"]),
        "small activation name": dict(ok, x=xs, activation="tanh"),
        "slope bool": dict(ok, activation="leaky_relu", negative_slope=True),
        "slope nan": dict(ok, activation="leaky_relu", negative_slope=float("nan")),
        "slope str": dict(ok, activation="leaky_relu", negative_slope="0.1"),
        "slope array": dict(ok, activation="leaky_relu", negative_slope=np.zeros(2)),
        "out shape": dict(ok, out=np.empty((16, 4, 4, 575), np.float32)),
        "out dtype": dict(ok, out=np.empty(x.shape, np.float64)),
        "out read-only": dict(ok, out=ro),
        "out overlapping x": dict(ok, x=xo, out=overlap),
        "out non-contiguous": dict(ok, out=np.empty((16, 4, 4, 1152), np.float32)[..., ::2]),
    }
    return cases


def _bad_backward():
    x, dy, scale, offset, mean, var = _args((16, 4, 4, 576), "NHWC")
    ok = {"dy": dy, "x": x, "scale": scale, "batch_mean": mean, "batch_var": var}
    return {
        "dy shape": dict(ok, dy=dy[:8]),
        "dy rank": dict(ok, dy=dy.reshape(16, 16, 576)),
        "dy str": dict(ok, dy="dy"),
        "x int32": dict(ok, x=x.astype(np.int32)),
        "scale length": dict(ok, scale=scale[:-1]),
        "batch_mean None": dict(ok, batch_mean=None),
        "batch_var length": dict(ok, batch_var=var[:7]),
        "epsilon negative": dict(ok, epsilon=-0.5),
        "is_training int 2": dict(ok, is_training=2),
        "activation name": dict(ok, activation="elu"),
        "slope bool": dict(ok, activation="leaky_relu", negative_slope=False),
        "offset length with activation": dict(ok, activation="relu", offset=offset[:-2]),
        "offset str with activation": dict(ok, activation="swish", offset="offset"),
    }


def _general_error(monkeypatch, fn, kw):
    """The error the general path alone raises for ``fn(**kw)``."""
    with monkeypatch.context() as mp:
        mp.setattr(kernels(), "common_forward", lambda *a: None)
        mp.setattr(kernels(), "common_backward", lambda *a: None)
        with pytest.raises(Exception) as want:
            fn(**kw)
    return want.value


_BAD = {"forward": (ckbn.nn.fused_batch_norm, _bad_forward),
        "backward": (ckbn.nn.fused_batch_norm_grad, _bad_backward)}


@pytest.mark.parametrize("op,case", [(op, case) for op, (_, bad) in _BAD.items()
                                     for case in bad()])
def test_errors_are_the_general_paths(op, case, monkeypatch):
    fn, bad = _BAD[op]
    kw = bad()[case]
    want = _general_error(monkeypatch, fn, kw)
    with pytest.raises(type(want)) as got:
        fn(**kw)
    assert type(got.value) is type(want) and str(got.value) == str(want)
