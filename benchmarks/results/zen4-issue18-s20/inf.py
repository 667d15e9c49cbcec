import sys, time, importlib, numpy as np, ckbn._dispatch as D
v = D.kernel_name(); m = importlib.import_module(f"ckbn._kernels_{v}"); Pr = importlib.import_module(f"ckbn._probes_{v}")
rng = np.random.default_rng(0)
for s in sys.argv[2].split():
    shape = tuple(map(int, s.split("x"))); C = shape[-1]
    x = rng.standard_normal(shape).astype("f4"); xf = x.reshape(-1); cp = np.zeros_like(xf); yo = np.zeros_like(x)
    g = np.ones(C, "f4"); b = np.zeros(C, "f4"); mm = np.zeros(C, "f4"); mv = np.ones(C, "f4")
    ops = {"read": lambda: Pr.probe_read(xf, 1), "memcpy": lambda: Pr.probe_copy(xf, cp, 1, True),
           "loop": lambda: Pr.probe_copy(xf, cp, 1, False),
           "infer": lambda: m.common_forward(x, g, b, mm, mv, 1e-3, "NHWC", False, None, None, 1),
           "infer_out": lambda: m.common_forward(x, g, b, mm, mv, 1e-3, "NHWC", False, yo, None, 1),
           "train": lambda: m.common_forward(x, g, b, None, None, 1e-3, "NHWC", True, None, None, 1),
           "train_out": lambda: m.common_forward(x, g, b, None, None, 1e-3, "NHWC", True, yo, None, 1)}
    t = {q: [] for q in ops}; names = list(ops)
    for r in range(int(sys.argv[1])):
        for q in names[r % len(names):] + names[:r % len(names)]:
            ops[q](); t0 = time.perf_counter(); ops[q](); t[q].append(time.perf_counter() - t0)
    md = {q: np.median(t[q]) for q in t}; cpy = min(md["memcpy"], md["loop"])
    print(s, f"read {md['read']*1e6:.0f}us memcpy {md['memcpy']/md['read']:.2f} loop {md['loop']/md['read']:.2f} infer {md['infer']/md['read']:.2f} -> infer/copy {md['infer']/cpy:.2f} infer_out/copy {md['infer_out']/cpy:.2f} train/roof {md['train']/(cpy+md['read']):.2f} train_out/roof {md['train_out']/(cpy+md['read']):.2f}")
