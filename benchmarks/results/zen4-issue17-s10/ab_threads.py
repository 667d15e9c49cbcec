import os, sys, time, collections
os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, "/work/main"); sys.path.insert(0, "/work/main/benchmarks")
import numpy as np, keras, ckbn
import keras_plugin
from ckbn._dispatch import kernels
from bench_keras import _seeded
k = kernels()
acc = [0.0]
for name in ("common_forward", "common_backward"):
    real = getattr(k, name)
    def timed(*a, _real=real):
        t0 = time.perf_counter()
        r = _real(*a)
        acc[0] += time.perf_counter() - t0
        return r
    setattr(k, name, timed)
model = sys.argv[1] if len(sys.argv) > 1 else "MobileNetV2"
stock = _seeded(lambda: getattr(keras.applications, model)(input_shape=(64, 64, 3), weights=None, classes=10))
sw = keras_plugin.swap_batch_normalization(stock)
for m in (stock, sw): m.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
rng = np.random.default_rng(1)
x = rng.normal(size=(16, 64, 64, 3)).astype("float32"); y = rng.normal(size=(16, 10)).astype("float32")
variants = [("stock", stock, 2), ("ckbn nt=1", sw, 1), ("ckbn nt=2", sw, 2)]
for _, m, nt in variants:
    ckbn.set_num_threads(nt)
    for _ in range(3): m.train_on_batch(x, y)
T = collections.defaultdict(list); K = collections.defaultdict(list)
for r in range(int(sys.argv[2]) if len(sys.argv) > 2 else 12):
    for name, m, nt in variants:
        ckbn.set_num_threads(nt); acc[0] = 0
        t0 = time.perf_counter(); m.train_on_batch(x, y); T[name].append(time.perf_counter() - t0)
        K[name].append(acc[0])
for name in T:
    print(f"{model} {name:10s} step {np.median(T[name])*1e3:7.1f} ms  kernels {np.median(K[name])*1e3:6.2f} ms  stock/this {np.median(T['stock'])/np.median(T[name]):.3f}")
