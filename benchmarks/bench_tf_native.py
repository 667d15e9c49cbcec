"""The TensorFlow native op against a bare ``ckbn.nn`` call, and in a Keras train step.

1. Per-call cost: ``ckbn.nn.fused_batch_norm`` on NumPy arrays (training
   forward) vs the same kernels through the ``CkbnBatchNormTrain`` op, called
   eagerly and inside a ``tf.function`` holding only that op; TensorFlow's own
   ``FusedBatchNormV3`` (``tf.compat.v1.nn.fused_batch_norm``) for scale.
2. A one-layer Keras model (``BatchNormalization``, optionally followed by
   ``ReLU(max_value=6)``), ``train_on_batch`` with SGD: stock Keras, swapped
   on the native op, swapped on the ``tf.numpy_function`` path (the native op
   switched off while that model traces), and fused with the activation.

Variants run round robin; medians.  Usage::

    KERAS_BACKEND=tensorflow python benchmarks/bench_tf_native.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

import ckbn  # noqa: E402
from ckbn._dispatch import kernel_name  # noqa: E402
import keras_plugin  # noqa: E402
from keras_plugin import _tf_native  # noqa: E402


def _cpu():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _round_robin(fns, rounds, inner):
    """Median seconds per call of each fn, timed ``inner`` calls at a time, round robin."""
    times = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(3):
            fn()
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times[k].append((time.perf_counter() - t0) / inner)
    return {k: statistics.median(v) for k, v in times.items()}


def per_call(shape, rounds):
    rng = np.random.default_rng(0)
    c = shape[-1]
    x = rng.standard_normal(shape).astype(np.float32)
    s = np.ones(c, np.float32)
    o = np.zeros(c, np.float32)
    xt, st, ot = tf.constant(x), tf.constant(s), tf.constant(o)
    ops = _tf_native.load()
    n = ckbn.get_num_threads()

    @tf.function
    def native_graph(x, s, o):
        return ops.ckbn_batch_norm_train(x, s, o, channel_axes=[3], epsilon="0.001",
                                         n_threads=n)

    @tf.function
    def stock_graph(x, s, o):
        return tf.compat.v1.nn.fused_batch_norm(x, s, o, epsilon=1e-3)

    fns = {
        "ckbn.nn (NumPy)": lambda: ckbn.nn.fused_batch_norm(x, s, o, epsilon=1e-3),
        "native op, eager (raw)": lambda: ops.ckbn_batch_norm_train(
            xt, st, ot, channel_axes=[3], epsilon="0.001", n_threads=n),
        "native op, eager (_tf_native.train)": lambda: _tf_native.train(xt, st, ot, [3], 1e-3),
        "native op, tf.function": lambda: native_graph(xt, st, ot),
        "TF FusedBatchNormV3, tf.function": lambda: stock_graph(xt, st, ot),
    }
    inner = max(20, int(2e7 / x.size))
    return _round_robin(fns, rounds, inner)


def _model(shape, relu6, kind):
    inp = keras.Input(shape[1:])
    h = keras.layers.BatchNormalization(name="bn")(inp)
    if relu6:
        h = keras.layers.ReLU(max_value=6.0)(h)
    model = keras.Model(inp, h)
    if kind == "fused":
        model = keras_plugin.swap_batch_normalization(model, fuse_activations=True)
    elif kind != "stock":
        model = keras_plugin.swap_batch_normalization(model)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    return model


def train_steps(shape, relu6, rounds):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.standard_normal(shape).astype(np.float32)
    kinds = ["stock", "swapped (native op)", "swapped (numpy_function)"]
    if relu6:
        kinds += ["fused (native op)", "fused (numpy_function)"]
    fns = {}
    for kind in kinds:
        model = _model(shape, relu6, "fused" if kind.startswith("fused") else kind)
        if "numpy_function" in kind:
            usable = _tf_native.usable
            _tf_native.usable = lambda x, axes: False  # traced now on the Python path
            try:
                model.train_on_batch(x, y)
            finally:
                _tf_native.usable = usable
        fns[kind] = (lambda m: lambda: m.train_on_batch(x, y))(model)
    return _round_robin(fns, rounds, 5)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    if _tf_native.load() is None:
        raise SystemExit("the TensorFlow op library is not available here")
    print(f"CPU: {_cpu()}, {os.cpu_count()} logical cores; ckbn threads "
          f"{ckbn.get_num_threads()}, kernels {kernel_name()}; TensorFlow {tf.__version__}, "
          f"Keras {keras.__version__}; medians of {args.rounds} round-robin rounds")
    for shape in [(16, 8, 8, 32), (16, 32, 32, 32)]:
        res = per_call(shape, args.rounds)
        base = res["ckbn.nn (NumPy)"]
        print(f"\nper call, training forward, {'x'.join(map(str, shape))} float32:")
        for k, v in res.items():
            print(f"  {k:40s} {v * 1e6:9.1f} us   {1e6 * (v - base):+8.1f} us vs ckbn.nn")
    for shape, relu6 in [((16, 32, 32, 32), False), ((16, 32, 32, 32), True),
                         ((16, 8, 8, 192), True), ((16, 2, 2, 1280), True)]:
        res = train_steps(shape, relu6, args.rounds)
        stock = res["stock"]
        print(f"\ntrain_on_batch, BN{'+ReLU6' if relu6 else ''} {'x'.join(map(str, shape))}:")
        for k, v in res.items():
            print(f"  {k:40s} {v * 1e3:8.2f} ms   stock/this {stock / v:5.2f}x")


if __name__ == "__main__":
    main()
