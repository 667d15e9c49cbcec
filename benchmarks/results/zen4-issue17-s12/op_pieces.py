import os, time, statistics
os.environ["KERAS_BACKEND"] = "torch"
import numpy as np, torch, ckbn
from keras_plugin import _torch, _torch_native
tr, gv = _torch_native.load()
rng = np.random.default_rng(0)
x = rng.normal(size=(16, 8, 8, 32)).astype(np.float32); dy = rng.normal(size=x.shape).astype(np.float32)
s, o = np.ones(32, np.float32), np.zeros(32, np.float32)
xt, dyt = torch.from_numpy(x), torch.from_numpy(dy)
xg, sg, og = (torch.tensor(a, requires_grad=True) for a in (x, s, o))
st, ot = torch.from_numpy(s), torch.from_numpy(o)
def med(fn, calls=300, rep=9):
    for _ in range(50): fn()
    ts = []
    for _ in range(rep):
        t0 = time.perf_counter()
        for _ in range(calls): fn()
        ts.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(ts)
m, v = ckbn.nn.fused_batch_norm(x, s, o, epsilon=1e-3, axis=[3])[1:]
cases = {
 "nn fwd": lambda: ckbn.nn.fused_batch_norm(x, s, o, epsilon=1e-3, axis=[3]),
 "nn bwd": lambda: ckbn.nn.fused_batch_norm_grad(dy, x, s, m, v, epsilon=1e-3, axis=[3]),
 "native fwd nograd": lambda: tr(xt, st, ot, None, None, 0.0, (3,), 1e-3, 0, 0.0, float('inf'), 2),
 "native fwd grad": lambda: tr(xg, sg, og, None, None, 0.0, (3,), 1e-3, 0, 0.0, float('inf'), 2),
 "native fwd+bwd": lambda: tr(xg, sg, og, None, None, 0.0, (3,), 1e-3, 0, 0.0, float('inf'), 2)[0].backward(dyt),
 "native fwd+bwd 1t": lambda: tr(xg, sg, og, None, None, 0.0, (3,), 1e-3, 0, 0.0, float('inf'), 1)[0].backward(dyt),
 "clone fwd+bwd": lambda: xg.clone().backward(dyt),
 "mul fwd+bwd": lambda: (xg * 2.0).backward(dyt),
 "torch bn NCHW fwd+bwd": lambda: torch.nn.functional.batch_norm(xg.permute(0, 3, 1, 2), None, None, sg, og, True).backward(dyt.permute(0, 3, 1, 2)),
}
for k, f in cases.items():
    print(f"{k:28s} {med(f):7.1f} us")
inf = float('inf')
y = tr(xg, sg, og, None, None, 0.0, (3,), 1e-3, 0, 0.0, inf, 2)[0]
print("autograd.grad", med(lambda: torch.autograd.grad(tr(xg, sg, og, None, None, 0.0, (3,), 1e-3, 0, 0.0, inf, 2)[0], (xg, sg, og), dyt)))
xg2 = xg.detach().clone().requires_grad_(True)
print("x only grad", med(lambda: torch.autograd.grad(tr(xg2, st, ot, None, None, 0.0, (3,), 1e-3, 0, 0.0, inf, 2)[0], (xg2,), dyt)))
ys = [tr(xg, sg, og, None, None, 0.0, (3,), 1e-3, 0, 0.0, inf, 2)[0] for _ in range(2000)]
it = iter(ys)
print("bwd only", med(lambda: next(it).backward(dyt), calls=200, rep=9))
