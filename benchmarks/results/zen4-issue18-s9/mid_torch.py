import time, statistics, sys
import numpy as np, torch, ckbn
def tm(fn, n=20, rep=9):
    fn(); ts = []
    for _ in range(rep):
        t0 = time.perf_counter()
        for _ in range(n): fn()
        ts.append((time.perf_counter() - t0) / n * 1e6)
    return ts
torch.set_grad_enabled(False)
specs = ["16x32x32x32", "16x16x16x96", "16x8x8x192", "16x4x4x576", "16x2x2x1280", "16x8x8x512", "16x28x28x128"]
for th in (1, 2):
    ckbn.set_num_threads(th); torch.set_num_threads(th)
    print("threads", th)
    for spec in specs:
        shape = tuple(int(s) for s in spec.split("x")); C = shape[-1]
        rng = np.random.default_rng(0)
        x = rng.normal(size=shape).astype("float32"); dy = rng.normal(size=shape).astype("float32")
        s = np.ones(C, np.float32); o = np.zeros(C, np.float32)
        y, m, v = ckbn.nn.fused_batch_norm(x, s, o, data_format="NHWC")
        xt = torch.from_numpy(x).movedim(-1, 1); dyt = torch.from_numpy(dy).movedim(-1, 1)
        st, ot = torch.from_numpy(s), torch.from_numpy(o)
        rm, rv = torch.zeros(C), torch.ones(C)
        _, sm, si = torch.ops.aten.native_batch_norm(xt, st, ot, rm.clone(), rv.clone(), True, 0.0, 1e-3)
        cases = {
          ("train", "ckbn"): lambda: ckbn.nn.fused_batch_norm(x, s, o, data_format="NHWC"),
          ("train", "torch"): lambda: torch.ops.aten.native_batch_norm(xt, st, ot, rm, rv, True, 0.0, 1e-3),
          ("infer", "ckbn"): lambda: ckbn.nn.fused_batch_norm(x, s, o, m, v, is_training=False, data_format="NHWC"),
          ("infer", "torch"): lambda: torch.ops.aten.native_batch_norm(xt, st, ot, rm, rv, False, 0.0, 1e-3),
          ("bwd", "ckbn"): lambda: ckbn.nn.fused_batch_norm_grad(dy, x, s, m, v, data_format="NHWC"),
          ("bwd", "torch"): lambda: torch.ops.aten.native_batch_norm_backward(dyt, xt, st, rm, rv, sm, si, True, 1e-3, [True, True, True]),
        }
        res = {k: [] for k in cases}
        for r in range(3):
            for k, f in cases.items(): res[k] += tm(f, n=10, rep=5)
        out = []
        for op in ("train", "infer", "bwd"):
            c, t = statistics.median(res[(op, "ckbn")]), statistics.median(res[(op, "torch")])
            out.append("%s %6.1f / %6.1f = %.2f" % (op, t, c, t / c))
        print("  %-13s torch/ckbn  " % spec + " | ".join(out))
