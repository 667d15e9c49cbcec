"""Layer-level benchmarks: the Python overhead of a BatchNormalization call, and
ghost batches / renorm against tf-keras's implementation of the same layer.

    python benchmarks/bench_layer.py [--threads 1] [--shape 32x56x56x64]

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


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shape", default="32x56x56x64")
    args = ap.parse_args(argv)
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
