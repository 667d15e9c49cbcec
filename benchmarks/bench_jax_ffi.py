"""The JAX XLA FFI handler against a bare ``ckbn.nn`` call and against XLA.

    KERAS_BACKEND=jax python benchmarks/bench_jax_ffi.py [--repeat 200] [--steps 30]

Part 1, per call (float32, channels last, training forward and backward):
a bare ``ckbn.nn.fused_batch_norm`` (+ ``fused_batch_norm_grad``) on NumPy
arrays, the same kernels through the FFI handler in a jitted function, the
host-callback path (``keras_plugin._jax``'s old engine) and XLA's own code
(Keras ops).  Part 2: ``train_on_batch`` of a one-layer model
(``BatchNormalization`` only, SGD) with the stock layer, the swapped layer on
the FFI handler, and the swapped layer on Keras ops.  Medians of
round-robin repeats; results depend on the machine's load.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402

import ckbn  # noqa: E402


def _cpu():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _round_robin(fns, repeat):
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return times


def _median_round_robin(fns, repeat):
    return {k: float(np.median(v)) for k, v in _round_robin(fns, repeat).items()}


def per_call(shapes, repeat):
    import jax
    import jax.numpy as jnp

    from keras_plugin import _jax_ffi, _kernels

    eps = 1e-3
    print(f"\n## Per call, float32, channels last (round robin, {repeat} calls each): "
          f"median us (min us)")
    print("jit floor: a jitted `s + 1` on the (C,) scale, JAX's own dispatch cost per call.")
    print("| shape | op | bare ckbn.nn | FFI jit | FFI - bare (medians) | FFI - bare (mins) "
          "| jit floor | XLA jit | callback jit |")
    print("|---|---|---|---|---|---|---|---|---|")
    for shape in shapes:
        rng = np.random.default_rng(0)
        x = rng.normal(size=shape).astype(np.float32)
        c = shape[-1]
        s = np.ones(c, np.float32)
        o = np.zeros(c, np.float32)
        dy = rng.normal(size=shape).astype(np.float32)
        axes = (len(shape) - 1,)
        xj, sj, oj, dyj = (jax.device_put(a) for a in (x, s, o, dy))

        def xla_train(x, s, o):
            red = tuple(range(x.ndim - 1))
            m = jnp.mean(x, red)
            v = jnp.var(x, red)
            return (x - m) * jax.lax.rsqrt(v + eps) * s + o, m, v

        def cb_train(x, s, o):
            sd = jax.ShapeDtypeStruct
            return jax.pure_callback(
                lambda *a: _kernels.train(*(np.asarray(t) for t in a), axes, eps),
                (sd(x.shape, x.dtype), sd((c,), x.dtype), sd((c,), x.dtype)), x, s, o,
                vmap_method="sequential")

        ffi_f = jax.jit(lambda x, s, o: _jax_ffi.train(x, s, o, axes, eps))
        xla_f = jax.jit(xla_train)
        cb_f = jax.jit(cb_train)

        def fb(train):
            def loss(x, s, o):
                return jnp.sum(train(x, s, o)[0] * dyj)
            return jax.jit(jax.grad(loss, (0, 1, 2)))

        ffi_g = fb(lambda x, s, o: _jax_ffi.train(x, s, o, axes, eps))
        xla_g = fb(xla_train)

        def bare_fwd():
            ckbn.nn.fused_batch_norm(x, s, o, epsilon=eps)

        def bare_fb():
            _, m, v = ckbn.nn.fused_batch_norm(x, s, o, epsilon=eps)
            ckbn.nn.fused_batch_norm_grad(dy, x, s, m, v, epsilon=eps)

        floor_f = jax.jit(lambda s: s + 1)
        fwd = {"bare": bare_fwd,
               "floor": lambda: jax.block_until_ready(floor_f(sj)),
               "ffi": lambda: jax.block_until_ready(ffi_f(xj, sj, oj)),
               "xla": lambda: jax.block_until_ready(xla_f(xj, sj, oj)),
               "cb": lambda: jax.block_until_ready(cb_f(xj, sj, oj))}
        both = {"bare": bare_fb,
                "floor": lambda: jax.block_until_ready(floor_f(sj)),
                "ffi": lambda: jax.block_until_ready(ffi_g(xj, sj, oj)),
                "xla": lambda: jax.block_until_ready(xla_g(xj, sj, oj))}
        for fns in (fwd, both):
            for fn in fns.values():   # compile and warm up
                fn()
                fn()
        for name, fns in (("forward", fwd), ("forward+backward", both)):
            times = _round_robin(fns, repeat)
            med = {k: float(np.median(v)) * 1e6 for k, v in times.items()}
            low = {k: float(np.min(v)) * 1e6 for k, v in times.items()}

            def cell(k):
                return f"{med[k]:.1f} ({low[k]:.1f})" if k in med else "-"

            print(f"| {'x'.join(map(str, shape))} | {name} | {cell('bare')} | {cell('ffi')} "
                  f"| {med['ffi'] - med['bare']:+.1f} | {low['ffi'] - low['bare']:+.1f} "
                  f"| {cell('floor')} | {cell('xla')} | {cell('cb')} |")


def train_steps(shapes, steps):
    import keras

    import keras_plugin
    from keras_plugin import _engine

    print(f"\n## One-BN-layer model, train_on_batch (SGD), medians of {steps} round-robin "
          f"steps, ms; ratio = stock / variant")
    print("| shape | stock | swapped (FFI) | ratio | swapped (Keras ops) | ratio |")
    print("|---|---|---|---|---|---|")
    for shape in shapes:
        x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
        y = np.random.default_rng(1).normal(size=shape).astype(np.float32)

        def model(swap):
            inputs = keras.Input(shape[1:])
            m = keras.Model(inputs, keras.layers.BatchNormalization()(inputs))
            if swap:
                keras_plugin.swap_batch_normalization(m)
            m.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
            return m

        stock, swapped = model(False), model(True)
        ops_model = model(True)

        def ops_step():
            with _engine.kernels_disabled():
                ops_model.train_on_batch(x, y)

        fns = {"stock": lambda: stock.train_on_batch(x, y),
               "ffi": lambda: swapped.train_on_batch(x, y),
               "ops": ops_step}
        for fn in fns.values():
            fn()
            fn()
        t = _median_round_robin(fns, steps)
        ms = {k: v * 1e3 for k, v in t.items()}
        print(f"| {'x'.join(map(str, shape))} | {ms['stock']:.2f} | {ms['ffi']:.2f} | "
              f"{ms['stock'] / ms['ffi']:.2f}x | {ms['ops']:.2f} | "
              f"{ms['stock'] / ms['ops']:.2f}x |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--shapes", default="16x8x8x32,16x32x32x32")
    args = ap.parse_args()
    shapes = [tuple(int(n) for n in s.split("x")) for s in args.shapes.split(",")]
    import jax

    from keras_plugin import _jax_ffi
    if not _jax_ffi.available():
        raise SystemExit("the XLA FFI handler is not available here")
    print(f"CPU: {_cpu()}, {os.cpu_count()} logical CPUs; jax {jax.__version__}; "
          f"ckbn kernels {_jax_ffi.library().variant}, n_threads {_jax_ffi.n_threads()}; "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    per_call(shapes, args.repeat)
    train_steps(shapes, args.steps)


if __name__ == "__main__":
    main()
