"""Statistics of PxC float32 channels-last rows: ckbn's kernel (bn_stats) against C
probes of the same traffic in memory order (libnc.so) and a read, one process,
side by side.  python mom.py PxC ROUNDS"""
import ctypes, sys, time, os
import numpy as np, ckbn
from ckbn._dispatch import kernels
from ckbn import _probes_avx512 as PR
lib = ctypes.CDLL(os.path.join(os.path.dirname(os.path.abspath(__file__)), "libnc.so"))
lib.read1.restype = ctypes.c_float
P, C = map(int, sys.argv[1].split("x")); rounds = int(sys.argv[2])
off = int(os.environ.get("OFF", "0"))
rng = np.random.default_rng(0)
def placed(shape, o=off):
    n = int(np.prod(shape)) * 4
    buf = np.empty(n + 8192, np.uint8)
    base = (-buf.ctypes.data) % 4096 + o
    a = buf[base:base + n].view(np.float32).reshape(shape); a[...] = rng.standard_normal(shape); return a
x = placed((P, C)); K, b1, b2 = (placed((C,), int(o)) for o in os.environ.get("SOFF", "0 0 0").split())
k = kernels(); xf = x.reshape(-1)
m = np.empty(C); v = np.empty(C)
F = ctypes.c_void_p; p = lambda a: F(a.ctypes.data)
calls = {
    "ckbn stats": lambda: k.bn_stats(xf, 1, 1, P, C, m, v, 1),
    "probe row": lambda: lib.mom(p(x), ctypes.c_ssize_t(P), ctypes.c_ssize_t(C), p(K), p(b1), p(b2)),
    "probe 2 rows": lambda: lib.mom2(p(x), ctypes.c_ssize_t(P), ctypes.c_ssize_t(C), p(K), p(b1), p(b2)),
    "read (C)": lambda: lib.read1(p(x), ctypes.c_ssize_t(P * C)),
    "read (probe_read)": lambda: PR.probe_read(xf, 1),
}
t = {kk: [] for kk in calls}
for r in range(rounds):
    for kk, f in calls.items():
        f()
        best = 1e9
        for _ in range(5):
            t0 = time.perf_counter(); f(); best = min(best, time.perf_counter() - t0)
        t[kk].append(best)
med = {kk: np.median(vv) * 1e6 for kk, vv in t.items()}
rd = min(med["read (C)"], med["read (probe_read)"])
print(f"{P}x{C} at +{off}: " + "  ".join(f"{kk} {vv:.0f}" for kk, vv in med.items()) + " us;  x read: " + "  ".join(f"{kk} {vv / rd:.2f}" for kk, vv in med.items()))
