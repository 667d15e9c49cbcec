"""Interleaved A/B of two builds: kernel-level planes-path statistics and backward sums (NCHW),
warm (a call just before) and read (a read of the inputs just before); medians of new/old."""
import os, sys, time, glob, importlib, importlib.util, numpy as np, ckbn._dispatch as D
v = os.environ.get("CKBN_KERNELS") or D.kernel_name()
def load(path):
    spec = importlib.util.spec_from_file_location(f"ckbn._kernels_{v}", glob.glob(f"{path}/_kernels_{v}*.so")[0])
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m
old, new = load(sys.argv[1]), load(sys.argv[2]); rounds = int(sys.argv[3])
Pr = importlib.import_module(f"ckbn._probes_{v}")
rng = np.random.default_rng(0)
for s in sys.argv[4].split():
    P, G, R = map(int, s.split("x"))
    x = (rng.standard_normal(P * G * R) * 2 + 3).astype("f4"); dy = rng.standard_normal(P * G * R).astype("f4")
    mean = np.zeros(G); var = np.zeros(G); mu = np.zeros(G); s1 = np.zeros(G); s2 = np.zeros(G)
    out = []
    for what in ("stats", "sums"):
        for cond in ("warm", "read"):
            t = {"old": [], "new": []}
            for r in range(rounds):
                for name, m in ((("old", old), ("new", new)) if r % 2 else (("new", new), ("old", old))):
                    f = (lambda: m.bn_stats(x, P, G, R, 1, mean, var, 1)) if what == "stats" else (lambda: m.bn_grad_sums(dy, x, P, G, R, 1, mu, s1, s2, 1))
                    if cond == "warm": f()
                    else:
                        Pr.probe_read(x, 1)
                        if what == "sums": Pr.probe_read(dy, 1)
                    t0 = time.perf_counter(); f(); t[name].append(time.perf_counter() - t0)
            out.append(f"{what} {cond} {np.median(t['new']) / np.median(t['old']):.2f}")
    print(f"{s} [{v}]: " + ", ".join(out), flush=True)
