"""Session 12: a PyTorch inference call of ckbn's layer, the compiled operator
(kernels forced: _policy.set_min_elements("torch", "infer", 0)) against the
framework hook (_torch.layer_infer: addcmul channels last, batch_norm channels
first; the rule before this session), under torch.no_grad, by shape.
Medians of 15 rounds of 200 calls, the two alternating.  python infer_hook_vs_kernels.py"""
import os, sys, time, statistics
os.environ["KERAS_BACKEND"] = "torch"
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import numpy as np, torch
import keras_plugin
from keras_plugin import BatchNormalization, _policy
from _timing import cpu_line

print(cpu_line(), flush=True)
SHAPES = [((16, 2, 2, 32), -1), ((16, 8, 8, 32), -1), ((16, 2, 2, 1280), -1),
          ((16, 8, 8, 192), -1), ((16, 32, 32, 96), -1), ((16, 64, 64, 32), -1),
          ((16, 32, 8, 8), 1), ((16, 96, 32, 32), 1), ((16, 1280, 2, 2), 1)]
for shape, axis in SHAPES:
    layer = BatchNormalization(axis=axis)
    layer.build(shape)
    x = torch.randn(*shape)
    modes = {"hook": None, "kernels": 0}
    times = {m: [] for m in modes}
    calls = 200 if np.prod(shape) < 1 << 20 else 40
    with torch.no_grad():
        for r in range(16):
            for m, n in (modes.items() if r % 2 == 0 else list(modes.items())[::-1]):
                _policy.set_min_elements("torch", "infer", n)
                layer(x, training=False)
                t0 = time.perf_counter()
                for _ in range(calls):
                    layer(x, training=False)
                if r:
                    times[m].append((time.perf_counter() - t0) / calls * 1e6)
    h, k = statistics.median(times["hook"]), statistics.median(times["kernels"])
    print(f"{'x'.join(map(str, shape)):>14s} axis {axis:2d}: hook {h:8.1f} us, kernels {k:8.1f} us,"
          f" hook / kernels {h / k:5.2f}", flush=True)
