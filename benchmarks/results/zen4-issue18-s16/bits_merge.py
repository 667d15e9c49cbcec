# bits of the statistics: the build before the merge change against after, many shapes / parts
import glob, importlib.util, numpy as np, sys
def load(path, v):
    spec = importlib.util.spec_from_file_location(f"ckbn._kernels_{v}", glob.glob(f"{path}/_kernels_{v}*.so")[0])
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m
rng = np.random.default_rng(1); bad = 0; n = 0
for v in ("avx512", "avx2", "base"):
    a, b = load(sys.argv[1], v), load(sys.argv[2], v)
    for P, G, R, C in [(1,1,392,2048),(1,1,3136,2048),(1,1,256,1024),(1,1,5000,100),(64,32,49,1),(16,64,64,1),(1,1,100000,3),(7,5,33,13),(1,1,70000,67)]:
        for dt in ("f4", "f8"):
            x = (rng.standard_normal(P*G*R*C) * 3 + 1e3).astype(dt)
            for nt in (1, 2):
                r = []
                for m in (a, b):
                    mean = np.zeros(G*C); var = np.zeros(G*C); m.bn_stats(x, P, G, R, C, mean, var, nt); r.append((mean, var))
                n += 1
                if not (np.array_equal(r[0][0], r[1][0]) and np.array_equal(r[0][1], r[1][1])):
                    bad += 1; print("DIFF", v, P, G, R, C, dt, nt)
print(f"{n - bad}/{n} identical")
