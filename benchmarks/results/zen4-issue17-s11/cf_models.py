"""Keras models on the PyTorch backend in channels_first (or channels_last):
a training step of the stock model, the swapped model with this build's
kernels and with another build's (OLD_DIR), round robin in one process.
python cf_models.py channels_first|channels_last OLD_DIR [steps]"""
import os, sys, time, glob, importlib.util
os.environ["KERAS_BACKEND"] = "torch"
import numpy as np
import keras
import keras_plugin, ckbn
import ckbn._dispatch as D

fmt, old_dir = sys.argv[1], sys.argv[2]
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 15
keras.config.set_image_data_format(fmt)
new = D.kernels(); variant = D.kernel_name()
spec = importlib.util.spec_from_file_location(new.__name__, glob.glob(f"{old_dir}/_kernels_{variant}*.so")[0])
old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)

def build(name, size):
    shape = (3, size, size) if fmt == "channels_first" else (size, size, 3)
    return getattr(keras.applications, name)(input_shape=shape, weights=None, classes=10)

rng = np.random.default_rng(0)
for name, size in (("MobileNetV2", 64), ("ResNet50", 64), ("EfficientNetB0", 64)):
    keras.utils.set_random_seed(0)
    stock = build(name, size)
    sw = keras_plugin.swap_batch_normalization(keras.models.clone_model(stock))
    for m in (stock, sw):
        m.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    shape = (16, 3, size, size) if fmt == "channels_first" else (16, size, size, 3)
    x = rng.standard_normal(shape).astype("float32"); y = rng.integers(0, 10, 16)
    runs = {"stock": (stock, new), "swapped new": (sw, new), "swapped old": (sw, old)}
    for _, (m, k) in runs.items():
        D._chosen = (variant, k)
        for _ in range(3):
            m.train_on_batch(x, y)
    t = {n: [] for n in runs}
    for s in range(steps):
        for n, (m, k) in (list(runs.items()) if s % 2 == 0 else list(runs.items())[::-1]):
            D._chosen = (variant, k)
            t0 = time.perf_counter(); m.train_on_batch(x, y); t[n].append(time.perf_counter() - t0)
    D._chosen = (variant, new)
    st = np.array(t["stock"])
    print(f"{name}@{size} {fmt}: " + ", ".join(f"{n} {np.median(v)*1e3:.1f} ms" for n, v in t.items())
          + f" | stock / swapped new {np.median(st / np.array(t['swapped new'])):.2f}, stock / swapped old {np.median(st / np.array(t['swapped old'])):.2f}"
          + f", old / new {np.median(np.array(t['swapped old']) / np.array(t['swapped new'])):.2f}", flush=True)
