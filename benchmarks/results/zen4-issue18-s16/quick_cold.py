"""The quick suite's shapes with the caches flushed before every call,
kernels and roofline alike (bench_kernels.COLD, as run.py's full suite does
for three shapes), 1 thread, no peers.  python quick_cold.py"""
import sys
sys.path.insert(0, "benchmarks")
import numpy as np
import bench_kernels as bk

bk.COLD = True
for r in bk.run(bk.QUICK, [1], [np.float32], 0.4, peers=False):
    pass
