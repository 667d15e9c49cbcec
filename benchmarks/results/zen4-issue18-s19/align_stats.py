import time, numpy as np, importlib, sys
import ckbn._dispatch as D
v = D.kernel_name(); m = importlib.import_module(f"ckbn._kernels_{v}")
Pr = importlib.import_module(f"ckbn._probes_{v}")
def placed(a, off):
    buf = np.empty(a.nbytes + 8192, np.uint8)
    base = (-buf.ctypes.data) % 4096 + off
    out = buf[base:base + a.nbytes].view(a.dtype)
    out[...] = a
    return out
for rows, C in [(256, 1024), (392, 2048), (3136, 2048)]:
    x0 = (np.random.default_rng(0).standard_normal(rows * C) * 2 + 3).astype("f4")
    print(f"{rows}x{C} numpy array at {x0.ctypes.data % 64} mod 64", end=": ")
    xs = {off: placed(x0, off) for off in (0, 16, 32)}
    mean = np.zeros(C); var = np.zeros(C)
    t = {off: [] for off in xs}; tr = []
    for r in range(21):
        for off, x in xs.items():
            m.bn_stats(x, rows, 1, 1, C, mean, var, 1)
            t0 = time.perf_counter(); m.bn_stats(x, rows, 1, 1, C, mean, var, 1); t[off].append(time.perf_counter() - t0)
        Pr.probe_read(xs[0], 1); t0 = time.perf_counter(); Pr.probe_read(xs[0], 1); tr.append(time.perf_counter() - t0)
    rd = np.median(tr)
    print(", ".join(f"+{off}: {np.median(t[off]) / rd:.2f}x read" for off in xs))
