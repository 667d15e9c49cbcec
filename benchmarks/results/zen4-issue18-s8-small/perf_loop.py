"""100k calls of the compiled small backward on 16x32x8x8 NCHW float32 (one
thread), for perf record: OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
PYTHONPATH=$PWD perf record -o /tmp/k18.data python perf_loop.py [calls]"""
import sys
import numpy as np
import ckbn
from ckbn._dispatch import kernels

k = kernels()
rng = np.random.default_rng(0)
shape = (16, 32, 8, 8)
x = (4.0 + 3.0 * rng.standard_normal(shape)).astype(np.float32)
dy = rng.standard_normal(shape).astype(np.float32)
s = rng.uniform(0.5, 2.0, 32).astype(np.float32)
m = x.mean(axis=(0, 2, 3), dtype=np.float64).astype(np.float32)
v = x.var(axis=(0, 2, 3), dtype=np.float64).astype(np.float32)
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 100000):
    k.small_backward(dy, x, s, m, v, 1e-3, "NCHW", True)
