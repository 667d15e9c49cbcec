"""Breakdown of wide-row passes (float32, 1 thread): medians over rounds, each ÷ read."""
import sys, time, importlib, glob, importlib.util, os
import numpy as np
import ckbn._dispatch as D
v = os.environ.get("CKBN_KERNELS") or D.kernel_name()
def load(path):
    spec = importlib.util.spec_from_file_location(f"ckbn._kernels_{v}", glob.glob(f"{path}/_kernels_{v}*.so")[0])
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m
m = load(sys.argv[1]); rounds = int(sys.argv[2])
Pr = importlib.import_module(f"ckbn._probes_{v}")
rng = np.random.default_rng(0)
for s in sys.argv[3].split():
    N, C = map(int, s.split("x"))
    x = (rng.standard_normal(N * C) * 2 + 3).astype("f4"); dy = rng.standard_normal(N * C).astype("f4")
    y = np.empty_like(x); y[...] = 0; dx = np.empty_like(x); dx[...] = 0; cp = np.empty_like(x); cp[...] = 0
    sc = np.ones(C); of = np.zeros(C); mean = np.zeros(C); var = np.zeros(C)
    a = np.ones(C, "f4"); b = np.zeros(C, "f4"); mu = np.zeros(C); s1 = np.zeros(C); s2 = np.zeros(C)
    k1 = np.ones(C, "f4")
    ops = {
        "read": lambda: Pr.probe_read(x, 1),
        "copy": lambda: Pr.probe_copy(x, cp, 1, False),
        "stats": lambda: m.bn_stats(x, N, 1, 1, C, mean, var, 1),
        "affine": lambda: m.bn_affine(x, N, 1, 1, C, a, b, y, 1),
        "train": lambda: m.bn_forward_train(x, N, 1, 1, C, sc, of, 1e-3, y, mean, var, 1),
        "sums": lambda: m.bn_grad_sums(dy, x, N, 1, 1, C, mu, s1, s2, 1),
        "dx": lambda: m.bn_grad_dx(dy, x, N, 1, 1, C, k1, k1, k1, dx, 1),
        "bwd": lambda: m.bn_backward(dy, x, N, 1, 1, C, sc, mu, var, 1e-3, dx, s1, s2, 1) if False else None,
    }
    del ops["bwd"]
    t = {k: [] for k in ops}
    names = list(ops)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            ops[k]()
            t0 = time.perf_counter(); ops[k](); t[k].append(time.perf_counter() - t0)
    med = {k: np.median(t[k]) for k in t}
    rd = med["read"]
    print(f"{s} [{v}] read {rd*1e6:.1f}us: " + " ".join(f"{k} {med[k]/rd:.2f}" for k in names if k != "read"), flush=True)
