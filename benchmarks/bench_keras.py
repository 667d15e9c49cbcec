"""Training-step time of BatchNormalization layers inside a Keras model: stock vs ckbn.

The model is ``Input -> BatchNormalization * LAYERS -> mean`` (``--relu`` puts a
ReLU after each), so almost all of a step is batch normalization (forward and
backward) plus the optimizer's update of gamma/beta.  For each backend (each in its own process,
``KERAS_BACKEND``) it times ``model.train_on_batch`` of the stock model and of
``swap_batch_normalization(model)`` and prints the medians side by side.

    python benchmarks/bench_keras.py                     # all backends, default shapes
    python benchmarks/bench_keras.py --backends torch --shapes 32x56x56x64
    python benchmarks/bench_keras.py --jax-threshold     # JAX: callback vs XLA by size
    python benchmarks/bench_keras.py --relu              # + swap(fuse_activations=True)
    python benchmarks/bench_keras.py --fold              # inference: folded vs unfolded

With ``--relu`` each step is also timed for
``swap_batch_normalization(model, fuse_activations=True)`` (BN and ReLU as one
layer).  ``--fold`` times inference (``model(x, training=False)`` under each
backend's no-gradient mode) of Keras applications built with ``weights=None``
(``--apps``) and of a Conv-BN-ReLU CNN: stock, swapped, and
``fold_batch_normalization(model)``.

On JAX the swapped layer falls back to XLA by default (the host callback was
slower than XLA at every size measured); the JAX table adds a column with the
kernels forced on (``keras_plugin.set_jax_min_elements(0)``).

Timings are wall-clock medians of ``--repeat`` steps after ``--warmup`` steps;
the models compared in one table take their steps in turn (round robin), so a
change of load on a shared machine affects them alike.  Run it from the
repository root with the repository on ``PYTHONPATH`` to time this checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

DEFAULT_SHAPES = ["32x56x56x64", "64x28x28x128", "256x1024"]
BACKENDS = ["tensorflow", "torch", "jax"]


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _worker(args):
    import numpy as np
    import keras

    import ckbn
    import keras_plugin

    backend = keras.backend.backend()
    results = []
    for spec in args.shapes:
        shape = tuple(int(s) for s in spec.split("x"))
        rng = np.random.default_rng(0)
        x = rng.normal(size=shape).astype("float32")
        y = rng.normal(size=(shape[0], 1)).astype("float32")
        inputs = keras.Input(shape[1:])
        h = inputs
        for _ in range(args.layers):
            h = keras.layers.BatchNormalization()(h)
            if args.relu:
                h = keras.layers.ReLU()(h)
        out = keras.layers.Lambda(
            lambda t: keras.ops.mean(keras.ops.reshape(t, (keras.ops.shape(t)[0], -1)),
                                     axis=1, keepdims=True))(h)
        stock = keras.Model(inputs, out)
        swapped = keras_plugin.swap_batch_normalization(stock)
        row = {"backend": backend, "shape": spec, "layers": args.layers}
        runs = [("stock", stock, None), ("ckbn", swapped, None)]
        if args.relu:  # issue 14: BN + ReLU as one layer
            runs.append(("fused", keras_plugin.swap_batch_normalization(
                stock, fuse_activations=True), None))
        if backend == "jax":  # the default falls back to XLA; also time the forced kernels
            forced = keras_plugin.swap_batch_normalization(stock)
            runs.append(("forced", forced, 0))
        times = {name: [] for name, _, _ in runs}
        for name, model, threshold in runs:
            if backend == "jax":
                keras_plugin.set_jax_min_elements(threshold)
            model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
            for _ in range(args.warmup):
                model.train_on_batch(x, y)
        # Round robin: a load change on a shared machine hits every model alike.
        for _ in range(args.repeat):
            for name, model, threshold in runs:
                if backend == "jax":
                    keras_plugin.set_jax_min_elements(threshold)
                t0 = time.perf_counter()
                model.train_on_batch(x, y)
                times[name].append(time.perf_counter() - t0)
        for name, model, _ in runs:
            row[name + "_ms"] = 1e3 * float(np.median(times[name]))
            row[name + "_jit"] = bool(getattr(model, "jit_compile", False))
        row["speedup"] = row["stock_ms"] / row["ckbn_ms"]
        row["threads"] = ckbn.get_num_threads()
        results.append(row)
    print("RESULT " + json.dumps(results))


def _inference_fn(model):
    """One inference call of ``model`` with the backend's gradient tracking off."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        fn = tf.function(lambda t: model(t, training=False), jit_compile=False)
        return lambda x: fn(x).numpy()
    if backend == "torch":
        import torch

        def run(x):
            with torch.no_grad():
                return model(x, training=False).numpy()

        return run
    if backend == "jax":
        import jax

        tv = [v.value for v in model.trainable_variables]
        ntv = [v.value for v in model.non_trainable_variables]
        fn = jax.jit(lambda t: model.stateless_call(tv, ntv, t, training=False)[0])
        return lambda x: jax.block_until_ready(fn(x))
    return lambda x: model(x, training=False)


def _fold_models(args):
    import keras

    specs = []
    for app in args.apps:
        name, size = app.split("@") if "@" in app else (app, "96")
        size = int(size)
        specs.append((f"{name}@{size}", lambda name=name, size=size: getattr(
            keras.applications, name)(input_shape=(size, size, 3), weights=None,
                                      classes=10), (size, size, 3)))

    def cnn():
        inputs = keras.Input((56, 56, 32))
        h = inputs
        for filters in (64, 64, 128, 128):
            h = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(h)
            h = keras.layers.BatchNormalization()(h)
            h = keras.layers.ReLU()(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        return keras.Model(inputs, keras.layers.Dense(10)(h))

    specs.append(("cnn 4x(conv-bn-relu) 56x56", cnn, (56, 56, 32)))
    return specs


def _fold_worker(args):
    """Inference of stock, swapped and folded models, medians side by side."""
    import numpy as np
    import keras

    import keras_plugin

    backend = keras.backend.backend()
    rows = []
    for label, build, shape in _fold_models(args):
        keras.utils.set_random_seed(0)
        stock = build()
        rng = np.random.default_rng(0)
        for layer in stock._flatten_layers(include_self=False):
            if isinstance(layer, keras.layers.BatchNormalization):
                w = [rng.normal(size=v.shape).astype("float32") for v in layer.weights]
                w[-1] = np.abs(w[-1]) + 0.5
                layer.set_weights(w)
        x = rng.normal(size=(args.batch,) + shape).astype("float32")
        models = [("stock", stock), ("ckbn", keras_plugin.swap_batch_normalization(stock)),
                  ("folded", keras_plugin.fold_batch_normalization(stock))]
        row = {"backend": backend, "model": label, "batch": args.batch}
        fns = {name: _inference_fn(model) for name, model in models}
        outs = {}
        for name, fn in fns.items():
            for _ in range(args.warmup):
                outs[name] = np.asarray(fn(x))
        times = {name: [] for name in fns}
        for _ in range(args.repeat):  # round robin, as in the training benchmark
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn(x)
                times[name].append(time.perf_counter() - t0)
        ref = outs["stock"]
        for name in fns:
            row[name + "_ms"] = 1e3 * float(np.median(times[name]))
            row[name + "_maxrel"] = float(np.abs(outs[name] - ref).max() / np.abs(ref).max())
        rows.append(row)
    print("RESULT " + json.dumps(rows))


def _jax_threshold_worker(args):
    """JAX: per-layer forward+backward under jax.jit, callback vs XLA, by tensor size."""
    import jax
    import numpy as np
    import keras

    import keras_plugin

    rows = []
    for spec in args.shapes:
        shape = tuple(int(s) for s in spec.split("x"))
        x = np.random.default_rng(0).normal(size=shape).astype("float32")
        for label, threshold in (("xla", None), ("ckbn", 0)):
            keras_plugin.set_jax_min_elements(threshold)
            layer = keras_plugin.BatchNormalization()
            layer.build(shape)
            tv = [v.value for v in layer.trainable_variables]
            ntv = [v.value for v in layer.non_trainable_variables]

            def loss(tv, ntv, x):
                y, ntv2 = layer.stateless_call(tv, ntv, x, training=True)
                return keras.ops.sum(y * y), ntv2

            step = jax.jit(jax.value_and_grad(loss, argnums=(0, 2), has_aux=True))
            for _ in range(args.warmup):
                jax.block_until_ready(step(tv, ntv, x))
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                jax.block_until_ready(step(tv, ntv, x))
                times.append(time.perf_counter() - t0)
            rows.append({"shape": spec, "path": label, "ms": 1e3 * float(np.median(times))})
    print("RESULT " + json.dumps(rows))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", nargs="+", default=BACKENDS)
    p.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--relu", action="store_true", help="a ReLU after each BN layer")
    p.add_argument("--jax-threshold", action="store_true")
    p.add_argument("--fold", action="store_true", help="inference: stock/swapped/folded")
    p.add_argument("--apps", nargs="*", default=["MobileNetV2@96", "ResNet50@64"],
                   help="Keras applications for --fold, NAME@SIZE")
    p.add_argument("--batch", type=int, default=16, help="batch for --fold")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        if args.fold:
            return _fold_worker(args)
        return _jax_threshold_worker(args) if args.jax_threshold else _worker(args)

    import ckbn

    print(f"# CPU: {_cpu_model()}, {os.cpu_count()} logical cores; "
          f"ckbn threads {ckbn.get_num_threads()}, OpenMP {ckbn.openmp_enabled()}")
    backends = ["jax"] if args.jax_threshold else args.backends
    child = [sys.executable, os.path.abspath(__file__), "--worker", "--layers", str(args.layers),
             "--warmup", str(args.warmup), "--repeat", str(args.repeat), "--shapes", *args.shapes]
    if args.relu:
        child.append("--relu")
    if args.jax_threshold:
        child.append("--jax-threshold")
    if args.fold:
        child += ["--fold", "--batch", str(args.batch), "--apps", *args.apps]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    for backend in backends:
        proc = subprocess.run(child, env=dict(env, KERAS_BACKEND=backend), capture_output=True,
                              text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(f"{backend}: failed\n{proc.stderr[-3000:]}")
            continue
        rows = json.loads(lines[-1][len("RESULT "):])
        if args.fold:
            print(f"\n## {backend} inference (float32, batch {args.batch}, "
                  f"model(x, training=False), no gradients)")
            print(f"{'model':>28} {'stock ms':>9} {'ckbn ms':>9} {'folded ms':>10} "
                  f"{'stock/folded':>13} {'ckbn/folded':>12} {'max rel diff':>13}")
            for r in rows:
                print(f"{r['model']:>28} {r['stock_ms']:9.2f} {r['ckbn_ms']:9.2f} "
                      f"{r['folded_ms']:10.2f} {r['stock_ms'] / r['folded_ms']:12.2f}x "
                      f"{r['ckbn_ms'] / r['folded_ms']:11.2f}x {r['folded_maxrel']:13.1e}")
            continue
        if args.jax_threshold:
            print(f"{'shape':>14} {'path':>5} {'ms/step':>9}")
            for r in rows:
                print(f"{r['shape']:>14} {r['path']:>5} {r['ms']:9.2f}")
            continue
        layers = f"{args.layers} BN{'+ReLU' if args.relu else ''} layers"
        print(f"\n## {backend} (float32, {layers}, SGD train_on_batch)")
        extra = "  kernels forced (ms, x)" if backend == "jax" else ""
        fused_head = "  fused ms  stock/fused  ckbn/fused" if args.relu else ""
        print(f"{'shape':>14} {'stock ms':>9} {'ckbn ms':>9} {'speed-up':>9}  "
              f"jit(stock/ckbn){fused_head}{extra}")
        for r in rows:
            forced = ""
            if "forced_ms" in r:
                forced = f"  {r['forced_ms']:9.2f} {r['stock_ms'] / r['forced_ms']:5.2f}x"
            fused = ""
            if "fused_ms" in r:
                fused = (f"  {r['fused_ms']:8.2f} {r['stock_ms'] / r['fused_ms']:11.2f}x "
                         f"{r['ckbn_ms'] / r['fused_ms']:10.2f}x")
            print(f"{r['shape']:>14} {r['stock_ms']:9.2f} {r['ckbn_ms']:9.2f} "
                  f"{r['speedup']:8.2f}x  {str(r['stock_jit']):>5}/{str(r['ckbn_jit']):<5}"
                  f"        {fused}{forced}")


if __name__ == "__main__":
    main()
