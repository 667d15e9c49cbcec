import os, sys, time
os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, "/work/main/benchmarks")
import numpy as np, keras, torch
import keras_plugin
from keras_plugin import _torch
from bench_keras import _seeded, _cnn, _without_bn
new_infer = _torch.layer_infer
def old_infer(layer, x):
    if x.dtype is not torch.float32 or layer.compute_dtype != "float32": return None
    ndim = x.dim(); axis = layer._channel_axes[0]
    last = axis == ndim - 1 and axis != 1
    rd = _torch._value
    mean, var = rd(layer.moving_mean), rd(layer.moving_variance)
    w = rd(layer.gamma) if layer.scale else None; b = rd(layer.beta) if layer.center else None
    if last:
        return torch.nn.functional.batch_norm(x.movedim(-1, 1), mean, var, w, b, False, 0.0, layer.epsilon).movedim(1, -1)
    return torch.nn.functional.batch_norm(x, mean, var, w, b, False, 0.0, layer.epsilon)
for name in sys.argv[1:]:
    def build():
        if name == "cnn": return _cnn(28)
        return getattr(keras.applications, name)(input_shape=(64,64,3), weights=None, classes=10)
    shape = (28,28,32) if name == "cnn" else (64,64,3)
    stock = _seeded(build)
    sw_old = keras_plugin.swap_batch_normalization(stock)
    sw_new = keras_plugin.swap_batch_normalization(stock)
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(16,)+shape).astype("float32"))
    def run(m, f):
        _torch.layer_infer = f
        for l in m._flatten_layers():
            if getattr(l, "_route", None) is not None: l._route = None
        with torch.no_grad(): return m(x, training=False)
    fns = {"stock": lambda: run(stock, new_infer), "new addcmul": lambda: run(sw_new, new_infer), "old F.bn": lambda: run(sw_old, old_infer)}
    outs = {k: f().numpy() for k, f in fns.items()}
    t = {k: [] for k in fns}
    for r in range(15):
        for k, f in fns.items():
            t0 = time.perf_counter(); f(); t[k].append(time.perf_counter() - t0)
    med = {k: 1e3 * np.median(v) for k, v in t.items()}
    err = np.abs(outs["new addcmul"] - outs["stock"]).max() / np.abs(outs["stock"]).max()
    print("%-15s" % name, "  ".join("%s %.1f ms (%.3fx)" % (k, v, med["stock"] / v) for k, v in med.items()), " maxrel %.1e" % err, flush=True)
