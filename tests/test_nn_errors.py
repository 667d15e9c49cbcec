"""Bad input to ckbn.nn gets a clear error naming the value, and changes nothing."""

import numpy as np
import pytest

import ckbn

X = np.random.default_rng(0).standard_normal((4, 3, 3, 5)).astype(np.float32)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_, np.complex64, object])
def test_non_float_dtypes(dtype):
    x = np.ones((4, 5), dtype=dtype)
    for call in (lambda: ckbn.nn.fused_batch_norm(x, None, None),
                 lambda: ckbn.nn.moments(x, [0]),
                 lambda: ckbn.nn.batch_normalization(x, 0.0, 1.0, None, None, 1e-3),
                 lambda: ckbn.nn.fused_batch_norm_grad(x, x, None, np.zeros(5), np.ones(5))):
        with pytest.raises(TypeError, match="dtype"):
            call()


def test_wrong_scale_shape_names_it():
    with pytest.raises(ValueError, match=r"scale has shape \(4,\); expected \(5,\)"):
        ckbn.nn.fused_batch_norm(X, np.ones(4), None)
    with pytest.raises(ValueError, match=r"offset has shape \(2, 5\)"):
        ckbn.nn.fused_batch_norm(X, None, np.zeros((2, 5)))


@pytest.mark.parametrize("axis,match", [(4, "axis 4 is out of range"), (-5, "axis -5"),
                                        ([1, 1], "duplicate"), ([1, -3], "duplicate"),
                                        (1.0, "int"), ("1", "int"), ([1, None], "ints")])
def test_bad_axis(axis, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ckbn.nn.fused_batch_norm(X, None, None, axis=axis)


@pytest.mark.parametrize("fmt", ["HWCN", "CNHW", "", "NHW", 3])
def test_bad_data_format(fmt):
    with pytest.raises((ValueError, TypeError), match="data_format"):
        ckbn.nn.fused_batch_norm(X, None, None, data_format=fmt)


def test_empty_input():
    with pytest.raises(ValueError, match="empty"):
        ckbn.nn.fused_batch_norm(np.zeros((0, 3), np.float32), None, None)
    with pytest.raises(ValueError, match="empty"):
        ckbn.nn.moments(np.zeros((2, 0, 3)), [0, 1])


def test_rank_and_scalars():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        ckbn.nn.fused_batch_norm(np.ones(5, np.float32), None, None)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        ckbn.nn.fused_batch_norm(3.0, None, None)


def test_lists_are_converted():
    y, m, v = ckbn.nn.fused_batch_norm([[1.0, 2.0], [3.0, 4.0]], None, None, epsilon=0.0)
    np.testing.assert_allclose(m, [2.0, 3.0])
    np.testing.assert_allclose(y, [[-1.0, -1.0], [1.0, 1.0]])


@pytest.mark.parametrize("eps", [-1e-3, float("nan"), float("inf"), "a", None])
def test_bad_epsilon(eps):
    with pytest.raises((ValueError, TypeError), match="epsilon"):
        ckbn.nn.fused_batch_norm(X, None, None, epsilon=eps)


def test_inference_needs_statistics():
    with pytest.raises(ValueError, match="mean and variance are required"):
        ckbn.nn.fused_batch_norm(X, None, None, is_training=False)


def test_is_training_must_be_bool():
    with pytest.raises(TypeError, match="is_training"):
        ckbn.nn.fused_batch_norm(X, None, None, is_training="yes")


def test_grad_dy_shape():
    _, m, v = ckbn.nn.fused_batch_norm(X, None, None)
    with pytest.raises(ValueError, match=r"dy has shape \(4, 3, 3, 4\)"):
        ckbn.nn.fused_batch_norm_grad(X[..., :4], X, None, m, v)


def test_bad_out_leaves_it_unchanged():
    good = np.full(X.shape, 7.0, np.float32)
    cases = [
        (np.empty((4, 3, 3, 4), np.float32), "out has shape"),
        (np.empty(X.shape, np.float64), "out has dtype"),
        (np.empty(X.shape[::-1], np.float32).T, "C-contiguous"),
        ([0.0], "numpy array"),
    ]
    for out, match in cases:
        with pytest.raises((ValueError, TypeError), match=match):
            ckbn.nn.fused_batch_norm(X, None, None, out=out)
    ro = good.copy()
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        ckbn.nn.fused_batch_norm(X, None, None, out=ro)
    np.testing.assert_array_equal(ro, good)
    big = np.zeros((8, 3, 3, 5), np.float32)
    xv = big[:4]
    with pytest.raises(ValueError, match="overlaps"):
        ckbn.nn.fused_batch_norm(xv, None, None, out=big[1:5])


def test_batch_normalization_bad_broadcast():
    with pytest.raises(ValueError, match="do not broadcast"):
        ckbn.nn.batch_normalization(X, np.zeros(4), np.ones(5), None, None, 1e-3)
    with pytest.raises(TypeError, match="mean"):
        ckbn.nn.batch_normalization(X, None, np.ones(5), None, None, 1e-3)
