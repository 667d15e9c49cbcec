"""Train a small NumPy MLP with ckbn batch normalization: backward + SGD.

    python examples/train_mlp.py

Data: a synthetic 3-class problem drawn with NumPy (no download).  The network
is Dense(20->64) -> BatchNormalization -> ReLU -> Dense(64->3) -> softmax; the
BN layer's forward, backward and moving statistics come from ckbn, the dense
layers are plain NumPy.  The loss falls and the held-out accuracy rises.
"""

import numpy as np
from typing import Any


import ckbn


def make_data(n: int, rng: np.random.Generator,
              centers: np.ndarray[Any, np.dtype[Any]]) -> tuple[np.ndarray[Any, np.dtype[Any]], np.ndarray[Any, np.dtype[Any]]]:
    labels = rng.integers(0, 3, n)
    x = centers[labels] + rng.standard_normal((n, 20)) * 2.0 + 5.0   # far from zero mean
    return x.astype(np.float32), labels


def main(epochs: int = 15, batch: int = 64, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((3, 20)) * 0.6
    x_train, y_train = make_data(4096, rng, centers)
    x_test, y_test = make_data(1024, rng, centers)
    w1 = (rng.standard_normal((20, 64)) * np.sqrt(2 / 20)).astype(np.float32)
    w2 = (rng.standard_normal((64, 3)) * np.sqrt(2 / 64)).astype(np.float32)
    b2 = np.zeros(3, np.float32)
    bn = ckbn.BatchNormalization(momentum=0.9)
    opt = ckbn.optimizers.SGD(learning_rate=0.05, momentum=0.9)
    dense = [ckbn.Variable(w1, "w1:0"), ckbn.Variable(w2, "w2:0"), ckbn.Variable(b2, "b2:0")]

    def forward(x: np.ndarray[Any, np.dtype[Any]], training: bool) -> tuple[np.ndarray[Any, np.dtype[Any]], np.ndarray[Any, np.dtype[Any]], np.ndarray[Any, np.dtype[Any]], np.ndarray[Any, np.dtype[Any]]]:
        h = x @ dense[0].value
        z = bn(h, training=training)
        a = np.maximum(z, 0)
        logits = a @ dense[1].value + dense[2].value
        return h, z, a, logits

    with ckbn.eager_mode():                      # moving statistics update during the call
        for epoch in range(epochs):
            order = rng.permutation(len(x_train))
            losses = []
            for i in range(0, len(order), batch):
                idx = order[i:i + batch]
                x, y = x_train[idx], y_train[idx]
                h, z, a, logits = forward(x, True)
                p = np.exp(logits - logits.max(1, keepdims=True))
                p /= p.sum(1, keepdims=True)
                losses.append(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())
                dlogits = p
                dlogits[np.arange(len(y)), y] -= 1
                dlogits /= len(y)
                dw2 = a.T @ dlogits
                db2 = dlogits.sum(0)
                dz = (dlogits @ dense[1].value.T) * (z > 0)
                dh, (dgamma, dbeta) = bn.backward(dz.astype(np.float32))
                dw1 = x.T @ dh
                opt.apply_gradients(zip([dw1, dw2, db2, dgamma, dbeta],
                                        dense + bn.trainable_weights))
            _, _, _, test_logits = forward(x_test, False)
            acc = (test_logits.argmax(1) == y_test).mean()
            print(f"epoch {epoch + 1:2d}  loss {np.mean(losses):.4f}  test accuracy {acc:.3f}")
    return float(np.mean(losses)), float(acc)


if __name__ == "__main__":
    main()
