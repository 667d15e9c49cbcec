"""Time _small_bwd_cf (via the common entry) old vs new at chosen placements of dy and x."""
import sys, time, glob, importlib.util, numpy as np, ckbn, ckbn._dispatch as D
new = D.kernels(); v = D.kernel_name()
spec = importlib.util.spec_from_file_location(new.__name__, glob.glob(f"{sys.argv[1]}/_kernels_{v}*.so")[0])
old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)
rng = np.random.default_rng(0)
shape = (16, 32, 8, 8); n = int(np.prod(shape))
def placed(off):
    buf = np.empty(n + 4096, np.float32); a = buf.ctypes.data
    k = ((off - a % 4096) % 4096) // 4
    out = buf[k:k + n].reshape(shape); out[...] = rng.standard_normal(shape); return out
g = (rng.random(32) + 0.5).astype("f4"); m = rng.standard_normal(32).astype("f4"); var = (rng.random(32) + 0.5).astype("f4")
xx = rng.standard_normal(shape).astype("f4"); dd = rng.standard_normal(shape).astype("f4")
print("natural placement mod 4096: x", xx.ctypes.data % 4096, "dy", dd.ctypes.data % 4096)
for ox, od in [(None, None), (16, 16), (16, 1040), (0, 2048), (16, 32)]:
    x, dy = (xx, dd) if ox is None else (placed(ox), placed(od))
    t = {"old": [], "new": []}
    for r in range(40):
        for name, mod in (("old", old), ("new", new)) if r % 2 else (("new", new), ("old", old)):
            f = lambda: mod.common_backward(dy, x, g, m, var, 1e-3, "NCHW", True, None, None, 1)
            f(); t0 = time.perf_counter()
            for _ in range(50): f()
            t[name].append((time.perf_counter() - t0) / 50 * 1e6)
    a, b = min(t["old"]), min(t["new"])
    r0 = old.common_backward(dy, x, g, m, var, 1e-3, "NCHW", True, None, None, 1)
    r1 = new.common_backward(dy, x, g, m, var, 1e-3, "NCHW", True, None, None, 1)
    same = all(np.array_equal(p, q) for p, q in zip(r0, r1))
    print(f"x+{ox} dy+{od}: old {a:.2f} us new {b:.2f} us new/old {b/a:.2f} same bits {same}")
