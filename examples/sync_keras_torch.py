"""Keras (PyTorch backend), data-parallel, with synchronized batch normalization.

    pip install keras torch scikit-learn
    OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 examples/sync_keras_torch.py

Data: scikit-learn's handwritten digits (bundled).  The model is a Keras
``Sequential``: Dense(32) -> ``keras_plugin.BatchNormalization(synchronized=True)``
-> ReLU -> Dense(10).  Each of the processes (``torch.distributed``, gloo on
the CPU) takes an uneven slice of every global batch of 50 images; the
batch-norm layer normalizes with the statistics of the whole global batch
(ckbn kernels inside the layer's autograd), and the gradients are summed over
the processes with ``torch.distributed.all_reduce`` before each SGD step.
Rank 0 then trains the same model in one process on whole batches and prints
both test accuracies: they are equal.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import argparse  # noqa: E402
import datetime  # noqa: E402
from typing import Any, Callable  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from keras_plugin import BatchNormalization  # noqa: E402


def load() -> tuple[np.ndarray[Any, np.dtype[Any]], np.ndarray[Any, np.dtype[Any]], np.ndarray[Any, np.dtype[Any]], np.ndarray[Any, np.dtype[Any]]]:
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.data / 16.0 * 4.0 + 3.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], d.target[order]
    return x[:1400], y[:1400], x[1400:], y[1400:]


def build(synchronized: bool) -> Any:
    keras.utils.set_random_seed(0)                 # the same weights on every process
    return keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(32, use_bias=False),
        BatchNormalization(momentum=0.9, synchronized=synchronized),
        keras.layers.ReLU(),
        keras.layers.Dense(10),
    ])


def train(rank: int, size: int, synchronized: bool, epochs: int, batch: int = 50,
          log: Callable[[str], None] = print) -> float:
    x_train, y_train, x_test, y_test = load()
    model = build(synchronized)
    params = [v.value for v in model.trainable_weights]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    rng = np.random.default_rng(1)
    for epoch in range(epochs):
        order = rng.permutation(len(x_train))
        total = 0.0
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            n_global = len(idx)
            idx = np.array_split(idx, size)[rank]
            x = torch.from_numpy(x_train[idx])
            y = torch.from_numpy(y_train[idx]).long()
            logits = model(x, training=True)
            # Sum over this slice / global batch size: the all-reduced gradient is the mean.
            loss = torch.nn.functional.cross_entropy(logits, y, reduction="sum") / n_global
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]  # untyped in torch
            if size > 1:
                for p in params:
                    dist.all_reduce(p.grad)
            opt.step()
            total += float(loss.detach()) * n_global
        pred = keras.ops.convert_to_numpy(model(x_test, training=False)).argmax(1)
        acc = float((pred == y_test).mean())
        log(f"epoch {epoch + 1}  loss {total / len(x_train):.4f} (this process)  "
            f"test accuracy {acc:.4f}")
    return acc


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6)
    args = p.parse_args(argv)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    rank, size = dist.get_rank(), dist.get_world_size()

    def log(msg: str) -> None:
        if rank == 0:
            print(f"[{size} processes] {msg}", flush=True)

    acc = train(rank, size, True, args.epochs, log=log)
    if rank == 0:
        acc1 = train(0, 1, False, args.epochs, log=lambda m: None)
        print(f"synchronized, {size} processes: test accuracy {acc:.4f}")
        print(f"one process, whole batches:  test accuracy {acc1:.4f}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
