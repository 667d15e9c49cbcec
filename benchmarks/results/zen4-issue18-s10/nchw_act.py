import sys, timeit
sys.path.insert(0, "/work/main")
import numpy as np, ckbn
rng = np.random.default_rng(0)
for shp in [(16,192,8,8),(16,96,16,16),(16,32,32,32),(16,576,4,4),(64,2048,7,7),(16,960,2,2)]:
    C = shp[1]
    x = rng.standard_normal(shp).astype('f4'); dy = rng.standard_normal(shp).astype('f4')
    g = (rng.random(C)+.5).astype('f4'); b = rng.standard_normal(C).astype('f4')*.3
    _, m, v = ckbn.nn.fused_batch_norm(x, g, b, data_format="NCHW")
    row = []
    for act in (None, "relu"):
        kw = dict(activation=act, offset=b) if act else {}
        for nt in (1, 2):
            with ckbn.num_threads(nt):
                f = lambda: ckbn.nn.fused_batch_norm_grad(dy, x, g, m, v, data_format="NCHW", **kw)
                f(); n = 20 if x.size < 1e6 else 3
                t = sorted(timeit.repeat(f, number=n, repeat=7))[2] / n * 1e6
            row.append(f"{act or 'none'} {nt}t {t:8.1f}")
    print("x".join(map(str, shp)), " | ".join(row))
