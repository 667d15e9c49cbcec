import sys, glob, importlib.util
import numpy as np
import ckbn._dispatch as D
variant = sys.argv[2] if len(sys.argv) > 2 else D.kernel_name()
def load(path):
    spec = importlib.util.spec_from_file_location(f"ckbn._kernels_{variant}", glob.glob(f"{path}/_kernels_{variant}*.so")[0])
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m
old = load(sys.argv[1]); new = load("ckbn")
rng = np.random.default_rng(5)
bad = 0; n = 0
for dt in ("f4", "f8"):
    for (P, G, R) in [(8, 300, 49), (5, 777, 36), (3, 1000, 64), (4, 333, 196), (2, 100, 784), (2, 70, 1024), (2, 50, 2000), (13, 170, 33), (64, 100, 49), (7, 41, 17)]:
        assert old.reduction_path(P, G, R, 1) == new.reduction_path(P, G, R, 1)
        path = new.reduction_path(P, G, R, 1)
        x = (rng.standard_normal(P*G*R) * 3 + 7).astype(dt); dy = rng.standard_normal(P*G*R).astype(dt)
        mu = rng.standard_normal(G); za = rng.uniform(0.5, 2, G).astype(dt); zb = rng.uniform(-1, 1, G).astype(dt)
        outs = []
        for K in (old, new):
            m = np.zeros(G); v = np.zeros(G); a = np.zeros(G); b = np.zeros(G)
            K.bn_stats(x, P, G, R, 1, m, v, 1)
            K.bn_grad_sums(dy, x, P, G, R, 1, mu, a, b, 1)
            outs.append(np.concatenate([m, v, a, b]))
        n += 1
        same = outs[0].tobytes() == outs[1].tobytes()
        bad += not same
        print(dt, (P, G, R), path, "same" if same else f"DIFF {np.max(np.abs(outs[0]-outs[1]))}")
print(f"{n - bad}/{n} identical")
