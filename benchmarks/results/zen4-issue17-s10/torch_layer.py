import os, sys, time
os.environ["KERAS_BACKEND"] = "torch"
sys.path.insert(0, "/work/main"); sys.path.insert(0, "/work/main/benchmarks")
import numpy as np, torch, keras
from keras import ops
import keras_plugin, ckbn
import bench_keras as bk

shape = tuple(int(s) for s in (sys.argv[1] if len(sys.argv) > 1 else "16x8x8x32").split("x"))
inp = keras.Input(shape[1:])
stock = keras.Model(inp, keras.layers.BatchNormalization()(inp))
sw = keras_plugin.swap_batch_normalization(keras.models.clone_model(stock))
fl = bk._affine_floor(keras.models.clone_model(stock))
layers = {"stock": stock.layers[1], "ckbn": sw.layers[1], "floor": fl.layers[1]}
x = torch.randn(*shape, requires_grad=True)
def step_call(L):
    def f():
        y = L(x, training=True); y.sum().backward()
    return f
def step_inner(L):
    def f():
        y = L.call(x, training=True); y.sum().backward()
    return f
def fwd_call(L):
    def f():
        L(x, training=True)
    return f
def fwd_inner(L):
    def f():
        L.call(x, training=True)
    return f
fns = {}
for n, L in layers.items():
    fns[n + " call+bwd"] = step_call(L); fns[n + " inner+bwd"] = step_inner(L)
    fns[n + " call"] = fwd_call(L); fns[n + " inner"] = fwd_inner(L)
for f in fns.values(): 
    for _ in range(50): f()
res = {k: [] for k in fns}
for r in range(30):
    for k, f in fns.items():
        t = time.perf_counter_ns()
        for _ in range(20): f()
        res[k].append((time.perf_counter_ns() - t) / 20e3)
for k, v in res.items():
    print(f"{k:20s} {np.median(v):8.1f} us")
