"""Bitwise A/B of the element-wise passes of two kernel builds (issue 18,
session 8): bn_affine and bn_grad_dx of the old build (a folder of
_kernels_*.so) against this build's, every variant this CPU runs, float32 and
float64, every activation, 1 and 2 threads, outputs aligned and 4 bytes off,
on views that take the non-temporal rows (outputs of at least 16 MiB) and a
few below.

    PYTHONPATH=<worktree> python ab_bits.py OLD_DIR
"""
import glob
import importlib.util
import os
import sys

import numpy as np

import ckbn

old_dir = sys.argv[1]
ACTS = {"none": (False, 0.0, np.inf, 0), "relu": (True, 0.0, np.inf, 0),
        "relu6": (True, 0.0, 6.0, 0), "leaky": (True, 0.2, np.inf, 0),
        "swish": (True, 0.0, np.inf, 1)}
# (P, G, R, C): channels last narrow / wide, odd channel counts, groups
VIEWS = [(1, 1, 32 * 56 * 56, 64), (1, 1, 64 * 49, 2048), (1, 1, 16384, 256),
         (1, 1, 1398102, 3), (1, 1, 41944, 100), (1, 1, 4200, 1000),
         (4, 8, 1000, 130), (2, 3, 70000, 12), (1, 1, 2000, 64), (1, 1, 300, 1000)]


def load(path):
    name = "k18old." + os.path.basename(path).split(".")[0]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


rng = np.random.default_rng(1)
checked = bad = 0
for so in sorted(glob.glob(os.path.join(old_dir, "_kernels_*.so"))):
    variant = os.path.basename(so).split(".")[0]
    try:
        new = __import__("ckbn." + variant, fromlist=["x"])
        old = load(so)
        new.bn_affine(np.zeros(16, np.float32), 1, 1, 16, 1, np.ones(1, np.float32),
                      np.zeros(1, np.float32), np.zeros(16, np.float32), 1)
    except Exception as e:     # a variant this CPU cannot run
        print(f"{variant}: skipped ({e})")
        continue
    assert os.path.dirname(new.__file__) != old_dir
    for dt in (np.float32, np.float64):
        for P, G, R, C in VIEWS:
            n = P * G * R * C
            if dt == np.float64 and n > 7_000_000:
                n_ok = True
            x = (rng.standard_normal(n) * 3).astype(dt)
            dy = rng.standard_normal(n).astype(dt)
            cf = [rng.uniform(-2, 2, G * C).astype(dt) for _ in range(5)]
            for name, (act, slope, hi, kind) in ACTS.items():
                for nt in (1, 2):
                    for shift in (0, 1):
                        outs = []
                        for mod in (old, new):
                            buf = np.full(n + 16, np.nan, dt)
                            y = buf[shift:shift + n]
                            mod.bn_affine(x, P, G, R, C, cf[0], cf[1], y, nt, act, slope, hi, kind)
                            buf2 = np.full(n + 16, np.nan, dt)
                            dx = buf2[shift:shift + n]
                            if act:
                                mod.bn_grad_dx(dy, x, P, G, R, C, cf[0], cf[1], cf[2], dx, nt,
                                               cf[3], cf[4], act, slope, hi, kind)
                            else:
                                mod.bn_grad_dx(dy, x, P, G, R, C, cf[0], cf[1], cf[2], dx, nt)
                            outs.append((buf.view(np.uint8 if False else buf.dtype).tobytes(),
                                         buf2.tobytes()))
                        checked += 2
                        for k, what in enumerate(("affine", "dx")):
                            if outs[0][k] != outs[1][k]:
                                bad += 1
                                print(f"DIFF {variant} {np.dtype(dt).name} {(P, G, R, C)} {name} "
                                      f"t={nt} shift={shift} {what}", flush=True)
        print(f"{variant} done: {checked} checked, {bad} differ", flush=True)
print(f"total: {checked} outputs compared bitwise (old vs new), {bad} differ")
