"""One build's statistics with x at +0, +16 and +32 bytes past a line: each
round times every offset in a rotated order (warm: the same call just
before), each ÷ a read of that same array timed just after; medians."""
import time, numpy as np, importlib
import ckbn._dispatch as D
v = D.kernel_name(); m = importlib.import_module(f"ckbn._kernels_{v}")
Pr = importlib.import_module(f"ckbn._probes_{v}")
def placed(a, off):
    buf = np.empty(a.nbytes + 8192, np.uint8)
    base = (-buf.ctypes.data) % 4096 + off
    out = buf[base:base + a.nbytes].view(a.dtype)
    out[...] = a
    return out
for rows, C in [(392, 2048), (3136, 2048)]:
    x0 = (np.random.default_rng(0).standard_normal(rows * C) * 2 + 3).astype("f4")
    offs = (0, 16, 32)
    xs = {off: placed(x0, off) for off in offs}
    mean = np.zeros(C); var = np.zeros(C)
    t = {off: [] for off in offs}
    for r in range(21):
        order = offs[r % 3:] + offs[:r % 3]
        for off in order:
            x = xs[off]
            m.bn_stats(x, rows, 1, 1, C, mean, var, 1)
            t0 = time.perf_counter(); m.bn_stats(x, rows, 1, 1, C, mean, var, 1); ts = time.perf_counter() - t0
            Pr.probe_read(x, 1); t0 = time.perf_counter(); Pr.probe_read(x, 1); tr = time.perf_counter() - t0
            t[off].append(ts / tr)
    print(f"{rows}x{C} [{v}]: " + ", ".join(f"+{off}: {np.median(t[off]):.2f}x read" for off in offs), flush=True)
