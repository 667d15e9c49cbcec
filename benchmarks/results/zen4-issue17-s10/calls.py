import os, sys, time, collections
os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, "/work/main"); sys.path.insert(0, "/work/main/benchmarks")
import numpy as np, keras, threading
import keras_plugin
from ckbn._dispatch import kernels
from bench_keras import _seeded
k = kernels()
rec = collections.defaultdict(list)
ON = [False]
for name in ("common_forward", "common_backward"):
    real = getattr(k, name)
    def timed(*a, _real=real, _name=name):
        t0 = time.perf_counter_ns()
        r = _real(*a)
        if ON[0]:
            rec[(_name, a[0].shape if _name == "common_forward" else a[1].shape, a[-1])].append(time.perf_counter_ns() - t0)
        return r
    setattr(k, name, timed)
m = _seeded(lambda: keras.applications.MobileNetV2(input_shape=(64, 64, 3), weights=None, classes=10))
m = keras_plugin.swap_batch_normalization(m)
m.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
rng = np.random.default_rng(1)
x = rng.normal(size=(16, 64, 64, 3)).astype("float32"); y = rng.normal(size=(16, 10)).astype("float32")
for _ in range(3): m.train_on_batch(x, y)
print("threads:", [t.name for t in threading.enumerate()])
ON[0] = True
for _ in range(10): m.train_on_batch(x, y)
ON[0] = False
# standalone replay of the same calls
for key, v in sorted(rec.items(), key=lambda kv: -sum(kv[1]))[:12]:
    v = np.array(v) / 1e3
    print(f"{key[0]:16s} {str(key[1]):20s} nt={key[2]} n={len(v):4d} median {np.median(v):8.1f} mean {v.mean():8.1f} min {v.min():7.1f} p90 {np.percentile(v,90):8.1f} max {v.max():8.1f} us")
