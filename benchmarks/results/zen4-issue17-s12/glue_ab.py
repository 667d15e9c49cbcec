"""Session 12: what each change to the PyTorch glue gives in whole models.
One process, KERAS_BACKEND=torch, a training step (train_on_batch, SGD, batch
16, 64x64 inputs; the CNN 28x28x32) of four variants, round robin:
  stock                       Keras's BatchNormalization
  python+keras_call           the swapped model with the Python autograd Functions
                              and Keras's Layer.__call__ (session 11's path)
  native+keras_call           the compiled operators, Keras's Layer.__call__
  native+fast_call            the compiled operators and _torch.layer_call (the default)
Medians of per-round ratios.  python glue_ab.py [steps] [models...]
CKBN_FORMAT=channels_first runs the models channels first (Keras's image data format)."""
import os, sys, time
os.environ["KERAS_BACKEND"] = "torch"
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import numpy as np
import keras
import keras_plugin
from keras_plugin import _torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from _timing import cpu_line
from bench_keras import _cnn

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 15
fmt = os.environ.get("CKBN_FORMAT", "channels_last")
keras.config.set_image_data_format(fmt)
names = sys.argv[2:] or ["MobileNetV2", "ResNet50", "EfficientNetB0", "cnn"]
print(cpu_line(), fmt, flush=True)
VARIANTS = {"python+keras_call": (False, False), "native+keras_call": (True, False),
            "native+fast_call": (True, True)}
rng = np.random.default_rng(0)
for name in names:
    keras.utils.set_random_seed(0)
    if name == "cnn":
        stock, shape = _cnn(28), (28, 28, 32)
    else:
        shape = (3, 64, 64) if fmt == "channels_first" else (64, 64, 3)
        stock = getattr(keras.applications, name)(input_shape=shape, weights=None,
                                                   classes=10)
    sw = keras_plugin.swap_batch_normalization(keras.models.clone_model(stock))
    for m in (stock, sw):
        m.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    x = rng.standard_normal((16,) + shape).astype("float32")
    y = rng.standard_normal((16, 10)).astype("float32")
    runs = {"stock": (stock, None)} | {k: (sw, v) for k, v in VARIANTS.items()}

    def step(model, how):
        if how is not None:
            _torch.use_native(how[0])
            _torch.use_fast_call(how[1])
        t0 = time.perf_counter()
        model.train_on_batch(x, y)
        return time.perf_counter() - t0

    for _ in range(3):
        for m, how in runs.values():
            step(m, how)
    t = {n: [] for n in runs}
    order = list(runs.items())
    for s in range(steps):
        for n, (m, how) in (order if s % 2 == 0 else order[::-1]):
            t[n].append(step(m, how))
    _torch.use_native(True)
    _torch.use_fast_call(True)
    st = np.array(t["stock"])
    print(f"{name}: " + ", ".join(f"{n} {np.median(v) * 1e3:.1f} ms" for n, v in t.items()),
          flush=True)
    print("   stock / variant: " + ", ".join(
        f"{n} {np.median(st / np.array(t[n])):.3f}" for n in VARIANTS), flush=True)
