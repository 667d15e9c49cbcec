import time, importlib, numpy as np, ckbn._dispatch as D
Pr = importlib.import_module(f"ckbn._probes_{D.kernel_name()}")
K = D.kernels()
for shp in [(3136, 2048), (6272, 1024), (25088, 256)]:
    P, C = shp
    x = np.random.default_rng(0).standard_normal(shp).astype("f4"); junk = np.ones(16 << 20, "f4")
    out = np.zeros(C, "f4"); mean = np.zeros(C); var = np.zeros(C)
    calls = {"read": lambda: Pr.probe_read(x.reshape(-1), 1), "np.sum0": lambda: np.sum(x, axis=0, out=out),
             "np.add.reduce f8": lambda: np.add.reduce(x, axis=0, dtype="f8"),
             "ckbn stats": lambda: K.bn_stats(x.reshape(-1), 1, 1, P, C, mean, var, 1)}
    t = {k: [] for k in calls}
    for r in range(20):
        for k, f in calls.items():
            junk.sum(); t0 = time.perf_counter(); f(); t[k].append(time.perf_counter() - t0)
    m = {k: np.median(v) for k, v in t.items()}
    print(shp, " ".join(f"{k} {m[k]*1e6:.0f}us ({m[k]/m['read']:.2f})" for k in m))
