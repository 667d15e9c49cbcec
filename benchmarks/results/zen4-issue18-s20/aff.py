import sys, time, importlib, numpy as np, ckbn._dispatch as D
v = D.kernel_name(); m = importlib.import_module(f"ckbn._kernels_{v}"); Pr = importlib.import_module(f"ckbn._probes_{v}")
for s in sys.argv[2].split():
    N, C = map(int, s.split("x"))
    x = (np.random.default_rng(0).standard_normal(N * C)).astype("f4"); y = np.zeros_like(x)
    a = np.ones(C, "f4") * 1.5; b = np.ones(C, "f4") * .25
    ops = {"read": lambda: Pr.probe_read(x, 1), "memcpy": lambda: Pr.probe_copy(x, y, 1, True),
           "loop": lambda: Pr.probe_copy(x, y, 1, False), "p_aff": lambda: Pr.probe_affine(x, a, b, y, 1),
           "p_aff1": lambda: Pr.probe_affine(x, a[:1], b[:1], y, 1),
           "bn_aff": lambda: m.bn_affine(x, N, 1, 1, C, a, b, y, 1)}
    t = {k: [] for k in ops}; names = list(ops)
    for r in range(int(sys.argv[1])):
        for k in names[r % len(names):] + names[:r % len(names)]:
            ops[k](); t0 = time.perf_counter(); ops[k](); t[k].append(time.perf_counter() - t0)
    md = {k: np.median(t[k]) for k in t}
    print(f"{s} [{v}] x at +{x.ctypes.data % 64}, y at +{y.ctypes.data % 64}: " + " ".join(f"{k} {md[k]/md['read']:.2f}" for k in names), flush=True)
