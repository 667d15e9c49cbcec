import os, sys, timeit, types
os.environ["KERAS_BACKEND"] = "torch"
sys.path.insert(0, "/work/main")
import numpy as np, torch, keras, ckbn
import keras_plugin
from keras_plugin import _torch as T, _kernels as K
x = torch.randn(16, 8, 8, 32, requires_grad=True)
g = torch.ones(32, requires_grad=True); b = torch.zeros(32, requires_grad=True)
y, mean, var = K.train(x.detach().numpy(), g.detach().numpy(), b.detach().numpy(), (3,), 1e-3)
dy = torch.randn(16, 8, 8, 32)
class Ctx: pass
ctx = Ctx(); ctx.saved_tensors = (x, g, b); ctx.stats = (mean, var); ctx.args = ((3,), 1e-3, True, None)
def t(name, f, n=3000):
    for _ in range(200): f()
    best = sorted(timeit.repeat(f, number=n, repeat=9))[2] / n * 1e6
    print(f"{name:40s} {best:7.2f} us")
t("_eager_grad", lambda: T._eager_grad(ctx, dy))
xn, gn, dyn = x.detach().numpy(), g.detach().numpy(), dy.numpy()
t("_kernels.grad", lambda: K.grad(dyn, xn, gn, mean, var, (3,), 1e-3, True))
t("ckbn.nn.fused_batch_norm_grad", lambda: ckbn.nn.fused_batch_norm_grad(dyn, xn, gn, mean, var, epsilon=1e-3))
def fb():
    y = T._EagerTrain.apply(x, g, b, (3,), 1e-3, None, (torch.zeros(32), torch.zeros(32), 0.99))
    return y
t("fwd Function", fb)
yy = fb()
def fwdbwd():
    y = fb(); y.backward(dy)
t("fwd+bwd Function", fwdbwd)
def floor():
    y = x * g + b; y.backward(dy)
t("floor fwd+bwd (x*g+b)", floor)
def floor_f():
    y = x * g + b
t("floor fwd", floor_f)
import time
acc = [0.0, 0]
real = T._eager_grad
def timed(ctx, dy):
    t0 = time.perf_counter(); r = real(ctx, dy); acc[0] += time.perf_counter() - t0; acc[1] += 1; return r
T._eager_grad = timed
ys = [fb() for _ in range(2000)]
t0 = time.perf_counter()
for y in ys: y.backward(dy)
tot = time.perf_counter() - t0
print("backward only: %.1f us per call, inside _eager_grad %.1f us" % (tot / 2000 * 1e6, acc[0] / acc[1] * 1e6))
x.grad = None; g.grad = None; b.grad = None
ys = [fb() for _ in range(2000)]
t0 = time.perf_counter()
for y in ys: y.backward(dy)
tot = time.perf_counter() - t0
print("backward only (fresh grads): %.1f us per call, inside _eager_grad %.1f us" % (tot / 2000 * 1e6, acc[0] / acc[1] * 1e6))
