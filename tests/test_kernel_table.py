"""The C-level kernel table (ckbn_kernels.h), called the way a native op calls
it: through the capsule's function pointers, from C types (ctypes), without
the GIL.  Every entry is checked against float64 NumPy, on every compiled
variant, for float16/32/64, channels first and last, with and without an
activation; and the table's error codes."""

import ctypes
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ckbn
from ckbn._dispatch import available_kernels, use_kernels
from ckbn._layout import make_layout

OK, ERR_NOMEM, ERR_ARG, ERR_DTYPE = 0, 1, 2, 3
DTYPES = {np.dtype(np.float16): 0, np.dtype(np.float32): 1, np.dtype(np.float64): 2}


class Dims(ctypes.Structure):
    _fields_ = [("P", ctypes.c_ssize_t), ("G", ctypes.c_ssize_t),
                ("R", ctypes.c_ssize_t), ("C", ctypes.c_ssize_t)]


class Act(ctypes.Structure):
    _fields_ = [("on", ctypes.c_int), ("kind", ctypes.c_int), ("slope", ctypes.c_double),
                ("hi", ctypes.c_double)]


_p, _d, _i = ctypes.c_void_p, ctypes.c_double, ctypes.c_int
_ap = ctypes.POINTER(Act)


class Table(ctypes.Structure):
    _fields_ = [
        ("abi", ctypes.c_int), ("variant", ctypes.c_char_p), ("has_float16", ctypes.c_int),
        ("forward_train", ctypes.CFUNCTYPE(_i, _i, _p, Dims, _p, _p, _d, _ap, _p, _p, _p, _i)),
        ("forward_infer", ctypes.CFUNCTYPE(_i, _i, _p, Dims, _p, _p, _p, _p, _d, _ap, _p, _i)),
        ("backward", ctypes.CFUNCTYPE(_i, _i, _p, _p, Dims, _p, _p, _p, _p, _d, _i, _ap, _p,
                                      _p, _p, _i)),
        ("stats", ctypes.CFUNCTYPE(_i, _i, _p, Dims, _p, _p, _i)),
        ("grad_sums", ctypes.CFUNCTYPE(_i, _i, _p, _p, Dims, _p, _p, _p, _p, _d, _ap, _p, _p,
                                       _i)),
        ("backward_dx", ctypes.CFUNCTYPE(_i, _i, _p, _p, Dims, _p, _p, _p, _p, _d, _d, _p, _p,
                                         _ap, _p, _p, _i)),
    ]


def _table(capsule):
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return ctypes.cast(get(capsule, b"ckbn.kernel_table.v1"), ctypes.POINTER(Table)).contents


def _ptr(a):
    return None if a is None else a.ctypes.data


@pytest.fixture(params=available_kernels())
def table(request):
    with use_kernels(request.param) as mod:
        yield _table(mod.kernel_table), request.param


CASES = [((6, 5, 4, 3), (3,)), ((6, 5, 4, 3), (1,)), ((33, 20), (1,)), ((2, 3, 40, 7), (1, 3)),
         ((16, 130, 9), (1,))]
ACTS = [None, (0.0, np.inf), (0.0, 6.0), (0.1, np.inf), "swish"]
SWISH = 1   # CKBN_ACT_SWISH


def _reference(x64, axes):
    red = tuple(i for i in range(x64.ndim) if i not in axes)
    return x64.mean(axis=red), x64.var(axis=red), red


def _apply_act(z, act):
    if act is None:
        return z, np.ones_like(z)
    if act == "swish":
        s = 1 / (1 + np.exp(-z))
        return z * s, s * (1 + z * (1 - s))
    slope, hi = act
    y = np.where(z > 0, np.minimum(z, hi), slope * z)
    return y, np.where(z > 0, (z < hi).astype(z.dtype), slope)


def _tol(dtype):
    return {np.float16: 2e-2, np.float32: 2e-5, np.float64: 1e-12}[np.dtype(dtype).type]


def _setup(shape, axes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    layout = make_layout(shape, axes)
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    n = layout.n_channels
    scale = rng.uniform(0.5, 2, n)
    offset = rng.uniform(-1, 1, n)
    return layout, x, dy, scale, offset


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("shape,axes", CASES)
@pytest.mark.parametrize("act", ACTS)
def test_forward_and_backward_match_float64(table, dtype, shape, axes, act):
    t, name = table
    assert t.abi == 2 and t.variant.decode() == name
    if dtype == np.float16 and not t.has_float16:
        pytest.skip("no F16C in this variant")
    layout, x, dy, scale, offset = _setup(shape, axes, dtype)
    dims = Dims(*layout.dims)
    code = DTYPES[np.dtype(dtype)]
    if act == "swish":
        ac = Act(1, SWISH, 0.0, np.inf)
    else:
        ac = Act(1, 0, act[0], act[1]) if act else None
    acp = ctypes.byref(ac) if ac else None
    n = layout.n_channels
    eps = 1e-3
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    mean, var, red = _reference(x64, axes)
    kshape = layout.keepdims_shape
    s_, o_ = scale.reshape(layout.channel_shape), offset.reshape(layout.channel_shape)

    def k(a):
        return a.reshape(layout.channel_shape).reshape(kshape)

    inv = 1 / np.sqrt(var + eps)
    xhat = (x64 - k(mean)) * k(inv)
    z = xhat * k(s_) + k(o_)
    y_ref, mask = _apply_act(z, act)
    tol = _tol(dtype)

    y = np.empty_like(x)
    m, v = np.empty(n), np.empty(n)
    assert t.forward_train(code, _ptr(x), dims, _ptr(scale), _ptr(offset), eps, acp, _ptr(y),
                           _ptr(m), _ptr(v), 2) == OK
    np.testing.assert_allclose(m, mean.reshape(-1), rtol=1e-5 if dtype != np.float64 else 1e-12,
                               atol=1e-6 if dtype != np.float64 else 1e-13)
    np.testing.assert_allclose(v, var.reshape(-1), rtol=1e-5 if dtype != np.float64 else 1e-11)
    np.testing.assert_allclose(y.astype(np.float64), y_ref, rtol=tol, atol=tol)

    # Given statistics (the moving ones, or a synchronized step's global ones).
    y2 = np.empty_like(x)
    assert t.forward_infer(code, _ptr(x), dims, _ptr(scale), _ptr(offset), _ptr(m), _ptr(v),
                           eps, acp, _ptr(y2), 1) == OK
    np.testing.assert_allclose(y2.astype(np.float64), y_ref, rtol=tol, atol=tol)

    # Training backward against the float64 formula.
    e = dy64 * mask
    cnt = x.size / n
    se = e.sum(axis=red)
    sexh = (e * xhat).sum(axis=red)
    dx_ref = k(s_ * inv) * (e - k(se) / cnt - xhat * k(sexh) / cnt)
    dx = np.empty_like(x)
    ds, do = np.empty(n), np.empty(n)
    assert t.backward(code, _ptr(dy), _ptr(x), dims, _ptr(scale), _ptr(offset), _ptr(m),
                      _ptr(v), eps, 1, acp, _ptr(dx), _ptr(ds), _ptr(do), 2) == OK
    gtol = 50 * tol
    np.testing.assert_allclose(dx.astype(np.float64), dx_ref, rtol=gtol, atol=gtol)
    np.testing.assert_allclose(ds, sexh.reshape(-1), rtol=gtol, atol=gtol * np.sqrt(cnt))
    np.testing.assert_allclose(do, se.reshape(-1), rtol=gtol, atol=gtol * np.sqrt(cnt))

    # The synchronized split: local sums, then dx from (here: the same) sums.
    s1, s2 = np.empty(n), np.empty(n)
    assert t.grad_sums(code, _ptr(dy), _ptr(x), dims, _ptr(scale), _ptr(offset), _ptr(m),
                       _ptr(v), eps, acp, _ptr(s1), _ptr(s2), 1) == OK
    np.testing.assert_allclose(s1, se.reshape(-1), rtol=gtol, atol=gtol * np.sqrt(cnt))
    np.testing.assert_allclose(s2 * inv.reshape(-1), sexh.reshape(-1), rtol=gtol,
                               atol=gtol * np.sqrt(cnt))
    dx2 = np.empty_like(x)
    ds2 = np.empty(n)
    assert t.backward_dx(code, _ptr(dy), _ptr(x), dims, _ptr(scale), _ptr(offset), _ptr(m),
                         _ptr(v), eps, float(cnt), _ptr(s1), _ptr(s2), acp, _ptr(dx2),
                         _ptr(ds2), 2) == OK
    np.testing.assert_allclose(dx2.astype(np.float64), dx_ref, rtol=gtol, atol=gtol)
    np.testing.assert_allclose(ds2, sexh.reshape(-1), rtol=gtol, atol=gtol * np.sqrt(cnt))

    # Inference backward: dx = e * scale * inv.
    assert t.backward(code, _ptr(dy), _ptr(x), dims, _ptr(scale), _ptr(offset), _ptr(m),
                      _ptr(v), eps, 0, acp, _ptr(dx), _ptr(ds), _ptr(do), 1) == OK
    np.testing.assert_allclose(dx.astype(np.float64), e * k(s_ * inv), rtol=gtol, atol=gtol)

    # stats alone.
    assert t.stats(code, _ptr(x), dims, _ptr(m), _ptr(v), 2) == OK
    np.testing.assert_allclose(v, var.reshape(-1), rtol=1e-5 if dtype != np.float64 else 1e-11)


def test_table_matches_the_python_entry_points_bitwise(table):
    """The def entry points and the table run the same cores."""
    t, _ = table
    layout, x, dy, scale, offset = _setup((8, 32, 6, 6), (1,), np.float32, seed=3)
    y_py, m_py, v_py = ckbn.nn.fused_batch_norm(x, scale.astype(np.float32),
                                                offset.astype(np.float32), axis=1,
                                                epsilon=1e-3)
    n = layout.n_channels
    y = np.empty_like(x)
    m, v = np.empty(n), np.empty(n)
    assert t.forward_train(1, _ptr(x), Dims(*layout.dims), _ptr(scale.astype(np.float32)
                                                                 .astype(np.float64)),
                           _ptr(offset.astype(np.float32).astype(np.float64)), 1e-3, None,
                           _ptr(y), _ptr(m), _ptr(v), 1) == OK
    np.testing.assert_array_equal(y, y_py)
    np.testing.assert_array_equal(m.astype(np.float32), m_py)


def test_results_do_not_depend_on_the_thread_count(table):
    t, _ = table
    layout, x, dy, scale, offset = _setup((64, 7, 7, 96), (3,), np.float32, seed=5)
    n = layout.n_channels
    outs = []
    for nt in (1, 2, 3):
        y = np.empty_like(x)
        m, v = np.empty(n), np.empty(n)
        dx = np.empty_like(x)
        ds, do = np.empty(n), np.empty(n)
        assert t.forward_train(1, _ptr(x), Dims(*layout.dims), _ptr(scale), _ptr(offset),
                               1e-3, None, _ptr(y), _ptr(m), _ptr(v), nt) == OK
        assert t.backward(1, _ptr(dy), _ptr(x), Dims(*layout.dims), _ptr(scale), None, _ptr(m),
                          _ptr(v), 1e-3, 1, None, _ptr(dx), _ptr(ds), _ptr(do), nt) == OK
        outs.append((y, m, v, dx, ds, do))
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            np.testing.assert_array_equal(a, b)


def test_error_codes(table):
    t, _ = table
    x = np.ones(12, np.float32)
    y = np.empty_like(x)
    m, v = np.empty(3), np.empty(3)
    one = np.ones(3)
    ok = Dims(1, 1, 4, 3)
    assert t.forward_train(1, _ptr(x), Dims(1, 1, 0, 3), _ptr(one), _ptr(one), 1e-3, None,
                           _ptr(y), _ptr(m), _ptr(v), 1) == ERR_ARG
    assert t.forward_train(7, _ptr(x), ok, _ptr(one), _ptr(one), 1e-3, None, _ptr(y), _ptr(m),
                           _ptr(v), 1) == ERR_DTYPE
    relu = Act(1, 0, 0.0, np.inf)
    # An activation of an unknown kind.
    bad = Act(1, 7, 0.0, np.inf)
    assert t.forward_train(1, _ptr(x), ok, _ptr(one), _ptr(one), 1e-3, ctypes.byref(bad),
                           _ptr(y), _ptr(m), _ptr(v), 1) == ERR_ARG
    # An activation needs offset (to recompute the pre-activation).
    assert t.backward(1, _ptr(x), _ptr(x), ok, _ptr(one), None, _ptr(m), _ptr(one), 1e-3, 1,
                      ctypes.byref(relu), _ptr(y), _ptr(m), _ptr(v), 1) == ERR_ARG
    assert t.backward_dx(1, _ptr(x), _ptr(x), ok, _ptr(one), _ptr(one), _ptr(m), _ptr(one),
                         1e-3, 0.0, _ptr(one), _ptr(one), None, _ptr(y), None, 1) == ERR_ARG


@pytest.mark.parametrize("shape,axes", [((8, 4, 5, 6), (3,)), ((8, 4, 5, 6), (1,)),
                                        ((8, 4, 5, 6), (1, 3)), ((8, 4, 5, 6), ()),
                                        ((8, 4, 5, 6), (0, 1)), ((3, 4, 5, 6, 7), (1, 2, 4)),
                                        ((8, 4, 5, 6), (0, 2)), ((2, 3, 4, 5, 6), (1, 3))])
def test_layout_rule_matches_numpy_reshape(shape, axes):
    """ckbn_layout() maps (shape, axes) onto (P, G, R, C): a view of the same
    memory whose per-(g, c) statistics are those of NumPy over the other axes,
    or None when a transpose is needed."""
    from ckbn._kernels_base import layout_dims

    dims = layout_dims(shape, axes)
    runs = 0
    prev = None
    for a in axes:
        runs += prev is None or a != prev + 1
        prev = a
    needs_copy = runs > 2 or (runs == 2 and axes[-1] != len(shape) - 1)
    assert (dims is None) == needs_copy
    if dims is None:
        return
    x = np.random.default_rng(0).standard_normal(shape)
    red = tuple(i for i in range(len(shape)) if i not in axes)
    P, G, R, C = dims
    got = x.reshape(P, G, R, C).mean(axis=(0, 2)).reshape(-1)
    np.testing.assert_allclose(got, x.mean(axis=red).reshape(-1), rtol=1e-12)


def test_header_compiles_as_c_and_cpp(tmp_path):
    """ckbn_kernels.h is usable from C and C++ (what native ops include)."""
    import shutil

    src = textwrap.dedent("""
        #include "ckbn_kernels.h"
        int main(void) {
            int64_t shape[4] = {2, 3, 4, 5};
            ckbn_dims d;
            ckbn_kernel_table *t = 0;
            (void) t;
            return ckbn_layout(4, shape, 8u, &d) == 0 && d.P == 24 && d.C == 5 ? 0 : 1;
        }
    """)
    for compiler, ext in (("cc", "c"), ("c++", "cc")):
        exe = shutil.which(compiler)
        if exe is None:
            pytest.skip(f"no {compiler}")
        f = tmp_path / f"t.{ext}"
        f.write_text(src)
        out = tmp_path / f"t_{ext}"
        subprocess.run([exe, "-Wall", "-Werror", "-I", ckbn.get_include(), str(f), "-o",
                        str(out)], check=True)
        assert subprocess.run([str(out)]).returncode == 0
