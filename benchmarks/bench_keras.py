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
    python benchmarks/bench_keras.py --models --quick    # issue 17: Keras applications, CNN
    python benchmarks/bench_keras.py --threads --quick   # issue 17: thread settings
    python benchmarks/bench_keras.py --crossover --quick # issue 17: dispatch crossover by size

``--models`` trains Keras applications (``weights=None``: MobileNetV2,
ResNet50, EfficientNetB0 at 64x64 and 96x96, batch 16 and 64) and the
4x(Conv-BN-ReLU) CNN (56x56x32): stock | swapped | fused training steps, then
stock | swapped | folded inference, each with two bounds: ``no_bn`` (every
BN layer an identity: batch normalization for free) and ``floor`` (every BN
layer the cheapest Keras layer with BN's four weights, ``x * gamma + beta``:
what Keras itself charges a BN-shaped layer; ``_affine_floor``); ``--quick`` is one size (64; the CNN
28x28), batch 16, 2 + 5 steps.  ``--threads`` runs one worker process per
thread setting (ckbn threads via ``OMP_NUM_THREADS``/``CKBN_NUM_THREADS``,
the framework's intra-op pool, ``OMP_WAIT_POLICY``/``GOMP_SPINCOUNT``, all set
before the OpenMP runtime loads).  ``--crossover`` times one BN layer by size,
stock vs the kernels forced, training and inference, and prints the size from
which the kernels win (``keras_plugin._policy.CROSSOVER``).  ``--out`` writes
the rows and the CPU (vendor, model, ISA flags, caches) as JSON.

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
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import cpu_info, cpu_line, medians, round_robin  # noqa: E402

DEFAULT_SHAPES = ["32x56x56x64", "64x28x28x128", "256x1024"]
BACKENDS = ["tensorflow", "torch", "jax"]


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


# ------------------------------------------------------- real models (issue 17, item 1)
APPS = ["MobileNetV2", "ResNet50", "EfficientNetB0"]


def _cnn(size=56):
    """The Conv-BN-ReLU CNN: 4 x (Conv2D 3x3 -> BatchNormalization -> ReLU), 32 channels in."""
    import keras

    inputs = keras.Input((size, size, 32))
    h = inputs
    for filters in (64, 64, 128, 128):
        h = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(h)
        h = keras.layers.BatchNormalization()(h)
        h = keras.layers.ReLU()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(10)(h))


def _model_specs(models, sizes, quick=False):
    """``(label, build, input_shape)`` for Keras applications at each size, and the CNN.
    A name may carry its own size, as the labels do ("MobileNetV2@96")."""
    import keras

    specs = []
    for spec in models:
        name, _, at = spec.partition("@")
        if name == "cnn":  # the issue's 56x56x32 input; --quick: 28x28x32
            size = int(at) if at else (28 if quick else 56)
            specs.append((f"cnn@{size}", lambda size=size: _cnn(size), (size, size, 32)))
            continue
        if not hasattr(keras.applications, name):
            raise ValueError(f"unknown model {spec!r}: one of {' '.join(APPS)} cnn, "
                             "optionally with @size")
        for size in ([int(at)] if at else sizes):
            specs.append((f"{name}@{size}", lambda name=name, size=size: getattr(
                keras.applications, name)(input_shape=(size, size, 3), weights=None,
                                          classes=10), (size, size, 3)))
    return specs


def _seeded(build):
    """The model with seeded weights and random BN statistics (so inference is not trivial)."""
    import numpy as np
    import keras

    keras.utils.set_random_seed(0)
    model = build()
    rng = np.random.default_rng(0)
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            w = [rng.normal(size=v.shape).astype("float32") * 0.1 for v in layer.weights]
            w[-1] = np.abs(w[-1]) + 1.0
            layer.set_weights(w)
    return model


def _replace_bn(model, make):
    """A clone of ``model`` with each BatchNormalization layer ``layer`` replaced by
    ``make(layer)``; the weights of the other layers are copied."""
    import keras

    def clone(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            return make(layer)
        return layer.__class__.from_config(layer.get_config())

    new = keras.models.clone_model(model, clone_function=clone)
    for old_layer, new_layer in zip(model.layers, new.layers):
        if old_layer.weights and not isinstance(old_layer, keras.layers.BatchNormalization):
            new_layer.set_weights(old_layer.get_weights())
    return new


def _without_bn(model):
    """The model with every BatchNormalization layer replaced by ``Identity``.

    Its step time is what the model costs with batch normalization for free:
    the floor under any BN implementation, so ``stock / no_bn`` is the most a
    faster BN layer can give this model (Amdahl's bound).  The numbers it
    computes are not the model's.
    """
    import keras

    class NoBatchNorm(keras.layers.Layer):
        def call(self, inputs, training=None, mask=None):
            return inputs

        def compute_output_shape(self, input_shape):
            return input_shape

    return _replace_bn(model, lambda layer: NoBatchNorm(name=layer.name))


def _affine_floor(model):
    """The model with every BatchNormalization layer replaced by ``AffineFloor``.

    ``AffineFloor`` has a batch normalization layer's four weights (``gamma``
    and ``beta`` trainable, two non-trainable statistics, along the BN layer's
    axis) and computes ``x * gamma + beta`` in ``keras.ops``: no statistics,
    no moving averages, one multiply-add per element and its autodiff
    gradients.  It is the cheapest layer shaped like batch normalization that
    a Keras model can hold -- Keras's per-layer cost for a layer with weights
    (``Layer.__call__``, the optimizer's updates of gamma and beta, the
    framework's autograd nodes) plus one element-wise pass -- so ``stock /
    floor`` bounds what any batch normalization written as a Keras layer can
    give this model, more tightly than ``stock / no_bn``.  The numbers it
    computes are not the model's.
    """
    import keras
    from keras import ops

    class AffineFloor(keras.layers.Layer):
        def __init__(self, axis, **kwargs):
            super().__init__(**kwargs)
            self.axis = axis

        def build(self, input_shape):
            axis = self.axis % len(input_shape)
            shape = (input_shape[axis],)
            # channels last: the weights broadcast as they are; else a reshape
            self.shape = None if axis == len(input_shape) - 1 else tuple(
                n if i == axis else 1 for i, n in enumerate(input_shape))
            self.gamma = self.add_weight(shape=shape, initializer="ones", name="gamma")
            self.beta = self.add_weight(shape=shape, initializer="zeros", name="beta")
            self.moving_mean = self.add_weight(shape=shape, initializer="zeros",
                                               trainable=False, name="moving_mean")
            self.moving_variance = self.add_weight(shape=shape, initializer="ones",
                                                   trainable=False, name="moving_variance")

        def call(self, inputs, training=None, mask=None):
            if self.shape is None:
                return inputs * self.gamma + self.beta
            return inputs * ops.reshape(self.gamma, self.shape) + ops.reshape(self.beta,
                                                                               self.shape)

        def compute_output_shape(self, input_shape):
            return input_shape

    return _replace_bn(model, lambda layer: AffineFloor(layer.axis, name=layer.name))


def force_kernels(backend, on):
    """Make swapped layers use the kernels at every size (on) or restore the defaults."""
    from keras_plugin import _policy

    _policy.set_min_elements(backend, None, 0 if on else "measured")


def _round_robin(fns, warmup, repeat):
    """Medians (ms) of ``repeat`` calls of each ``fns[name]()`` taken in turn."""
    return {name: 1e3 * t for name, t in medians(round_robin(fns, repeat, warmup)).items()}


def _train_variants(stock, backend, fuse=True, ceiling=True):
    """``[(name, model, forced)]``: stock, swapped, no BN and the affine floor (the
    ceilings), fused (and the JAX kernels forced)."""
    import keras_plugin

    runs = [("stock", stock, False),
            ("swapped", keras_plugin.swap_batch_normalization(stock), False)]
    if ceiling:
        runs.append(("no_bn", _without_bn(stock), False))
        runs.append(("floor", _affine_floor(stock), False))
    if fuse:
        runs.append(("fused", keras_plugin.swap_batch_normalization(
            stock, fuse_activations=True), False))
    if backend == "jax":
        runs.append(("swapped_forced", keras_plugin.swap_batch_normalization(stock), True))
        if fuse:
            runs.append(("fused_forced", keras_plugin.swap_batch_normalization(
                stock, fuse_activations=True), True))
    return runs


def _train_steps(runs, backend, x, y, warmup, repeat):
    """Round-robin medians of ``train_on_batch`` for each ``(name, model, forced)``."""
    import keras

    fns = {}
    for name, model, forced in runs:
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")

        def step(model=model, forced=forced):
            force_kernels(backend, forced)  # decided when the step is traced
            try:
                model.train_on_batch(x, y)
            finally:
                force_kernels(backend, False)

        fns[name] = step
    return _round_robin(fns, warmup, repeat)


def _models_worker(args):
    """Training steps (stock | swapped | fused) and inference (stock | swapped | folded)."""
    import numpy as np
    import keras

    import keras_plugin

    backend = keras.backend.backend()
    rows = []
    for label, build, shape in _model_specs(args.models, args.sizes, args.quick):
        for batch in args.batches:
            stock = _seeded(build)
            rng = np.random.default_rng(1)
            x = rng.normal(size=(batch,) + shape).astype("float32")
            y = rng.normal(size=(batch, 10)).astype("float32")
            row = {"backend": backend, "model": label, "batch": batch}
            t0 = time.perf_counter()
            train = _train_steps(_train_variants(stock, backend), backend, x, y,
                                 args.warmup, args.repeat)
            row.update({f"train_{k}_ms": v for k, v in train.items()})
            models = [("stock", stock, False),
                      ("swapped", keras_plugin.swap_batch_normalization(stock), False),
                      ("folded", keras_plugin.fold_batch_normalization(stock), False),
                      ("no_bn", _without_bn(stock), False),
                      ("floor", _affine_floor(stock), False)]
            if backend == "jax":
                models.append(("swapped_forced",
                               keras_plugin.swap_batch_normalization(stock), True))
            fns, outs = {}, {}
            for name, model, forced in models:
                force_kernels(backend, forced)
                try:
                    fn = _inference_fn(model)
                    outs[name] = np.asarray(fn(x))  # traces with the setting in force
                finally:
                    force_kernels(backend, False)
                fns[name] = lambda fn=fn: fn(x)
            infer = _round_robin(fns, args.warmup, args.repeat)
            row.update({f"infer_{k}_ms": v for k, v in infer.items()})
            ref = outs["stock"]
            for name in outs:
                if name in ("no_bn", "floor"):
                    continue
                row[f"infer_{name}_maxrel"] = float(np.abs(outs[name] - ref).max()
                                                    / max(np.abs(ref).max(), 1e-30))
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
            print("ROW " + json.dumps(row), flush=True)
    print("RESULT " + json.dumps(rows))


def _print_models(backend, rows):
    for kind, variants in (("train", ["swapped", "fused", "swapped_forced", "fused_forced",
                                      "floor", "no_bn"]),
                           ("infer", ["swapped", "folded", "swapped_forced", "floor",
                                      "no_bn"])):
        present = [v for v in variants if rows and f"{kind}_{v}_ms" in rows[0]]
        what = ("training step (train_on_batch, SGD)" if kind == "train"
                else "inference (model(x, training=False), no gradients)")
        print(f"\n## {backend}: {what}; ms, and stock / variant (> 1: faster than stock)")
        head = "".join(f" {v + ' ms':>17} {'x':>6}" for v in present)
        print(f"{'model':>20} {'batch':>5} {'stock ms':>9}{head}")
        for r in rows:
            stock = r[f"{kind}_stock_ms"]
            cells = "".join(f" {r[f'{kind}_{v}_ms']:17.2f} {stock / r[f'{kind}_{v}_ms']:5.2f}x"
                            for v in present)
            print(f"{r['model']:>20} {r['batch']:5d} {stock:9.2f}{cells}")
        if kind == "infer":
            worst = max((r.get("infer_folded_maxrel", 0.0) for r in rows), default=0.0)
            print(f"(largest relative difference of a folded model's output: {worst:.1e})")


# ------------------------------------------------------------- threads (item 3)
THREAD_CONFIGS = [
    # (ckbn threads = OMP_NUM_THREADS, framework intra-op threads, OpenMP wait policy)
    (1, 2, None), (2, 2, None), (2, 2, "passive"), (1, 1, None), (2, 1, None),
    (2, 2, "spin0"),
]
THREAD_CONFIGS_QUICK = [(1, 2, None), (2, 2, None), (2, 2, "passive"), (2, 1, None)]


def _thread_env(backend, ckbn_threads, intra, wait):
    """Environment of one worker: set before any OpenMP runtime or framework loads."""
    env = {"OMP_NUM_THREADS": str(ckbn_threads), "CKBN_NUM_THREADS": str(ckbn_threads),
           "CKBN_BENCH_INTRA": str(intra)}
    if wait == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    elif wait == "spin0":
        env["GOMP_SPINCOUNT"] = "0"
    if backend == "jax" and intra == 1:
        env["XLA_FLAGS"] = ("--xla_cpu_multi_thread_eigen=false "
                            "intra_op_parallelism_threads=1")
    return env


def _set_intra_op():
    """The framework's intra-op pool size from CKBN_BENCH_INTRA (before any op runs)."""
    n = os.environ.get("CKBN_BENCH_INTRA")
    if not n:
        return
    backend = os.environ.get("KERAS_BACKEND", "")
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(int(n))
    elif backend == "torch":
        import torch

        torch.set_num_threads(int(n))
    # jax: XLA_FLAGS, set by the parent


def _threads_worker(args):
    import numpy as np
    import keras

    import ckbn
    import keras_plugin

    backend = keras.backend.backend()
    rows = []
    for label, build, shape in _model_specs(args.models, args.sizes, args.quick):
        stock = _seeded(build)
        rng = np.random.default_rng(1)
        x = rng.normal(size=(args.batches[0],) + shape).astype("float32")
        y = rng.normal(size=(args.batches[0], 10)).astype("float32")
        # stock, and swapped on the kernels (forced on JAX, where the default is XLA)
        runs = [("stock", stock, False),
                ("swapped", keras_plugin.swap_batch_normalization(stock), backend == "jax")]
        train = _train_steps(runs, backend, x, y, args.warmup, args.repeat)
        rows.append({"backend": backend, "model": label, "batch": args.batches[0],
                     "ckbn_threads": ckbn.get_num_threads(), **{
                         f"train_{k}_ms": v for k, v in train.items()}})
    print("RESULT " + json.dumps(rows))


# ---------------------------------------------------------- crossover (item 4)
CROSSOVER_SHAPES = ["16x2x2x32", "16x4x4x32", "16x8x8x32", "16x16x16x32", "16x32x32x32",
                    "16x64x64x32", "16x2x2x1280", "16x8x8x192", "16x32x32x96"]
CROSSOVER_SHAPES_QUICK = ["16x2x2x32", "16x8x8x32", "16x16x16x32", "16x32x32x32",
                          "16x2x2x1280"]


def _bare_kernels_ms(x, warmup, repeat):
    """ckbn.nn training forward + backward and inference, called directly (no framework)."""
    import numpy as np

    import ckbn

    c = x.shape[-1]
    scale, offset = np.ones(c, x.dtype), np.zeros(c, x.dtype)
    dy = np.ones_like(x)

    def train():
        _, m, v = ckbn.nn.fused_batch_norm(x, scale, offset, epsilon=1e-3)
        ckbn.nn.fused_batch_norm_grad(dy, x, scale, m, v, epsilon=1e-3)

    def infer():
        ckbn.nn.fused_batch_norm(x, scale, offset, scale, scale, epsilon=1e-3,
                                 is_training=False)

    return _round_robin({"train": train, "infer": infer}, warmup, repeat)


def _crossover_worker(args):
    """One BN layer: training step and inference, stock vs the kernels forced, by size."""
    import numpy as np
    import keras

    import keras_plugin

    backend = keras.backend.backend()
    rows = []
    for spec in args.shapes:
        shape = tuple(int(s) for s in spec.split("x"))
        rng = np.random.default_rng(0)
        x = rng.normal(size=shape).astype("float32")
        y = rng.normal(size=(shape[0], 1)).astype("float32")
        inputs = keras.Input(shape[1:])
        h = keras.layers.BatchNormalization()(inputs)
        out = keras.layers.Lambda(
            lambda t: keras.ops.mean(keras.ops.reshape(t, (keras.ops.shape(t)[0], -1)),
                                     axis=1, keepdims=True))(h)
        stock = keras.Model(inputs, out)
        kern = keras_plugin.swap_batch_normalization(stock)
        train = _train_steps([("stock", stock, False), ("kernels", kern, True)], backend,
                             x, y, args.warmup, args.repeat)
        fns = {}
        for name, model, forced in (("stock", stock, False), ("kernels", kern, True)):
            force_kernels(backend, forced)
            try:
                fn = _inference_fn(model)
                fn(x)
            finally:
                force_kernels(backend, False)
            fns[name] = lambda fn=fn: fn(x)
        infer = _round_robin(fns, args.warmup, args.repeat)
        bare = _bare_kernels_ms(x, args.warmup, args.repeat)
        rows.append({"backend": backend, "shape": spec, "elements": int(x.size),
                     "train_stock_ms": train["stock"], "train_kernels_ms": train["kernels"],
                     "infer_stock_ms": infer["stock"], "infer_kernels_ms": infer["kernels"],
                     "bare_train_ms": bare["train"], "bare_infer_ms": bare["infer"]})
    print("RESULT " + json.dumps(rows))


def crossover(rows, mode):
    """Smallest measured size from which on the kernels are never slower (None: never)."""
    rows = sorted(rows, key=lambda r: r["elements"])
    best = None
    for r in reversed(rows):
        if r[f"{mode}_kernels_ms"] <= r[f"{mode}_stock_ms"]:
            best = r["elements"]
        else:
            break
    return best


def _print_crossover(backend, rows):
    print(f"\n## {backend}: one BatchNormalization layer, stock vs ckbn kernels (forced), "
          f"ms; x = stock / kernels")
    print(f"{'shape':>14} {'elements':>9} {'train stock':>11} {'kernels':>8} {'x':>6} "
          f"{'infer stock':>11} {'kernels':>8} {'x':>6} {'bare train':>10} {'bare infer':>10}")
    for r in sorted(rows, key=lambda r: r["elements"]):
        print(f"{r['shape']:>14} {r['elements']:9d} {r['train_stock_ms']:11.3f} "
              f"{r['train_kernels_ms']:8.3f} {r['train_stock_ms'] / r['train_kernels_ms']:5.2f}x "
              f"{r['infer_stock_ms']:11.3f} {r['infer_kernels_ms']:8.3f} "
              f"{r['infer_stock_ms'] / r['infer_kernels_ms']:5.2f}x "
              f"{r['bare_train_ms']:10.3f} {r['bare_infer_ms']:10.3f}")
    print(f"crossover (elements, kernels never slower from there on): "
          f"train {crossover(rows, 'train')}, infer {crossover(rows, 'infer')}")


def _run_worker(argv, env):
    """Run this script as a worker; its RESULT rows, or None with the error printed."""
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", *argv],
                          env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        print(f"worker failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
        return None
    return json.loads(lines[-1][len("RESULT "):])


def _issue17_main(args, info):
    """--models, --threads, --crossover: one worker process per backend (and setting)."""
    quick = args.quick
    if args.warmup == 3 and args.repeat == 10 and quick:
        args.warmup, args.repeat = 2, 5
    models = args.model_list or (APPS + ["cnn"])
    sizes = args.sizes or ([64] if quick else [64, 96])
    batches = args.batches or ([16] if quick else [16, 64])
    common = ["--warmup", str(args.warmup), "--repeat", str(args.repeat)] + (
        ["--quick"] if quick else [])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    results = {"cpu": info, "argv": sys.argv[1:], "models": [], "threads": [],
               "crossover": []}

    def save():
        if args.out:
            with open(args.out, "w") as f:
                json.dump(results, f, indent=1)

    if args.crossover:
        shapes = args.shapes if args.shapes != DEFAULT_SHAPES else (
            CROSSOVER_SHAPES_QUICK if quick else CROSSOVER_SHAPES)
        for backend in args.backends:
            rows = _run_worker(["--worker-mode", "crossover", *common, "--shapes", *shapes],
                               dict(env, KERAS_BACKEND=backend))
            if rows:
                _print_crossover(backend, rows)
                results["crossover"] += rows
                save()
    if args.models:
        for backend in args.backends:
            rows = _run_worker(["--worker-mode", "models", *common, "--model-list", *models,
                                "--sizes", *map(str, sizes), "--batches", *map(str, batches)],
                               dict(env, KERAS_BACKEND=backend))
            if rows:
                _print_models(backend, rows)
                results["models"] += rows
                save()
    if args.threads:
        tmodels = args.model_list or (["MobileNetV2", "cnn"])
        configs = THREAD_CONFIGS_QUICK if quick else THREAD_CONFIGS
        for backend in args.backends:
            print(f"\n## {backend}: training step (ms) by thread setting "
                  f"(ckbn threads = OMP_NUM_THREADS; intra = the framework's intra-op pool)")
            table = []
            for ckbn_threads, intra, wait in configs:
                wenv = dict(env, KERAS_BACKEND=backend,
                            **_thread_env(backend, ckbn_threads, intra, wait))
                rows = _run_worker(["--worker-mode", "threads", *common, "--model-list",
                                    *tmodels, "--sizes", str(sizes[0]), "--batches",
                                    str(batches[0])], wenv)
                for r in rows or []:
                    r.update(omp=ckbn_threads, intra=intra, wait=wait or "default")
                    table.append(r)
                    results["threads"].append(r)
                save()
            cols = sorted({k for r in table for k in r if k.startswith("train_")})
            print(f"{'model':>16} {'omp':>3} {'intra':>5} {'wait':>8} "
                  + " ".join(f"{c[6:-3]:>14}" for c in cols))
            for r in table:
                print(f"{r['model']:>16} {r['omp']:3d} {r['intra']:5d} {r['wait']:>8} "
                      + " ".join(f"{r.get(c, float('nan')):14.2f}" for c in cols))
    save()


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
    p.add_argument("--models", action="store_true",
                   help="issue 17: Keras applications and the CNN, training and inference")
    p.add_argument("--threads", action="store_true",
                   help="issue 17: ckbn/framework thread settings, one process each")
    p.add_argument("--crossover", action="store_true",
                   help="issue 17: one BN layer by size, stock vs kernels (dispatch rule)")
    p.add_argument("--quick", action="store_true",
                   help="with --models/--threads/--crossover: one size, batch 16, few steps")
    p.add_argument("--model-list", nargs="+", dest="model_list", default=None,
                   help=f"models for --models/--threads ({' '.join(APPS)} cnn; "
                        "NAME@SIZE for one size)")
    p.add_argument("--sizes", nargs="+", type=int, default=None)
    p.add_argument("--batches", nargs="+", type=int, default=None)
    p.add_argument("--out", default=None, help="write the results (and the CPU) as JSON")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker-mode", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        if args.worker_mode:
            _set_intra_op()
            args.models = args.model_list
            return {"models": _models_worker, "threads": _threads_worker,
                    "crossover": _crossover_worker}[args.worker_mode](args)
        if args.fold:
            return _fold_worker(args)
        return _jax_threshold_worker(args) if args.jax_threshold else _worker(args)

    import ckbn

    info = cpu_info()
    print(cpu_line(info))
    print(f"# ckbn threads {ckbn.get_num_threads()}, OpenMP {ckbn.openmp_enabled()}; "
          f"timings are medians of round-robin steps")
    if args.models or args.threads or args.crossover:
        return _issue17_main(args, info)
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
