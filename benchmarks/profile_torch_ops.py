"""Per-call cost of keras_plugin on PyTorch against a bare ``ckbn.nn`` call.

    KERAS_BACKEND=torch python benchmarks/profile_torch_ops.py [--before DIR] [--step]
    KERAS_BACKEND=torch python benchmarks/profile_torch_ops.py --cprofile

``CKBN_PROFILE_SHAPE=16x2x2x32`` sets the shape (default 16x8x8x32, NHWC) and
``CKBN_PROFILE_CASE`` the case ``--cprofile`` profiles (default ``layer fwd+bwd``).
The kernels are forced at every size (``keras_plugin._policy``).

Each measurement runs in a fresh worker process; with ``--before DIR`` (a
checkout of an earlier version, compiled modules included) the workers of the
two trees alternate, round robin, so before/after are timed side by side in
one run.  A worker times, on a 16x8x8x32 float32 NHWC tensor (medians of
``--repeat`` blocks of ``--calls`` calls):

* ``ckbn.nn fwd+bwd``: ``fused_batch_norm`` + ``fused_batch_norm_grad`` on
  NumPy arrays -- the floor (the kernels plus ckbn's own argument checks);
* ``op fwd+bwd``: ``keras_plugin._torch.train`` on tensors that require
  grad, then ``.backward()`` (the op table and autograd);
* ``layer fwd+bwd``: a built ``keras_plugin.BatchNormalization`` called with
  ``training=True`` (moving averages updated), then ``.backward()`` (the op
  plus the layer's Keras glue); ``stock fwd+bwd`` the same with Keras's own
  ``keras.layers.BatchNormalization``;
* ``layer infer``/``stock infer``: an inference call under ``torch.no_grad()``;
* ``op fwd+bwd, Python``/``layer fwd+bwd, Python``: the op and the layer with
  the compiled operators of ``keras_plugin._torch_native`` turned off
  (``_torch.use_native(False)``), on the Python autograd Functions;

and with ``--step`` one ``train_on_batch`` of a swapped MobileNetV2 (64x64,
batch 16, SGD).  ``--cprofile`` prints where the layer's Python time goes.

``--models MobileNetV2 cnn ...`` times whole models instead, stock against
swapped, in one process on the backend ``KERAS_BACKEND`` names (torch or
jax): inference as ``bench_keras.py --models`` times it (``model(x,
training=False)`` under ``torch.no_grad``; on JAX a jitted ``stateless_call``)
and, with ``--train``, ``train_on_batch`` (SGD); 64x64, batch 16, the CNN on
28x28x32, the variants' calls round robin, ``--repeat`` rounds of ``--calls``
calls each, medians::

    KERAS_BACKEND=jax python benchmarks/profile_torch_ops.py --models cnn MobileNetV2 \
        --repeat 15 --calls 3 [--train] [--aa]

``--aa`` adds the stock model a second time under its own name, so the
stock/stock ratio shows the noise of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SHAPE = tuple(int(s) for s in os.environ.get("CKBN_PROFILE_SHAPE", "16x8x8x32").split("x"))


def _median_us(fn, calls, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(times)


def _cases():
    import numpy as np
    import torch

    import keras

    import ckbn
    from keras_plugin import BatchNormalization, _torch

    try:
        from keras_plugin import _policy
        _policy.set_min_elements("torch", None, 0)   # the kernels at every size
    except ImportError:  # a checkout without the dispatch rule
        pass

    rng = np.random.default_rng(0)
    x = rng.normal(size=SHAPE).astype(np.float32)
    c = SHAPE[-1]
    s, o = np.ones(c, np.float32), np.zeros(c, np.float32)
    dy = rng.normal(size=SHAPE).astype(np.float32)
    dyt = torch.from_numpy(dy)

    def bare():
        _, m, v = ckbn.nn.fused_batch_norm(x, s, o, epsilon=1e-3, axis=[3])
        ckbn.nn.fused_batch_norm_grad(dy, x, s, m, v, epsilon=1e-3, axis=[3])

    xg, sg, og = (torch.tensor(a, requires_grad=True) for a in (x, s, o))

    def op():
        y = _torch.train(xg, sg, og, (3,), 1e-3)[0]
        y.backward(dyt)

    layer = BatchNormalization()
    layer.build(SHAPE)

    stock = keras.layers.BatchNormalization()
    stock.build(SHAPE)
    xt = torch.from_numpy(x)

    def train_call(bn):
        return lambda: bn(xg, training=True).backward(dyt)

    def infer_call(bn):
        def run():
            with torch.no_grad():
                bn(xt, training=False)
        return run

    cases = {"ckbn.nn fwd+bwd": bare, "op fwd+bwd": op, "layer fwd+bwd": train_call(layer),
             "stock fwd+bwd": train_call(stock), "layer infer": infer_call(layer),
             "stock infer": infer_call(stock)}
    use_native = getattr(_torch, "use_native", None)
    if use_native is not None:   # the same calls on the Python autograd Functions
        def python_path(fn):
            def run():
                previous = use_native(False)
                try:
                    fn()
                finally:
                    use_native(previous)
            return run
        cases["op fwd+bwd, Python"] = python_path(op)
        cases["layer fwd+bwd, Python"] = python_path(train_call(layer))
    return cases


def _step():
    import keras
    import numpy as np

    from keras_plugin import swap_batch_normalization

    keras.utils.set_random_seed(0)
    model = swap_batch_normalization(keras.applications.MobileNetV2(
        input_shape=(64, 64, 3), weights=None, classes=10))
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(1).normal(size=(16, 64, 64, 3)).astype(np.float32)
    y = np.random.default_rng(2).integers(0, 10, size=(16,))
    return lambda: model.train_on_batch(x, y)


def models(args):
    """Stock vs swapped whole models, side by side (see the module docstring)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import numpy as np
    import keras

    import keras_plugin
    from _timing import cpu_line, medians, round_robin
    from bench_keras import _inference_fn, _model_specs, _seeded

    print(cpu_line(), f"backend {keras.backend.backend()}")
    for label, build, shape in _model_specs(args.models, [64], quick=True):
        stock = _seeded(build)
        variants = {"stock": stock, "swapped": keras_plugin.swap_batch_normalization(stock)}
        if args.aa:   # the stock model once more: the noise of this run (A/A)
            variants["stock again"] = stock
        rng = np.random.default_rng(1)
        x = rng.normal(size=(16,) + shape).astype("float32")
        y = rng.normal(size=(16, 10)).astype("float32")
        fns, outs = {}, {}
        for name, model in variants.items():
            fn = _inference_fn(model)
            outs[name] = np.asarray(fn(x))

            def run(fn=fn):
                for _ in range(args.calls):
                    fn(x)
            fns["infer " + name] = run
        if args.train:
            for name, model in variants.items():
                model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")

                def step(model=model):
                    for _ in range(args.calls):
                        model.train_on_batch(x, y)
                fns["train " + name] = step
        med = medians(round_robin(fns, args.repeat, 2))
        err = float(np.abs(outs["swapped"] - outs["stock"]).max()
                    / max(np.abs(outs["stock"]).max(), 1e-30))
        for mode in ("infer", "train") if args.train else ("infer",):
            st, sw = med[f"{mode} stock"], med[f"{mode} swapped"]
            aa = med.get(f"{mode} stock again")
            print(f"{label:18s} {mode:5s} stock {1e3 * st / args.calls:9.2f} ms  swapped "
                  f"{1e3 * sw / args.calls:9.2f} ms  stock/swapped {st / sw:5.3f}x"
                  + ("" if aa is None else f"  stock/stock again {st / aa:5.3f}x")
                  + (f"  max rel. diff of outputs {err:.1e}" if mode == "infer" else ""),
                  flush=True)


def worker(args):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    out = {k: _median_us(f, args.calls, args.repeat) for k, f in _cases().items()}
    if args.step:
        step = _step()
        step()
        out["MobileNetV2 step"] = _median_us(step, 1, 3)
    print(json.dumps(out))


def _run_worker(tree, args):
    env = dict(os.environ, KERAS_BACKEND="torch", PYTHONPATH=tree, TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--calls", str(args.calls),
           "--repeat", str(args.repeat)] + (["--step"] if args.step else [])
    proc = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def profile():
    import cProfile
    import pstats

    os.environ.setdefault("KERAS_BACKEND", "torch")
    fn = _cases()[os.environ.get("CKBN_PROFILE_CASE", "layer fwd+bwd")]
    for _ in range(20):
        fn()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(300):
        fn()
    prof.disable()
    pstats.Stats(prof).sort_stats("cumtime").print_stats(30)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", help="root of an earlier checkout (built in place)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--step", action="store_true")
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--models", nargs="+", help="time these whole models instead")
    parser.add_argument("--train", action="store_true", help="with --models: training too")
    parser.add_argument("--aa", action="store_true",
                        help="with --models: time the stock model twice (the run's noise)")
    args = parser.parse_args(argv)
    if args.models:
        return models(args)
    if args.worker:
        return worker(args)
    if args.cprofile:
        return profile()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = {"after": here} if not args.before else {"before": args.before, "after": here}
    runs = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            runs[name].append(_run_worker(tree, args))
    keys = list(runs["after"][0])
    print(f"medians of {args.rounds} round-robin worker processes x {args.repeat} blocks, "
          f"shape {SHAPE} float32 NHWC")
    print(f"{'':22s}" + "".join(f"{n:>12s}" for n in trees) + ("   before/after" if
                                                                    args.before else ""))
    for k in keys:   # (a case the earlier tree does not have prints "-" there)
        med = {n: statistics.median(r[k] for r in runs[n]) if k in runs[n][0] else None
               for n in trees}
        unit, div = ("ms", 1e3) if "step" in k else ("us", 1.0)
        row = f"{k:22s}" + "".join(f"{'-':>12s}" if med[n] is None else
                                   f"{med[n] / div:9.1f} {unit}" for n in trees)
        if args.before and med["before"] is not None:
            row += f"   {med['before'] / med['after']:6.2f}x"
        print(row)


if __name__ == "__main__":
    sys.exit(main())
