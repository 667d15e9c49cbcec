"""Where the output lies against x: one build, ckbn's kernels with x (and dy)
at a fixed byte offset past a 4 KiB page and the output at several offsets,
alternating in one process.  Ratios to the output at x's own offset.
python out_place.py ROUNDS "PxC ..." [x_offset]"""
import sys, time
import numpy as np
from ckbn import _ops

K = _ops.kernels()


def placed(a, off):
    buf = np.empty(a.nbytes + 8192, np.uint8)
    base = (-buf.ctypes.data) % 4096 + off
    out = buf[base:base + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


rounds = int(sys.argv[1])
xo = int(sys.argv[3]) if len(sys.argv) > 3 else 16
rng = np.random.default_rng(0)
for s in sys.argv[2].split():
    P, C = map(int, s.split("x"))
    x = placed(rng.standard_normal(P * C).astype("f4"), xo)
    dy = placed(rng.standard_normal(P * C).astype("f4"), xo)
    sc, of = np.ones(C), np.zeros(C)
    mean, var = np.zeros(C), np.ones(C)
    ds, do = np.zeros(C), np.zeros(C)
    outs = {o: placed(np.zeros(P * C, "f4"), o) for o in (xo, 0, 16, 32, 48) if o != xo or True}
    for kind in ("infer", "train", "bwd"):
        t = {o: [] for o in outs}
        for r in range(rounds):
            items = list(outs.items())
            for o, y in (items if r % 2 else items[::-1]):
                if kind == "infer":
                    f = lambda: K.bn_forward_infer(x, 1, 1, P, C, sc, of, mean, var, 1e-3, y, 1)
                elif kind == "train":
                    f = lambda: K.bn_forward_train(x, 1, 1, P, C, sc, of, 1e-3, y, mean, var, 1)
                else:
                    f = lambda: K.bn_backward(dy, x, 1, 1, P, C, sc, mean, var, 1e-3, True, y, ds, do, 1)
                f()
                t0 = time.perf_counter()
                f()
                t[o].append(time.perf_counter() - t0)
        ref = np.median(t[xo])
        print(f"{s} x,dy +{xo} {kind}: " + " ".join(
            f"out +{o} {np.median(v) / ref:.3f}" for o, v in t.items()) + f" (out +{xo}: {ref * 1e6:.1f} us)", flush=True)
