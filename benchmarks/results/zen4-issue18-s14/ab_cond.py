"""A/B of two kernel builds on the wide channels-last statistics and training
forward, under three conditions of the caches before each call:
  cold: a 64 MB read of other memory (x is in no cache);
  read: one read of x (as ab_read.py: x partly in L3);
  warm: back to back (the previous call of the same kind).
The reference is one read of x from DRAM (after the 64 MB read).
python ab_cond.py OLD_DIR [rounds]; AB_KINDS="stats train sums bwd" picks the calls,
AB_SHAPES="32x7x7x2048 256x1024" the shapes."""
import os, sys, time, glob, importlib, importlib.util, numpy as np, ckbn, ckbn._dispatch as D
new = D.kernels(); v = D.kernel_name()
spec = importlib.util.spec_from_file_location(new.__name__, glob.glob(f"{sys.argv[1]}/_kernels_{v}*.so")[0])
old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)
Pr = importlib.import_module(f"ckbn._probes_{v}")
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 15
rng = np.random.default_rng(0)
junk = np.ones(16 << 20, "f4")
for shp in [tuple(map(int, s.split("x"))) for s in os.environ.get("AB_SHAPES", "64x7x7x2048 32x14x14x1024").split()]:
    C = shp[-1]; P = int(np.prod(shp[:-1]))
    x = (rng.standard_normal(shp) * 2 + 3).astype("f4").reshape(-1)
    y = np.empty_like(x); mean = np.zeros(C); var = np.zeros(C)
    sc = np.ones(C); of = np.zeros(C)
    out = []
    dyv = rng.standard_normal(x.size).astype("f4"); dx = np.empty_like(x); mu = np.zeros(C); ds = np.zeros(C); do = np.zeros(C)
    for what in (os.environ.get("AB_KINDS", "stats train").split()):
        for cond in ("cold", "read", "warm"):
            t = {"old": [], "new": [], "ref": []}
            for r in range(rounds):
                for name, mod in ((("old", old), ("new", new)) if r % 2 else (("new", new), ("old", old))):
                    f = {"stats": lambda m=mod: m.bn_stats(x, 1, 1, P, C, mean, var, 1),
                         "train": lambda m=mod: m.bn_forward_train(x, 1, 1, P, C, sc, of, 1e-3, y, mean, var, 1),
                         "sums": lambda m=mod: m.bn_grad_sums(dyv, x, 1, 1, P, C, mu, ds, do, 1),
                         "infer": lambda m=mod: m.bn_forward_infer(x, 1, 1, P, C, sc, of, mu, sc, 1e-3, y, 1),
                         "dx": lambda m=mod: m.bn_grad_dx(dyv, x, 1, 1, P, C, x[:C], x[C:2 * C], x[:C], dx, 1),
                         "sums_relu": lambda m=mod: m.bn_grad_sums(dyv, x, 1, 1, P, C, mu, ds, do, 1, za=x[:C], zb=x[C:2 * C], act=True),
                         "bwd_relu": lambda m=mod: m.bn_backward(dyv, x, 1, 1, P, C, sc, mu, sc, 1e-3, True, dx, ds, do, 1, offset=of, act=True),
                         "bwd": lambda m=mod: m.bn_backward(dyv, x, 1, 1, P, C, sc, mu, sc, 1e-3, True, dx, ds, do, 1)}[what]
                    if cond == "cold": junk.sum()
                    elif cond == "read": Pr.probe_read(x, 1)
                    else: f()
                    t0 = time.perf_counter(); f(); t[name].append(time.perf_counter() - t0)
                junk.sum(); t0 = time.perf_counter(); Pr.probe_read(x, 1); t["ref"].append(time.perf_counter() - t0)
            m = {k: np.median(vv) for k, vv in t.items()}
            out.append(f"{what} {cond} new/old {m['new']/m['old']:.2f} (old {m['old']/m['ref']:.2f} new {m['new']/m['ref']:.2f} x cold read)")
    print("x".join(map(str, shp)), "|", "; ".join(out), flush=True)
