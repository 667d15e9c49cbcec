"""Train a small Keras CNN with stock BatchNormalization, then with ckbn's, side by side.

Data: scikit-learn's bundled 8x8 digits (1797 images, shipped inside the
package, no download), upscaled 4x to 32x32 so the convolutions and batch
normalizations have some work to do.  The runs start from the same weights
(``keras_plugin.swap_batch_normalization`` copies them) and see the same
batches: stock Keras, ckbn's layers, and ckbn's layers with each BN + ReLU
fused into one layer (``fuse_activations=True``).  The script prints test
accuracy, the median training-step time and the median inference time on the
test set, and the same for ``keras_plugin.fold_batch_normalization`` of the
trained ckbn model (every BN folded into the convolution before it).

    python examples/keras_demo.py                  # Keras's default backend
    KERAS_BACKEND=torch python examples/keras_demo.py --epochs 8
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def load_digits(seed: int) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    from sklearn.datasets import load_digits as sk_digits

    digits = sk_digits()
    x = digits.images.astype("float32") / 16.0                   # (1797, 8, 8) in [0, 1]
    x = np.kron(x, np.ones((1, 4, 4), "float32"))[..., None]     # (1797, 32, 32, 1)
    y = digits.target.astype("int32")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_test = 360
    return (x[n_test:], y[n_test:]), (x[:n_test], y[:n_test])


def build_cnn(keras: Any) -> Any:
    inputs = keras.Input((32, 32, 1))
    h = inputs
    for filters in (16, 32, 64):
        h = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(h)
        h = keras.layers.BatchNormalization(momentum=0.9)(h)
        h = keras.layers.ReLU()(h)
        h = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(h)
        h = keras.layers.BatchNormalization(momentum=0.9)(h)
        h = keras.layers.ReLU()(h)
        h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(10, activation="softmax")(h)
    return keras.Model(inputs, outputs, name="digits_cnn")


def train(keras: Any, model: Any, data: Any, args: argparse.Namespace) -> dict[str, Any]:
    (x_train, y_train), (x_test, y_test) = data

    class StepTimer(keras.callbacks.Callback):  # type: ignore[misc]  # Keras is untyped
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            self._t0 = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.times.append(time.perf_counter() - self._t0)

    model.compile(optimizer=keras.optimizers.Adam(args.lr),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    timer = StepTimer()
    t0 = time.perf_counter()
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, shuffle=False,
              callbacks=[timer], verbose=0)
    fit_s = time.perf_counter() - t0
    steps_per_epoch = -(-len(x_train) // args.batch_size)
    steady = timer.times[steps_per_epoch:] or timer.times  # skip the first (tracing) epoch
    _, acc = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    return {"acc": acc, "step_ms": 1e3 * float(np.median(steady)), "fit_s": fit_s,
            "jit": bool(model.jit_compile)}


def infer_ms(models: Sequence[Any], x: Any, repeat: int = 9) -> list[float]:
    """Median wall time of ``predict_on_batch`` on the whole test set, per model.

    The models take turns (round robin, after one warm-up call each), so a
    change of load on the machine affects them alike.
    """
    for model in models:
        model.predict_on_batch(x)
    times: list[list[float]] = [[] for _ in models]
    for _ in range(repeat):
        for model, t in zip(models, times):
            t0 = time.perf_counter()
            model.predict_on_batch(x)
            t.append(time.perf_counter() - t0)
    return [1e3 * float(np.median(t)) for t in times]


def evaluate_folded(keras: Any, model: Any, data: Any) -> dict[str, Any]:
    (_, _), (x_test, y_test) = data
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    _, acc = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    return {"acc": acc, "step_ms": float("nan"), "fit_s": 0.0, "jit": bool(model.jit_compile)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import keras

    import ckbn
    from keras_plugin import (BatchNormalization, fold_batch_normalization,
                              swap_batch_normalization)

    data = load_digits(args.seed)
    keras.utils.set_random_seed(args.seed)
    stock = build_cnn(keras)
    swapped = swap_batch_normalization(stock)  # same initial weights, ckbn's BN layers
    fused = swap_batch_normalization(stock, fuse_activations=True)  # BN + ReLU as one layer
    n_bn = sum(isinstance(la, BatchNormalization) for la in swapped.layers)

    print(f"Keras {keras.__version__}, backend {keras.backend.backend()}; ckbn {ckbn.__version__}, "
          f"{ckbn.get_num_threads()} threads, OpenMP {ckbn.openmp_enabled()}")
    print(f"digits: {len(data[0][0])} train / {len(data[1][0])} test images, 32x32; "
          f"CNN with {n_bn} BatchNormalization layers; batch {args.batch_size}, "
          f"{args.epochs} epochs\n")

    results = {}
    for name, model in (("stock Keras BN", stock), ("ckbn BN (swapped)", swapped),
                        ("ckbn BN+ReLU fused", fused)):
        keras.utils.set_random_seed(args.seed)
        results[name] = train(keras, model, data, args)
        r = results[name]
        print(f"  trained {name:<18} in {r['fit_s']:6.1f} s")
    folded = fold_batch_normalization(swapped)  # inference model of the trained ckbn one
    results["ckbn folded (infer)"] = evaluate_folded(keras, folded, data)
    models = (stock, swapped, fused, folded)
    for r, ms in zip(results.values(), infer_ms(models, x_test_of(data))):
        r["infer_ms"] = ms

    print(f"\n{'':<20}{'test accuracy':>15}{'step time (ms)':>16}{'inference (ms)':>16}"
          f"{'XLA':>6}")
    for name, r in results.items():
        step = "-" if r["step_ms"] != r["step_ms"] else f"{r['step_ms']:.2f}"
        print(f"{name:<20}{r['acc']:>15.4f}{step:>16}{r['infer_ms']:>16.2f}"
              f"{str(r['jit']):>6}")
    a, b, c, d = results.values()
    print(f"\nspeed against stock (time ratio stock / model): training step ckbn "
          f"{a['step_ms'] / b['step_ms']:.2f}x, fused {a['step_ms'] / c['step_ms']:.2f}x "
          f"(median step, first epoch excluded); inference of {len(x_test_of(data))} images "
          f"folded {a['infer_ms'] / d['infer_ms']:.2f}x (unfolded ckbn "
          f"{a['infer_ms'] / b['infer_ms']:.2f}x)")


def x_test_of(data: Any) -> Any:
    return data[1][0]


if __name__ == "__main__":
    main()
