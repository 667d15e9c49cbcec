import os, sys, time, statistics
os.environ.setdefault("KERAS_BACKEND", "torch")
import numpy as np, keras, torch
import keras_plugin
def tm(fn, n=50, rep=9):
    fn(); ts = []
    for _ in range(rep):
        t0 = time.perf_counter()
        for _ in range(n): fn()
        ts.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(ts)
torch.set_grad_enabled(False)
for spec in sys.argv[1:]:
    shape = tuple(int(s) for s in spec.split("x")); C = shape[-1]
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=shape).astype("float32"))
    mm, mv, g, b = (torch.from_numpy(rng.normal(size=C).astype("float32")) for _ in range(4)); mv = mv.abs() + 1
    xcf = x.movedim(-1, 1)
    def fbn(): return torch.nn.functional.batch_norm(xcf, mm, mv, g, b, False, 0., 1e-3).movedim(1, -1)
    def addc():
        a = torch.rsqrt(mv + 1e-3).mul_(g)
        return torch.addcmul(torch.addcmul(b, mm, a, value=-1.0), x, a)
    def keras_like():
        inv = torch.rsqrt(mv + 1e-3) * g
        return (x - mm) * inv + b
    r = {"F.bn": tm(fbn), "addcmul+coefs": tm(addc), "keras 3 ops": tm(keras_like)}
    print("%-14s" % spec, "  ".join("%s %.1f" % kv for kv in r.items()), "  F.bn/addcmul %.2f" % (r["F.bn"] / r["addcmul+coefs"]))
