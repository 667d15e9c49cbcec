"""Session 12: inference of whole models on PyTorch (model(x, training=False) under
torch.no_grad, batch 16, 64x64; the CNN 28x28x32): stock, the swapped model with the
framework hook for BN inference (_torch.layer_infer, the rule before this session)
and with the compiled operator (kernels from 0 elements, and from 1 Mi elements), round robin in one
process, medians of per-round ratios.  python infer_models.py [rounds] [models...]"""
import os, sys, time
os.environ["KERAS_BACKEND"] = "torch"
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import numpy as np, torch, keras
import keras_plugin
from keras_plugin import _policy
from _timing import cpu_line
from bench_keras import _cnn

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
names = sys.argv[2:] or ["MobileNetV2", "ResNet50", "EfficientNetB0", "cnn"]
print(cpu_line(), flush=True)
rng = np.random.default_rng(0)
for name in names:
    keras.utils.set_random_seed(0)
    if name == "cnn":
        stock, shape = _cnn(28), (28, 28, 32)
    else:
        stock = getattr(keras.applications, name)(input_shape=(64, 64, 3), weights=None,
                                                   classes=10)
        shape = (64, 64, 3)
    sw = keras_plugin.swap_batch_normalization(keras.models.clone_model(stock))
    sw.set_weights(stock.get_weights())
    x = torch.from_numpy(rng.standard_normal((16,) + shape).astype("float32"))
    runs = {"stock": (stock, None), "hook": (sw, None), "kernels": (sw, 0),
            "kernels from 1 Mi": (sw, 1 << 20)}

    def call(model, n):
        _policy.set_min_elements("torch", "infer", n)
        t0 = time.perf_counter()
        with torch.no_grad():
            y = model(x, training=False)
        return time.perf_counter() - t0, y

    outs = {k: call(m, n)[1] for k, (m, n) in runs.items()}
    t = {k: [] for k in runs}
    order = list(runs.items())
    for r in range(rounds):
        for k, (m, n) in (order if r % 2 == 0 else order[::-1]):
            t[k].append(call(m, n)[0])
    _policy.set_min_elements("torch", "infer", None)
    st = np.array(t["stock"])
    err = max(float((outs[k] - outs["stock"]).abs().max() / outs["stock"].abs().max())
              for k in ("hook", "kernels"))
    print(f"{name}: " + ", ".join(f"{k} {np.median(v) * 1e3:.2f} ms" for k, v in t.items())
          + f" | stock / hook {np.median(st / np.array(t['hook'])):.3f}, stock / kernels "
          f"{np.median(st / np.array(t['kernels'])):.3f}, hook / kernels "
          f"{np.median(np.array(t['hook']) / np.array(t['kernels'])):.3f}, stock / kernels from 1 Mi "
          f"{np.median(st / np.array(t['kernels from 1 Mi'])):.3f}"
          f" (max rel. diff {err:.1e})", flush=True)
