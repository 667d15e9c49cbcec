"""Checks shared by the synchronized batch-normalization tests.

The reference is single-process batch normalization of the concatenated
global batch in float64 NumPy (two-pass variance), written out here, with
TF 1.x's moving-average rules (fused NHWC/NCHW float32: Bessel-corrected
variance with the global count; renorm: TF 1.15's r, d and moving averages).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import numpy as np

from tests import distributed_worker as W

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))


def worker_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = env["CKBN_NUM_THREADS"] = "1"
    return env


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_torch(plan, outdir, size=2, timeout=120, argv=None, extra_env=None):
    """Start ``size`` gloo processes on 127.0.0.1 (the worker, or ``argv``); return
    ``(returncode, stdout, stderr)`` of each."""
    env = worker_env()
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(size),
               GLOO_SOCKET_IFNAME="lo")
    env.update(extra_env or {})
    argv = argv or ["-m", "tests.distributed_worker", "torch", plan, str(outdir)]
    procs = []
    for r in range(size):
        e = dict(env, RANK=str(r), LOCAL_RANK=str(r))
        procs.append(subprocess.Popen(
            [sys.executable] + list(argv),
            cwd=ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            results.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return results


def load(outdir, size):
    arrays, errors = [], []
    for r in range(size):
        with np.load(os.path.join(outdir, f"rank{r}.npz")) as f:
            arrays.append({k: f[k] for k in f.files})
        with open(os.path.join(outdir, f"rank{r}.json")) as f:
            errors.append(json.load(f))
    return arrays, errors


def _reference(case, split, sizes, keras=False):
    """Float64 single-process BN over the global batch, STEPS training steps."""
    shape, axis, dtype, _, renorm = W.CASES[case]
    ndim = len(shape) + 1
    axis = axis % ndim
    red = tuple(i for i in range(ndim) if i != axis)
    C = (1,) + shape
    C = C[axis]
    gamma = W.gamma_init((C,), np.float64)
    beta = W.beta_init((C,), np.float64)
    bshape = [1] * ndim
    bshape[axis] = C
    m = W.MOMENTUM
    mm, mv = np.zeros(C), np.ones(C)
    rmean, rstd, mstd = np.zeros(C), np.ones(C), np.ones(C)
    fused = (not keras and not renorm and ndim == 4 and axis in (1, 3)
             and dtype == "float32")
    for step in range(W.STEPS):
        x, dy = W.global_batch(case, split, sizes, step)
        x, dy = x.astype(np.float64), dy.astype(np.float64)
        # Keras's mask: only the True positions feed the statistics (weights w).
        mask = W.global_mask(case, split, sizes, step) if keras else None
        w = np.ones(x.shape) if mask is None else np.broadcast_to(mask[..., None], x.shape)
        n = w.sum(axis=red)
        mean = (w * x).sum(axis=red) / n
        var = (w * (x - mean.reshape(bshape)) ** 2).sum(axis=red) / n
        n = n[0]
        std = np.sqrt(var + W.EPS)
        inv = 1.0 / std
        xhat = (x - mean.reshape(bshape)) * inv.reshape(bshape)
        if renorm:
            r = np.clip(std / rstd, 0.7, 1.5)
            d = np.clip((mean - rmean) / rstd, -0.4, 0.4)
        else:
            r, d = np.ones(C), np.zeros(C)
        z = xhat * r.reshape(bshape) + d.reshape(bshape)
        y = z * gamma.reshape(bshape) + beta.reshape(bshape)
        g = dy * (gamma * r).reshape(bshape)
        dx = inv.reshape(bshape) * (g - w * (g.sum(axis=red) / n).reshape(bshape)
                                    - w * xhat * ((g * xhat).sum(axis=red) / n).reshape(bshape))
        if renorm:
            rmean = rmean + (mean - rmean) * (1 - m)
            rstd = rstd + (std - rstd) * (1 - m)
            mm = mm + (mean - mm) * (1 - m)
            mstd = mstd + (std - mstd) * (1 - m)
            mv = np.maximum(mstd * mstd - W.EPS, 0)
        else:
            v = var * n / (n - 1) if fused else var
            mm = mm + (mean - mm) * (1 - m)
            mv = mv + (v - mv) * (1 - m)
    return dict(x=x, dy=dy, y=y, dx=dx, z=z, mm=mm, mv=mv, rmean=rmean, rstd=rstd,
                mstd=mstd, red=red, bshape=bshape, gamma=gamma, beta=beta)


def check_steps(arrays, errors, size, keras=False, split_names=None, runs=None):
    """Every rank against the reference, and bit-identical moving statistics.

    ``keras``: the keras_plugin layer (Keras 3's biased moving variance, no
    error cases).  ``runs``: only these (split, case) pairs.
    """
    for split, sizes in W.splits(size).items():
        if split_names is not None and split not in split_names:
            continue
        for case, (shape, axis, dtype, offset, renorm) in W.CASES.items():
            if keras and case not in W.KERAS_CASES:
                continue
            if runs is not None and (split, case) not in runs:
                continue
            tag = f"{split}_{case}"
            ref = _reference(case, split, sizes, keras)
            tol = 1e-4 if dtype == "float32" else 1e-9
            red = ref["red"]
            for rank in range(size):
                got = arrays[rank]
                sl = slice(sum(sizes[:rank]), sum(sizes[:rank + 1]))
                y, dx = got[f"{tag}/y"], got[f"{tag}/dx"]
                assert y.shape == ref["y"][sl].shape and y.dtype == np.dtype(dtype), tag
                np.testing.assert_allclose(y, ref["y"][sl], rtol=tol, atol=tol,
                                           err_msg=f"{tag} y rank {rank}")
                np.testing.assert_allclose(dx, ref["dx"][sl], rtol=tol, atol=tol,
                                           err_msg=f"{tag} dx rank {rank}")
                # dgamma, dbeta: this process's sums (the gradient all-reduce adds them).
                dyl, zl = ref["dy"][sl], ref["z"][sl]
                np.testing.assert_allclose(got[f"{tag}/d_gamma"], (dyl * zl).sum(axis=red),
                                           rtol=tol, atol=tol * 10, err_msg=f"{tag} dgamma")
                np.testing.assert_allclose(got[f"{tag}/d_beta"], dyl.sum(axis=red),
                                           rtol=tol, atol=tol * 10, err_msg=f"{tag} dbeta")
                mtol = 1e-5 if dtype == "float32" else 1e-12
                np.testing.assert_allclose(got[f"{tag}/moving_mean"], ref["mm"], rtol=mtol,
                                           atol=mtol, err_msg=f"{tag} moving_mean")
                np.testing.assert_allclose(got[f"{tag}/moving_variance"], ref["mv"],
                                           rtol=mtol, atol=mtol,
                                           err_msg=f"{tag} moving_variance")
                if renorm:
                    np.testing.assert_allclose(got[f"{tag}/renorm_mean"], ref["rmean"],
                                               rtol=mtol, atol=mtol)
                    np.testing.assert_allclose(got[f"{tag}/renorm_stddev"], ref["rstd"],
                                               rtol=mtol, atol=mtol)
            # Moving statistics: the same bits on every process.
            for k in arrays[0]:
                if k.startswith(tag + "/") and ("moving" in k or "renorm_" in k):
                    for rank in range(1, size):
                        assert arrays[rank][k].tobytes() == arrays[0][k].tobytes(), (k, rank)
            # Inference (rank 0 only) uses the moving statistics.
            x0 = ref["x"][:sizes[0]]
            if sizes[0]:
                bs = ref["bshape"]
                mm, mv = arrays[0][f"{tag}/moving_mean"], arrays[0][f"{tag}/moving_variance"]
                want = ((x0 - mm.reshape(bs)) / np.sqrt(mv.reshape(bs) + W.EPS)
                        * ref["gamma"].reshape(bs) + ref["beta"].reshape(bs))
                np.testing.assert_allclose(arrays[0][f"{tag}/infer"], want, rtol=tol,
                                           atol=tol)
    if keras:
        for e in errors:
            assert e["keras_renorm"].startswith("NotImplementedError: ")
            assert re.search("keras_renorm: synchronized=True on the (torch|tensorflow|jax) "
                             "backend does not support renorm", e["keras_renorm"]), \
                e["keras_renorm"]
    else:
        check_errors(arrays, errors, size)


def check_errors(arrays, errors, size):
    for key in ("channels", "badinput", "bad_dy", "count1", "order", "order_2"):
        msgs = [e[key] for e in errors]
        assert msgs[0] is not None, key
        assert all(m == msgs[0] for m in msgs), (key, msgs)
    assert errors[0]["channels"].startswith("ValueError: ")
    assert "channel count differs" in errors[0]["channels"]
    want = [3, 4] + [3] * (size - 2)
    assert str(want) in errors[0]["channels"]
    assert errors[0]["badinput"].startswith("TypeError: ")
    assert "rank 1" in errors[0]["badinput"] and "int64" in errors[0]["badinput"]
    assert errors[0]["bad_dy"].startswith("ValueError: ") and "(5, 3)" in errors[0]["bad_dy"]
    assert "1 value(s) per channel" in errors[0]["count1"]
    assert "out of order" in errors[0]["order"]
    for r in range(size):
        assert errors[r]["badinput_next"] is None
        assert arrays[r]["count1/unchanged"].all()
        assert np.all(arrays[r]["channels/moving_mean"] == 0)
    # After the rejected step, the next one is the first to move the statistics.
    xs = np.concatenate([arrays[r]["badinput/x_next"] for r in range(size)]).astype(np.float64)
    for r in range(size):
        if r != 1:
            assert np.all(arrays[r]["badinput/moving_mean_after_error"] == 0)
        np.testing.assert_allclose(arrays[r]["badinput/moving_mean"],
                                   xs.mean(axis=0) * (1 - W.MOMENTUM), rtol=1e-5, atol=1e-6)
        assert arrays[r]["badinput/moving_mean"].tobytes() == \
            arrays[0]["badinput/moving_mean"].tobytes()
