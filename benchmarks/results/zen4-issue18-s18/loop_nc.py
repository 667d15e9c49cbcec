import numpy as np, ckbn, ckbn.nn, sys
ckbn.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
P, C = map(int, sys.argv[1].split("x"))
rng = np.random.default_rng(0)
x = rng.standard_normal((P, C)).astype("f4"); dy = rng.standard_normal((P, C)).astype("f4")
g = (rng.random(C) + .5).astype("f4")
_, bm, bv = ckbn.nn.fused_batch_norm(x, g, None, epsilon=1e-3, data_format="NC")
for _ in range(int(sys.argv[2])):
    ckbn.nn.fused_batch_norm_grad(dy, x, g, bm, bv, 1e-3, "NC")
