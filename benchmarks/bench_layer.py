"""Layer-level benchmarks: the Python overhead of a BatchNormalization call, and
ghost batches / renorm against tf-keras's implementation of the same layer.

    python benchmarks/bench_layer.py [--threads 1] [--shape 32x56x56x64]
    python benchmarks/bench_layer.py --small [--rounds 15]
    python benchmarks/bench_layer.py --mid [--threads 1] [--rounds 15]

* small (``--small``, alone): the small calls of issue 18 against PyTorch, 1
  thread each, round robin in one process: ``ckbn.nn`` training, inference and
  backward on 16x8x8x32 float32 (NHWC and NCHW) against
  ``torch.nn.functional.batch_norm`` and
  ``torch.ops.aten.native_batch_norm_backward`` (NHWC as a channels_last
  tensor), and ``BatchNormalization.__call__`` in eager training mode against
  ``F.batch_norm(x, rm, rv, w, b, training=True)``;

* mid (``--mid``, alone): ``ckbn.nn``'s compiled entry for the common case
  (``data_format="NHWC"``) against its general path (the same call with
  ``axis=[3]``) and the bare kernel (``bn_forward_infer``,
  ``bn_forward_train``, ``bn_backward`` on ready float64 per-channel arrays
  and outputs), round robin in one process, ``--threads`` threads, on
  16x4x4x576, 16x8x8x192, 16x16x16x96, 16x8x8x512 and 16x32x32x32 float32:
  inference into ``out=``, training forward, backward, and training forward
  and backward with relu6 and swish;

* overhead: one training call on 16x8x8x32 (NHWC float32), bookkeeping
  included, in graph mode and in eager mode; and one inference call;
* ghost / renorm: forward + backward of ``virtual_batch_size=8`` and of
  ``renorm=True`` (with clipping) against tf-keras's BatchNormalization with the
  same arguments, forward + gradients in a ``tf.function``.
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np

import ckbn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import cpu_model, medians, round_robin  # noqa: E402


def _best(fn, reps=30, inner=1):
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t) / inner)
    return best


def overhead():
    x = np.random.default_rng(0).random((16, 8, 8, 32), dtype=np.float32)
    res = {}
    bn = ckbn.BatchNormalization()
    bn(x, training=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with ckbn.graph_mode():
            res["train_graph"] = _best(lambda: bn(x, training=True), 20, 500)
        with ckbn.eager_mode():
            res["train_eager"] = _best(lambda: bn(x, training=True), 20, 500)
        res["infer"] = _best(lambda: bn(x, training=False), 20, 500)
    res["nn_train"] = _best(lambda: ckbn.nn.fused_batch_norm(x, None, None), 20, 500)
    return res


def tf_keras_step(shape, kwargs, n_threads):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
        import tf_keras
    except ImportError:
        return None
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n_threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    layer = tf_keras.layers.BatchNormalization(**kwargs)
    x = tf.constant(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    dy = tf.ones_like(x)
    layer(x, training=True)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
        return tape.gradient(y, [x] + layer.trainable_variables, output_gradients=dy)

    return _best(lambda: [t.numpy() for t in step()], 10)


def ckbn_step(shape, kwargs, n_threads):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    dy = np.ones_like(x)
    bn = ckbn.BatchNormalization(**kwargs)
    with ckbn.eager_mode(), ckbn.num_threads(n_threads):
        bn(x, training=True)

        def step():
            bn(x, training=True)
            return bn.backward(dy)

        return _best(step, 10)


def _small_cases():
    """(name, ckbn call, torch call) pairs of the small-call comparison."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    n, h, w, c = 16, 8, 8, 32
    eps = 1e-3
    g = rng.random(c, dtype=np.float32) + 0.5
    b = rng.standard_normal(c).astype(np.float32)
    mm = rng.standard_normal(c).astype(np.float32)
    mv = rng.random(c, dtype=np.float32) + 0.5
    tw, tb = torch.from_numpy(g), torch.from_numpy(b)
    cases = []
    for fmt in ("NHWC", "NCHW"):
        shape = (n, h, w, c) if fmt == "NHWC" else (n, c, h, w)
        x = rng.standard_normal(shape).astype(np.float32)
        dy = rng.standard_normal(shape).astype(np.float32)
        _, bm, bv = ckbn.nn.fused_batch_norm(x, g, b, epsilon=eps, data_format=fmt)
        if fmt == "NHWC":       # the same memory as a channels_last tensor
            tx = torch.from_numpy(x).permute(0, 3, 1, 2)
            tdy = torch.from_numpy(dy).permute(0, 3, 1, 2)
        else:
            tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
        trm, trv = torch.from_numpy(mm.copy()), torch.from_numpy(mv.copy())
        tsm = torch.from_numpy(bm)
        tsi = torch.from_numpy((1.0 / np.sqrt(bv.astype(np.float64) + eps)).astype(np.float32))

        def nn_train(x=x, fmt=fmt):
            return ckbn.nn.fused_batch_norm(x, g, b, epsilon=eps, data_format=fmt)

        def nn_infer(x=x, fmt=fmt):
            return ckbn.nn.fused_batch_norm(x, g, b, mm, mv, eps, fmt, is_training=False)

        def nn_bwd(x=x, dy=dy, bm=bm, bv=bv, fmt=fmt):
            return ckbn.nn.fused_batch_norm_grad(dy, x, g, bm, bv, eps, fmt)

        def t_train(tx=tx, trm=trm, trv=trv):
            return F.batch_norm(tx, trm, trv, tw, tb, training=True, eps=eps)

        def t_infer(tx=tx, trm=trm, trv=trv):
            return F.batch_norm(tx, trm, trv, tw, tb, training=False, eps=eps)

        def t_bwd(tx=tx, tdy=tdy, tsm=tsm, tsi=tsi):
            return torch.ops.aten.native_batch_norm_backward(
                tdy, tx, tw, None, None, tsm, tsi, True, eps, [True, True, True])

        cases += [(f"{fmt} nn train", nn_train, t_train),
                  (f"{fmt} nn infer", nn_infer, t_infer),
                  (f"{fmt} nn bwd", nn_bwd, t_bwd)]
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    tx = torch.from_numpy(x).permute(0, 3, 1, 2)
    trm, trv = torch.zeros(c), torch.ones(c)
    bn = ckbn.BatchNormalization(epsilon=eps)
    bn(x, training=True)

    def layer_train():
        with ckbn.eager_mode():
            return bn(x, training=True)

    def t_layer():
        return F.batch_norm(tx, trm, trv, tw, tb, training=True, eps=eps)

    cases.append(("NHWC layer eager train", layer_train, t_layer))
    return cases


def _variant():
    from ckbn._dispatch import kernels
    return kernels().__name__.rsplit("_", 1)[-1]


def small(rounds=15, inner=100):
    """Round robin: every round times ``inner`` calls of each ckbn and torch
    function in turn; per call, the best round and the median round."""
    import torch
    torch.set_num_threads(1)
    ckbn.set_num_threads(1)
    cases = _small_cases()
    times = {name: ([], []) for name, _, _ in cases}
    for _ in range(rounds):
        for name, fc, ft in cases:
            for fn, dst in ((fc, times[name][0]), (ft, times[name][1])):
                fn()
                t = time.perf_counter()
                for _ in range(inner):
                    fn()
                dst.append((time.perf_counter() - t) / inner)
    rows = []
    for name, _, _ in cases:
        c, t = times[name]
        rows.append((name, min(c), min(t), float(np.median(c)), float(np.median(t)),
                     float(np.median(np.array(c) / np.array(t)))))
    return rows


MID_SHAPES = [(16, 4, 4, 576), (16, 8, 8, 192), (16, 16, 16, 96), (16, 8, 8, 512),
              (16, 32, 32, 32)]


def _mid_cases(shape, n_threads):
    """{row: {"entry" | "general" | "kernel": call}} for one NHWC shape."""
    from ckbn import _ops
    from ckbn._dispatch import kernels

    k = kernels()
    rng = np.random.default_rng(0)
    c = shape[-1]
    eps = 1e-3
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    g = (rng.random(c, dtype=np.float32) + 0.5)
    b = rng.standard_normal(c).astype(np.float32)
    mm = (0.1 * rng.standard_normal(c)).astype(np.float32)
    mv = (rng.random(c, dtype=np.float32) + 0.5)
    _, bm, bv = ckbn.nn.fused_batch_norm(x, g, b, epsilon=eps)
    out = np.empty_like(x)
    # the bare kernel's arguments: flat data, float64 per-channel arrays, outputs
    dims = (x.size // c, 1, 1, c)
    xf, dyf, yf = x.reshape(-1), dy.reshape(-1), np.empty(x.size, np.float32)
    g64, b64, m64, v64 = (a.astype(np.float64) for a in (g, b, mm, mv))
    bm64, bv64 = bm.astype(np.float64), bv.astype(np.float64)
    s1, s2 = np.empty(c), np.empty(c)
    fwd, bwd = ckbn.nn.fused_batch_norm, ckbn.nn.fused_batch_norm_grad

    def rows_for(act):
        ka = {} if act is None else _ops._act_args(ckbn.nn._activation(act, 0.2))
        kb = dict(ka, offset=b64) if ka else {}
        a = {"activation": act}
        tag = "" if act is None else f" {act}"
        train = {
            "entry": lambda: fwd(x, g, b, epsilon=eps, data_format="NHWC", **a),
            "general": lambda: fwd(x, g, b, epsilon=eps, axis=[3], **a),
            "kernel": lambda: k.bn_forward_train(xf, *dims, g64, b64, eps, yf, s1, s2,
                                                 n_threads, **ka),
        }
        back = {
            "entry": lambda: bwd(dy, x, g, bm, bv, eps, "NHWC", offset=b, **a),
            "general": lambda: bwd(dy, x, g, bm, bv, eps, axis=[3], offset=b, **a),
            "kernel": lambda: k.bn_backward(dyf, xf, *dims, g64, bm64, bv64, eps, True, yf,
                                            s1, s2, n_threads, **kb),
        }
        return {f"train fwd{tag}": train, f"backward{tag}": back}

    cases = {"inference out=": {
        "entry": lambda: fwd(x, g, b, mm, mv, eps, "NHWC", False, out=out),
        "general": lambda: fwd(x, g, b, mm, mv, eps, is_training=False, axis=[3], out=out),
        "kernel": lambda: k.bn_forward_infer(xf, *dims, g64, b64, m64, v64, eps, yf,
                                             n_threads),
    }}
    for act in (None, "relu6", "swish"):
        cases.update(rows_for(act))
    return cases


def mid(n_threads=1, rounds=15):
    """Round robin per shape: per call, the median over ``rounds`` rounds
    (half of them in reverse order) of the entry, the general path and the
    bare kernel (seconds)."""
    ckbn.set_num_threads(n_threads)
    rows = []
    for shape in MID_SHAPES:
        cases = _mid_cases(shape, n_threads)
        fns = {(row, v): fn for row, d in cases.items() for v, fn in d.items()}
        # samples of 0.3-4 ms (calls of 30-500 µs)
        inner = max(8, 4_000_000 // int(np.prod(shape)))
        # half the rounds in each order: a call that runs first in a round
        # finds its output out of cache
        times = round_robin(fns, (rounds + 1) // 2, warmup=3, inner=inner)
        back = round_robin(dict(reversed(fns.items())), rounds // 2, warmup=0, inner=inner)
        med = medians({key: times[key] + back[key] for key in fns})
        for row in cases:
            rows.append(("x".join(map(str, shape)), row, med[row, "entry"],
                         med[row, "general"], med[row, "kernel"]))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shape", default="32x56x56x64")
    ap.add_argument("--small", action="store_true",
                    help="only the small-call comparison with PyTorch (1 thread)")
    ap.add_argument("--mid", action="store_true",
                    help="only the compiled entry against the general path and the bare "
                         "kernel, NHWC at 147k-524k elements (--threads threads)")
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args(argv)
    if args.mid:
        print(f"compiled entry vs general path vs bare kernel, NHWC float32, "
              f"{args.threads} thread(s), {args.rounds} rounds round robin, medians, "
              f"CPU: {cpu_model()}, kernels: {_variant()}")
        print(f"{'shape':14s} {'call':18s} {'entry':>8s} {'general':>8s} {'kernel':>8s} "
              f"{'entry/gen':>9s} {'entry/kern':>10s}")
        for shape, row, e, g, kt in mid(args.threads, args.rounds):
            print(f"{shape:14s} {row:18s} {e * 1e6:6.1f}µs {g * 1e6:6.1f}µs "
                  f"{kt * 1e6:6.1f}µs {e / g:9.2f} {e / kt:10.2f}")
        return 0
    if args.small:
        print(f"small calls, 16x8x8x32 float32, 1 thread, {args.rounds} rounds round robin, "
              f"CPU: {cpu_model()}, kernels: {_variant()}")
        print("ratios: best÷best, and the median over rounds of the round's ckbn÷torch")
        print(f"{'call':24s} {'ckbn best':>10s} {'torch best':>11s} {'ckbn med':>9s} "
              f"{'torch med':>10s} {'best ratio':>11s} {'med ratio':>10s}")
        for name, cb, tb, cm, tm, r in small(args.rounds):
            print(f"{name:24s} {cb * 1e6:8.1f}µs {tb * 1e6:9.1f}µs {cm * 1e6:7.1f}µs "
                  f"{tm * 1e6:8.1f}µs {cb / tb:11.2f} {r:10.2f}")
        return 0
    shape = tuple(int(s) for s in args.shape.split("x"))
    o = overhead()
    print("BatchNormalization call on 16x8x8x32 float32 (µs): "
          + ", ".join(f"{k} {v * 1e6:.1f}" for k, v in o.items()))
    configs = {
        "ghost (virtual_batch_size=8)": {"virtual_batch_size": 8},
        "renorm (clipping rmax=3, rmin=1/3, dmax=5)": {
            "renorm": True, "renorm_clipping": {"rmax": 3.0, "rmin": 1 / 3, "dmax": 5.0}},
        "plain": {},
    }
    print(f"forward + backward, {args.shape} NHWC float32, {args.threads} thread(s):")
    for name, kw in configs.items():
        c = ckbn_step(shape, kw, args.threads)
        t = tf_keras_step(shape, kw, args.threads)
        line = f"  {name:45s} ckbn {c * 1e3:8.2f} ms"
        if t is not None:
            line += f" | tf-keras {t * 1e3:8.2f} ms | tf-keras/ckbn {t / c:6.1f}x"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
