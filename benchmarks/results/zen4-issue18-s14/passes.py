"""Per-pass times of the wide channels-last kernels against the probes,
side by side, 1 thread, float32.  python passes.py [rounds]"""
import sys, time, importlib
import numpy as np, ckbn
import ckbn._dispatch as D
K = D.kernels(); v = D.kernel_name()
Pr = importlib.import_module(f"ckbn._probes_{v}")
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
rng = np.random.default_rng(0)
shapes = [tuple(map(int, s.split("x"))) for s in (sys.argv[2] if len(sys.argv) > 2 else "64x7x7x2048 32x14x14x1024 32x28x28x256").split()]
for shp in shapes:
    C = shp[-1]; P = int(np.prod(shp[:-1]))
    x = (rng.standard_normal(shp) * 2 + 3).astype("f4").reshape(-1)
    dy = rng.standard_normal(shp).astype("f4").reshape(-1)
    y = np.empty_like(x); dst = np.empty_like(x)
    mean = np.zeros(C); var = np.zeros(C)
    a = np.ones(C, "f4"); b = np.zeros(C, "f4"); s1 = np.zeros(C); s2 = np.zeros(C)
    mu = x.reshape(-1, C).mean(0).astype("f8")
    calls = {
        "read": lambda: Pr.probe_read(x, 1),
        "copy": lambda: Pr.probe_copy(x, dst, 1),
        "stats": lambda: K.bn_stats(x, 1, 1, P, C, mean, var, 1),
        "affine": lambda: K.bn_affine(x, 1, 1, P, C, a, b, y, 1),
        "sums": lambda: K.bn_grad_sums(dy, x, 1, 1, P, C, mu, s1, s2, 1),
        "dx": lambda: K.bn_grad_dx(dy, x, 1, 1, P, C, a, a, b, y, 1),
    }
    t = {k: [] for k in calls}
    for r in range(rounds):
        for k, f in calls.items():
            t0 = time.perf_counter(); f(); t[k].append(time.perf_counter() - t0)
    m = {k: np.median(vv) for k, vv in t.items()}
    print(f"{'x'.join(map(str, shp))} [{v}] read {m['read']*1e3:.2f} ms copy {m['copy']*1e3:.2f} ms | "
          f"stats/read {m['stats']/m['read']:.2f} sums/2read {m['sums']/(2*m['read']):.2f} "
          f"affine/copy {m['affine']/m['copy']:.2f} dx/(read+copy) {m['dx']/(m['read']+m['copy']):.2f}", flush=True)
