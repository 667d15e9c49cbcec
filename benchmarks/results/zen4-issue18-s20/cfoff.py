"""Channels-first chunked passes with x (and dy) at several offsets past a page:
statistics, training, backward sums; one build; times in us (medians)."""
import sys, time, importlib, numpy as np, ckbn._dispatch as D
v = D.kernel_name(); m = importlib.import_module(f"ckbn._kernels_{v}"); Pr = importlib.import_module(f"ckbn._probes_{v}")
def placed(a, off):
    buf = np.empty(a.nbytes + 8192, np.uint8)
    base = (-buf.ctypes.data) % 4096 + off
    o = buf[base:base + a.nbytes].view(a.dtype); o[...] = a; return o
rng = np.random.default_rng(0)
offs = (0, 16, 32, 48, 64)
for s in sys.argv[2].split():
    P, G, R = map(int, s.split("x"))
    n = P * G * R
    x0 = (rng.standard_normal(n) * 2 + 3).astype("f4"); d0 = rng.standard_normal(n).astype("f4")
    xs = {o: placed(x0, o) for o in offs}; ds = {o: placed(d0, o) for o in offs}
    y = placed(np.zeros(n, "f4"), 0)
    sc = np.ones(G); of = np.zeros(G); mean = np.zeros(G); var = np.zeros(G); s1 = np.zeros(G); s2 = np.zeros(G)
    print(s, m.reduction_path(P, G, R, 1))
    for kind in ("read", "stats", "train", "sums"):
        t = {o: [] for o in offs}
        for r in range(int(sys.argv[1])):
            for o in offs[r % 5:] + offs[:r % 5]:
                x, d = xs[o], ds[o]
                f = {"read": lambda: Pr.probe_read(x, 1), "stats": lambda: m.bn_stats(x, P, G, R, 1, mean, var, 1),
                     "train": lambda: m.bn_forward_train(x, P, G, R, 1, sc, of, 1e-3, y, mean, var, 1),
                     "sums": lambda: m.bn_grad_sums(d, x, P, G, R, 1, mean, s1, s2, 1)}[kind]
                f(); t0 = time.perf_counter(); f(); t[o].append(time.perf_counter() - t0)
        print(f"  {kind:6s} " + " ".join(f"+{o}: {np.median(t[o])*1e6:7.1f}" for o in offs), flush=True)
