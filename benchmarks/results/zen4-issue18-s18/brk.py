import time, sys, numpy as np, torch
import ckbn, ckbn.nn, ckbn._ops as O
from ckbn._dispatch import kernels
torch.set_num_threads(1)
K = kernels()
rng = np.random.default_rng(0)
def placed(a, off):
    buf = np.empty(a.nbytes + 8192, np.uint8)
    base = (-buf.ctypes.data) % 4096 + off
    out = buf[base:base + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out
shape = (16, 32, 8, 8); c = 32; eps = 1e-3
g = rng.random(c, dtype=np.float32) + 0.5
b = rng.standard_normal(c).astype(np.float32)
xo, do = [int(v) for v in (sys.argv[1:3] if len(sys.argv) > 2 else (0, 0))]
x = placed(rng.standard_normal(shape).astype("f4"), xo)
dy = placed(rng.standard_normal(shape).astype("f4"), do)
_, bm, bv = ckbn.nn.fused_batch_norm(x, g, b, epsilon=eps, data_format="NCHW")
tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
tw = torch.from_numpy(g); tsm = torch.from_numpy(bm)
tsi = torch.from_numpy((1.0 / np.sqrt(bv.astype(np.float64) + eps)).astype(np.float32))
calls = {
 "nn": lambda: ckbn.nn.fused_batch_norm_grad(dy, x, g, bm, bv, eps, "NCHW"),
 "kern": lambda: K.common_backward(dy, x, g, bm, bv, eps, "NCHW", True, None, None, 1),
 "empty": lambda: np.empty(shape, np.float32),
 "torch": lambda: torch.ops.aten.native_batch_norm_backward(tdy, tx, tw, None, None, tsm, tsi, True, eps, [True, True, True]),
}
t = {k: [] for k in calls}
for r in range(int(sys.argv[3]) if len(sys.argv) > 3 else 30):
    for k, f in calls.items():
        f()
        t0 = time.perf_counter()
        for _ in range(200):
            f()
        t[k].append((time.perf_counter() - t0) / 200 * 1e6)
print(f"x+{xo} dy+{do}: " + "  ".join(f"{k} {np.median(v):.2f} (min {min(v):.2f})" for k, v in t.items()),
      f" nn/torch {np.median(t['nn'])/np.median(t['torch']):.3f}")
