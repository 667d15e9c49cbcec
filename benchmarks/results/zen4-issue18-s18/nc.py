"""The channels-last backward of PxC float32 (ckbn.nn, and torch) against C probes of
its traffic (libnc.so), side by side in one process, arrays on 64-byte lines
(run twice).  python nc.py PxC ROUNDS"""
import ctypes, sys, time, os
import numpy as np, torch, ckbn, ckbn.nn
torch.set_num_threads(1); ckbn.set_num_threads(1) if hasattr(ckbn, "set_num_threads") else None
lib = ctypes.CDLL(os.path.join(os.path.dirname(os.path.abspath(__file__)), "libnc.so"))
P, C = map(int, sys.argv[1].split("x")); rounds = int(sys.argv[2])
off = int(os.environ.get("OFF", "0"))
rng = np.random.default_rng(0)
def placed(shape, o=off):
    n = int(np.prod(shape)) * 4
    buf = np.empty(n + 8192, np.uint8)
    base = (-buf.ctypes.data) % 4096 + o
    a = buf[base:base + n].view(np.float32).reshape(shape); a[...] = rng.standard_normal(shape); return a
x, dy, dx = placed((P, C)), placed((P, C)), placed((P, C))
g = (rng.random(C) + .5).astype("f4")
_, bm, bv = ckbn.nn.fused_batch_norm(x, g, None, epsilon=1e-3, data_format="NC")
mu, b1, b2, k1, k2, k3 = (placed((C,), 0) for _ in range(6))
F = ctypes.c_void_p
p = lambda a: F(a.ctypes.data)
tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
tsm = torch.from_numpy(bm); tsi = torch.from_numpy((1 / np.sqrt(bv.astype(np.float64) + 1e-3)).astype("f4")); tw = torch.from_numpy(g)
calls = {
    "ckbn": lambda: ckbn.nn.fused_batch_norm_grad(dy, x, g, bm, bv, 1e-3, "NC"),
    "torch": lambda: torch.ops.aten.native_batch_norm_backward(tdy, tx, tw, None, None, tsm, tsi, True, 1e-3, [True, True, True]),
    "probe": lambda: lib.bwd(p(dy), p(x), ctypes.c_ssize_t(P), ctypes.c_ssize_t(C), p(mu), p(b1), p(b2), p(k1), p(k2), p(k3), p(dx), 0, 0),
    "probe4": lambda: lib.bwd(p(dy), p(x), ctypes.c_ssize_t(P), ctypes.c_ssize_t(C), p(mu), p(b1), p(b2), p(k1), p(k2), p(k3), p(dx), 1, 0),
    "probe4rev": lambda: lib.bwd(p(dy), p(x), ctypes.c_ssize_t(P), ctypes.c_ssize_t(C), p(mu), p(b1), p(b2), p(k1), p(k2), p(k3), p(dx), 1, 1),
    "read2": lambda: lib.read2(p(dy), p(x), ctypes.c_ssize_t(P * C)),
    "sums4": lambda: lib.sums4(p(dy), p(x), ctypes.c_ssize_t(P), ctypes.c_ssize_t(C), p(mu), p(b1), p(b2)),
    "dx": lambda: lib.dxp(p(dy), p(x), ctypes.c_ssize_t(P), ctypes.c_ssize_t(C), p(k1), p(k2), p(k3), p(dx)),
}
t = {k: [] for k in calls}
for r in range(rounds):
    for k, f in calls.items():
        f(); f()
        best = 1e9
        for _ in range(20):
            t0 = time.perf_counter(); f(); best = min(best, time.perf_counter() - t0)
        t[k].append(best)
med = {k: np.median(v) * 1e6 for k, v in t.items()}
print(f"{P}x{C} NC at +{off}: " + "  ".join(f"{k} {v:.1f}" for k, v in med.items()) + " us;  ckbn/probe4 %.2f, ckbn/(read2+dx) %.2f" % (med["ckbn"] / med["probe4"], med["ckbn"] / (med["read2"] + med["dx"])))
