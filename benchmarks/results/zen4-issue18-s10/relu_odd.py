import sys, timeit
sys.path.insert(0, "/work/main")
import numpy as np, ckbn
rng = np.random.default_rng(0)
shp = (16, 192, 8, 8); C = 192
for xs in (1.0, 2.0):
    x = (rng.standard_normal(shp) * xs).astype('f4'); dy = rng.standard_normal(shp).astype('f4')
    g = (rng.random(C) + .5).astype('f4'); b = (rng.standard_normal(C) * .5).astype('f4')
    for act, kw in (("relu", {}), ("relu", {"negative_slope": 0.2}), ("relu6", {}), ("leaky_relu", {"negative_slope": 0.2})):
        _, m, v = ckbn.nn.fused_batch_norm(x, g, b, data_format="NCHW", activation=act, **kw)
        row = []
        for nt in (1, 2):
            with ckbn.num_threads(nt):
                f = lambda: ckbn.nn.fused_batch_norm_grad(dy, x, g, m, v, data_format="NCHW", activation=act, offset=b, **kw)
                f()
                row.append(sorted(timeit.repeat(f, number=20, repeat=7))[2] / 20 * 1e6)
        print(f"x*{xs} {act:10s} {str(kw):24s} 1t {row[0]:7.1f} 2t {row[1]:7.1f}")
