"""The coefficient formulas of ``ckbn._coefs`` (used by the layer, ``ckbn.nn``,
``ckbn.distributed`` and ``keras_plugin``'s synchronized layer) against float64
NumPy written out here: the normalization, and dx by finite differences."""

import numpy as np
import pytest

from ckbn import _coefs, distributed


def _bn(x, gamma, beta, eps, r=None, d=None):
    mean, var = x.mean(0), x.var(0)
    xhat = (x - mean) / np.sqrt(var + eps)
    if r is not None:
        xhat = xhat * r + d
    return xhat * gamma + beta


@pytest.mark.parametrize("renorm", [False, True])
def test_forward_coefficients(renorm):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 5)) * 2 + 3
    g, b = rng.random(5) + 0.5, rng.standard_normal(5)
    r, d = (rng.random(5) + 0.5, rng.standard_normal(5) * 0.1) if renorm else (None, None)
    a, c = _coefs.forward(x.mean(0), x.var(0), 1e-3, g, b, r, d)
    np.testing.assert_allclose(x * a + c, _bn(x, g, b, 1e-3, r, d), rtol=1e-12, atol=1e-12)
    a, c = _coefs.forward(x.mean(0), x.var(0), 1e-3)              # scale 1, offset 0
    np.testing.assert_allclose(x * a + c, _bn(x, 1.0, 0.0, 1e-3), rtol=1e-12, atol=1e-12)


def test_backward_coefficients_match_finite_differences():
    rng = np.random.default_rng(1)
    n, c, eps = 7, 3, 1e-3
    x = rng.standard_normal((n, c)) + 1
    g, b = rng.random(c) + 0.5, rng.standard_normal(c)
    dy = rng.standard_normal((n, c))
    mean, var = x.mean(0), x.var(0)
    xhat = (x - mean) / np.sqrt(var + eps)
    k1, k2, k3 = distributed.grad_coefficients(g, mean, var, eps, n, dy.sum(0),
                                               (dy * xhat).sum(0))
    dx = dy * k1 + x * k2 + k3
    h = 1e-6
    num = np.empty_like(x)
    for i in range(n):
        for j in range(c):
            xp, xm = x.copy(), x.copy()
            xp[i, j] += h
            xm[i, j] -= h
            num[i, j] = ((_bn(xp, g, b, eps) * dy).sum() - (_bn(xm, g, b, eps) * dy).sum()) / (
                2 * h)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)


def test_gamma_grad():
    s, t = np.array([1.0, 2.0]), np.array([3.0, 5.0])
    np.testing.assert_array_equal(_coefs.gamma_grad(s, t), s)
    r, d = np.array([2.0, 0.5]), np.array([0.1, -1.0])
    np.testing.assert_allclose(_coefs.gamma_grad(s, t, r, d), r * s + d * t)
    a, c = np.array([1.5, 1.0]), np.array([0.0, 2.0])
    np.testing.assert_allclose(_coefs.gamma_grad(s, t, r, d, a, c), a * (r * s + d * t) + c * t)
