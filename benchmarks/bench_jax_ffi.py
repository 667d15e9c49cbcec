"""The JAX XLA FFI handler against a bare ``ckbn.nn`` call and against XLA.

    KERAS_BACKEND=jax python benchmarks/bench_jax_ffi.py [--repeat 200] [--steps 30]
        [--threads 1] [--part calls|overhead|steps|all]

Part 1, issue 17's target (a bare ``ckbn.nn`` call and the same call through
the native op differ by <= 10 us): float32, channels last, 16x8x8x32 and
16x32x32x32, training forward and inference, a bare
``ckbn.nn.fused_batch_norm`` on NumPy arrays vs a jitted function holding
only the FFI call, and JAX's own per-call floor: a jitted ``x + 0`` with the
op's inputs and outputs (dispatch, outputs of x's size, one pass).  The table gives
op - bare and op - bare - floor (what is left for ckbn's handler); the
target is met where op - bare <= floor + 10 us.  Both sides run on the same
OpenMP thread count (``--threads``, default 1).

Part 2, per call (forward and forward+backward): the FFI handler beside XLA's
own code (Keras ops) and the host-callback path.  Part 3: ``train_on_batch``
of a one-layer model (``BatchNormalization`` only, SGD) with the stock layer,
the swapped layer on the FFI handler, and the swapped layer on Keras ops.
Medians of round-robin repeats (``benchmarks/_timing.py``); results depend
on the machine's load.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402

import ckbn  # noqa: E402

from _timing import cpu_line, medians, minimums, round_robin  # noqa: E402

TARGET_US = 10.0


def overhead(shapes, repeat):
    """Part 1: the handler's cost over a bare call, beside JAX's per-call floor."""
    import jax

    from keras_plugin import _jax_ffi

    eps = 1e-3
    print(f"\n## Per call: the FFI handler vs a bare ckbn.nn call, float32 NHWC "
          f"(medians of {repeat} round-robin calls, us)")
    print("floor: a jitted `x + 0` with the op's inputs and outputs (training: `(x + 0, "
          "s + 0, o + 0)`; inference: `x + 0` of (x, s, o, m, v)), JAX's own per-call cost "
          "(dispatch, outputs allocated, one pass); target: op - bare <= floor + 10 us.")
    print("| shape | mode | bare ckbn.nn | FFI jit | op - bare | floor | op - bare - floor "
          "| target met |")
    print("|---|---|---|---|---|---|---|---|")
    for shape in shapes:
        rng = np.random.default_rng(0)
        c = shape[-1]
        x = rng.normal(size=shape).astype(np.float32)
        s = rng.uniform(0.5, 2.0, c).astype(np.float32)
        o = rng.normal(size=c).astype(np.float32)
        axes = tuple(range(x.ndim - 1))
        m, v = x.mean(axis=axes), x.var(axis=axes)
        ch = (x.ndim - 1,)
        xj, sj, oj, mj, vj = (jax.device_put(a) for a in (x, s, o, m, v))
        train_f = jax.jit(lambda x, s, o: _jax_ffi.train(x, s, o, ch, eps))
        infer_f = jax.jit(lambda x, s, o, m, v: _jax_ffi.given(x, s, o, m, v, ch, eps))
        # the floor, with the op's inputs and outputs: each output x + 0 (a new
        # buffer of x's size written in one pass) or a (C,) vector + 0
        floor_train = jax.jit(lambda x, s, o: (x + 0, s + 0, o + 0))
        floor_infer = jax.jit(lambda x, s, o, m, v: x + 0)
        fns = {
            ("train", "bare"): lambda: ckbn.nn.fused_batch_norm(x, s, o, epsilon=eps),
            ("train", "ffi"): lambda: jax.block_until_ready(train_f(xj, sj, oj)),
            ("infer", "bare"): lambda: ckbn.nn.fused_batch_norm(
                x, s, o, mean=m, variance=v, epsilon=eps, is_training=False),
            ("infer", "ffi"): lambda: jax.block_until_ready(infer_f(xj, sj, oj, mj, vj)),
            ("train", "floor"): lambda: jax.block_until_ready(floor_train(xj, sj, oj)),
            ("infer", "floor"): lambda: jax.block_until_ready(
                floor_infer(xj, sj, oj, mj, vj)),
        }
        med = {k: t * 1e6 for k, t in medians(round_robin(fns, repeat, warmup=3)).items()}
        for mode in ("train", "infer"):
            bare, op, floor = med[(mode, "bare")], med[(mode, "ffi")], med[(mode, "floor")]
            left = op - bare - floor
            print(f"| {'x'.join(map(str, shape))} | {mode} | {bare:.1f} | {op:.1f} "
                  f"| {op - bare:+.1f} | {floor:.1f} | {left:+.1f} "
                  f"| {'yes' if left <= TARGET_US else 'no'} |")


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
            times = round_robin(fns, repeat, warmup=0)
            med = {k: v * 1e6 for k, v in medians(times).items()}
            low = {k: v * 1e6 for k, v in minimums(times).items()}

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
        t = medians(round_robin(fns, steps))
        ms = {k: v * 1e3 for k, v in t.items()}
        print(f"| {'x'.join(map(str, shape))} | {ms['stock']:.2f} | {ms['ffi']:.2f} | "
              f"{ms['stock'] / ms['ffi']:.2f}x | {ms['ops']:.2f} | "
              f"{ms['stock'] / ms['ops']:.2f}x |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--shapes", default="16x8x8x32,16x32x32x32")
    ap.add_argument("--threads", type=int, default=1,
                    help="OpenMP threads of ckbn, bare and through the handler (default 1)")
    ap.add_argument("--part", choices=("overhead", "calls", "steps", "all"), default="all")
    args = ap.parse_args()
    shapes = [tuple(int(n) for n in s.split("x")) for s in args.shapes.split(",")]
    import jax

    from keras_plugin import _jax_ffi
    if not _jax_ffi.available():
        raise SystemExit("the XLA FFI handler is not available here")
    ckbn.set_num_threads(args.threads)   # read when the FFI calls are traced
    print(cpu_line())
    print(f"jax {jax.__version__}; ckbn kernels {_jax_ffi.library().variant}, n_threads "
          f"{_jax_ffi.n_threads()}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    if args.part in ("overhead", "all"):
        overhead(shapes, args.repeat)
    if args.part in ("calls", "all"):
        per_call(shapes, args.repeat)
    if args.part in ("steps", "all"):
        train_steps(shapes, args.steps)


if __name__ == "__main__":
    main()
