"""NumPy twin of the compiled kernels (same signatures, same arithmetic order
of the per-channel coefficients), used by the tests as an independent check and
selectable with ``CKBN_KERNELS=numpy`` for debugging.

Arrays are flat and C-contiguous in the ``(P, G, R, C)`` layout; per-channel
arrays have ``G * C`` entries.
"""

import functools

import numpy as np

# Same threshold as the compiled kernels (no effect here: NumPy is serial).
PARALLEL_MIN_ELEMENTS = 65536


def _quiet(fn):
    """Kernels do not warn: NaN and Inf propagate silently, as in the compiled ones."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)
    return wrapper


def _view(x, P, G, R, C):
    return x.reshape(P, G, R, C)


# Activation kinds, as in the compiled kernels: 0 piecewise linear, 1 swish.
PIECEWISE = 0
SWISH = 1


def _check_kind(kind):
    """The compiled entry points' check of ``kind``, made before any output
    is written."""
    if kind != PIECEWISE and kind != SWISH:
        raise ValueError(f"kernel: activation kind must be {PIECEWISE} (piecewise "
                         f"linear) or {SWISH} (swish), got {kind}")


def _sigmoid(z):
    one = z.dtype.type(1)
    return one / (one + np.exp(-z))


def _act_fn(z, slope, hi, kind=0):
    """act(z) = z > 0 ? min(z, hi) : slope * z (+0.0 rather than -0.0), or
    with kind SWISH z * sigmoid(z)."""
    if kind == SWISH:
        return z * _sigmoid(z)
    return np.where(z > 0, np.minimum(z, z.dtype.type(hi)), z * z.dtype.type(slope) + 0)


def _act_grad(z, slope, hi, kind=0):
    one, zero = z.dtype.type(1), z.dtype.type(0)
    if kind == SWISH:
        s = _sigmoid(z)
        return s * (one + z * (one - s))
    return np.where(z > 0, np.where(z < z.dtype.type(hi), one, zero), z.dtype.type(slope))


@_quiet
def bn_stats(x, P, G, R, C, mean, var, n_threads):
    v = _view(x, P, G, R, C).astype(np.float64)
    m = v.mean(axis=(0, 2))
    mean[:] = m.reshape(-1)
    var[:] = ((v - m[None, :, None, :]) ** 2).mean(axis=(0, 2)).reshape(-1)


@_quiet
def bn_affine(x, P, G, R, C, a, b, y, n_threads, act=False, slope=0.0, hi=np.inf, kind=0):
    _check_kind(kind)
    v = _view(x, P, G, R, C)
    res = v * a.reshape(1, G, 1, C) + b.reshape(1, G, 1, C)
    if act:
        res = _act_fn(res, slope, hi, kind)
    y[:] = res.reshape(-1)


def _masked(dy, x, P, G, R, C, za, zb, act, slope, hi, kind):
    d = _view(dy, P, G, R, C)
    if not act:
        return d
    z = _view(x, P, G, R, C) * za.reshape(1, G, 1, C) + zb.reshape(1, G, 1, C)
    return d * _act_grad(z, slope, hi, kind)


@_quiet
def bn_grad_sums(dy, x, P, G, R, C, mean, sum_dy, sum_dyxc, n_threads, za=None, zb=None,
                 act=False, slope=0.0, hi=np.inf, kind=0):
    _check_kind(kind)
    d = _masked(dy, x, P, G, R, C, za, zb, act, slope, hi, kind).astype(np.float64)
    v = _view(x, P, G, R, C).astype(np.float64)
    sum_dy[:] = d.sum(axis=(0, 2)).reshape(-1)
    xc = v - mean.reshape(1, G, 1, C)
    sum_dyxc[:] = (d * xc).sum(axis=(0, 2)).reshape(-1)


@_quiet
def bn_grad_dx(dy, x, P, G, R, C, k1, k2, k3, dx, n_threads, za=None, zb=None, act=False,
               slope=0.0, hi=np.inf, kind=0):
    _check_kind(kind)
    d = _masked(dy, x, P, G, R, C, za, zb, act, slope, hi, kind)
    v = _view(x, P, G, R, C)
    shp = (1, G, 1, C)
    res = d * k1.reshape(shp) + (v * k2.reshape(shp) + k3.reshape(shp))
    dx[:] = res.reshape(-1)


def _coefs(scale, offset, mean, var, eps):
    a = scale / np.sqrt(var + eps)
    return a, offset - mean * a


@_quiet
def bn_forward_train(x, P, G, R, C, scale, offset, eps, y, mean, var, n_threads, act=False,
                     slope=0.0, hi=np.inf, kind=0):
    _check_kind(kind)
    bn_stats(x, P, G, R, C, mean, var, n_threads)
    a, b = _coefs(scale, offset, mean, var, eps)
    bn_affine(x, P, G, R, C, a.astype(x.dtype), b.astype(x.dtype), y, n_threads, act, slope,
              hi, kind)


@_quiet
def bn_forward_infer(x, P, G, R, C, scale, offset, mean, var, eps, y, n_threads, act=False,
                     slope=0.0, hi=np.inf, kind=0):
    _check_kind(kind)
    a, b = _coefs(scale, offset, mean, var, eps)
    bn_affine(x, P, G, R, C, a.astype(x.dtype), b.astype(x.dtype), y, n_threads, act, slope,
              hi, kind)


@_quiet
def bn_backward(dy, x, P, G, R, C, scale, mean, var, eps, training, dx, dscale, doffset,
                n_threads, offset=None, act=False, slope=0.0, hi=np.inf, kind=0):
    _check_kind(kind)
    za = zb = None
    if act:
        za, zb = (c.astype(x.dtype) for c in _coefs(scale, offset, mean, var, eps))
    bn_grad_sums(dy, x, P, G, R, C, mean, doffset, dscale, n_threads, za, zb, act, slope, hi, kind)
    inv = 1.0 / np.sqrt(var + eps)
    k1 = scale * inv
    n = float(P * R)
    k2 = -k1 * inv * inv * dscale / n if training else np.zeros_like(k1)
    k3 = -k1 * doffset / n - k2 * mean if training else np.zeros_like(k1)
    bn_grad_dx(dy, x, P, G, R, C, k1.astype(x.dtype), k2.astype(x.dtype), k3.astype(x.dtype),
               dx, n_threads, za, zb, act, slope, hi, kind)
    dscale *= inv


def common_forward(*args):
    """The compiled entries' place (``ckbn.nn``'s common calls): the twin has
    none, so ``ckbn.nn`` takes its general path."""
    return None


common_backward = common_forward


def reduction_path(P, G, R, C):
    """The NumPy twin has one path."""
    return "numpy"
