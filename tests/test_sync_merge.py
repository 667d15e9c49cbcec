"""The ordered Chan merge of ``ckbn.distributed`` with three or more non-empty rows.

With two non-empty rows both merge orders give the same bits, so a merge that
ran in reverse rank order passed every earlier test.  Here the rows are
chosen so that the order shows in the last bits, and the merge is compared,
bit for bit, with the rank-order fold written out below (Chan, Golub and
LeVeque's pairwise update), independently of ckbn's code.
"""

import numpy as np
import pytest

from ckbn import distributed


def _fold(counts, means, m2s, order):
    """Chan's update applied to the rows in ``order``; (n, mean, M2)."""
    n, mean, m2 = 0.0, None, None
    for i in order:
        nb, mb, qb = float(counts[i]), means[i], m2s[i]
        if nb == 0:
            continue
        if mean is None:
            n, mean, m2 = nb, mb.copy(), qb.copy()
            continue
        tot = n + nb
        delta = mb - mean
        mean = mean + delta * (nb / tot)
        m2 = m2 + qb + delta * delta * (n * nb / tot)
        n = tot
    return n, mean, m2


def _rows(counts, c=16, seed=0):
    rng = np.random.default_rng(seed)
    k = len(counts)
    means = rng.standard_normal((k, c)) * 3 + 1000.0
    m2s = rng.random((k, c)) * 50 * np.asarray(counts, float)[:, None]
    for i, n in enumerate(counts):
        if n == 0:
            means[i] = m2s[i] = 0
    return means, m2s


@pytest.mark.parametrize("counts", [[5, 3, 7], [5, 0, 3, 2], [1, 9, 4, 6, 3, 8, 2, 7]])
def test_merge_is_the_rank_order_fold(counts):
    means, m2s = _rows(counts)
    fwd = _fold(counts, means, m2s, range(len(counts)))
    rev = _fold(counts, means, m2s, reversed(range(len(counts))))
    # The data tell the orders apart (else this test could not fail).
    assert not (np.array_equal(fwd[1], rev[1]) and np.array_equal(fwd[2], rev[2]))
    n, mean, var = distributed.merge(counts, means, m2s)
    assert n == fwd[0] == sum(counts)
    np.testing.assert_array_equal(mean, fwd[1])
    np.testing.assert_array_equal(var, fwd[2] / fwd[0])
    # Agrees with the two-pass statistics of the concatenated rows (float64).
    np.testing.assert_allclose(var * n, rev[2], rtol=1e-12)


@pytest.mark.parametrize("counts", [[5, 3, 7], [4, 0, 6, 2, 3]])
def test_packed_merge_in_rank_order(counts):
    """The MPI merge all-reduce's operation, applied left to right (rank order),
    gives the rank-order fold's bits."""
    c = 16
    means, m2s = _rows(counts, c, seed=1)
    packed = []
    for n, m, q in zip(counts, means, m2s):
        v = np.zeros(7 + 2 * c)
        v[6], v[7:7 + c], v[7 + c:] = n, m, q
        v[1:6] = [1, 2, 3, 2, c]
        packed.append(distributed._pack_reduce(v, c))
    acc = packed[0].copy()
    for p in packed[1:]:
        b = p.copy()
        distributed._merge_packed(acc, b, c)       # b <- acc (merge) b, acc from lower ranks
        acc = b
    n, mean, m2 = _fold(counts, means, m2s, range(len(counts)))
    assert acc[11] == n
    np.testing.assert_array_equal(acc[12:12 + c], mean)
    np.testing.assert_array_equal(acc[12 + c:], m2)
