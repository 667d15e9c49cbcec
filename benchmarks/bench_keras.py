"""Training-step time of BatchNormalization layers inside a Keras model: stock vs ckbn.

The model is ``Input -> BatchNormalization * LAYERS -> mean`` (``--relu`` puts a
ReLU after each), so almost all of a step is batch normalization (forward and
backward) plus the optimizer's update of gamma/beta.  For each backend (each in its own process,
``KERAS_BACKEND``) it times ``model.train_on_batch`` of the stock model and of
``swap_batch_normalization(model)`` and prints the medians side by side.

    python benchmarks/bench_keras.py                     # all backends, default shapes
    python benchmarks/bench_keras.py --backends torch --shapes 32x56x56x64
    python benchmarks/bench_keras.py --jax-threshold     # JAX: callback vs XLA by size

On JAX the swapped layer falls back to XLA by default (the host callback was
slower than XLA at every size measured); the JAX table adds a column with the
kernels forced on (``keras_plugin.set_jax_min_elements(0)``).

Timings are wall-clock medians of ``--repeat`` steps after ``--warmup`` steps.
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
        if backend == "jax":  # the default falls back to XLA; also time the forced kernels
            forced = keras_plugin.swap_batch_normalization(stock)
            runs.append(("forced", forced, 0))
        for name, model, threshold in runs:
            if backend == "jax":
                keras_plugin.set_jax_min_elements(threshold)
            model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
            for _ in range(args.warmup):
                model.train_on_batch(x, y)
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                model.train_on_batch(x, y)
                times.append(time.perf_counter() - t0)
            row[name + "_ms"] = 1e3 * float(np.median(times))
            row[name + "_jit"] = bool(getattr(model, "jit_compile", False))
        row["speedup"] = row["stock_ms"] / row["ckbn_ms"]
        row["threads"] = ckbn.get_num_threads()
        results.append(row)
    print("RESULT " + json.dumps(results))


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
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
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
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    for backend in backends:
        proc = subprocess.run(child, env=dict(env, KERAS_BACKEND=backend), capture_output=True,
                              text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(f"{backend}: failed\n{proc.stderr[-3000:]}")
            continue
        rows = json.loads(lines[-1][len("RESULT "):])
        if args.jax_threshold:
            print(f"{'shape':>14} {'path':>5} {'ms/step':>9}")
            for r in rows:
                print(f"{r['shape']:>14} {r['path']:>5} {r['ms']:9.2f}")
            continue
        layers = f"{args.layers} BN{'+ReLU' if args.relu else ''} layers"
        print(f"\n## {backend} (float32, {layers}, SGD train_on_batch)")
        extra = "  kernels forced (ms, x)" if backend == "jax" else ""
        print(f"{'shape':>14} {'stock ms':>9} {'ckbn ms':>9} {'speed-up':>9}  "
              f"jit(stock/ckbn){extra}")
        for r in rows:
            forced = ""
            if "forced_ms" in r:
                forced = f"  {r['forced_ms']:9.2f} {r['stock_ms'] / r['forced_ms']:5.2f}x"
            print(f"{r['shape']:>14} {r['stock_ms']:9.2f} {r['ckbn_ms']:9.2f} "
                  f"{r['speedup']:8.2f}x  {str(r['stock_jit']):>5}/{str(r['ckbn_jit']):<5}"
                  f"        {forced}")


if __name__ == "__main__":
    main()
