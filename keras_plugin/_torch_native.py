"""PyTorch backend: ckbn's kernels as compiled PyTorch operators.

``native/torch_ops.cc`` registers two operators, ``torch.ops.ckbn_native.bn_train``
and ``torch.ops.ckbn_native.bn_given``, that call ckbn's compiled kernels
through the C-level table of ``ckbn_kernels.h`` and record a C++ autograd
node whose backward calls the table's backward.  A training call of the
layer is then one operator call from Python: no ``torch.autograd.Function``
in Python, no NumPy views, no Python in the backward.  The training operator
also folds the batch statistics into the moving ones in place (the float
operations of ``keras_plugin._torch._update_moving``), so the layer's call
and the general path give the same bits.

The library is built once on first use by :mod:`keras_plugin._native_build`
against the installed PyTorch (its headers from
``torch.utils.cpp_extension.include_paths()``; cached per PyTorch version),
loaded with ``torch.ops.load_library`` and handed the table of the kernel
variant ckbn dispatched to at that moment.  Where it cannot be built (no
compiler, no PyTorch headers, ``CKBN_NATIVE=0``) :func:`load` warns once and
returns False, and ``keras_plugin._torch`` keeps its Python autograd
Functions, which compute the same values.

The operators serve eager calls only (``keras_plugin._torch`` uses its
``torch.library`` custom ops under ``torch.compile``): CPU tensors, float16
(where the table has float16 kernels), float32 and float64, channel axes that
need no transpose.
"""

from __future__ import annotations

import ctypes
import math
import os
import threading

import torch

import ckbn
from keras_plugin import _native_build

__all__ = ["load", "available", "has_float16", "call_counts", "ACT_CODES", "act_args"]

_WHAT = "the PyTorch native op (keras_plugin/native/torch_ops.cc)"
_CAPSULE = b"ckbn.kernel_table.v1"

_lock = threading.Lock()
_state = None    # None: not tried; False: unavailable; else (train, given, lib, has_float16)


class _TableHead(ctypes.Structure):
    """The leading fields of ``ckbn_kernel_table`` (ckbn_kernels.h)."""

    _fields_ = [("abi", ctypes.c_int), ("variant", ctypes.c_char_p),
                ("has_float16", ctypes.c_int)]


def _build():
    from torch.utils import cpp_extension

    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    abi = int(bool(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", True)))
    return _native_build.build_library(
        "ckbn_torch_ops", ["torch_ops.cc"],
        include_dirs=[ckbn.get_include()] + list(cpp_extension.include_paths()),
        extra_compile_args=["-std=c++20", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
                            "-ffp-contract=off", "-Wno-deprecated-declarations"],
        extra_link_args=[f"-L{torch_lib}", "-lc10", "-ltorch_cpu", "-ltorch",
                         f"-Wl,-rpath,{torch_lib}"],
        key_extra=f"torch {torch.__version__}")


def _load():
    capsule = ckbn.kernel_table()
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.py_object, ctypes.c_char_p]
    address = get(capsule, _CAPSULE)
    path = _build()
    torch.ops.load_library(path)
    lib = ctypes.CDLL(path)   # the same handle: dlopen of a loaded path
    lib.ckbn_native_set_table.argtypes = [ctypes.c_void_p]
    lib.ckbn_native_set_table.restype = ctypes.c_int
    if lib.ckbn_native_set_table(address) != 0:
        raise RuntimeError("ckbn's kernel table has another ABI than ckbn_kernels.h")
    lib.ckbn_native_calls.argtypes = [ctypes.c_int]
    lib.ckbn_native_calls.restype = ctypes.c_int64
    has_f16 = bool(_TableHead.from_address(address).has_float16)
    ops = torch.ops.ckbn_native
    # The operators' C++ entries (OpOverload._op): the same call without the
    # Python-level OpOverloadPacket/OpOverload wrappers.
    return (ops.bn_train.default._op, ops.bn_given.default._op, lib, has_f16, capsule)


def load():
    """``(train, given)``: the two operators' callables, or None where the
    library cannot be had (warned once).  The first call builds the library if
    it is not cached yet (about 15 s), loads it and hands it ckbn's table."""
    global _state
    if _state is None:
        with _lock:
            if _state is None:
                try:
                    _state = _load()
                except (_native_build.NativeBuildError, RuntimeError, OSError,
                        AttributeError, ImportError) as exc:
                    reason = str(exc).strip().splitlines()
                    _native_build.warn_fallback(_WHAT, reason[0] if reason else
                                                type(exc).__name__)
                    _state = False
    return _state[:2] if _state else None


def available():
    """Whether the operators are loaded (loads them on the first call)."""
    return load() is not None


def has_float16():
    """Whether the loaded kernels take float16 data (False if not loaded)."""
    return available() and _state[3]


def call_counts():
    """Kernel runs so far, ``{"train": n, "given": n, "grad": n}`` (all 0 if not loaded)."""
    if not available():
        return {"train": 0, "given": 0, "grad": 0}
    lib = _state[2]
    return {name: int(lib.ckbn_native_calls(i)) for i, name in
            enumerate(("train", "given", "grad"))}


#: The operators' activation code for each name: 0 none, 1 piecewise linear,
#: 2 swish (keras_plugin._activation's names).
ACT_CODES = {None: 0, "relu": 1, "relu6": 1, "leaky_relu": 1, "swish": 2}


def act_args(act):
    """``(act, slope, hi)`` of the operators for ``act`` (None or ``(name, slope)``)."""
    if act is None:
        return 0, 0.0, math.inf
    name, slope = act
    if name == "relu6":
        return 1, 0.0, 6.0
    if name == "leaky_relu":
        return 1, float(slope), math.inf
    return ACT_CODES[name], 0.0, math.inf
