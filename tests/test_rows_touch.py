"""Reductions over narrow channels-last rows that several register tiles share
(pyx/ckbn/_k_rows.pxi ``_touch_rows``, rows of four tiles or more): each
run of rows (statistics: a quarter of L1d; backward sums: a quarter of L2)
is first read in memory order, then walked tile by tile (the backward sums'
tiles from the first lane on a 64-byte line of x, ``_tile_start``).  Statistics and backward
sums must match float64 NumPy, give the same bits for any thread count, and
not depend on where the input starts (rows that start off a 64-byte
boundary)."""

import numpy as np
import pytest

from ckbn._dispatch import kernels
from tests.twin import compiled_only


def _k():
    k = kernels()
    if not hasattr(k, "bn_stats"):
        pytest.skip("no compiled kernels")
    return k


def _at(a, shift):
    """A copy of the 1-d array ``a`` starting ``shift`` items past a 64-byte
    boundary."""
    item = a.dtype.itemsize
    buf = np.empty(a.size + 64, a.dtype)
    start = (-buf.ctypes.data % 64) // item + shift
    out = buf[start:start + a.size]
    out[:] = a
    return out


# Rows of W = C lanes (C >= MIN_LANES), of four register tiles or more from
# C = 64 (base), 128 (AVX2) or 256 (AVX-512) float32 lanes on (below that the
# same tests check the plain walk), some not a multiple of a tile (96, 100,
# 320: the row loop takes the rest), up to TILE_MAX (512); several units of
# 32 Ki elements, so blocks, pieces and a partial last piece.  On AVX-512,
# contiguous rows of 5 to 16 vectors (float32 W = 80 from C = 40, 80, 96,
# 128, 256; float64 W = 40 to 128) are summed whole in registers instead
# (ckbn_mom_rows_*, ckbn_gs_rows_*).  560 lanes (rows of 2240 bytes, a whole
# number of lines, ALIGN_ROW_MIN or more, not a multiple of a tile): the
# backward sums' tiles start from x's first vector boundary, the lanes before
# it summed by the row loop.  1088 and 1100 lanes: wider than TILE_MAX, the
# tiles path, with rows on and off 64-byte lines (the shifts below, and
# every other row of 1100 lanes).
SHAPES = [(3001, 96), (777, 100), (1500, 128), (1203, 256), (400, 320), (333, 512), (901, 80),
          (640, 40), (300, 560), (70, 1088), (60, 1100)]


def _ref_stats(x, C):
    v = x.astype(np.float64).reshape(-1, C)
    return v.mean(axis=0), v.var(axis=0)


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 2e-6), (np.float64, 1e-12)])
@pytest.mark.parametrize("rows,C", SHAPES)
def test_stats_match_numpy_and_every_thread_count(rows, C, dtype, rtol):
    k = _k()
    rng = np.random.default_rng(rows * 7 + C)
    # per-channel spreads and means
    x = (rng.standard_normal((rows, C)) * rng.uniform(0.5, 3.0, C)
         + rng.uniform(-5, 5, C)).astype(dtype).ravel()
    em, ev = _ref_stats(x, C)
    first = None
    for shift in (0, 1, 3):
        xs = _at(x, shift)
        for nt in (1, 2, 3, 8, 16):
            m, v = np.empty(C), np.empty(C)
            k.bn_stats(xs, 1, 1, rows, C, m, v, nt)
            if first is None:
                first = (m.copy(), v.copy())
                np.testing.assert_allclose(m, em, rtol=rtol, atol=rtol * 10)
                np.testing.assert_allclose(v, ev, rtol=rtol * 10)
            else:
                assert np.array_equal(m, first[0]) and np.array_equal(v, first[1]), (shift, nt)


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 2e-5), (np.float64, 1e-11)])
@pytest.mark.parametrize("rows,C", SHAPES)
def test_backward_sums_match_numpy_and_every_thread_count(rows, C, dtype, rtol):
    k = _k()
    rng = np.random.default_rng(rows * 11 + C)
    x = (rng.standard_normal(rows * C) + 2.0).astype(dtype)
    dy = rng.standard_normal(rows * C).astype(dtype)
    mean = x.astype(np.float64).reshape(-1, C).mean(axis=0)
    d64 = dy.astype(np.float64).reshape(-1, C)
    es = d64.sum(axis=0)
    ex = (d64 * (x.astype(np.float64).reshape(-1, C) - mean)).sum(axis=0)
    scale = np.abs(d64).sum(axis=0)           # the size of the terms summed
    first = None
    # the tiles start at x's first 64-byte line (dy's lines may lie elsewhere)
    for sx, sd in ((0, 0), (2, 2), (3, 1)):
        xs, ds = _at(x, sx), _at(dy, sd)
        for nt in (1, 2, 5, 16):
            s1, s2 = np.empty(C), np.empty(C)
            k.bn_grad_sums(ds, xs, 1, 1, rows, C, mean, s1, s2, nt)
            if first is None:
                first = (s1.copy(), s2.copy())
                assert np.all(np.abs(s1 - es) <= rtol * scale)
                assert np.all(np.abs(s2 - ex) <= rtol * scale * 4)
            else:
                assert np.array_equal(s1, first[0]) and np.array_equal(s2, first[1]), (sx, sd, nt)


def test_stats_keep_their_accuracy_far_from_zero():
    """|mean|/std = 1e4 on rows of 256 channels: the shifted sums keep the
    variance's relative error within 1e-5 (float32 data)."""
    k = _k()
    rows, C = 2000, 256
    rng = np.random.default_rng(5)
    x = (1e4 + rng.standard_normal((rows, C))).astype(np.float32).ravel()
    em, ev = _ref_stats(x, C)
    m, v = np.empty(C), np.empty(C)
    k.bn_stats(x, 1, 1, rows, C, m, v, 2)
    np.testing.assert_allclose(v, ev, rtol=1e-5)
    np.testing.assert_allclose(m, em, rtol=1e-7)


@compiled_only("has no tuning: the touch budget is the compiled kernels'")
def test_tuning_names_the_touch_budget():
    t = _k().tuning()
    assert t["touch_bytes"] == t["L1d"] // 4
    assert t["touch_bytes_sums"] == t["L2"] // 4
    assert t["touch_tiles"] == 4
