"""The backward sums through a piecewise-linear activation, on every variant.

``sum(e)`` and ``sum(e * (x - mean))`` with ``e = dy * act'(z)`` run in
register tiles (four vectors of lanes), then single vectors, then a row loop
for the last lanes.  The row widths below give each of the three parts on the
base (4 float32 lanes a vector), AVX2 (8) and AVX-512 (16) variants, in rows
of whole channels (channels last) and rows longer than the tile limit.  The
reference is float64 NumPy; the sums must not depend on the thread count.
"""

import numpy as np
import pytest

from ckbn._dispatch import available_kernels, use_kernels

# (slope, hi): relu, relu6, leaky ReLU
ACTS = {"relu": (0.0, np.inf), "relu6": (0.0, 6.0), "leaky_relu": (0.1, np.inf)}
# channels, on AVX-512: rows of 5 to 16 vectors summed whole in registers
# (ckbn_gs_act_rows_*: float32 80, 128, 256; float64 40, 64, 128), whole tiles
# only (float32 64), tiles + vectors + a tail (100, 600, 1100), vectors + a
# tail (float32 40), a tail only (3, 13); below AVX-512 every width but the
# tails takes the tiles and vectors.
WIDTHS = [3, 13, 40, 64, 80, 100, 128, 256, 600, 1100]


def _reference(dy, x, za, zb, mean, slope, hi):
    """float64 sums, with z = x * za + zb as the kernels form it."""
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    z = x64 * za.astype(np.float64) + zb.astype(np.float64)
    m = np.where(z > 0, (z < hi).astype(np.float64), slope)
    e = dy64 * m
    return e.sum(axis=0), (e * (x64 - mean)).sum(axis=0), z


def _draw(rng, rows, c, dtype, slope, hi, eps):
    """Inputs and the activation's coefficients za = scale * inv,
    zb = offset - mean * scale * inv (in the data type, as the layer passes
    them), with dy = 0 wherever z lies within 1e-3 of a kink (where the data
    type's rounding of z could flip the mask)."""
    scale = rng.uniform(3.0, 5.0, c)
    offset = rng.uniform(-1.0, 1.0, c)
    mean = rng.uniform(-0.5, 0.5, c)
    inv = 1.0 / np.sqrt(rng.uniform(0.5, 2.0, c) + eps)
    za = (scale * inv).astype(dtype)
    zb = (offset - mean * scale * inv).astype(dtype)
    x = (rng.standard_normal((rows, c)) * 1.5 + 0.3).astype(dtype)
    dy = rng.standard_normal((rows, c)).astype(dtype)
    z = _reference(dy, x, za, zb, mean, slope, hi)[2]
    near = np.abs(z) < 1e-3
    if np.isfinite(hi):
        near |= np.abs(z - hi) < 1e-3
    dy[near] = 0
    return x, dy, za, zb, mean


def _check(results, s1_ref, s2_ref, dtype, n, msg):
    """The first thread count's sums against float64 (n values a channel),
    every other thread count's bit for bit against the first."""
    tol = 1e-9 if dtype == np.float64 else 2e-4
    np.testing.assert_allclose(results[0][0], s1_ref, rtol=tol, atol=tol * n, err_msg=msg)
    np.testing.assert_allclose(results[0][1], s2_ref, rtol=tol, atol=tol * n, err_msg=msg)
    for s1, s2 in results[1:]:
        np.testing.assert_array_equal(s1, results[0][0])
        np.testing.assert_array_equal(s2, results[0][1])


@pytest.mark.parametrize("variant", available_kernels())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(ACTS))
def test_activation_sums_match_float64_and_every_thread_count(variant, dtype, name):
    slope, hi = ACTS[name]
    eps = 1e-3
    rng = np.random.default_rng(len(name) * 7 + np.dtype(dtype).itemsize)
    with use_kernels(variant) as k:
        for c in WIDTHS:
            rows = 150          # more than a block of rows (64)
            x, dy, za, zb, mean = _draw(rng, rows, c, dtype, slope, hi, eps)
            s1_ref, s2_ref, _ = _reference(dy, x, za, zb, mean, slope, hi)
            results = []
            for threads in (1, 2, 3):
                s1 = np.empty(c)
                s2 = np.empty(c)
                k.bn_grad_sums(dy.ravel(), x.ravel(), rows, 1, 1, c, mean, s1, s2, threads,
                               za=za, zb=zb, act=True, slope=slope, hi=hi)
                results.append((s1, s2))
            _check(results, s1_ref, s2_ref, dtype, rows, f"{variant} C={c}")


# Channels-first planes (P, G, R) on the planes path: planes of whole vectors
# (64), whole vectors and a tail (72, 81) and of more than a float64 flush of
# vectors (3660) on every variant.
PLANES = [(16, 64, 64), (37, 64, 72), (300, 3, 81), (3, 40, 3660)]


@pytest.mark.parametrize("variant", available_kernels())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(ACTS))
def test_planes_activation_sums_match_float64_and_every_thread_count(variant, dtype, name):
    slope, hi = ACTS[name]
    rng = np.random.default_rng(len(name) * 11 + np.dtype(dtype).itemsize)
    with use_kernels(variant) as k:
        for p, g, r in PLANES:
            assert k.reduction_path(p, g, r, 1) == "planes"
            # _draw's (rows, channels) layout, moved to (P, G, R)
            x, dy, za, zb, mean = _draw(rng, p * r, g, dtype, slope, hi, 1e-3)
            x = np.ascontiguousarray(x.reshape(p, r, g).transpose(0, 2, 1))
            dy = np.ascontiguousarray(dy.reshape(p, r, g).transpose(0, 2, 1))
            x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
            z = x64 * za.astype(np.float64)[:, None] + zb.astype(np.float64)[:, None]
            e = dy64 * np.where(z > 0, (z < hi).astype(np.float64), slope)
            s1_ref = e.sum(axis=(0, 2))
            s2_ref = (e * (x64 - mean[:, None])).sum(axis=(0, 2))
            results = []
            for threads in (1, 2, 3):
                s1 = np.empty(g)
                s2 = np.empty(g)
                k.bn_grad_sums(dy.ravel(), x.ravel(), p, g, r, 1, mean, s1, s2, threads,
                               za=za, zb=zb, act=True, slope=slope, hi=hi)
                results.append((s1, s2))
            _check(results, s1_ref, s2_ref, dtype, p * r, f"{variant} {p}x{g}x{r}")
