"""The TensorFlow native op against a bare ``ckbn.nn`` call, and in a Keras train step.

1. Per-call cost (issue 17's target: a bare ``ckbn.nn`` call and the same
   call through the native op differ by <= 10 us).  float32, channels last,
   16x8x8x32 and 16x32x32x32, training forward (``CkbnBatchNormTrain`` vs
   ``ckbn.nn.fused_batch_norm``) and inference (``CkbnBatchNormApply`` vs
   ``fused_batch_norm(..., is_training=False)``), the op called eagerly and
   inside a ``tf.function`` holding only that op; beside each, TensorFlow's
   own per-call floor on that path: eagerly its cheapest op (``AddV2`` of two
   (C,) vectors), in a ``tf.function`` its trivial op on the same inputs
   (``IdentityN``, no copy) as the function's only op.  A last table shows
   what TensorFlow's allocator adds to an output of x's size.  The table gives op - bare (what
   going through TensorFlow costs) and op - bare - floor (what is left for
   ckbn's op itself: attribute handling, the layout, output allocation, the
   per-channel conversions); the target is met where op - bare <= floor +
   10 us.  Both sides run on the same OpenMP thread count (``--threads``).
   The eager ``_tf_native.train`` wrapper (the plugin's Python entry) and
   TensorFlow's ``FusedBatchNormV3`` are listed for scale.
   Also: the op through TensorFlow's C fast path (what ``_tf_native``'s eager
   path calls), and ``_tf_native``'s general path (its only path before
   session 6: conversions, checks, the op module's generated wrapper).
2. ``--part pieces`` (not in ``all``): where the op's time goes, from a
   library built with its per-phase timers (``CKBN_TF_OP_TIMERS=1``; a
   separate cached build): the phases of the kernel's ``Compute``, the time
   outside it, and an op with the same signature that only allocates its
   outputs (TensorFlow's own cost of the signature).
3. A one-layer Keras model (``BatchNormalization``, optionally followed by
   ``ReLU(max_value=6)``), ``train_on_batch`` with SGD: stock Keras, swapped
   on the native op, swapped on the ``tf.numpy_function`` path (the native op
   switched off while that model traces), and fused with the activation.

4. ``--part fused`` (not in ``all``): BN + ReLU6 at the sizes of MobileNetV2@64's
   BN layers (batch 16), swapped (ckbn's op, then TensorFlow's ``Relu6``)
   against fused (the activation inside ckbn's forward; its gradient
   TensorFlow's Relu6Grad on the op's output, then ckbn's plain backward) and
   against the fused gradient before session 7 (the activation inside ckbn's
   backward), at four levels: a one-layer model's ``train_on_batch``; the
   native ops forward + gradient in a ``tf.function``; the forward alone and
   the gradient alone; and the kernels alone through ``ckbn.nn`` (activation
   None vs "relu6"), on the thread count the op would use.
5. ``--part models`` (not in ``all``): MobileNetV2@64 and the 4x(Conv-BN-ReLU)
   CNN on 28x28x32 (``bench_keras.py``'s models), batch 16,
   ``train_on_batch``: stock, swapped, fused, and fused with the activation
   in ckbn's backward.

Variants run round robin (``benchmarks/_timing.py``); medians.  Usage::

    KERAS_BACKEND=tensorflow python benchmarks/bench_tf_native.py [--rounds 30]
        [--threads 1] [--part calls|pieces|steps|fused|models|all]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# --part pieces needs the timing build of the op library; keras_plugin loads
# the library when it is imported, so the switch is set before that.
_args = " ".join(sys.argv[1:]).replace("=", " ").split()
if any(a == "--part" and b == "pieces" for a, b in zip(_args, _args[1:])):
    os.environ["CKBN_TF_OP_TIMERS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

import ckbn  # noqa: E402
from ckbn._dispatch import kernel_name  # noqa: E402
import keras_plugin  # noqa: E402
from keras_plugin import _policy, _tf_native  # noqa: E402

from tensorflow.python import pywrap_tfe as _pywrap_tfe  # noqa: E402
from tensorflow.python.eager import context as _context  # noqa: E402

from _timing import cpu_line, medians, round_robin  # noqa: E402

SHAPES = [(16, 8, 8, 32), (16, 32, 32, 32)]
TARGET_US = 10.0


def per_call(shape, rounds):
    """Median seconds per call of every variant of part 1 for one shape."""
    rng = np.random.default_rng(0)
    c = shape[-1]
    x = rng.standard_normal(shape).astype(np.float32)
    s = rng.uniform(0.5, 2.0, c).astype(np.float32)
    o = rng.standard_normal(c).astype(np.float32)
    m = x.mean(axis=(0, 1, 2))
    v = x.var(axis=(0, 1, 2))
    xt, st, ot, mt, vt = (tf.constant(a) for a in (x, s, o, m, v))
    ops = _tf_native.load()
    n = ckbn.get_num_threads()
    kw = dict(channel_axes=[3], epsilon="0.001", n_threads=n)

    @tf.function
    def op_train_fn(x, s, o):
        return ops.ckbn_batch_norm_train(x, s, o, **kw)

    @tf.function
    def op_infer_fn(x, s, o, m, v):
        return ops.ckbn_batch_norm_apply(x, s, o, m, v, **kw)

    # The floors.  Eager: TensorFlow's cheapest eager op, AddV2 of the two (C,)
    # vectors (IdentityN of the op's inputs costs more eagerly: its list input
    # goes through Python).  tf.function: IdentityN of the op's inputs (no copy,
    # one output per input) as the only op of the function.
    def identity(*args):
        return tf.raw_ops.IdentityN(input=list(args))

    identity_fn = tf.function(identity)

    # The op through TensorFlow's C fast path, as _tf_native's eager path calls
    # it (the "eager op" rows go through the op module's generated wrapper).
    ctx = _context.context()

    def fast(name, *inputs):
        return _pywrap_tfe.TFE_Py_FastPathExecute(ctx, name, None, *inputs, "channel_axes", [3],
                                                  "n_threads", n)

    # _tf_native's general path (conversions, checks, the generated wrapper),
    # the only path before session 6, by switching its fast path off for the call.
    def general(fn, *args):
        saved, _tf_native._fast_execute = _tf_native._fast_execute, None
        try:
            return fn(*args)
        finally:
            _tf_native._fast_execute = saved

    @tf.function
    def stock_fn(x, s, o):
        return tf.compat.v1.nn.fused_batch_norm(x, s, o, epsilon=1e-3)

    fns = {
        ("train", "bare"): lambda: ckbn.nn.fused_batch_norm(x, s, o, epsilon=1e-3),
        ("train", "eager"): lambda: ops.ckbn_batch_norm_train(xt, st, ot, **kw),
        ("train", "function"): lambda: op_train_fn(xt, st, ot),
        ("train", "fast"): lambda: fast("CkbnBatchNormTrain", xt, st, ot),
        ("train", "wrapper"): lambda: _tf_native.train(xt, st, ot, [3], 1e-3),
        ("train", "general wrapper"): lambda: general(_tf_native.train, xt, st, ot, [3], 1e-3),
        ("train", "FusedBatchNormV3"): lambda: stock_fn(xt, st, ot),
        ("infer", "bare"): lambda: ckbn.nn.fused_batch_norm(
            x, s, o, mean=m, variance=v, epsilon=1e-3, is_training=False),
        ("infer", "eager"): lambda: ops.ckbn_batch_norm_apply(xt, st, ot, mt, vt, **kw),
        ("infer", "function"): lambda: op_infer_fn(xt, st, ot, mt, vt),
        ("infer", "fast"): lambda: fast("CkbnBatchNormApply", xt, st, ot, mt, vt),
        ("infer", "wrapper"): lambda: _tf_native.given(xt, st, ot, mt, vt, [3], 1e-3),
        ("infer", "general wrapper"): lambda: general(_tf_native.given, xt, st, ot, mt, vt,
                                                      [3], 1e-3),
        ("train", "floor eager"): lambda: tf.raw_ops.AddV2(x=st, y=ot),
        ("train", "floor function"): lambda: identity_fn(xt, st, ot),
        ("infer", "floor eager"): lambda: tf.raw_ops.AddV2(x=st, y=ot),
        ("infer", "floor function"): lambda: identity_fn(xt, st, ot, mt, vt),
        # what TensorFlow's allocator adds to an op with an output of x's size
        ("alloc", "tf"): lambda: tf.raw_ops.ZerosLike(x=xt),
        ("alloc", "numpy"): lambda: np.full_like(x, 0.0),
    }
    inner = max(3, int(2e6 / x.size))
    return medians(round_robin(fns, rounds, warmup=3, inner=inner))


def call_table(rounds):
    print("\n## Per call: the native op vs a bare ckbn.nn call, float32 NHWC "
          f"(medians of {rounds} round-robin rounds, us)")
    print("floor: TensorFlow's own per-call cost on that path: eager, its cheapest op (AddV2 "
          "of the two (C,) vectors); tf.function, IdentityN of the op's inputs as the only op "
          "of the function; target: op - bare <= floor + 10 us.")
    print("| shape | mode | path | bare ckbn.nn | op | op - bare | floor | op - bare - floor "
          "| target met |")
    print("|---|---|---|---|---|---|---|---|---|")
    extra, alloc = {}, []
    for shape in SHAPES:
        res = {k: t * 1e6 for k, t in per_call(shape, rounds).items()}
        name = "x".join(map(str, shape))
        for mode in ("train", "infer"):
            bare = res[(mode, "bare")]
            for path, label in (("eager", "eager op"), ("fast", "eager op, C fast path"),
                                ("function", "tf.function op")):
                op = res[(mode, path)]
                floor = res[(mode, "floor " + ("function" if path == "function" else "eager"))]
                left = op - bare - floor
                print(f"| {name} | {mode} | {label} | {bare:.1f} | {op:.1f} | {op - bare:+.1f} "
                      f"| {floor:.1f} | {left:+.1f} | {'yes' if left <= TARGET_US else 'no'} |")
            extra[(name, mode)] = res
        for mode in ("train", "infer"):
            r = extra[(name, mode)]
            for key, label in (("wrapper", "eager _tf_native wrapper"),
                               ("general wrapper", "eager _tf_native, general path")):
                w, b, f = r[(mode, key)], r[(mode, "bare")], r[(mode, "floor eager")]
                print(f"| {name} | {mode} | {label} | {b:.1f} | {w:.1f} | {w - b:+.1f} | {f:.1f} "
                      f"| {w - b - f:+.1f} | {'yes' if w - b - f <= TARGET_US else 'no'} |")
        print(f"| {name} | train | FusedBatchNormV3, tf.function | - "
              f"| {res[('train', 'FusedBatchNormV3')]:.1f} | - | - | - | - |")
        alloc.append((name, res[("alloc", "numpy")], res[("alloc", "tf")]))
    print("\nTensorFlow's cost of an output of x's size (the ops allocate y; a bare call "
          "allocates it with NumPy): an eager ZerosLike(x) vs NumPy's full_like(x, 0), "
          "each one allocation and one write pass.")
    print("| shape | NumPy full_like | TF ZerosLike, eager | difference |")
    print("|---|---|---|---|")
    for name, np_t, tf_t in alloc:
        print(f"| {name} | {np_t:.1f} | {tf_t:.1f} | {tf_t - np_t:+.1f} |")


def pieces(shape, rounds):
    """Part 3 for one shape: {(mode, path): {column: median us}} from a timing build."""
    rng = np.random.default_rng(0)
    c = shape[-1]
    x = rng.standard_normal(shape).astype(np.float32)
    s = rng.uniform(0.5, 2.0, c).astype(np.float32)
    o = rng.standard_normal(c).astype(np.float32)
    m, v = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    xt, st, ot, mt, vt = (tf.constant(a) for a in (x, s, o, m, v))
    ops = _tf_native.load()
    n = ckbn.get_num_threads()
    ctx = _context.context()

    def fast(name, *inputs):
        return _pywrap_tfe.TFE_Py_FastPathExecute(ctx, name, None, *inputs, "channel_axes", [3],
                                                  "n_threads", n)

    kw = dict(channel_axes=[3], n_threads=n)
    train_fn = tf.function(lambda x, s, o: ops.ckbn_batch_norm_train(x, s, o, **kw))
    infer_fn = tf.function(lambda x, s, o, m, v: ops.ckbn_batch_norm_apply(x, s, o, m, v, **kw))
    train_in, infer_in = (xt, st, ot), (xt, st, ot, mt, vt)
    variants = {  # (mode, path): (callable, op whose phases it records or None)
        ("train", "bare"): (lambda: ckbn.nn.fused_batch_norm(x, s, o, epsilon=1e-3), None),
        ("train", "eager"): (lambda: fast("CkbnBatchNormTrain", *train_in), "train"),
        ("train", "function"): (lambda: train_fn(*train_in), "train"),
        ("train", "null"): (lambda: fast("CkbnNullTrain", *train_in), None),
        ("infer", "bare"): (lambda: ckbn.nn.fused_batch_norm(
            x, s, o, mean=m, variance=v, epsilon=1e-3, is_training=False), None),
        ("infer", "eager"): (lambda: fast("CkbnBatchNormApply", *infer_in), "given"),
        ("infer", "function"): (lambda: infer_fn(*infer_in), "given"),
        ("infer", "null"): (lambda: fast("CkbnNullApply", *infer_in), None),
        ("any", "floor"): (lambda: tf.raw_ops.AddV2(x=st, y=ot), None),
    }
    inner = max(3, int(2e6 / x.size))
    for fn, _ in variants.values():
        for _ in range(3):
            fn()
    samples = {k: {} for k in variants}
    for _ in range(rounds):
        for key, (fn, which) in variants.items():
            if which:
                _tf_native.phase_ns(which)
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            dt = (time.perf_counter() - t0) / inner
            samples[key].setdefault("call", []).append(dt * 1e6)
            if which:
                runs, ns = _tf_native.phase_ns(which)
                for phase, total in ns.items():
                    samples[key].setdefault(phase, []).append(total / runs / 1e3)
                samples[key].setdefault("Compute", []).append(sum(ns.values()) / runs / 1e3)
    return {k: {col: statistics.median(v) for col, v in cols.items()}
            for k, cols in samples.items()}


def pieces_table(rounds):
    print("\n## Where the op's per-call time goes (timing build, float32 NHWC, "
          f"medians of {rounds} round-robin rounds, us)")
    print("Phases of the kernel's Compute from timers inside it; outside = call - Compute "
          "(TensorFlow's dispatch, outputs to Python); null op: an op with the same inputs, "
          "attributes and outputs that only allocates them (TensorFlow's own cost of this "
          "signature); floor: eager AddV2 of two (C,) vectors.  Eager calls go through "
          "TensorFlow's C fast path (as _tf_native does).")
    cols = _tf_native.PHASES
    print("| shape | mode | path | call | " + " | ".join(cols)
          + " | Compute | outside | null op | floor | bare ckbn.nn |")
    print("|---|---|---|" + "---|" * (len(cols) + 6))
    for shape in SHAPES:
        res = pieces(shape, rounds)
        name = "x".join(map(str, shape))
        floor = res[("any", "floor")]["call"]
        for mode in ("train", "infer"):
            null = res[(mode, "null")]["call"]
            bare = res[(mode, "bare")]["call"]
            for path in ("eager", "function"):
                r = res[(mode, path)]
                phases = " | ".join(f"{r[c]:.1f}" for c in cols)
                print(f"| {name} | {mode} | {'eager' if path == 'eager' else 'tf.function'} "
                      f"| {r['call']:.1f} | {phases} | {r['Compute']:.1f} "
                      f"| {r['call'] - r['Compute']:.1f} | {null:.1f} | {floor:.1f} | {bare:.1f} |")


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
    return medians(round_robin(fns, rounds, warmup=3, inner=5))


# ----------------------------------------------- part 4: BN + ReLU6, swapped vs fused
FUSED_SHAPES = [(16, 32, 32, 32), (16, 32, 32, 96), (16, 16, 16, 144), (16, 8, 8, 192),
                (16, 4, 4, 576), (16, 2, 2, 1280)]  # MobileNetV2@64's BN layers, batch 16
# swapped: ckbn's op, then TensorFlow's Relu6; fused: the activation inside ckbn's
# forward and backward (the default route); fused, mask grad: the gradient as
# Relu6Grad on the op's output + ckbn's plain backward (the route session 7 tried,
# _tf_native.GRAD_MASK_FROM_OUTPUT filled).
FUSED_KINDS = ("swapped", "fused", "fused, mask grad")
MASK_ROUTE = {"relu": "ReluGrad", "relu6": "Relu6Grad"}


class _mask_grad:
    """Within this block, fused relu/relu6 gradients built (traced) mask dy with
    TensorFlow's ReluGrad/Relu6Grad and run ckbn's plain backward
    (``_tf_native.GRAD_MASK_FROM_OUTPUT`` filled)."""

    def __enter__(self):
        self.saved = dict(_tf_native.GRAD_MASK_FROM_OUTPUT)
        _tf_native.GRAD_MASK_FROM_OUTPUT.clear()
        _tf_native.GRAD_MASK_FROM_OUTPUT.update(MASK_ROUTE)

    def __exit__(self, *exc):
        _tf_native.GRAD_MASK_FROM_OUTPUT.clear()
        _tf_native.GRAD_MASK_FROM_OUTPUT.update(self.saved)


def _relu6_model(shape, fused):
    """One BN + ReLU6 layer pair, swapped to ckbn's layer (fused or not), compiled."""
    inp = keras.Input(shape[1:])
    h = keras.layers.ReLU(max_value=6.0)(keras.layers.BatchNormalization(name="bn")(inp))
    model = keras_plugin.swap_batch_normalization(keras.Model(inp, h),
                                                  fuse_activations=fused)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    return model


def fused_vs_swapped(shape, rounds):
    """Median seconds of each variant of part 4 for one shape:
    ``{(level, kind): seconds}``, and the op's thread count."""
    rng = np.random.default_rng(2)
    c = shape[-1]
    x = rng.standard_normal(shape).astype(np.float32)
    target = rng.standard_normal(shape).astype(np.float32)
    s = rng.uniform(0.5, 2.0, c).astype(np.float32)
    o = rng.uniform(-1.0, 3.0, c).astype(np.float32)  # part of z clipped at 0, part at 6
    dy = rng.standard_normal(shape).astype(np.float32)
    xt, st, ot, dyt = (tf.constant(a) for a in (x, s, o, dy))
    axes, eps = [3], 1e-3

    def fwd_swapped(x, s, o):
        return tf.nn.relu6(_tf_native.train(x, s, o, axes, eps)[0])

    def fwd_fused(x, s, o):
        return _tf_native.train(x, s, o, axes, eps, "relu6")[0]

    def with_grad(fwd):
        @tf.function
        def fn(x, s, o, dy):
            with tf.GradientTape() as tape:
                tape.watch([x, s, o])
                y = fwd(x, s, o)
            return tape.gradient(y, [x, s, o], output_gradients=dy)
        return fn

    y0, m0, v0 = _tf_native.train(xt, st, ot, axes, eps)
    r0 = tf.nn.relu6(y0)  # what TensorFlow's ReLU6 gradient reads (the op's output)

    @tf.function
    def bwd_swapped(dy, x, s, o, y, m, v):
        d = tf.raw_ops.Relu6Grad(gradients=dy, features=y)
        return _tf_native.grad(d, x, s, o, m, v, axes, eps, True)

    @tf.function
    def bwd_kernel(dy, x, s, o, m, v):
        return _tf_native.grad(dy, x, s, o, m, v, axes, eps, True, "relu6")

    fns = {}
    for kind in FUSED_KINDS:
        fused = kind != "swapped"
        model = _relu6_model(shape, fused)
        fb = with_grad(fwd_fused if fused else fwd_swapped)
        if kind == "fused, mask grad":
            with _mask_grad():  # traced now with Relu6Grad + ckbn's plain backward
                model.train_on_batch(x, target)
                fb(xt, st, ot, dyt)
        fns[("step", kind)] = (lambda m: lambda: m.train_on_batch(x, target))(model)
        fns[("op forward+grad", kind)] = (lambda f: lambda: f(xt, st, ot, dyt))(fb)
    fwd = {k: tf.function(f) for k, f in (("swapped", fwd_swapped), ("fused", fwd_fused))}
    fns[("op forward", "swapped")] = lambda: fwd["swapped"](xt, st, ot)
    fns[("op forward", "fused")] = lambda: fwd["fused"](xt, st, ot)
    fns[("op grad", "swapped")] = lambda: bwd_swapped(dyt, xt, st, ot, r0, m0, v0)
    fns[("op grad", "fused, kernel grad")] = lambda: bwd_kernel(dyt, xt, st, ot, m0, v0)
    inner = max(2, int(1e6 / x.size))
    res = medians(round_robin(fns, rounds, warmup=3, inner=inner))

    # The kernels alone through ckbn.nn (no TensorFlow), on the op's thread count.
    threads = ckbn.get_num_threads()
    op_n = _policy.op_threads("tensorflow", x.size)
    ckbn.set_num_threads(op_n)
    try:
        _, m, v = ckbn.nn.fused_batch_norm(x, s, o, epsilon=eps)
        kfns = {}
        for k, act in (("swapped", None), ("fused, kernel grad", "relu6")):
            kfns[("kernel forward", k)] = (lambda a: lambda: ckbn.nn.fused_batch_norm(
                x, s, o, epsilon=eps, activation=a))(act)
            kfns[("kernel backward", k)] = (lambda a: lambda: ckbn.nn.fused_batch_norm_grad(
                dy, x, s, m, v, epsilon=eps, offset=o, activation=a))(act)
        res.update(medians(round_robin(kfns, rounds, warmup=3, inner=inner)))
    finally:
        ckbn.set_num_threads(threads)
    return res, op_n


def fused_table(rounds):
    print("\n## BN + ReLU6 at MobileNetV2@64's BN sizes, float32 NHWC, medians of "
          f"{rounds} round-robin rounds, us")
    print("swapped: ckbn's op, then TensorFlow's Relu6; fused: the activation in ckbn's "
          "forward, the gradient Relu6Grad(dy, y) + ckbn's plain backward; fused, kernel "
          "grad: the activation in ckbn's backward too (before session 7).  step: "
          "train_on_batch of a one-layer BN + ReLU6 model; op: the native ops in a "
          "tf.function.")
    print("| shape | op threads | step swapped | fused | fused, mask grad "
          "| op fwd+grad swapped | fused | fused, mask grad |")
    print("|---|---|---|---|---|---|---|---|")
    more = []
    for shape in FUSED_SHAPES:
        res, op_n = fused_vs_swapped(shape, rounds)
        name = "x".join(map(str, shape))
        cells = [f"{res[(lv, k)] * 1e6:.0f}" for lv in ("step", "op forward+grad")
                 for k in FUSED_KINDS]
        print(f"| {name} | {op_n} | " + " | ".join(cells) + " |", flush=True)
        more.append((name, op_n, res))
    print("\nThe pieces: forward (CkbnBatchNormTrain + Relu6 vs CkbnBatchNormTrain with "
          "relu6), gradient (Relu6Grad + CkbnBatchNormGrad vs CkbnBatchNormGrad with relu6), "
          "and the kernels alone through ckbn.nn.fused_batch_norm / _grad with activation "
          "None vs 'relu6' on the op's thread count (None leaves out the ReLU6 pass).")
    print("| shape | op threads | op forward +Relu6 | fused | op grad Relu6Grad+ | in kernel "
          "| kernel forward None | relu6 | kernel backward None | relu6 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, op_n, res in more:
        pairs = [("op forward", "swapped"), ("op forward", "fused"),
                 ("op grad", "swapped"), ("op grad", "fused, kernel grad"),
                 ("kernel forward", "swapped"), ("kernel forward", "fused, kernel grad"),
                 ("kernel backward", "swapped"), ("kernel backward", "fused, kernel grad")]
        print(f"| {name} | {op_n} | " + " | ".join(f"{res[p] * 1e6:.0f}" for p in pairs)
              + " |")


MODEL_KINDS = ("stock", "swapped") + FUSED_KINDS[1:]


def models_table(rounds, names):
    """Part 5: whole models' training steps, stock / swapped / fused / fused with the
    activation in ckbn's backward, round robin in this process."""
    from bench_keras import _cnn, _seeded

    builds = {"MobileNetV2@64": (lambda: keras.applications.MobileNetV2(
                  input_shape=(64, 64, 3), weights=None, classes=10), (64, 64, 3)),
              "cnn@28": (lambda: _cnn(28), (28, 28, 32))}
    print(f"\n## Training steps (train_on_batch, SGD, batch 16), medians of {rounds} "
          "round-robin rounds, ms; stock / variant in parentheses")
    print("| model | " + " | ".join(MODEL_KINDS) + " |")
    print("|---|" + "---|" * len(MODEL_KINDS))
    for name in names:
        build, shape = builds[name]
        stock = _seeded(build)
        rng = np.random.default_rng(1)
        x = rng.normal(size=(16,) + shape).astype("float32")
        y = rng.normal(size=(16, 10)).astype("float32")
        fns = {}
        for kind in MODEL_KINDS:
            if kind == "stock":
                model = stock
            else:
                model = keras_plugin.swap_batch_normalization(
                    stock, fuse_activations=kind != "swapped")
            model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
            if kind == "fused, mask grad":
                with _mask_grad():  # traced now
                    model.train_on_batch(x, y)
            fns[kind] = (lambda m: lambda: m.train_on_batch(x, y))(model)
        res = medians(round_robin(fns, rounds, warmup=2))
        base = res["stock"]
        print(f"| {name} | " + " | ".join(
            f"{res[k] * 1e3:.1f} ({base / res[k]:.2f}x)" for k in MODEL_KINDS) + " |",
            flush=True)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--threads", type=int, default=1,
                   help="OpenMP threads of ckbn, bare and through the op alike (default 1)")
    p.add_argument("--part", choices=("calls", "pieces", "steps", "fused", "models", "all"),
                   default="all",
                   help="pieces: the op's per-call time by phase, from a library built with "
                        "its timers (CKBN_TF_OP_TIMERS=1, built on first use; not in 'all'); "
                        "fused: BN + ReLU6 swapped vs fused; models: MobileNetV2@64 and the "
                        "CNN, stock / swapped / fused (neither in 'all')")
    p.add_argument("--models", nargs="+", default=["MobileNetV2@64", "cnn@28"],
                   choices=("MobileNetV2@64", "cnn@28"), help="--part models: which")
    args = p.parse_args()
    if _tf_native.load() is None:
        raise SystemExit("the TensorFlow op library is not available here")
    ckbn.set_num_threads(args.threads)
    print(cpu_line())
    print(f"ckbn threads {ckbn.get_num_threads()}, kernels {kernel_name()}; TensorFlow "
          f"{tf.__version__}, Keras {keras.__version__}")
    if args.part in ("calls", "all"):
        call_table(args.rounds)
    if args.part == "pieces":
        if _tf_native.phase_ns("train") is None:
            raise SystemExit("the loaded op library has no timers")
        pieces_table(args.rounds)
    if args.part == "fused":
        fused_table(args.rounds)
    if args.part == "models":
        models_table(args.rounds, args.models)
    if args.part in ("steps", "all"):
        for shape, relu6 in [((16, 32, 32, 32), False), ((16, 32, 32, 32), True),
                             ((16, 8, 8, 192), True), ((16, 2, 2, 1280), True)]:
            res = train_steps(shape, relu6, args.rounds)
            stock = res["stock"]
            print(f"\ntrain_on_batch, BN{'+ReLU6' if relu6 else ''} {'x'.join(map(str, shape))} "
                  f"(medians of {args.rounds} round-robin rounds):")
            for k, v in res.items():
                print(f"  {k:40s} {v * 1e3:8.2f} ms   stock/this {stock / v:5.2f}x")


if __name__ == "__main__":
    main()
