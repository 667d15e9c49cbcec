import glob, importlib.util, os, sys, time, numpy as np, ckbn._dispatch as D
v = os.environ.get("CKBN_KERNELS") or D.kernel_name()
def load(path):
    spec = importlib.util.spec_from_file_location(f"ckbn._kernels_{v}", glob.glob(f"{path}/_kernels_{v}*.so")[0])
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m
def placed(a, off):
    buf = np.empty(a.nbytes + 8192, np.uint8); base = (-buf.ctypes.data) % 4096 + off
    out = buf[base:base + a.nbytes].view(a.dtype).reshape(a.shape); out[...] = a; return out
old, new = load(sys.argv[1]), load(sys.argv[2]); rounds = int(sys.argv[3])
offs=[int(o) for o in os.environ.get("AB_OFFS","0 16").split()]
rng = np.random.default_rng(0)
for s in sys.argv[4].split():
    P, C = map(int, s.split("x"))
    a = (rng.standard_normal(P * C) * 2 + 3).astype("f4"); d0 = rng.standard_normal(P * C).astype("f4")
    for off in offs:
        x = placed(a, off); dy = placed(d0, off)
        mean = np.zeros(C); var = np.zeros(C); mu = np.zeros(C); s1 = np.zeros(C); s2 = np.zeros(C)
        out = []
        for what in os.environ.get("AB_KINDS", "stats sums").split():
            t = {"old": [], "new": []}
            for r in range(rounds):
                for name, m in ((("old", old), ("new", new)) if r % 2 else (("new", new), ("old", old))):
                    f = (lambda: m.bn_stats(x, 1, 1, P, C, mean, var, 1)) if what == "stats" else (lambda: m.bn_grad_sums(dy, x, 1, 1, P, C, mu, s1, s2, 1))
                    f(); t0 = time.perf_counter(); f(); t[name].append(time.perf_counter() - t0)
            o, n = np.array(t["old"]), np.array(t["new"])
            out.append(f"{what} {np.median(n) / np.median(o):.3f} (old {np.median(o) * 1e6:.1f} us)")
        print(s, f"+{off}", "|", "; ".join(out), flush=True)
