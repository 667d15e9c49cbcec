"""A/B of the compiled small backward (``small_backward``, NCHW) of two
builds in one process: main's kernel module (a folder of its built
``_kernels_*.so``, argv[1]) against this checkout's, round robin, one call of
each per round, medians; first checks that the two give the same bits on many
shapes.  Usage (1 thread):

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=$PWD python \\
        benchmarks/results/zen4-issue18-s8-small/ab_small_bwd.py /tmp/k18small-old [rounds]
"""
import importlib.util
import os
import sys
import time

import numpy as np

import ckbn
from ckbn._dispatch import kernels

new = kernels()
name = new.__name__.rsplit(".", 1)[-1]
d = sys.argv[1]
f = [x for x in os.listdir(d) if x.startswith(name + ".")][0]
spec = importlib.util.spec_from_file_location("ckbn_old." + name, os.path.join(d, f))
old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
print("new:", new.__file__, "\nold:", old.__file__)
print("loadavg:", open("/proc/loadavg").read().strip())


def args(shape, seed):
    rng = np.random.default_rng(seed)
    x = (4.0 + 3.0 * rng.standard_normal(shape)).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    scale = rng.uniform(0.5, 2.0, shape[1]).astype(np.float32)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(0, 2, 3)).astype(np.float32)
    var = x64.var(axis=(0, 2, 3)).astype(np.float32)
    return dy, x, scale, mean, var


# bitwise A/B on many shapes (every R from 2 to 256 on some shape, G not a
# multiple of any block, P over BLOCK and ROW_GROUP), training and inference
rng = np.random.default_rng(1)
shapes = [(16, 32, 8, 8), (16, 32, 7, 7), (100, 3, 3, 5), (70, 4, 2, 3), (4, 200, 3, 3),
          (2, 64, 16, 16), (3, 2, 16, 16), (1, 5, 2, 1), (5, 2, 1, 2), (130, 3, 1, 2),
          (65, 7, 4, 4), (9, 33, 1, 16), (1, 2, 1, 256), (64, 3, 2, 1)]
for R in range(2, 257):
    P = int(rng.integers(1, 80))
    G = int(rng.integers(2, max(3, min(70, 60000 // (P * R)))))
    if P * G * R < 65536:
        shapes.append((P, G, 1, R))
checked = 0
for i, s in enumerate(shapes):
    a = args(s, i)
    for training in (True, False):
        r0 = old.small_backward(*a, 1e-3, "NCHW", training)
        r1 = new.small_backward(*a, 1e-3, "NCHW", training)
        for u, v in zip(r0, r1):
            assert u.tobytes() == v.tobytes(), (s, training)
        checked += 1
print(f"bitwise identical: {len(shapes)} shapes x (train, infer) = {checked} calls")

for shape in [(16, 32, 8, 8), (16, 32, 7, 7), (32, 16, 4, 4)]:
    a = args(shape, 0)
    fns = {"old": lambda: old.small_backward(*a, 1e-3, "NCHW", True),
           "new": lambda: new.small_backward(*a, 1e-3, "NCHW", True),
           "nn (new)": lambda: ckbn.nn.fused_batch_norm_grad(a[0], a[1], a[2], a[3], a[4],
                                                           1e-3, "NCHW", True)}
    t = {k: [] for k in fns}
    order = list(fns.items())
    for r in range(rounds):
        # the order turns every round (no place in the round favoured)
        for k, fn in order[r % 3:] + order[:r % 3]:
            t0 = time.perf_counter_ns()
            fn()
            t[k].append(time.perf_counter_ns() - t0)
    med = {k: float(np.median(v)) / 1e3 for k, v in t.items()}
    print(f"{shape}: " + ", ".join(f"{k} {v:.2f} us" for k, v in med.items())
          + f"; new/old {med['new'] / med['old']:.3f}")
print("loadavg:", open("/proc/loadavg").read().strip())
