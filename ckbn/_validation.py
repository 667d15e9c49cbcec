"""Argument checks at the public boundary.

Every public function validates here, before any work or state change, and
raises a ``TypeError``/``ValueError`` that names the offending value.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def check_float_array(x, name, min_ndim=0):
    """Return ``x`` as an ndarray of a supported float dtype (no copy if it is one).

    Raises
    ------
    TypeError
        For objects that are not array-like, and for non-float dtypes
        (integer, bool, complex, object, ...).
    ValueError
        For fewer than ``min_ndim`` dimensions.
    """
    if type(x) is np.ndarray and x.dtype in FLOAT_DTYPES and x.ndim >= min_ndim:
        return x  # the common case, kept cheap
    if x is None:
        raise TypeError(f"{name} must be a float array, got None")
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as exc:  # noqa: BLE001 - report any conversion failure
            raise TypeError(f"{name} could not be converted to an array: {exc}") from None
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must have dtype float16, float32 or float64, got dtype {x.dtype}"
        )
    if x.ndim < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} dimensions, got shape {x.shape}"
        )
    return x


def check_nonempty(x, name):
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {x.shape}); batch normalization needs data")


def normalize_axes(axes, ndim, name="axis"):
    """Resolve an int or a sequence of ints to sorted, unique, non-negative axes."""
    if isinstance(axes, (numbers.Integral, np.integer)) and not isinstance(axes, bool):
        axes = [axes]
    elif isinstance(axes, (list, tuple, np.ndarray)):
        axes = list(axes)
    else:
        raise TypeError(f"{name} must be an int or a list of ints, got {axes!r}")
    out = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, (numbers.Integral, np.integer)):
            raise TypeError(f"{name} must contain ints, got {a!r} in {axes!r}")
        a = int(a)
        if not -ndim <= a < ndim:
            raise ValueError(
                f"{name} {a} is out of range for an input of rank {ndim}"
            )
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{name} {axes!r} contains duplicate axes")
    return tuple(sorted(out))


_FORMAT_CACHE = {}


def channel_axes_from_format(data_format, ndim):
    """Channel axis named by ``data_format`` ('NHWC', 'NC', 'NCHW', 'NCDHW', ...)."""
    key = (data_format, ndim)
    hit = _FORMAT_CACHE.get(key) if isinstance(data_format, str) else None
    if hit is None:
        hit = _FORMAT_CACHE[key] = _channel_axes_from_format(data_format, ndim)
    return hit


def _channel_axes_from_format(data_format, ndim):
    if not isinstance(data_format, str):
        raise TypeError(f"data_format must be a string, got {data_format!r}")
    fmt = data_format.upper()
    if len(fmt) < 2 or not fmt.startswith("N") or fmt.count("C") != 1:
        raise ValueError(
            f"data_format {data_format!r} is not a channels-last ('NHWC', 'NC', ...) "
            "or channels-first ('NCHW', 'NCDHW', ...) format"
        )
    if fmt.endswith("C"):
        return (ndim - 1,)
    if fmt[1] == "C":
        return (1,)
    raise ValueError(
        f"data_format {data_format!r} puts the channel neither first after N nor last"
    )


def check_epsilon(epsilon):
    if type(epsilon) is float and 0.0 <= epsilon < math.inf:
        return epsilon
    if isinstance(epsilon, bool) or not isinstance(epsilon, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"epsilon must be a non-negative float, got {epsilon!r}")
    eps = float(epsilon)
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"epsilon must be a finite float >= 0, got {epsilon!r}")
    return eps


def check_channel_param(p, name, layout, default):
    """Per-channel parameter as a flat float64 array of ``layout.n_channels``.

    Accepted shapes: the channel shape (e.g. ``(C,)``), a flat ``(n_channels,)``
    array, or the input rank with 1s on the reduced axes.  ``None`` gives
    ``default`` everywhere.
    """
    n = layout.n_channels
    if p is None:
        return np.full(n, default, dtype=np.float64)
    if type(p) is np.ndarray and p.shape == layout.channel_shape and p.dtype.kind == "f":
        return p.astype(np.float64).reshape(-1)  # the common case, kept cheap
    arr = np.asarray(p)
    if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
        raise TypeError(f"{name} must be a real float array, got dtype {arr.dtype}")
    if arr.shape in (layout.channel_shape, (n,), layout.keepdims_shape) or (
        arr.ndim == 0 and n == 1
    ):
        return np.asarray(arr, dtype=np.float64).reshape(-1)
    raise ValueError(
        f"{name} has shape {arr.shape}; expected {layout.channel_shape} (one value per "
        f"channel of the input of shape {layout.shape} along axes {list(layout.channel_axes)})"
    )


def check_out(out, x):
    """Validate ``out=``: an ndarray of x's shape and dtype, C-contiguous and
    writeable, that is either ``x`` itself or does not overlap it."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array, got {type(out).__name__}")
    if out.shape != x.shape:
        raise ValueError(f"out has shape {out.shape}, expected {x.shape}")
    if out.dtype != x.dtype:
        raise ValueError(f"out has dtype {out.dtype}, expected {x.dtype}")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    if out is not x and np.may_share_memory(out, x):
        same = (
            out.__array_interface__["data"][0] == x.__array_interface__["data"][0]
            and out.strides == x.strides
        )
        if not same and np.shares_memory(out, x):
            raise ValueError("out overlaps the input without being the same array")
    return out
