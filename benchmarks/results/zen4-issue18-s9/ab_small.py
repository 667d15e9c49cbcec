import importlib.util, time, statistics
import numpy as np, ckbn
from ckbn._dispatch import kernels
new = kernels()
spec = importlib.util.spec_from_file_location("_kernels_avx512", "/tmp/s9/old_so/_kernels_avx512.cpython-311-x86_64-linux-gnu.so")
old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)
rng = np.random.default_rng(0)
res = {}
for shape in [(16, 32, 8, 8), (16, 32, 7, 7), (8, 64, 8, 8), (16, 64, 4, 4), (32, 16, 8, 8)]:
    x = rng.normal(size=shape).astype(np.float32); dy = rng.normal(size=shape).astype(np.float32)
    C = shape[1]; s = np.ones(C, np.float32); m = x.mean(axis=(0,2,3)).astype(np.float32); v = x.var(axis=(0,2,3)).astype(np.float32)
    a = new.common_backward(dy, x, s, m, v, 1e-3, "NCHW", True, None, None, 1)
    b = old.common_backward(dy, x, s, m, v, 1e-3, "NCHW", True, None, None, 1)
    same = all(np.array_equal(p, q) for p, q in zip(a, b))
    t = {"old": [], "new": []}
    for r in range(9):
        for nm, K in (("old", old), ("new", new)) if r % 2 else (("new", new), ("old", old)):
            f = lambda: K.common_backward(dy, x, s, m, v, 1e-3, "NCHW", True, None, None, 1)
            for _ in range(100): f()
            t0 = time.perf_counter()
            for _ in range(2000): f()
            t[nm].append((time.perf_counter() - t0) / 2000 * 1e6)
    print(shape, "same bits" if same else "DIFFERENT", "old best %.2f med %.2f | new best %.2f med %.2f | new/old med %.2f" % (
        min(t["old"]), statistics.median(t["old"]), min(t["new"]), statistics.median(t["new"]), statistics.median(t["new"]) / statistics.median(t["old"])))
