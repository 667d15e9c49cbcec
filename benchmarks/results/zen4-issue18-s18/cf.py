import ctypes, os, sys, time, numpy as np, ckbn, ckbn.nn
from ckbn import _probes_avx512 as PR
ckbn.set_num_threads(1)
lib = ctypes.CDLL(os.path.join(os.path.dirname(os.path.abspath(__file__)), "libcf.so"))
P, G, H, W = map(int, sys.argv[1].split("x")); R = H * W
def al(n):
    buf = np.empty(n * 4 + 64, np.uint8); o = (-buf.ctypes.data) % 64
    return buf[o:o + n * 4].view(np.float32)
x = al(P * G * R); x[:] = np.random.default_rng(0).standard_normal(x.size); y = al(x.size); y2 = al(x.size)
a = np.ones(G, np.float32) * 0.5; b = np.ones(G, np.float32)
m, v = np.zeros(G, np.float32), np.ones(G, np.float32)
x4 = x.reshape(P, G, H, W); y4 = y2.reshape(P, G, H, W)
F = ctypes.c_void_p; pt = lambda q: F(q.ctypes.data)
calls = {"ckbn infer": lambda: ckbn.nn.fused_batch_norm(x4, a, b, m, v, 0.0, "NCHW", is_training=False, out=y4),
         "C plain": lambda: lib.aff(pt(x), pt(y), ctypes.c_ssize_t(P), ctypes.c_ssize_t(G), ctypes.c_ssize_t(R), pt(a), pt(b), 0),
         "C stream": lambda: lib.aff(pt(x), pt(y), ctypes.c_ssize_t(P), ctypes.c_ssize_t(G), ctypes.c_ssize_t(R), pt(a), pt(b), 1),
         "copy (memcpy)": lambda: PR.probe_copy(x, y, 1, True), "copy (loop)": lambda: PR.probe_copy(x, y, 1, False)}
t = {k: [] for k in calls}
for r in range(int(sys.argv[2])):
    for k, f in calls.items():
        f(); best = 1e9
        for _ in range(5):
            t0 = time.perf_counter(); f(); best = min(best, time.perf_counter() - t0)
        t[k].append(best)
cp = min(np.median(t["copy (memcpy)"]), np.median(t["copy (loop)"]))
print(sys.argv[1], "  ".join(f"{k} {np.median(v) * 1e6:.0f} us ({np.median(v) / cp:.2f})" for k, v in t.items()))
