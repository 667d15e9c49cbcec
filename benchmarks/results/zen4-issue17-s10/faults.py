import os, sys, time, collections, resource
os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, "/work/main"); sys.path.insert(0, "/work/main/benchmarks")
import numpy as np, keras
import keras_plugin
from ckbn._dispatch import kernels
from bench_keras import _seeded
k = kernels()
rec = collections.defaultdict(list)
ON = [False]
def flt(): return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for name in ("common_forward", "common_backward"):
    real = getattr(k, name)
    def timed(*a, _real=real, _name=name):
        f0 = flt()
        r = _real(*a)
        if ON[0]:
            x = a[0] if _name == "common_forward" else a[1]
            rec[(_name, x.shape)].append((flt() - f0, x.nbytes / 4096))
        return r
    setattr(k, name, timed)
m = _seeded(lambda: keras.applications.MobileNetV2(input_shape=(64, 64, 3), weights=None, classes=10))
stock = m
m = keras_plugin.swap_batch_normalization(m)
for mm in (stock, m): mm.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
rng = np.random.default_rng(1)
x = rng.normal(size=(16, 64, 64, 3)).astype("float32"); y = rng.normal(size=(16, 10)).astype("float32")
for _ in range(3): m.train_on_batch(x, y); stock.train_on_batch(x, y)
for name, mm in (("stock", stock), ("swapped", m)):
    f0 = flt(); ON[0] = name == "swapped"
    for _ in range(5): mm.train_on_batch(x, y)
    ON[0] = False
    print(name, "faults per step", (flt() - f0) / 5)
tot = 0
for key, v in sorted(rec.items(), key=lambda kv: -sum(a for a, _ in kv[1])):
    f = np.array([a for a, _ in v]); tot += f.sum() / 5
    print(f"{key[0]:16s} {str(key[1]):20s} calls {len(v):3d} faults/call {f.mean():7.1f} (array pages {v[0][1]:.0f})")
print("faults per step inside the entries", tot)
