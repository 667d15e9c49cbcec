import sys, time, glob, importlib.util
import numpy as np
import ckbn._dispatch as D
variant = D.kernel_name(); new = D.kernels()
spec = importlib.util.spec_from_file_location(new.__name__, glob.glob(f"{sys.argv[1]}/_kernels_{variant}*.so")[0])
old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)
rng = np.random.default_rng(0)
for s in sys.argv[2].split():
    P, C = map(int, s.split("x")); n = P*C
    x = (rng.standard_normal(n)*2+3).astype("f4"); dy = rng.standard_normal(n).astype("f4")
    mu = np.zeros(C); m = np.zeros(C); v = np.zeros(C); a = np.zeros(C); b = np.zeros(C)
    res = {"old": {}, "new": {}}
    for r in range(int(sys.argv[3]) if len(sys.argv) > 3 else 60):
        for name, K in ((("old", old), ("new", new)) if r % 2 == 0 else (("new", new), ("old", old))):
            for k, f in (("stats", lambda: K.bn_stats(x, 1, 1, P, C, m, v, 1)), ("sums", lambda: K.bn_grad_sums(dy, x, 1, 1, P, C, mu, a, b, 1))):
                f(); t0 = time.perf_counter(); f(); res[name].setdefault(k, []).append(time.perf_counter() - t0)
    o = {k: np.median(q)*1e6 for k, q in res["old"].items()}; w = {k: np.median(q)*1e6 for k, q in res["new"].items()}
    print(f"{s} ({n*4>>10} KiB): stats {o['stats']:.1f} -> {w['stats']:.1f} ({w['stats']/o['stats']:.2f}), sums {o['sums']:.1f} -> {w['sums']:.1f} ({w['sums']/o['sums']:.2f})", flush=True)
