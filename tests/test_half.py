"""float16: the F16C conversion kernels and the kernels' float16 passes."""

import importlib

import numpy as np
import pytest

import ckbn
from ckbn._dispatch import available_kernels

F16C_VARIANTS = [v for v in available_kernels()
                 if importlib.import_module(f"ckbn._kernels_{v}").f16c_enabled()]
needs_f16c = pytest.mark.skipif(not F16C_VARIANTS, reason="no kernel variant with F16C here")


def _special_floats(n, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * 3000).astype(np.float32)
    x[: n // 4] *= np.float32(1e-6)          # float16 subnormals and zeros
    half = np.float32(2.0 ** -25)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, 65519.0, 65520.0,
                         -65520.0, 1e9, half, 3 * half, 2.0 ** -24, 1.0 + 2.0 ** -11,
                         1.0 + 3 * 2.0 ** -11, 2049.0, 2051.0], dtype=np.float32)
    x[1: 1 + specials.size] = specials
    return x


@needs_f16c
@pytest.mark.parametrize("variant", F16C_VARIANTS)
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 100003])
def test_f32_to_f16_rounds_like_numpy(variant, n):
    k = importlib.import_module(f"ckbn._kernels_{variant}")
    x = _special_floats(max(n, 64))[:n]
    out = np.empty(n, np.uint16)
    k.f32_to_f16(x, out, 2)
    with np.errstate(over="ignore"):
        ref = x.astype(np.float16)
    got = out.view(np.float16)
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    ok = ~np.isnan(ref)
    # Bit for bit (signed zeros and ties to even included), NaN payloads aside.
    assert np.array_equal(got[ok].view(np.uint16), ref[ok].view(np.uint16))


@needs_f16c
@pytest.mark.parametrize("variant", F16C_VARIANTS)
def test_f16_to_f32_is_exact(variant):
    k = importlib.import_module(f"ckbn._kernels_{variant}")
    bits = np.arange(65536, dtype=np.uint16)          # every float16 value
    out = np.empty(bits.size, np.float32)
    k.f16_to_f32(bits, out, 2)
    ref = bits.view(np.float16).astype(np.float32)
    assert np.array_equal(np.isnan(out), np.isnan(ref))
    ok = ~np.isnan(ref)
    assert np.array_equal(out[ok].view(np.uint32), ref[ok].view(np.uint32))


@needs_f16c
def test_conversion_size_mismatch_is_an_error():
    k = importlib.import_module(f"ckbn._kernels_{F16C_VARIANTS[0]}")
    with pytest.raises(ValueError, match="sizes differ"):
        k.f16_to_f32(np.zeros(4, np.uint16), np.zeros(5, np.float32), 1)
    with pytest.raises(ValueError, match="sizes differ"):
        k.f32_to_f16(np.zeros(4, np.float32), np.zeros(3, np.uint16), 1)


def test_base_kernels_report_no_f16c():
    k = importlib.import_module("ckbn._kernels_base")
    if k.f16c_enabled():
        pytest.skip("the base variant was built with F16C")
    with pytest.raises(RuntimeError, match="F16C"):
        k.f16_to_f32(np.zeros(4, np.uint16), np.zeros(4, np.float32), 1)


# Shapes of many slices (64 Ki elements), of one row of P per slice (NCHW
# images of 192 000 values), and one short of a slice.
CASES = [((40, 30, 30, 48), "NHWC"), ((6, 8, 150, 160), "NCHW"), ((2100, 600), "NC"),
         ((7, 9, 1000), "NC"), ((3, 65535), "NC")]


def _ref_forward(x, axes, scale, offset, eps):
    xd = x.astype(np.float64)
    red = tuple(i for i in range(x.ndim) if i not in axes)
    m = xd.mean(axis=red, keepdims=True)
    v = ((xd - m) ** 2).mean(axis=red, keepdims=True)
    ks = m.shape
    y = (xd - m) / np.sqrt(v + eps) * scale.reshape(ks) + offset.reshape(ks)
    return y, m.reshape(-1), v.reshape(-1), red, ks


@pytest.mark.parametrize("shape,fmt", CASES)
def test_float16_forward_and_gradients_against_float64(shape, fmt):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(shape) * 2 + 5).astype(np.float16)
    axes = (x.ndim - 1,) if fmt != "NCHW" else (1,)
    c = shape[axes[0]]
    scale = rng.uniform(0.5, 2.0, c).astype(np.float16)
    offset = rng.standard_normal(c).astype(np.float16)
    y, m, v = ckbn.nn.fused_batch_norm(x, scale, offset, data_format=fmt)
    yr, mr, vr, red, ks = _ref_forward(x, axes, scale.astype(np.float64),
                                       offset.astype(np.float64), 1e-3)
    assert y.dtype == np.float16 and m.dtype == np.float32
    np.testing.assert_allclose(m, mr, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(v, vr, rtol=1e-4)
    np.testing.assert_allclose(y.astype(np.float64), yr, atol=1e-2, rtol=1e-2)

    dy = np.cos(np.arange(x.size, dtype=np.float64)).reshape(shape).astype(np.float16)
    dx, ds, do = ckbn.nn.fused_batch_norm_grad(dy, x, scale, m, v, data_format=fmt)
    dyd = dy.astype(np.float64)
    xhat = (x.astype(np.float64) - mr.reshape(ks)) / np.sqrt(vr.reshape(ks) + 1e-3)
    n = x.size / c
    dor = dyd.sum(axis=red)
    dsr = (dyd * xhat).sum(axis=red)
    dxr = (scale.astype(np.float64).reshape(ks) / np.sqrt(vr.reshape(ks) + 1e-3)
           * (dyd - dor.reshape(ks) / n - xhat * dsr.reshape(ks) / n))
    np.testing.assert_allclose(do, dor, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(ds, dsr, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(dx.astype(np.float64), dxr, atol=2e-3, rtol=1e-2)

    # Inference, with out=.
    out = np.empty_like(x)
    yi, _, _ = ckbn.nn.fused_batch_norm(x, scale, offset, mr, vr, data_format=fmt,
                                        is_training=False, out=out)
    assert yi is out
    np.testing.assert_allclose(out.astype(np.float64), yr, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("shape,fmt", CASES[:2])
def test_float16_results_do_not_depend_on_threads(shape, fmt):
    x = (np.random.default_rng(4).standard_normal(shape) * 3 + 1).astype(np.float16)
    dy = np.sin(x)
    results = []
    for n in (1, 2, 5):
        with ckbn.num_threads(n):
            y, m, v = ckbn.nn.fused_batch_norm(x, None, None, data_format=fmt)
            g = ckbn.nn.fused_batch_norm_grad(dy, x, None, m, v, data_format=fmt)
            results.append((y, m, v) + tuple(g))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert a.tobytes() == b.tobytes()


def test_float16_layer_matches_float32_layer():
    x = (np.random.default_rng(5).standard_normal((8, 140, 140, 8)) + 2).astype(np.float16)
    bn16 = ckbn.BatchNormalization(dtype="float16")
    bn32 = ckbn.BatchNormalization()
    with ckbn.eager_mode():
        y16 = bn16(x, training=True)
        y32 = bn32(x.astype(np.float32), training=True)
        dx16, g16 = bn16.backward(np.ones_like(x))
        dx32, g32 = bn32.backward(np.ones_like(x, dtype=np.float32))
    np.testing.assert_allclose(y16.astype(np.float32), y32, atol=1e-2)
    np.testing.assert_allclose(bn16.moving_mean.numpy(), bn32.moving_mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(bn16.moving_variance.numpy(), bn32.moving_variance.numpy(),
                               rtol=1e-5)
    np.testing.assert_allclose(dx16.astype(np.float32), dx32, atol=1e-2)
    for a, b in zip(g16, g32):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-2)
