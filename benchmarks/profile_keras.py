"""Where the time of a Keras training step with ckbn goes: kernels vs glue, per layer.

For each backend (each in its own process, ``KERAS_BACKEND``) this times
training steps (``train_on_batch``, SGD) of a Keras model, stock, swapped
(``swap_batch_normalization``) and fused (``fuse_activations=True``), and
splits the time of the swapped and fused steps with timers wrapped around
three layers of calls:

* **kernels** -- the compiled kernel functions (``bn_*`` of the kernel module
  ckbn dispatched to): the passes over the data, OpenMP team included;
* **ckbn Python** -- ``ckbn.nn``/``ckbn._ops`` around them (validation,
  layout, allocation of outputs), i.e. the ``ckbn._ops`` entry points minus
  the kernels;
* **plugin Python** -- ``keras_plugin._kernels`` (the NumPy boundary the
  framework op calls back into) minus ``ckbn._ops``;

and what is left of the step: the framework (its other layers, its op
dispatch around ckbn's ops, the optimizer).  Per layer, calls are grouped by
the input shape of the batch normalization (layers of one shape share a row,
with their names).

``--layer`` adds a single-layer measurement that isolates the per-call glue:
one BN (or BN + ReLU6, fused) layer's forward and backward under the
framework's graph/jit mode, wall time minus the time inside the plugin's
callbacks = the framework's cost of calling out (op dispatch, the Python
callback, the GIL, copies, waiting for threads), per call.

``--cprofile`` prints the top functions of cProfile over a few fused steps.

    python benchmarks/profile_keras.py                       # MobileNetV2@64, batch 16
    python benchmarks/profile_keras.py --backends tensorflow --layer 16x32x32x32 16x2x2x1280
    python benchmarks/profile_keras.py --model cnn --batch 16 --steps 5 --out prof.json

The numbers are wall-clock medians; the CPU is printed and stored with them.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_keras import _cnn, _seeded, cpu_info, cpu_line, force_kernels  # noqa: E402

_NOT_KERNELS = ("stat_dtype", "has_fused_activation")
_OPS = ("forward_train", "forward_infer", "backward", "stats", "affine", "grad_sums",
        "grad_dx", "small_layer_train")
# The compiled entries (ckbn.nn's common case, the layer's small eager call): their
# own checks take well under a microsecond, the rest is the kernels they run, so
# they count as kernel time.
_ENTRIES = ("common_forward", "common_backward", "small_layer_train")


class Timers:
    """Accumulated seconds and call counts, by (level, function, shape)."""

    def __init__(self):
        self.on = False
        self.t = collections.defaultdict(float)
        self.n = collections.Counter()

    def reset(self):
        self.t.clear()
        self.n.clear()

    def wrap(self, level, owner, name, shape_of):
        real = getattr(owner, name)

        def timed(*a, **k):
            if not self.on:
                return real(*a, **k)
            t0 = time.perf_counter()
            try:
                return real(*a, **k)
            finally:
                key = (level, name, shape_of(a))
                self.t[key] += time.perf_counter() - t0
                self.n[key] += 1

        setattr(owner, name, timed)

    def total(self, level):
        return sum(v for (lv, _, _), v in self.t.items() if lv == level)


def _instrument():
    """Timers around keras_plugin._kernels, ckbn._ops and the compiled kernels."""
    import ckbn._ops as ckbn_ops
    from ckbn._dispatch import kernels
    from keras_plugin import _kernels

    timers = Timers()

    def first_array_shape(args):
        for a in args:
            shape = getattr(a, "shape", None)
            if shape is not None and len(shape) >= 2:
                return tuple(int(d) for d in shape)
        return ()

    for name in dir(_kernels):
        fn = getattr(_kernels, name)
        if name.startswith("_") or name in _NOT_KERNELS or not callable(fn) \
                or getattr(fn, "__module__", "") != _kernels.__name__:
            continue
        timers.wrap("plugin", _kernels, name, first_array_shape)
    for name in _OPS:
        if hasattr(ckbn_ops, name):
            timers.wrap("ckbn", ckbn_ops, name, lambda a: ())
    k = kernels()
    for name in dir(k):
        if (name.startswith("bn_") or name in _ENTRIES) and callable(getattr(k, name)):
            timers.wrap("kernel", k, name, lambda a: ())
    return timers


def _build(spec):
    import keras

    name, _, size = spec.partition("@")
    size = int(size or 64)
    if name == "cnn":
        return (lambda: _cnn(size)), (size, size, 32)
    if name == "bnrelu6":  # the single BN + ReLU6 layer model
        def build():
            inputs = keras.Input((size, size, 32))
            h = keras.layers.BatchNormalization()(inputs)
            h = keras.layers.ReLU(max_value=6.0)(h)
            h = keras.layers.GlobalAveragePooling2D()(h)
            return keras.Model(inputs, keras.layers.Dense(10)(h))
        return build, (size, size, 32)
    return (lambda: getattr(keras.applications, name)(
        input_shape=(size, size, 3), weights=None, classes=10)), (size, size, 3)


def _bn_shapes(model, batch):
    """{input shape with the batch: [BN layer names]}."""
    import keras

    groups = collections.defaultdict(list)
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = (batch,) + tuple(layer.input.shape[1:])
            groups[shape].append(layer.name)
    return groups


def _step_profile(args, backend, timers):
    import numpy as np
    import keras

    import keras_plugin

    build, shape = _build(args.model)
    stock = _seeded(build)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(args.batch,) + shape).astype("float32")
    y = rng.normal(size=(args.batch, 10)).astype("float32")
    forced = backend == "jax"  # JAX runs XLA unless the kernels are asked for
    variants = [("stock", stock),
                ("swapped", keras_plugin.swap_batch_normalization(stock)),
                ("fused", keras_plugin.swap_batch_normalization(stock,
                                                                fuse_activations=True))]
    for _, m in variants:
        m.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")

    def step(name, m):
        force_kernels(backend, forced and name != "stock")
        try:
            m.train_on_batch(x, y)
        finally:
            force_kernels(backend, False)

    for name, m in variants:
        for _ in range(args.warmup):
            step(name, m)
    times = {name: [] for name, _ in variants}
    parts = {name: collections.defaultdict(float) for name, _ in variants}
    counts = {name: collections.Counter() for name, _ in variants}
    for _ in range(args.steps):  # round robin
        for name, m in variants:
            timers.reset()
            timers.on = True
            t0 = time.perf_counter()
            step(name, m)
            times[name].append(time.perf_counter() - t0)
            timers.on = False
            for key, v in timers.t.items():
                parts[name][key] += v / args.steps
                counts[name][key] += timers.n[key] / args.steps
    groups = _bn_shapes(stock, args.batch)
    out = {"backend": backend, "model": args.model, "batch": args.batch, "variants": {}}
    for name, m in variants:
        p = parts[name]
        plugin = sum(v for (lv, _, _), v in p.items() if lv == "plugin")
        ck = sum(v for (lv, _, _), v in p.items() if lv == "ckbn")
        kern = sum(v for (lv, _, _), v in p.items() if lv == "kernel")
        layers = []
        for shp, names in sorted(groups.items(), key=lambda kv: -np.prod(kv[0])):
            fns = {f: (1e3 * v, counts[name][(lv, f, s)]) for (lv, f, s), v in p.items()
                   if lv == "plugin" and s == shp}
            if fns or name == "stock":
                layers.append({"shape": list(shp), "layers": names,
                               "plugin_ms": {f: round(t, 3) for f, (t, _) in fns.items()},
                               "calls": {f: c for f, (_, c) in fns.items()}})
        out["variants"][name] = {
            "step_ms": 1e3 * float(np.median(times[name])),
            "plugin_ms": 1e3 * plugin, "ckbn_python_ms": 1e3 * (ck - kern),
            "kernel_ms": 1e3 * kern, "plugin_python_ms": 1e3 * (plugin - ck),
            "outside_ms": 1e3 * (float(np.median(times[name])) - plugin),
            "layers": layers}
    return out


def _layer_glue(args, backend, timers):
    """One BN (+ReLU6) layer forward+backward in the framework's graph mode: glue per call."""
    import numpy as np
    import keras

    import keras_plugin

    rows = []
    for spec in args.layer:
        shape = tuple(int(s) for s in spec.split("x"))
        x = np.random.default_rng(0).normal(size=shape).astype("float32")
        for variant in ("swapped", "fused"):
            inputs = keras.Input(shape[1:])
            h = keras.layers.BatchNormalization()(inputs)
            h = keras.layers.ReLU(max_value=6.0)(h)
            stock = keras.Model(inputs, h)
            model = keras_plugin.swap_batch_normalization(
                stock, fuse_activations=variant == "fused")
            force_kernels(backend, True)
            try:
                fn = _fwd_bwd_fn(model, backend)
                for _ in range(args.warmup):
                    fn(x)
            finally:
                force_kernels(backend, False)
            walls, plugin, kernel = [], [], []
            for _ in range(args.steps * 4):
                timers.reset()
                timers.on = True
                t0 = time.perf_counter()
                fn(x)
                walls.append(time.perf_counter() - t0)
                timers.on = False
                plugin.append(timers.total("plugin"))
                kernel.append(timers.total("kernel"))
            wall, pl, ke = (1e3 * float(np.median(v)) for v in (walls, plugin, kernel))
            rows.append({"shape": spec, "variant": variant, "wall_ms": wall,
                         "plugin_ms": pl, "kernel_ms": ke, "glue_ms": wall - pl})
    return rows


def _fwd_bwd_fn(model, backend):
    """``fn(x)``: forward and backward of ``model`` (sum of the output) in graph/jit mode."""
    import numpy as np

    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=False)
        def fb(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(model(x, training=True))
            return tape.gradient(loss, [x] + model.trainable_weights)

        return lambda x: [g.numpy() for g in fb(tf.constant(x))]
    if backend == "torch":
        import torch

        def fb(x):
            xt = torch.tensor(x, requires_grad=True)
            model(xt, training=True).sum().backward()
            return xt.grad
        return fb
    if backend == "jax":
        import jax

        tv = [v.value for v in model.trainable_variables]
        ntv = [v.value for v in model.non_trainable_variables]

        def loss(tv_, x_):
            return model.stateless_call(tv_, ntv, x_, training=True)[0].sum()

        g = jax.jit(jax.grad(loss, argnums=(0, 1)))
        return lambda x: jax.block_until_ready(g(tv, x))
    return lambda x: np.asarray(model(x, training=False))


def _cprofile(args, backend):
    import cProfile
    import io
    import pstats

    import numpy as np
    import keras

    import keras_plugin

    build, shape = _build(args.model)
    model = keras_plugin.swap_batch_normalization(_seeded(build), fuse_activations=True)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    x = np.random.default_rng(1).normal(size=(args.batch,) + shape).astype("float32")
    y = np.zeros((args.batch, 10), "float32")
    force_kernels(backend, True)
    try:
        for _ in range(args.warmup):
            model.train_on_batch(x, y)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.steps):
            model.train_on_batch(x, y)
        prof.disable()
    finally:
        force_kernels(backend, False)
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(15)
    return s.getvalue()


def _worker(args):
    import keras

    backend = keras.backend.backend()
    timers = _instrument()
    result = {"backend": backend}
    if args.model != "none":
        result["step"] = _step_profile(args, backend, timers)
    if args.layer:
        result["layer"] = _layer_glue(args, backend, timers)
    if args.cprofile:
        result["cprofile"] = _cprofile(args, backend)
    print("RESULT " + json.dumps(result))


def _print(res):
    backend = res["backend"]
    step = res.get("step")
    if step:
        print(f"\n## {backend}: {step['model']}, batch {step['batch']}, one training step "
              f"(train_on_batch), ms per step")
        print(f"{'variant':>8} {'step':>9} {'kernels':>9} {'ckbn py':>8} {'plugin py':>9} "
              f"{'outside the callbacks':>22}")
        for name, v in step["variants"].items():
            print(f"{name:>8} {v['step_ms']:9.2f} {v['kernel_ms']:9.2f} "
                  f"{v['ckbn_python_ms']:8.2f} {v['plugin_python_ms']:9.2f} "
                  f"{v['outside_ms']:22.2f}")
        for name in ("swapped", "fused"):
            v = step["variants"][name]
            print(f"\n{backend} {name}: per BN input shape (ms per step inside the plugin's "
                  f"callbacks, by function; calls per step)")
            for row in v["layers"]:
                fns = ", ".join(f"{f} {t:.2f} (x{row['calls'][f]:.0f})"
                                for f, t in sorted(row["plugin_ms"].items()))
                print(f"  {'x'.join(map(str, row['shape'])):>16}  {len(row['layers']):2d} "
                      f"layer(s) [{row['layers'][0]}...]: {fns or '-'}")
    for row in res.get("layer", []):
        if row is res["layer"][0]:
            print(f"\n## {backend}: one BN+ReLU6 layer, forward+backward in graph/jit mode, "
                  f"kernels forced; ms per call")
            print(f"{'shape':>14} {'variant':>8} {'wall':>8} {'in plugin':>9} "
                  f"{'in kernels':>10} {'glue':>8}")
        print(f"{row['shape']:>14} {row['variant']:>8} {row['wall_ms']:8.3f} "
              f"{row['plugin_ms']:9.3f} {row['kernel_ms']:10.3f} {row['glue_ms']:8.3f}")
    if res.get("cprofile"):
        print(f"\n## {backend}: cProfile of fused training steps\n{res['cprofile']}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", nargs="+", default=["tensorflow", "torch", "jax"])
    p.add_argument("--model", default="MobileNetV2@64",
                   help="NAME@SIZE: a Keras application, cnn or bnrelu6; none to skip")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--layer", nargs="*", default=["16x32x32x32", "16x8x8x192",
                                                  "16x2x2x1280"],
                   help="single-layer glue measurement at these shapes (none: skip)")
    p.add_argument("--cprofile", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return _worker(args)
    info = cpu_info()
    print(cpu_line(info))
    results = {"cpu": info, "argv": sys.argv[1:], "backends": []}
    argv = ["--model", args.model, "--batch", str(args.batch), "--warmup", str(args.warmup),
            "--steps", str(args.steps), "--layer", *args.layer]
    if args.cprofile:
        argv.append("--cprofile")
    for backend in args.backends:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", *argv],
                              env=dict(os.environ, KERAS_BACKEND=backend,
                                       TF_CPP_MIN_LOG_LEVEL="3"),
                              capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(f"{backend}: failed (rc {proc.returncode})\n{proc.stderr[-3000:]}")
            continue
        res = json.loads(lines[-1][len("RESULT "):])
        _print(res)
        results["backends"].append(res)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
