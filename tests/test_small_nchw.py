"""The compiled small backward on channels-first data with small planes
(pyx/ckbn/_k_small.pxi ``_small_bwd_cf``): dx, dscale and doffset against
float64 NumPy, bit for bit the general path's, and every call that is not the
common case still taken by the general path, with its results and errors."""

import numpy as np
import pytest

import ckbn
from ckbn import _ops
from ckbn._dispatch import kernels
from ckbn._layout import make_layout
from tests.test_ew_rows import _out_at

EPS = 1e-3

# NCHW shapes under PARALLEL_MIN elements whose planes (2..256 elements) take
# the compiled channels-first pass: one block of all channels (8x8, 7x7), planes
# not a multiple of the register tile (3x5, 7x7), more than BLOCK samples (a
# float64 flush inside the batch), several blocks of channels (4x200x3x3:
# 1800 lanes; 2x64x16x16: 16384 lanes, 8 channels a block), the smallest
# planes and channel count, and planes of every power of two the register
# fold takes (ckbn_fold_f32: 8 to 256 elements; 16x16 and 8x8 above), each
# with eight channels at a time (AVX-512) and with channels left over.
SHAPES = [(16, 32, 8, 8), (16, 32, 7, 7), (100, 3, 3, 5), (70, 4, 2, 3),
          (4, 200, 3, 3), (2, 64, 16, 16), (3, 2, 16, 16), (1, 5, 2, 1), (5, 2, 1, 2),
          (8, 6, 2, 4), (16, 7, 4, 4), (5, 9, 4, 8), (3, 10, 8, 16),
          (6, 12, 2, 4), (4, 9, 4, 4)]


@pytest.fixture(scope="module")
def k():
    mod = kernels()
    if not hasattr(mod, "common_backward_path"):
        pytest.skip("the NumPy twin has no compiled entries")
    return mod


def _args(shape, seed=0):
    rng = np.random.default_rng(seed)
    x = (4.0 + 3.0 * rng.standard_normal(shape)).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    scale = rng.uniform(0.5, 2.0, shape[1]).astype(np.float32)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(0, 2, 3)).astype(np.float32)
    var = x64.var(axis=(0, 2, 3)).astype(np.float32)
    return x, dy, scale, mean, var


def _reference(x, dy, scale, mean, var, training):
    """float64 gradients of batch normalization over axes (0, 2, 3), with the
    statistics given (float32 values, as the forward returned them)."""
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    b = (1, -1, 1, 1)
    m = mean.astype(np.float64).reshape(b)
    inv = 1.0 / np.sqrt(var.astype(np.float64).reshape(b) + EPS)
    g = scale.astype(np.float64).reshape(b)
    xhat = (x64 - m) * inv
    doffset = dy64.sum(axis=(0, 2, 3))
    dscale = (dy64 * xhat).sum(axis=(0, 2, 3))
    if not training:
        return dy64 * g * inv, dscale, doffset
    n = x.size // x.shape[1]
    # sum(dy * (x - m)) with m the given mean, as the kernels use it
    dx = g * inv * (dy64 - doffset.reshape(b) / n - xhat * dscale.reshape(b) / n)
    return dx, dscale, doffset


def _general(x, dy, scale, mean, var, training):
    layout = make_layout(x.shape, (1,))
    dx, ds, do = _ops.backward(dy, x, layout, scale.astype(np.float64),
                               mean.astype(np.float64), var.astype(np.float64), EPS,
                               training)
    return dx, ds.astype(np.float32), do.astype(np.float32)


@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_take_the_compiled_channels_first_pass(k, shape):
    n, c, h, w = shape
    assert k.common_backward_path(n, c, h * w, 1) == "channels-first blocks"
    # the general path reads the same inputs as channels-first lane chunks
    assert k.reduction_path(n, c, h * w, 1) == "chunks-lanes"


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_float64_and_the_general_path_bit_for_bit(k, shape, training):
    x, dy, scale, mean, var = _args(shape, seed=shape[0] + shape[1])
    r = k.common_backward(dy, x, scale, mean, var, EPS, "NCHW", training, None, None, 1)
    assert r is not None
    dx, ds, do = r
    assert dx.dtype == ds.dtype == do.dtype == np.float32
    assert dx.shape == x.shape and ds.shape == do.shape == (shape[1],)
    dx64, ds64, do64 = _reference(x, dy, scale, mean, var, training)
    np.testing.assert_allclose(do, do64, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ds, ds64, rtol=1e-5, atol=1e-4)
    # dx cancels terms of the size of dy * scale * inv (2-element channels):
    # float32 error relative to that size
    big = np.abs(dy * scale.reshape(1, -1, 1, 1)).max() / np.sqrt(var.min() + EPS)
    np.testing.assert_allclose(dx, dx64, rtol=1e-4, atol=1e-5 * big)
    for a, b in zip(r, _general(x, dy, scale, mean, var, training)):
        np.testing.assert_array_equal(a, b)
    # ckbn.nn takes the entry: the same arrays
    rn = ckbn.nn.fused_batch_norm_grad(dy, x, scale, mean, var, EPS, "NCHW", training)
    for a, b in zip(r, rn):
        np.testing.assert_array_equal(a, b)


# Shapes for the branches of _small_bwd_cf's sums and blocks: P a multiple of
# BLOCK (64, 128: flushes inside the batch and the extra flush after it), P over
# BLOCK and not a multiple (130), planes of LANE_PLANE_MAX elements (16x16: 8
# channels a block) with G not a multiple of the block (11 = 8 + 3), 7x8 planes
# (36 channels a block, 37 = 36 + 1), the smallest plane (2 elements) with P
# over ROW_GROUP.
BRANCH_SHAPES = [(64, 3, 2, 2), (128, 2, 1, 3), (130, 3, 1, 2), (3, 11, 16, 16),
                 (2, 37, 7, 8), (9, 5, 1, 2), (1, 2, 16, 16)]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", BRANCH_SHAPES)
def test_branches_match_float64_and_the_general_path(k, shape, training):
    n, c, h, w = shape
    assert k.common_backward_path(n, c, h * w, 1) == "channels-first blocks"
    x, dy, scale, mean, var = _args(shape, seed=7 * n + c)
    # the batch statistics shifted: sums of dy * (x - mean) with a mean that
    # is not x's (the forward's of another batch), as the kernels take it
    mean = (mean + np.float32(0.25)).astype(np.float32)
    r = k.common_backward(dy, x, scale, mean, var, EPS, "NCHW", training, None, None, 1)
    dx64, ds64, do64 = _reference(x, dy, scale, mean, var, training)
    np.testing.assert_allclose(r[2], do64, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(r[1], ds64, rtol=1e-5, atol=1e-4)
    big = np.abs(dy * scale.reshape(1, -1, 1, 1)).max() / np.sqrt(var.min() + EPS)
    np.testing.assert_allclose(r[0], dx64, rtol=1e-4, atol=1e-5 * big)
    for a, b in zip(r, _general(x, dy, scale, mean, var, training)):
        np.testing.assert_array_equal(a, b)


def _placed(a, offset):
    """A copy of a whose data starts offset bytes past a 64-byte boundary."""
    out = _out_at(a.size, offset // a.itemsize, a.dtype).reshape(a.shape)
    out[...] = a
    return out


@pytest.mark.parametrize("shape", [(16, 32, 8, 8), (16, 32, 7, 7), (4, 200, 3, 3),
                                   (130, 3, 1, 2), (3, 11, 16, 16)])
def test_same_bits_wherever_the_data_starts(k, shape):
    """The register tiles start at x's first 64-byte line of each block of
    channels, the lanes before it summed on their own: the sums, hence dx,
    dscale and doffset, are the same bits for x and dy at any 4-byte offset
    within a line (each at its own), and the general path's."""
    x, dy, scale, mean, var = _args(shape, seed=3)
    mean = (mean + np.float32(0.25)).astype(np.float32)
    want = _general(x, dy, scale, mean, var, True)
    for ox, od in [(0, 0), (4, 4), (16, 16), (28, 28), (60, 60), (4, 36), (32, 0), (0, 52)]:
        xo, dyo = _placed(x, ox), _placed(dy, od)
        r = k.common_backward(dyo, xo, scale, mean, var, EPS, "NCHW", True, None, None, 1)
        for a, b in zip(r, want):
            np.testing.assert_array_equal(a, b, err_msg=f"x at +{ox}, dy at +{od}")


@pytest.mark.parametrize("shape", [(16, 32, 8, 8), (64, 3, 2, 2), (3, 11, 16, 16)])
def test_signed_zeros_as_the_general_path(k, shape):
    """dy of negative zeros: the sums start from +0.0 (block sums and float64
    sums), so doffset is +0.0 as on the general path, bit for bit."""
    x, _, scale, mean, var = _args(shape)
    dy = np.full(shape, -0.0, np.float32)
    r = k.common_backward(dy, x, scale, mean, var, EPS, "NCHW", True, None, None, 1)
    g = _general(x, dy, scale, mean, var, True)
    for a, b in zip(r, g):
        assert a.tobytes() == b.tobytes()
    assert not np.signbit(r[2]).any() and (r[2] == 0).all()


def test_scale_none_nan_and_repeated_calls(k):
    x, dy, _, mean, var = _args((16, 32, 8, 8))
    ones = np.ones(32, np.float32)
    a = k.common_backward(dy, x, None, mean, var, EPS, "NCHW", True, None, None, 1)
    b = k.common_backward(dy, x, ones, mean, var, EPS, "NCHW", True, None, None, 1)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    x2 = x.copy()
    x2[3, 5, 2, 2] = np.nan
    dx, ds, do = k.common_backward(dy, x2, ones, mean, var, EPS, "NCHW", True, None, None, 1)
    assert np.isnan(dx[:, 5]).all() and np.isnan(ds[5])
    assert np.isfinite(np.delete(dx, 5, axis=1)).all() and np.isfinite(do).all()
    # a second call on the same inputs gives the same bits (no state kept)
    for u, v in zip(a, k.common_backward(dy, x, None, mean, var, EPS, "NCHW", True, None, None,
                                         1)):
        np.testing.assert_array_equal(u, v)


def test_other_shapes_keep_the_general_kernels(k):
    assert k.common_backward_path(16, 1, 64, 1) == "general"      # one channel
    assert k.common_backward_path(16, 32, 1, 1) == "general"      # 1x1 planes
    assert k.common_backward_path(2, 4, 257, 1) == "general"      # planes > 256
    assert k.common_backward_path(1, 1, 1024, 32) == "general"    # channels last
    for shape, fmt in [((2, 4, 20, 20), "NCHW"), ((16, 8, 8, 32), "NHWC"),
                       ((64, 1, 4, 4), "NCHW")]:
        x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
        dy = np.ones_like(x)
        c = shape[1] if fmt == "NCHW" else shape[-1]
        s = np.ones(c, np.float32)
        axis = 1 if fmt == "NCHW" else 3
        red = tuple(i for i in range(4) if i != axis)
        m = x.mean(axis=red, dtype=np.float64).astype(np.float32)
        v = x.var(axis=red, dtype=np.float64).astype(np.float32)
        dx, ds, do = k.common_backward(dy, x, s, m, v, EPS, fmt, True, None, None, 1)
        layout = make_layout(x.shape, (axis,))
        dxg, dsg, dog = _ops.backward(dy, x, layout, s.astype(np.float64),
                                      m.astype(np.float64), v.astype(np.float64), EPS, True)
        np.testing.assert_array_equal(dx, dxg)
        np.testing.assert_array_equal(do, dog.astype(np.float32))
        np.testing.assert_array_equal(do, np.float32(x.size // c))   # sum(dy), dy = 1


def test_calls_that_are_not_the_common_case_take_the_general_path(k):
    x, dy, scale, mean, var = _args((16, 32, 8, 8))
    ref = k.common_backward(dy, x, scale, mean, var, EPS, "NCHW", True, None, None, 1)
    # a non-contiguous x, float64 statistics, a float64 scale, a list, an int
    # epsilon, a non-bool is_training: the entry declines ...
    xt = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    assert not xt.flags.c_contiguous and np.array_equal(xt, x)
    declined = [
        (dy, xt, scale, mean, var, EPS, "NCHW", True),
        (dy, x, scale, mean.astype(np.float64), var, EPS, "NCHW", True),
        (dy, x, scale.astype(np.float64), mean, var, EPS, "NCHW", True),
        (dy, x, list(scale), mean, var, EPS, "NCHW", True),
        (dy, x, scale, mean, var, EPS, "NCHW", 1),
        (dy, x, scale, mean, var, np.float32(EPS), "NCHW", True),
    ]
    for args in declined:
        assert k.common_backward(*args, None, None, 1) is None
        # ... and ckbn.nn's general path gives the same gradients (float64
        # statistics and scales are the float32 values widened)
        got = ckbn.nn.fused_batch_norm_grad(*args)
        want = ref if args[5] is EPS else k.common_backward(
            dy, x, scale, mean, var, float(np.float32(EPS)), "NCHW", True, None, None, 1)
        for a, b in zip(got, want):
            assert a.dtype == np.float32
            np.testing.assert_array_equal(a, b)
    # an int epsilon: declined, the general path's value
    assert k.common_backward(dy, x, scale, mean, var, 1, "NCHW", True, None, None, 1) is None
    for a, b in zip(ckbn.nn.fused_batch_norm_grad(dy, x, scale, mean, var, 1, "NCHW"),
                    k.common_backward(dy, x, scale, mean, var, 1.0, "NCHW", True, None, None,
                                      1)):
        np.testing.assert_array_equal(a, b)
    # a float64 x goes the general way, in float64, against the reference
    x64 = x.astype(np.float64)
    assert k.common_backward(dy.astype(np.float64), x64, scale, mean, var, EPS, "NCHW",
                             True, None, None, 1) is None
    dx, ds, do = ckbn.nn.fused_batch_norm_grad(dy.astype(np.float64), x64, scale, mean, var,
                                               EPS, "NCHW")
    assert dx.dtype == np.float64
    dx64, ds64, do64 = _reference(x, dy, scale, mean, var, True)
    np.testing.assert_allclose(dx, dx64, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ds, ds64, rtol=1e-9)


def test_errors_of_the_general_path(k):
    x, dy, scale, mean, var = _args((16, 32, 8, 8))
    before = [a.copy() for a in (x, dy, scale, mean, var)]
    with pytest.raises(ValueError, match=r"dy has shape \(8, 32, 8, 8\)"):
        ckbn.nn.fused_batch_norm_grad(dy[:8], x, scale, mean, var, EPS, "NCHW")
    with pytest.raises(ValueError, match="epsilon"):
        ckbn.nn.fused_batch_norm_grad(dy, x, scale, mean, var, -1.0, "NCHW")
    with pytest.raises(ValueError, match=r"scale has shape \(31,\)"):
        ckbn.nn.fused_batch_norm_grad(dy, x, scale[:31], mean, var, EPS, "NCHW")
    with pytest.raises(TypeError, match="batch_mean and batch_var"):
        ckbn.nn.fused_batch_norm_grad(dy, x, scale, None, var, EPS, "NCHW")
    with pytest.raises(TypeError, match="is_training"):
        ckbn.nn.fused_batch_norm_grad(dy, x, scale, mean, var, EPS, "NCHW", "yes")
    with pytest.raises(TypeError):
        ckbn.nn.fused_batch_norm_grad(dy, x.astype(np.int32), scale, mean, var, EPS, "NCHW")
    for a, b in zip((x, dy, scale, mean, var), before):
        np.testing.assert_array_equal(a, b)
