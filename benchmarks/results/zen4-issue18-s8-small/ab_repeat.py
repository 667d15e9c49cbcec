"""Repeated A/B of small_backward (old build in argv[1] vs this one) on
16x32x8x8 / 16x32x7x7 NCHW: `runs` segments of 1000 rounds (order turning
each round), the new/old ratio of medians per segment, then their median."""
import importlib.util, os, sys, time
import numpy as np
from ckbn._dispatch import kernels
new = kernels()
name = new.__name__.rsplit(".", 1)[-1]
d = sys.argv[1]
f = [x for x in os.listdir(d) if x.startswith(name + ".")][0]
spec = importlib.util.spec_from_file_location("ckbn_old." + name, os.path.join(d, f))
old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 7
print("loadavg:", open("/proc/loadavg").read().strip())
for shape in [(16, 32, 8, 8), (16, 32, 7, 7)]:
    rng = np.random.default_rng(0)
    x = (4.0 + 3.0 * rng.standard_normal(shape)).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    s = rng.uniform(0.5, 2.0, shape[1]).astype(np.float32)
    m = x.mean(axis=(0, 2, 3), dtype=np.float64).astype(np.float32)
    v = x.var(axis=(0, 2, 3), dtype=np.float64).astype(np.float32)
    fns = [("old", old), ("new", new)]
    ratios, meds = [], []
    for run in range(runs):
        t = {"old": [], "new": []}
        for r in range(1000):
            for nm, mod in (fns if r % 2 else fns[::-1]):
                t0 = time.perf_counter_ns()
                mod.small_backward(dy, x, s, m, v, 1e-3, "NCHW", True)
                t[nm].append(time.perf_counter_ns() - t0)
        o, n = np.median(t["old"]) / 1e3, np.median(t["new"]) / 1e3
        ratios.append(n / o); meds.append((o, n))
    print(shape, "per run (old us, new us):", " ".join(f"({o:.2f},{n:.2f})" for o, n in meds))
    print(shape, "new/old per run:", " ".join(f"{r:.3f}" for r in ratios),
          f"median {np.median(ratios):.3f}")
print("loadavg:", open("/proc/loadavg").read().strip())
