"""Data-parallel training with synchronized batch normalization over MPI.

    pip install mpi4py mpich scikit-learn
    OMP_NUM_THREADS=1 mpiexec -n 4 python examples/sync_mpi.py

Data: scikit-learn's handwritten digits (8x8 images, 10 classes; they ship
with the package, no download).  The network is Dense(64->32) ->
BatchNormalization(synchronized=True) -> ReLU -> Dense(32->10) -> softmax.

Every step takes a global batch of 50 images; each process gets its slice
(uneven: 13, 13, 12, 12 on 4 processes).  The batch-norm layer normalizes
with the statistics of the whole global batch (``ckbn.distributed``); the
gradients of every weight are then summed over the processes with the same
communicator (the data-parallel all-reduce).  Rank 0 also trains the same
network in one process on the whole global batches and prints both: the
accuracies are equal and the weights agree to float32 rounding.
"""

import argparse
from typing import Any, Callable

import numpy as np

import ckbn


def load(seed: int = 0) -> tuple[np.ndarray[Any, np.dtype[Any]], np.ndarray[Any, np.dtype[Any]], np.ndarray[Any, np.dtype[Any]], np.ndarray[Any, np.dtype[Any]]]:
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.data / 16.0 * 4.0 + 3.0).astype(np.float32)   # features far from zero mean
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    x, y = x[order], d.target[order]
    return x[:1400], y[:1400], x[1400:], y[1400:]


def train(comm: ckbn.distributed.Communicator | None, epochs: int = 8, batch: int = 50,
          seed: int = 0, log: Callable[[str], None] = print) -> tuple[float, list[Any]]:
    """Train on the slices of this process (``comm`` None: one process, whole batches).

    Returns the test accuracy and the final weights.
    """
    rank, size = (0, 1) if comm is None else (comm.rank, comm.size)
    x_train, y_train, x_test, y_test = load()
    rng = np.random.default_rng(seed)               # the same on every process
    w1 = (rng.standard_normal((64, 32)) * np.sqrt(2 / 64)).astype(np.float32)
    w2 = (rng.standard_normal((32, 10)) * np.sqrt(2 / 32)).astype(np.float32)
    b2 = np.zeros(10, np.float32)
    bn = ckbn.BatchNormalization(momentum=0.9, synchronized=comm is not None,
                                 communicator=comm, name="bn")
    opt = ckbn.optimizers.SGD(learning_rate=0.1, momentum=0.9)
    dense = [ckbn.Variable(w1, "w1:0"), ckbn.Variable(w2, "w2:0"), ckbn.Variable(b2, "b2:0")]

    def forward(x: np.ndarray[Any, np.dtype[Any]], training: bool) -> tuple[np.ndarray[Any, np.dtype[Any]], np.ndarray[Any, np.dtype[Any]], np.ndarray[Any, np.dtype[Any]], np.ndarray[Any, np.dtype[Any]]]:
        h = x @ dense[0].value
        z = bn(h, training=training)
        a = np.maximum(z, 0)
        return h, z, a, a @ dense[1].value + dense[2].value

    with ckbn.eager_mode():
        for epoch in range(epochs):
            order = rng.permutation(len(x_train))
            loss_sum = 0.0
            for i in range(0, len(order), batch):
                idx = order[i:i + batch]
                n_global = len(idx)
                idx = np.array_split(idx, size)[rank]          # this process's slice
                x, y = x_train[idx], y_train[idx]
                h, z, a, logits = forward(x, True)
                p = np.exp(logits - logits.max(1, keepdims=True))
                p /= p.sum(1, keepdims=True)
                loss_sum += -np.log(p[np.arange(len(y)), y] + 1e-12).sum()
                dlogits = p
                dlogits[np.arange(len(y)), y] -= 1
                dlogits /= n_global                            # mean over the global batch
                dw2 = a.T @ dlogits
                db2 = dlogits.sum(0)
                dz = (dlogits @ dense[1].value.T) * (z > 0)
                dh, (dgamma, dbeta) = bn.backward(dz.astype(np.float32))
                dw1 = x.T @ dh
                grads = [dw1, dw2, db2, dgamma, dbeta]
                if comm is not None:
                    # The data-parallel gradient all-reduce: one vector, summed.
                    flat = comm.allreduce(np.concatenate([g.reshape(-1) for g in grads]))
                    parts = np.split(flat, np.cumsum([g.size for g in grads])[:-1])
                    grads = [q.reshape(g.shape).astype(np.float32)
                             for q, g in zip(parts, grads)]
                opt.apply_gradients(zip(grads, dense + bn.trainable_weights))
            if comm is not None:
                loss_sum = float(comm.allreduce(np.array([loss_sum]))[0])
            _, _, _, test_logits = forward(x_test, False)    # inference: no communication
            acc = float((test_logits.argmax(1) == y_test).mean())
            log(f"epoch {epoch + 1:2d}  loss {loss_sum / len(x_train):.4f}  "
                f"test accuracy {acc:.4f}")
    weights = [v.value for v in dense + bn.weights]
    return acc, weights


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=8)
    args = p.parse_args(argv)
    from mpi4py import MPI
    comm = ckbn.distributed.from_mpi4py(MPI.COMM_WORLD)
    quiet = comm.rank != 0

    def log(msg: str) -> None:
        if not quiet:
            print(f"[{comm.size} processes] {msg}", flush=True)

    acc, weights = train(comm, epochs=args.epochs, log=log)
    if comm.rank == 0:
        acc1, weights1 = train(None, epochs=args.epochs, log=lambda m: None)
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(weights, weights1))
        print(f"synchronized, {comm.size} processes: test accuracy {acc:.4f}")
        print(f"one process, whole batches:  test accuracy {acc1:.4f}")
        print(f"largest weight difference: {diff:.2e}")


if __name__ == "__main__":
    main()
