"""Warm A/B of two builds' kernel-level statistics / backward sums (one
process, alternating, N rounds): median and 10th percentile of new/old."""
import os, sys, time, glob, importlib.util, numpy as np, ckbn._dispatch as D
v = os.environ.get("CKBN_KERNELS") or D.kernel_name()
def load(path):
    spec = importlib.util.spec_from_file_location(f"ckbn._kernels_{v}", glob.glob(f"{path}/_kernels_{v}*.so")[0])
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m
old, new = load(sys.argv[1]), load(sys.argv[2]); rounds = int(sys.argv[3])
rng = np.random.default_rng(0)
for s in sys.argv[4].split():
    shp = tuple(map(int, s.split("x"))); C = shp[-1]; P = int(np.prod(shp[:-1]))
    x = (rng.standard_normal(P * C) * 2 + 3).astype("f4"); dy = rng.standard_normal(P * C).astype("f4")
    mean = np.zeros(C); var = np.zeros(C); mu = np.zeros(C); s1 = np.zeros(C); s2 = np.zeros(C)
    out = []
    for what in os.environ.get("AB_KINDS", "stats").split():
        t = {"old": [], "new": []}
        for r in range(rounds):
            for name, m in ((("old", old), ("new", new)) if r % 2 else (("new", new), ("old", old))):
                f = (lambda: m.bn_stats(x, 1, 1, P, C, mean, var, 1)) if what == "stats" else (lambda: m.bn_grad_sums(dy, x, 1, 1, P, C, mu, s1, s2, 1))
                f(); t0 = time.perf_counter(); f(); t[name].append(time.perf_counter() - t0)
        o, n = np.array(t["old"]), np.array(t["new"])
        out.append(f"{what} median {np.median(n) / np.median(o):.3f} p10 {np.percentile(n, 10) / np.percentile(o, 10):.3f} (old {np.median(o) * 1e6:.1f} us)")
    print(s, "|", "; ".join(out), flush=True)
