import time, statistics
import numpy as np, ckbn
from ckbn._dispatch import kernels
K = kernels()
def tm(fn, n=20, rep=9):
    fn(); ts = []
    for _ in range(rep):
        t0 = time.perf_counter()
        for _ in range(n): fn()
        ts.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(ts)
for spec in ["16x8x8x512", "16x4x4x576", "16x28x28x128", "16x16x16x96"]:
    shape = tuple(int(s) for s in spec.split("x")); C = shape[-1]; M = int(np.prod(shape[:-1]))
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32); dy = x * 0.5
    s = np.ones(C, np.float32); o = np.zeros(C, np.float32)
    y, m, v = ckbn.nn.fused_batch_norm(x, s, o, data_format="NHWC")
    r = []
    for th in (1, 2, 1, 2):
        ckbn.set_num_threads(th)
        a = tm(lambda: ckbn.nn.fused_batch_norm(x, s, o, data_format="NHWC"))
        b = tm(lambda: ckbn.nn.fused_batch_norm_grad(dy, x, s, m, v, data_format="NHWC"))
        c = tm(lambda: ckbn.nn.moments(x, [0, 1, 2]) if len(shape) == 4 else None)
        r.append((th, a, b, c))
    print(spec, " ".join("t%d fwd %.0f bwd %.0f moments %.0f |" % t for t in r), K.work_plan(1, 1, M, C))
