"""A/B of two kernel builds on bench_layer.py --small's channels-first
backward (16x32x8x8 float32, 1 thread), round robin with PyTorch's and with
every other small case of the bench in between.  python ab_small.py OLD_DIR"""
import sys, time, importlib.util, glob
sys.path.insert(0, "benchmarks")
import numpy as np, ckbn, torch
import ckbn._dispatch as D
import bench_layer as B
new = D.kernels(); variant = D.kernel_name()
spec = importlib.util.spec_from_file_location(new.__name__, glob.glob(f"{sys.argv[1]}/_kernels_{variant}*.so")[0])
old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)
torch.set_num_threads(1); ckbn.set_num_threads(1)
cases = B._small_cases()
def tm(f, inner=100):
    f(); t = time.perf_counter()
    for _ in range(inner): f()
    return (time.perf_counter() - t) / inner * 1e6
res = {"old": [], "new": [], "torch": []}
for r in range(15):
    for name, fc, ft in cases:
        if name != "NCHW nn bwd":
            D._chosen = (variant, new); tm(fc, 20); tm(ft, 20); continue
        for n, m in ((("old", old), ("new", new)) if r % 2 == 0 else (("new", new), ("old", old))):
            D._chosen = (variant, m); res[n].append(tm(fc))
        res["torch"].append(tm(ft))
b = {k: min(v) for k, v in res.items()}
print("NCHW nn bwd 16x32x8x8, best of 15 rounds (us): " + ", ".join(f"{k} {v:.2f}" for k, v in b.items())
      + f"; old/torch {b['old']/b['torch']:.2f}, new/torch {b['new']/b['torch']:.2f}")
