"""Canonical 4-D layout shared by every kernel.

Any array and any set of *channel* axes (the axes that keep one statistic
each) is described as a C-contiguous block of shape ``(P, G, R, C)``:

* statistics are kept per ``(g, c)``, that is ``G * C`` channels;
* they are reduced over ``P`` and ``R``.

The common layouts map onto it with no copy:

=====================  ===================  ==========================
input                  channel axes         ``(P, G, R, C)``
=====================  ===================  ==========================
``(N, C)``             ``[1]``              ``(N, 1, 1, C)``
NHWC ``(N, H, W, C)``  ``[3]``              ``(N*H*W, 1, 1, C)``
NCHW ``(N, C, H, W)``  ``[1]``              ``(N, C, H*W, 1)``
ghost NHWC             ``[1, 4]`` of        ``(vbs, G, H*W, C)``
                       ``(vbs, G, H, W, C)``
=====================  ===================  ==========================

Channel axes that form more than two separate runs (or two runs followed by
reduced axes) are first moved to the end with one transposing copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from math import prod

import numpy as np

from ckbn._kernels_base import layout_dims

__all__ = ["Layout", "make_layout"]


@dataclass(frozen=True)
class Layout:
    """How an array of ``shape`` maps onto the ``(P, G, R, C)`` form.

    Attributes
    ----------
    shape : tuple of int
        Shape of the user's array.
    channel_axes : tuple of int
        Sorted, non-negative channel axes.
    dims : tuple of int
        ``(P, G, R, C)``.
    perm : tuple of int or None
        Axis permutation applied before viewing as ``dims`` (a copy), or None
        when the array is viewed as it is.
    """

    shape: tuple
    channel_axes: tuple
    dims: tuple
    perm: tuple | None
    #: Shape of one statistic array: the sizes of the channel axes.
    channel_shape: tuple = field(init=False)
    #: Number of statistics, ``G * C``.
    n_channels: int = field(init=False)
    #: Number of elements reduced into each statistic, ``P * R``.
    count: int = field(init=False)
    #: Shape of a statistic broadcastable against the input.
    keepdims_shape: tuple = field(init=False)

    def __post_init__(self):
        # Derived once: layouts are cached and reused on every call.
        set_ = object.__setattr__
        set_(self, "channel_shape", tuple(self.shape[a] for a in self.channel_axes))
        set_(self, "n_channels", self.dims[1] * self.dims[3])
        set_(self, "count", self.dims[0] * self.dims[2])
        set_(self, "keepdims_shape", tuple(
            n if i in self.channel_axes else 1 for i, n in enumerate(self.shape)))

    def to_canonical(self, x):
        """Return ``x`` as a flat C-contiguous array in canonical order.

        No copy is made when ``x`` is already C-contiguous and ``perm`` is None.
        """
        if self.perm is not None:
            x = np.transpose(x, self.perm)
        elif x.flags.c_contiguous:
            return x.reshape(-1)
        return np.ascontiguousarray(x).reshape(-1)

    def from_canonical(self, flat):
        """Inverse of :meth:`to_canonical` for an output array (a view if possible)."""
        if self.perm is None:
            return flat.reshape(self.shape)
        moved = tuple(self.shape[a] for a in self.perm)
        inverse = np.argsort(self.perm)
        return np.transpose(flat.reshape(moved), inverse)


def make_layout(shape, channel_axes):
    """Map ``shape`` with ``channel_axes`` (sorted, non-negative, unique) to a Layout.

    Layouts are cached: the same shape and axes give the same object.
    """
    key = (shape, channel_axes)
    try:
        hit = _RECENT.get(key)
    except TypeError:     # unhashable shape or axes (lists): normalize below
        hit = None
    if hit is not None:
        return hit
    layout = _make_layout(tuple(int(n) for n in shape), tuple(channel_axes))
    if type(shape) is tuple and type(channel_axes) is tuple:
        if len(_RECENT) >= 1024:
            _RECENT.clear()
        _RECENT[key] = layout
    return layout


# Exact-argument cache in front of _make_layout, which normalizes first: a
# hit costs one dict lookup.
_RECENT = {}


@lru_cache(maxsize=1024)
def _make_layout(shape, axes):
    ndim = len(shape)
    dims = layout_dims(shape, axes)   # the C rule of ckbn_kernels.h
    if dims is not None:
        return Layout(shape, axes, dims, None)
    # General case: move every channel axis to the end (one copy).
    reduced = tuple(i for i in range(ndim) if i not in axes)
    perm = reduced + axes
    dims = (prod(shape[i] for i in reduced), 1, 1, prod(shape[i] for i in axes))
    return Layout(shape, axes, dims, perm)
