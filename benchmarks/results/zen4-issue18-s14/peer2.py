import time, importlib, numpy as np, torch, ckbn._dispatch as D
torch.set_num_threads(1)
Pr = importlib.import_module(f"ckbn._probes_{D.kernel_name()}"); K = D.kernels()
for shp in [(3136, 2048), (6272, 1024)]:
    P, C = shp
    x = np.random.default_rng(0).standard_normal(shp).astype("f4"); junk = np.ones(16 << 20, "f4"); tx = torch.from_numpy(x)
    dy = np.random.default_rng(1).standard_normal(shp).astype("f4"); tdy = torch.from_numpy(dy)
    mean = np.zeros(C); var = np.zeros(C); s1 = np.zeros(C); s2 = np.zeros(C); mu = x.mean(0).astype("f8"); tmu = torch.from_numpy(mu.astype("f4"))
    calls = {"read": lambda: Pr.probe_read(x.reshape(-1), 1), "torch.var_mean": lambda: torch.var_mean(tx, 0),
             "np.sum0": lambda: x.sum(0), "ckbn stats": lambda: K.bn_stats(x.reshape(-1), 1, 1, P, C, mean, var, 1),
             "torch sums (dy, dy*(x-mu))": lambda: (tdy.sum(0), (tdy * (tx - tmu)).sum(0)),
             "ckbn grad sums": lambda: K.bn_grad_sums(dy.reshape(-1), x.reshape(-1), 1, 1, P, C, mu, s1, s2, 1)}
    t = {k: [] for k in calls}
    for r in range(15):
        for k, f in calls.items():
            junk.sum(); t0 = time.perf_counter(); f(); t[k].append(time.perf_counter() - t0)
    m = {k: np.median(v) for k, v in t.items()}
    print(shp, "; ".join(f"{k} {m[k]*1e6:.0f}us ({m[k]/m['read']:.2f})" for k in m))
