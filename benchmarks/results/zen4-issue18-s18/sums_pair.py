"""Backward sums (bn_grad_sums, channels-last PxC float32, 1 thread) with x and dy
at chosen offsets into a 64-byte line (dy a further 1 KiB on): how much a dy off
x's line costs.  python sums_pair.py ROUNDS "PxC ..." ["XOFF:DYOFF ..."]"""
import os, sys, time, numpy as np
from ckbn._dispatch import kernels
k = kernels()
def placed(a, off):
    buf = np.empty(a.nbytes + 8192, np.uint8); base = (-buf.ctypes.data) % 4096 + off
    out = buf[base:base + a.nbytes].view(a.dtype); out[...] = a; return out
rounds = int(sys.argv[1])
pairs = [tuple(map(int, p.split(":"))) for p in (sys.argv[3] if len(sys.argv) > 3 else "0:0 0:16 0:32 0:48").split()]
rng = np.random.default_rng(0)
for s in sys.argv[2].split():
    P, C = map(int, s.split("x"))
    a = (rng.standard_normal(P * C) * 2 + 3).astype("f4"); d0 = rng.standard_normal(P * C).astype("f4")
    arrs = [(placed(a, xo), placed(d0, 1024 + do)) for xo, do in pairs]
    mu = np.zeros(C); s1 = np.zeros(C); s2 = np.zeros(C)
    t = [[] for _ in pairs]
    for r in range(rounds):
        for i, (x, dy) in enumerate(arrs):
            k.bn_grad_sums(dy, x, 1, 1, P, C, mu, s1, s2, 1)
            t0 = time.perf_counter(); k.bn_grad_sums(dy, x, 1, 1, P, C, mu, s1, s2, 1); t[i].append(time.perf_counter() - t0)
    base = np.median(t[0])
    print(s, " ".join(f"x+{p[0]},dy+{p[1]}: {np.median(v) * 1e6:.1f} us ({np.median(v) / base:.2f})" for p, v in zip(pairs, t)), flush=True)
